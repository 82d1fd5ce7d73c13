#include "model/tokenizer/pretokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <array>
#include <utility>

#include "model/tokenizer/byte_level.h"
#include "util/error.h"

namespace kvc {
namespace {

// The regexes, verbatim from llama.cpp's llm_tokenizer_bpe (llama.cpp spells the Llama 3
// contractions as (?:'[sS]|...) because std::regex lacks (?i:); we keep that spelling).
constexpr const char* kGpt2 =
    R"re('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S))re";
constexpr const char* kLlama3 =
    R"re((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)re";
// Qwen2 differs from Llama 3 only in splitting every digit (\p{N} instead of \p{N}{1,3}).
constexpr const char* kQwen2 =
    R"re((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)re";

// Qwen3.5 also keeps combining marks (\p{M}) inside words.
constexpr const char* kQwen35 =
    R"re((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)re";

struct SchemeGroup {
  std::vector<std::string_view> names;  // `tokenizer.ggml.pre` values llama.cpp maps here
  PretokenizerScheme scheme;
};

const std::vector<SchemeGroup>& scheme_groups() {
  static const std::vector<SchemeGroup> groups = {
      {{"default", ""},
       {"default", {R"re([\p{P}\$\+<=>\^~\|]+)re", kGpt2, R"re(\p{N}+)re", "[0-9][0-9][0-9]"}}},
      {{"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2",
        "jina-v5-nano"},
       {"llama3", {kLlama3}, /*ignore_merges=*/true, /*add_bos_default=*/true}},
      {{"dbrx", "smaug-bpe"}, {"dbrx", {kLlama3}}},
      {{"falcon"}, {"falcon", {R"re([\p{P}\$\+<=>\^~\|`]+)re", kGpt2, "[0-9][0-9][0-9]"}}},
      // SmolLM reuses StarCoder's tokenizer: digits are always single tokens.
      {{"starcoder", "refact", "command-r", "smollm", "codeshell", "exaone", "minerva-7b"},
       {"starcoder", {R"re(\p{N})re", kGpt2}}},
      {{"gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es", "jina-v2-de", "a.x-4.0",
        "mellum", "modern-bert", "jina-v1-en", "jina-v2-code", "roberta-bpe", "mpt", "olmo", "jais",
        "exaone4", "trillion", "granite-docling"},
       {"gpt-2", {kGpt2}}},
      {{"qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez", "stablelm2", "hunyuan"},
       {"qwen2", {kQwen2}}},
      {{"qwen35"}, {"qwen35", {kQwen35}}},
  };
  return groups;
}

std::string pcre2_message(int code) {
  std::array<PCRE2_UCHAR, 256> buffer{};
  pcre2_get_error_message(code, buffer.data(), buffer.size());
  return reinterpret_cast<const char*>(buffer.data());
}

}  // namespace

PretokenizerScheme find_pretokenizer_scheme(std::string_view pre_name) {
  for (const SchemeGroup& group : scheme_groups()) {
    for (std::string_view name : group.names) {
      if (name == pre_name) return group.scheme;
    }
  }
  fail("tokenizer: unknown pre-tokenizer '{}' (tokenizer.ggml.pre); supported: default, llama3, "
       "llama-bpe, dbrx, falcon, starcoder, smollm, refact, gpt-2, qwen2, qwen35 and aliases",
       pre_name);
}

struct Pretokenizer::Compiled {
  pcre2_code* code = nullptr;
  ~Compiled() { pcre2_code_free(code); }
};

Pretokenizer::Pretokenizer(const PretokenizerScheme& scheme) {
  for (const std::string& regex : scheme.regexes) {
    int error = 0;
    PCRE2_SIZE error_offset = 0;
    auto compiled = std::make_unique<Compiled>();
    compiled->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(regex.data()), regex.size(),
                                   PCRE2_UTF | PCRE2_UCP, &error, &error_offset, nullptr);
    // Our regexes are constants, so this cannot fail on any input; if a new one is malformed,
    // PCRE2's message with the offset is the useful report.
    if (compiled->code == nullptr) {
      fail("tokenizer: pre-tokenizer regex '{}' does not compile at {}: {}", regex, error_offset,
           pcre2_message(error));
    }
    // JIT is a pure speed-up; where it is unavailable pcre2_match interprets.
    pcre2_jit_compile(compiled->code, PCRE2_JIT_COMPLETE);
    compiled_.push_back(std::move(compiled));
  }
}

Pretokenizer::~Pretokenizer() = default;
Pretokenizer::Pretokenizer(Pretokenizer&&) noexcept = default;
Pretokenizer& Pretokenizer::operator=(Pretokenizer&&) noexcept = default;

std::vector<std::string_view> Pretokenizer::split(std::string_view text) const {
  // Pieces as [offset, offset + length) of `text`; the first regex sees the whole text.
  std::vector<std::pair<size_t, size_t>> pieces;
  if (!text.empty()) pieces.emplace_back(0, text.size());
  std::vector<std::pair<size_t, size_t>> next;
  bool utf_checked = false;

  for (const auto& compiled : compiled_) {
    std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> match(
        pcre2_match_data_create_from_pattern(compiled->code, nullptr), &pcre2_match_data_free);
    KVC_ASSERT(match != nullptr);
    next.clear();
    for (auto [offset, length] : pieces) {
      // Each piece is its own subject, so lookarounds stop at the piece boundary exactly like
      // std::regex over a sub-range in llama.cpp.
      const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data() + offset);
      size_t gap_start = 0;  // end of the previous match: text before the next match is a gap
      size_t pos = 0;
      while (pos < length) {
        // Validating UTF-8 costs O(subject) per call, so only the very first call does it (its
        // subject is the whole text); the rest rely on that.
        const uint32_t options = utf_checked ? PCRE2_NO_UTF_CHECK : 0;
        int rc = pcre2_match(compiled->code, subject, length, pos, options, match.get(), nullptr);
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
          rc = pcre2_match(compiled->code, subject, length, pos, options | PCRE2_NO_JIT,
                           match.get(), nullptr);
        }
        utf_checked = true;
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
          KVC_ASSERT(rc > PCRE2_ERROR_UTF8_ERR1 || rc < PCRE2_ERROR_UTF8_ERR21);  // caller's job
          fail("tokenizer: pre-tokenizer regex failed on a {}-byte piece: {}", length,
               pcre2_message(rc));
        }
        const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(match.get());
        const size_t start = ovector[0];
        const size_t end = ovector[1];
        if (end == start) {
          // None of our regexes can match empty; skip one code point rather than loop forever.
          if (start >= length) break;
          pos = start + utf8_sequence_length(static_cast<uint8_t>(text[offset + start]));
          continue;
        }
        if (start > gap_start) next.emplace_back(offset + gap_start, start - gap_start);
        next.emplace_back(offset + start, end - start);
        gap_start = pos = end;
      }
      if (gap_start < length) next.emplace_back(offset + gap_start, length - gap_start);
    }
    pieces.swap(next);
  }

  std::vector<std::string_view> words;
  words.reserve(pieces.size());
  for (auto [offset, length] : pieces) words.push_back(text.substr(offset, length));
  return words;
}

}  // namespace kvc
