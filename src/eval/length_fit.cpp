#include "eval/length_fit.h"

#include <algorithm>
#include <cmath>

#include "util/error.h"

namespace kvc::eval {

FittedInput fit_units_to_tokens(std::string_view task, int64_t target_tokens, int64_t min_units,
                                int64_t max_units, const std::function<std::string(int64_t)>& build,
                                const std::function<int64_t(std::string_view)>& count_tokens) {
  KVC_ASSERT(min_units >= 0 && min_units <= max_units);
  FittedInput best;  // the largest n measured to fit
  best.units = min_units;
  best.input = build(min_units);
  best.tokens = count_tokens(best.input);
  best.count_calls = 1;
  if (best.tokens > target_tokens) {
    fail("task {}: target_tokens {} is too small: the shortest input of this task has {} tokens",
         task, target_tokens, best.tokens);
  }
  if (min_units == max_units) return best;

  // Tokens per unit, first guessed from bytes (no count needed), then from measurements.
  const int64_t probe = std::min(max_units, min_units + 64);
  const double bytes_per_unit = static_cast<double>(build(probe).size() - best.input.size()) /
                                static_cast<double>(probe - min_units);
  const double tokens_per_byte = static_cast<double>(best.tokens) /
                                 static_cast<double>(std::max<size_t>(1, best.input.size()));
  double slope = std::max(1e-3, bytes_per_unit * tokens_per_byte);

  int64_t hi = max_units + 1;  // smallest n known not to fit (max_units + 1: none known yet)
  int64_t hi_tokens = -1;
  int same_side = 0;  // consecutive measurements that moved the same bound
  bool last_moved_lo = false;
  while (best.count_calls < kMaxCountCalls && hi - best.units > 1) {
    const int64_t lo = best.units;
    double guess;
    if (hi_tokens < 0) {
      // No upper bound yet: extrapolate, aiming 2% past the target so the next point brackets it.
      guess =
          static_cast<double>(lo) +
          (1.02 * static_cast<double>(target_tokens) - static_cast<double>(best.tokens)) / slope;
    } else if (same_side >= 2) {
      guess = 0.5 * static_cast<double>(lo + hi);
    } else {
      const double span = static_cast<double>(std::max<int64_t>(1, hi_tokens - best.tokens));
      guess = static_cast<double>(lo) + static_cast<double>(hi - lo) *
                                            static_cast<double>(target_tokens - best.tokens) / span;
    }
    int64_t n = std::isfinite(guess) ? static_cast<int64_t>(std::llround(guess)) : hi - 1;
    n = std::clamp(n, lo + 1, std::min(hi - 1, max_units));

    std::string input = build(n);
    const int64_t tokens = count_tokens(input);
    ++best.count_calls;
    const bool fits = tokens <= target_tokens;
    same_side = (best.count_calls > 2 && fits == last_moved_lo) ? same_side + 1 : 1;
    last_moved_lo = fits;
    if (fits) {
      if (n > lo)
        slope =
            std::max(1e-3, static_cast<double>(tokens - best.tokens) / static_cast<double>(n - lo));
      best.units = n;
      best.tokens = tokens;
      best.input = std::move(input);
      if (tokens == target_tokens) break;
    } else {
      hi = n;
      hi_tokens = tokens;
    }
  }
  return best;
}

}  // namespace kvc::eval
