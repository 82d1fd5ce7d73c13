// Tokenizer: text <-> token ids for GGUF byte-level BPE vocabularies (tokenizer.ggml.model =
// "gpt2": GPT-2, StarCoder, SmolLM, Qwen2, Llama 3), producing exactly llama.cpp's ids.
//
// encode(text, parse_special):
//   1. special_tokens.h cuts out control / user-defined token texts ("<|im_end|>");
//   2. each remaining fragment is decoded leniently (invalid bytes -> U+FFFD, as llama.cpp);
//   3. pretokenizer.h splits it into words with the scheme named by tokenizer.ggml.pre;
//   4. byte_level.h maps each word into the GPT-2 byte alphabet;
//   5. bpe.h merges each word into ids.
// decode(ids) concatenates token_to_piece(id): normal tokens are mapped back to raw bytes, control
// and user-defined tokens render as their text.
//
// Invariants: immutable after from_gguf (all methods are const and thread-safe); owns copies of
// everything it needs, so the GgufFile may be closed afterwards; every id it returns is in
// [0, vocab_size()).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "model/tokenizer/bpe.h"
#include "model/tokenizer/pretokenizer.h"
#include "model/tokenizer/special_tokens.h"

namespace kvc {

class GgufFile;

// GGUF `tokenizer.ggml.token_type` values (llama.cpp's llama_token_type).
enum class TokenType : int32_t {
  UNDEFINED = 0, NORMAL = 1, UNKNOWN = 2, CONTROL = 3, USER_DEFINED = 4, UNUSED = 5, BYTE = 6,
};

// Everything the tokenizer needs, as plain data (what from_gguf reads). Lets tests build small
// vocabularies without a file.
struct TokenizerSpec {
  std::string model = "gpt2";       // tokenizer.ggml.model
  std::string pre;                  // tokenizer.ggml.pre ("" = default)
  std::vector<std::string> tokens;  // [vocab] token texts, byte alphabet
  std::vector<TokenType> types;     // [vocab], or empty: all NORMAL
  std::vector<std::string> merges;  // [n_merges] "left right"
  int64_t bos = -1, eos = -1, eot = -1;  // -1: absent
  std::optional<bool> add_bos, add_eos;  // absent: the pre-tokenizer's default / false
};

class Tokenizer {
 public:
  // Reads the tokenizer.ggml.* keys. Throws kvc::Error for an unsupported tokenizer model or
  // pre-tokenizer, missing or mismatched arrays, and special ids out of range.
  static Tokenizer from_gguf(const GgufFile& file);
  static Tokenizer from_spec(TokenizerSpec spec);

  // Ids for `text` (no BOS: callers add bos() when add_bos()). With parse_special, control token
  // texts in `text` ("<|im_start|>") become their ids; without, they are tokenized as plain text.
  std::vector<int32_t> encode(std::string_view text, bool parse_special) const;

  // Raw bytes of one token (possibly a partial UTF-8 sequence). Control and user-defined tokens
  // give their text; unused and undefined ones nothing (as llama.cpp). Throws kvc::Error for an
  // id out of range.
  std::string token_to_piece(int32_t id) const;
  // Concatenated pieces; with render_special false, control tokens give nothing.
  std::string decode(std::span<const int32_t> ids, bool render_special = true) const;

  int32_t vocab_size() const { return static_cast<int32_t>(tokens_.size()); }
  int32_t bos() const { return bos_; }  // -1 when the model has none
  int32_t eos() const { return eos_; }
  // End of turn: <|im_end|> for ChatML models, <|eot_id|> for Llama 3; eos() when none.
  int32_t eot() const { return eot_; }
  bool add_bos() const { return add_bos_; }
  bool add_eos() const { return add_eos_; }
  bool is_control(int32_t id) const;
  // Whether generation stops at `id`: eos, eot and llama.cpp's list of end-of-generation texts.
  bool is_end_of_generation(int32_t id) const;
  // Every id for which is_end_of_generation holds (the stop list of a generation request).
  std::vector<int32_t> end_of_generation_ids() const;
  const std::string& pre_name() const { return pre_name_; }

 private:
  Tokenizer(Pretokenizer pretokenizer, BpeModel bpe, SpecialTokenSplitter specials)
      : pretokenizer_(std::move(pretokenizer)),
        bpe_(std::move(bpe)),
        specials_(std::move(specials)) {}

  Pretokenizer pretokenizer_;
  BpeModel bpe_;
  SpecialTokenSplitter specials_;
  std::vector<std::string> tokens_;  // [vocab] texts, byte alphabet
  std::vector<TokenType> types_;     // [vocab]
  StringToId token_to_id_;           // text -> id (the lowest id for duplicated texts)
  std::vector<int32_t> end_of_generation_;  // sorted ids
  std::string pre_name_;
  int32_t bos_ = -1, eos_ = -1, eot_ = -1;
  bool add_bos_ = false, add_eos_ = false;
};

}  // namespace kvc
