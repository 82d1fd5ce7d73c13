// Special-token splitting: before any pre-tokenization, the text is cut at occurrences of
// control and user-defined token texts ("<|im_start|>"), which become single ids, as llama.cpp's
// tokenizer_st_partition does.
//
// Matching is llama.cpp's, not leftmost-longest: tokens are tried one at a time from the longest
// text to the shortest, each splitting every remaining text fragment at all its occurrences. So
// a longer token wins wherever it overlaps a shorter one.
// Control (and unknown) tokens are matched only when parse_special is true; user-defined tokens
// always are (Hugging Face treats them as part of the vocabulary's text, not as markup).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace kvc {

// A piece of the input: either raw text still to tokenize, or one special token.
struct TextFragment {
  int32_t token = -1;         // special token id, or -1 for raw text
  std::string_view text;      // raw text (empty for a token)
};

struct SpecialToken {
  int32_t id;
  std::string text;
  bool control;  // control or unknown: matched only when parse_special
};

class SpecialTokenSplitter {
 public:
  // Tokens with empty text are ignored (they would match everywhere).
  explicit SpecialTokenSplitter(std::vector<SpecialToken> tokens);

  // Splits `text` into fragments in order; raw fragments are views into `text`.
  std::vector<TextFragment> split(std::string_view text, bool parse_special) const;

 private:
  std::vector<SpecialToken> tokens_;  // sorted by text length, longest first (ties: lower id)
};

}  // namespace kvc
