#include "engine/word_spans.h"

#include <string>

#include "compress/prefill_metrics.h"

namespace kvc {

std::vector<int32_t> prompt_word_spans(const Tokenizer& tok, std::span<const int32_t> prompt) {
  const auto space = [](char c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r'; };
  std::vector<uint8_t> begins(prompt.size(), 1);
  bool previous_breaks = true;
  for (size_t i = 0; i < prompt.size(); ++i) {
    const bool control = tok.is_control(prompt[i]);
    const std::string piece = control ? std::string() : tok.token_to_piece(prompt[i]);
    begins[i] = previous_breaks || control || piece.empty() || space(piece.front()) ? 1 : 0;
    previous_breaks = control || piece.empty() || space(piece.back());
  }
  return word_span_starts(begins);
}

}  // namespace kvc
