// Pre-tokenizer: splits text into "words" before BPE, following llama.cpp (llama-vocab.cpp,
// llm_tokenizer_bpe) so that token ids match it exactly.
//
// A scheme is an ordered list of regexes named by the GGUF key `tokenizer.ggml.pre`. They apply
// one after the other as in llama.cpp's unicode_regex_split: regex k runs separately inside each
// piece produced by regexes 0..k-1 (a piece boundary is a hard boundary: lookaheads cannot see
// past it), and both the matches and the unmatched gaps between them become pieces. So for
// 'smollm' (= starcoder), "\p{N}" first isolates every digit, then the GPT-2 regex splits the rest.
//
// Regexes run on PCRE2 in UTF + UCP mode, so \p{L}, \p{N} and \s follow Unicode properties.
// llama.cpp uses its own Unicode tables (and hand-written matchers for the GPT-2 and Llama 3
// regexes); the two agree except for code points whose category changed between Unicode
// versions.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace kvc {

struct PretokenizerScheme {
  std::string name;                  // canonical name, e.g. "smollm" -> "starcoder"-style scheme
  std::vector<std::string> regexes;  // applied in order
  // llama.cpp's `ignore_merges` (Llama 3): a word already in the vocabulary is emitted whole,
  // without running the merges.
  bool ignore_merges = false;
  // llama.cpp's default for add_bos before the GGUF key `tokenizer.ggml.add_bos_token` overrides.
  bool add_bos_default = false;
};

// The scheme for a `tokenizer.ggml.pre` value ("" means "default", as in llama.cpp).
// Throws kvc::Error naming the value when it is not one we implement.
PretokenizerScheme find_pretokenizer_scheme(std::string_view pre_name);

// Compiled regexes of one scheme. Immutable after construction; split() may run concurrently.
class Pretokenizer {
 public:
  explicit Pretokenizer(const PretokenizerScheme& scheme);
  ~Pretokenizer();
  Pretokenizer(Pretokenizer&&) noexcept;
  Pretokenizer& operator=(Pretokenizer&&) noexcept;

  // Splits valid UTF-8 `text` into consecutive pieces (views into `text`) that cover it exactly.
  // The caller sanitizes untrusted bytes first (sanitize_utf8).
  std::vector<std::string_view> split(std::string_view text) const;

 private:
  struct Compiled;
  std::vector<std::unique_ptr<Compiled>> compiled_;  // one per regex, in order
};

}  // namespace kvc
