// Fitting a generated input to a token budget, as RULER does: the task input is built from a
// number n of haystack units (sentences, list entries, coded words), and we look for the
// largest n whose input still has at most `target_tokens` tokens.
//
// Counting tokens is the expensive part (~1 ms per 1K tokens with the engine's tokenizer), so
// the search interpolates on the measured counts (tokens grow about linearly with n), falls
// back to bisection when interpolation stalls on one side, and stops after kMaxCountCalls
// measurements, keeping the largest n measured to fit. It needs only that build(n) is
// deterministic; it does not rely on the count being monotonic in n.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace kvc::eval {

inline constexpr int kMaxCountCalls = 15;

struct FittedInput {
  int64_t units = 0;    // n chosen
  int64_t tokens = 0;   // count_tokens(input)
  std::string input;    // build(n)
  int count_calls = 0;  // measurements made
};

// build(n) for n in [min_units, max_units]; throws kvc::Error naming `task` when even
// build(min_units) exceeds target_tokens.
FittedInput fit_units_to_tokens(std::string_view task, int64_t target_tokens, int64_t min_units,
                                int64_t max_units, const std::function<std::string(int64_t)>& build,
                                const std::function<int64_t(std::string_view)>& count_tokens);

}  // namespace kvc::eval
