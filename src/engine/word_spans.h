// Word spans of a prompt for CompressionConfig::word_spans (compress/prefill_metrics.h): which
// tokens belong to one whitespace-delimited word, from the tokenizer's pieces.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "model/tokenizer/tokenizer.h"

namespace kvc {

// For every prompt position, the first position of its span. A token begins a new span when
// its piece starts with whitespace, when the previous piece ended with whitespace, and at and
// after control tokens (chat-template markers); every other token continues the word. Runs
// longer than kMaxWordSpan tokens are split.
std::vector<int32_t> prompt_word_spans(const Tokenizer& tok, std::span<const int32_t> prompt);

}  // namespace kvc
