#include "model/tokenizer/tokenizer.h"

#include <algorithm>
#include <array>
#include <limits>

#include "gguf/gguf.h"
#include "model/tokenizer/byte_level.h"
#include "util/error.h"

namespace kvc {
namespace {

// Token texts llama.cpp takes as end of turn when the GGUF names no eot id, in our order of
// preference (llama.cpp walks a hash map, so its choice among several is arbitrary).
constexpr std::array<std::string_view, 11> kEndOfTurnTexts = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>",
    "<EOT>", "_<EOT>", "[EOT]", "<｜end▁of▁sentence｜>", "<end_of_utterance>"};

// Texts llama.cpp treats as end of generation, from llama-vocab.cpp.
constexpr std::array<std::string_view, 22> kEndOfGenerationTexts = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
    "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
    "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
    "<｜end▁of▁sentence｜>", "[e~["};

// Fill-in-the-middle texts: llama.cpp makes them control tokens; pad, repo and file separator
// also end generation.
constexpr std::array<std::string_view, 24> kFimTexts = {
    "<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>", "▁<PRE>",
    "<|code_prefix|>", "<|prefix|>", "<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>",
    "<｜fim▁hole｜>", "<SUF>", "▁<SUF>", "<|code_suffix|>", "<|suffix|>", "<|fim_middle|>",
    "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>", "▁<MID>", "<|code_middle|>",
    "<|middle|>"};
constexpr std::array<std::string_view, 11> kFimEndOfGenerationTexts = {
    "<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]", "<|fim_repo|>", "<|repo_name|>",
    "<fim-repo>", "<REPO>", "<reponame>", "<|file_sep|>"};

// llama.cpp (llama_vocab::impl::load) overrides the GGUF token types of well-known special texts
// and derives the end-of-generation set from them; ids and parse_special behaviour depend on it,
// so we mirror it. Where llama.cpp takes only the first of several matching texts (in hash-map
// order) we take all of them.
std::vector<int32_t> apply_llama_cpp_type_overrides(const StringToId& token_to_id,
                                                    std::vector<TokenType>& types) {
  std::vector<int32_t> end_of_generation;
  auto find = [&](std::string_view text) {
    auto it = token_to_id.find(text);
    return it == token_to_id.end() ? -1 : it->second;
  };
  // Like llama.cpp, OR-ing in the control bit: an unused or user-defined token becomes control.
  auto make_control = [&](std::span<const std::string_view> texts, bool ends_generation) {
    for (std::string_view text : texts) {
      if (int32_t id = find(text); id >= 0) {
        types[id] = TokenType::CONTROL;
        if (ends_generation) end_of_generation.push_back(id);
      }
    }
  };
  make_control(kEndOfTurnTexts, false);
  make_control(kFimTexts, false);
  make_control(kEndOfGenerationTexts, true);
  make_control(kFimEndOfGenerationTexts, true);
  auto drop_from_end_of_generation = [&](int32_t id) {
    end_of_generation.erase(std::remove(end_of_generation.begin(), end_of_generation.end(), id),
                            end_of_generation.end());
  };
  // gpt-oss and solar-open: "<|end|>" ends a message, not the generation.
  const int32_t end = find("<|end|>");
  if (end >= 0 && ((find("<|return|>") >= 0 && find("<|call|>") >= 0) ||
                   (find("<|calls|>") >= 0 && find("<|flush|>") >= 0))) {
    drop_from_end_of_generation(end);
    types[end] = TokenType::USER_DEFINED;
  }
  // Gemma 4 and PLaMo have a normal "</s>".
  const int32_t slash_s = find("</s>");
  if (slash_s >= 0 && (find("<|tool_response>") >= 0 || find("<|plamo:eos|>") >= 0)) {
    drop_from_end_of_generation(slash_s);
    types[slash_s] = TokenType::NORMAL;
  }
  // gpt-oss: always rendered, never parsed as control.
  for (std::string_view text : {"<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"}) {
    if (int32_t id = find(text); id >= 0) types[id] = TokenType::USER_DEFINED;
  }
  return end_of_generation;
}

int32_t checked_special_id(int64_t id, size_t vocab, std::string_view what) {
  if (id < -1 || id >= static_cast<int64_t>(vocab)) {
    fail("tokenizer: {} token id {} is outside the vocabulary ({} tokens)", what, id, vocab);
  }
  return static_cast<int32_t>(id);
}

TokenType to_token_type(int64_t value) {
  // Unknown values are UNDEFINED, as in llama.cpp (such tokens decode to nothing).
  return value >= 0 && value <= 6 ? static_cast<TokenType>(value) : TokenType::UNDEFINED;
}

}  // namespace

Tokenizer Tokenizer::from_gguf(const GgufFile& file) {
  TokenizerSpec spec;
  auto model = file.get_string("tokenizer.ggml.model");
  if (!model) fail("tokenizer: {} has no tokenizer.ggml.model", file.name());
  spec.model = std::string(*model);
  spec.pre = std::string(file.get_string("tokenizer.ggml.pre").value_or(""));

  auto tokens = file.get_string_array("tokenizer.ggml.tokens");
  if (!tokens) fail("tokenizer: {} has no tokenizer.ggml.tokens", file.name());
  spec.tokens.assign(tokens->begin(), tokens->end());
  if (auto types = file.get_int_array("tokenizer.ggml.token_type")) {
    spec.types.reserve(types->size());
    for (int64_t type : *types) spec.types.push_back(to_token_type(type));
  }
  if (auto merges = file.get_string_array("tokenizer.ggml.merges")) {
    spec.merges.assign(merges->begin(), merges->end());
  }
  spec.bos = file.get_int("tokenizer.ggml.bos_token_id").value_or(-1);
  spec.eos = file.get_int("tokenizer.ggml.eos_token_id").value_or(-1);
  spec.eot = file.get_int("tokenizer.ggml.eot_token_id").value_or(-1);
  spec.add_bos = file.get_bool("tokenizer.ggml.add_bos_token");
  spec.add_eos = file.get_bool("tokenizer.ggml.add_eos_token");
  return from_spec(std::move(spec));
}

Tokenizer Tokenizer::from_spec(TokenizerSpec spec) {
  if (spec.model != "gpt2") {
    fail("tokenizer: unsupported tokenizer.ggml.model '{}' (only byte-level BPE 'gpt2' is "
         "implemented)",
         spec.model);
  }
  const size_t vocab = spec.tokens.size();
  if (vocab == 0 || vocab > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    fail("tokenizer: vocabulary has {} tokens", vocab);
  }
  if (spec.types.empty()) spec.types.assign(vocab, TokenType::NORMAL);
  if (spec.types.size() != vocab) {
    fail("tokenizer: {} token types for {} tokens (tokenizer.ggml.token_type)", spec.types.size(),
         vocab);
  }
  if (spec.merges.empty()) fail("tokenizer: BPE vocabulary without tokenizer.ggml.merges");

  const PretokenizerScheme scheme = find_pretokenizer_scheme(spec.pre);
  std::vector<std::string_view> merges(spec.merges.begin(), spec.merges.end());
  Tokenizer tok(Pretokenizer(scheme), BpeModel(merges, scheme.ignore_merges),
                SpecialTokenSplitter({}));

  tok.token_to_id_.reserve(vocab);
  for (size_t i = 0; i < vocab; ++i) {
    // llama.cpp renames empty texts so that every text maps back to one id.
    if (spec.tokens[i].empty()) spec.tokens[i] = "[EMPTY_" + std::to_string(i) + "]";
    if (!tok.token_to_id_.emplace(spec.tokens[i], static_cast<int32_t>(i)).second) {
      fail("tokenizer: tokens {} and {} have the same text '{}'", tok.token_to_id_[spec.tokens[i]],
           i, spec.tokens[i]);
    }
  }
  tok.tokens_ = std::move(spec.tokens);
  tok.types_ = std::move(spec.types);
  tok.pre_name_ = spec.pre.empty() ? "default" : spec.pre;

  tok.bos_ = checked_special_id(spec.bos, vocab, "bos");
  tok.eos_ = checked_special_id(spec.eos, vocab, "eos");
  tok.eot_ = checked_special_id(spec.eot, vocab, "eot");
  if (tok.eot_ < 0) {
    for (std::string_view text : kEndOfTurnTexts) {
      if (auto it = tok.token_to_id_.find(text); it != tok.token_to_id_.end()) {
        tok.eot_ = it->second;
        break;
      }
    }
  }
  if (tok.eot_ < 0) tok.eot_ = tok.eos_;
  tok.add_bos_ = spec.add_bos.value_or(scheme.add_bos_default);
  tok.add_eos_ = spec.add_eos.value_or(false);
  if (tok.add_bos_ && tok.bos_ < 0) fail("tokenizer: add_bos_token is set but there is no bos id");

  tok.end_of_generation_ = apply_llama_cpp_type_overrides(tok.token_to_id_, tok.types_);
  for (int32_t id : {tok.eos_, tok.eot_}) {
    if (id >= 0) tok.end_of_generation_.push_back(id);
  }
  std::sort(tok.end_of_generation_.begin(), tok.end_of_generation_.end());
  tok.end_of_generation_.erase(
      std::unique(tok.end_of_generation_.begin(), tok.end_of_generation_.end()),
      tok.end_of_generation_.end());

  std::vector<SpecialToken> specials;
  for (size_t i = 0; i < vocab; ++i) {
    const TokenType type = tok.types_[i];
    if (type == TokenType::CONTROL || type == TokenType::UNKNOWN ||
        type == TokenType::USER_DEFINED) {
      specials.push_back({static_cast<int32_t>(i), tok.tokens_[i], type != TokenType::USER_DEFINED});
    }
  }
  tok.specials_ = SpecialTokenSplitter(std::move(specials));
  return tok;
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool parse_special) const {
  std::vector<int32_t> ids;
  for (const TextFragment& fragment : specials_.split(text, parse_special)) {
    if (fragment.token >= 0) {
      ids.push_back(fragment.token);
      continue;
    }
    std::string regex_subject;
    const std::string clean = sanitize_utf8(fragment.text, regex_subject);
    const std::string& subject = regex_subject.empty() ? clean : regex_subject;
    for (std::string_view word : pretokenizer_.split(subject)) {
      // Words index `subject`; the same offsets in `clean` give llama.cpp's bytes.
      const std::string_view bytes(clean.data() + (word.data() - subject.data()), word.size());
      bpe_.encode_word(byte_level_encode(bytes), token_to_id_, ids);
    }
  }
  return ids;
}

std::string Tokenizer::token_to_piece(int32_t id) const {
  if (id < 0 || id >= vocab_size()) fail("tokenizer: token id {} is outside [0, {})", id, vocab_size());
  switch (types_[id]) {
    case TokenType::NORMAL:
    case TokenType::BYTE:  // llama.cpp prints nothing for these in BPE vocabularies; bytes are kinder
      return byte_level_decode(tokens_[id]);
    case TokenType::CONTROL:
    case TokenType::UNKNOWN:
    case TokenType::USER_DEFINED:
      return tokens_[id];
    case TokenType::UNUSED:
    case TokenType::UNDEFINED:
      break;
  }
  return {};
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool render_special) const {
  std::string text;
  for (int32_t id : ids) {
    if (!render_special && is_control(id)) continue;
    text += token_to_piece(id);
  }
  return text;
}

bool Tokenizer::is_control(int32_t id) const {
  if (id < 0 || id >= vocab_size()) return false;
  return types_[id] == TokenType::CONTROL || types_[id] == TokenType::UNKNOWN;
}

std::vector<int32_t> Tokenizer::end_of_generation_ids() const {
  std::vector<int32_t> ids;
  for (int32_t id = 0; id < vocab_size(); ++id) {
    if (is_end_of_generation(id)) ids.push_back(id);
  }
  return ids;
}

bool Tokenizer::is_end_of_generation(int32_t id) const {
  return std::binary_search(end_of_generation_.begin(), end_of_generation_.end(), id);
}

}  // namespace kvc
