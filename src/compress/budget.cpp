#include "compress/budget.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "util/error.h"

namespace kvc {
namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Largest C we accept: far beyond any context, small enough that C*L*H fits an int64 exactly.
constexpr double kMaxTokens = 1e12;

}  // namespace

void validate_budget(const CacheBudget& b) {
  if (!std::isfinite(b.value)) fail("cache budget value must be finite, got {}", b.value);
  switch (b.kind) {
    case CacheBudget::kMaxCacheTokens:
      if (b.value < 1.0 || b.value > kMaxTokens || b.value != std::floor(b.value)) {
        fail("max_cache_tokens must be a whole number in [1, 1e12], got {}", b.value);
      }
      break;
    case CacheBudget::kCompressionRate:
      if (b.value < 1.0) fail("compression rate must be >= 1, got {}", b.value);
      if (b.min_cache < 0) fail("min_cache must be >= 0, got {}", b.min_cache);
      break;
    case CacheBudget::kFractionKept:
      if (!(b.value > 0.0 && b.value <= 1.0)) {
        fail("fraction kept must be in (0, 1], got {}", b.value);
      }
      break;
    default:
      fail("unknown cache budget kind {}", static_cast<int>(b.kind));
  }
}

std::string describe(const CacheBudget& b) {
  switch (b.kind) {
    case CacheBudget::kMaxCacheTokens:
      return fmt::format("max_cache_tokens={}", b.value);
    case CacheBudget::kCompressionRate:
      return fmt::format("compression_rate={} (min_cache {})", b.value, b.min_cache);
    case CacheBudget::kFractionKept:
      return fmt::format("fraction_kept={}", b.value);
  }
  return "unknown";
}

double cache_tokens_per_row(const CacheBudget& b, int64_t prompt_len, const PagedKvCache& cache,
                            SequenceId seq) {
  validate_budget(b);
  KVC_ASSERT(prompt_len >= 0);
  const KvCacheConfig& cfg = cache.config();
  switch (b.kind) {
    case CacheBudget::kMaxCacheTokens:
      return b.value;
    case CacheBudget::kCompressionRate: {
      const double bs = cfg.block_size;
      const double c = std::floor((static_cast<double>(prompt_len) / b.value - 1.0) / bs) * bs;
      return std::max(static_cast<double>(b.min_cache), c);
    }
    case CacheBudget::kFractionKept: {
      const double rows = static_cast<double>(cfg.n_layer) * cfg.n_head_kv;
      return b.value * static_cast<double>(cache.retained_kvs(seq)) / rows;
    }
  }
  return 0.0;
}

int64_t target_blocks(const CacheBudget& b, int64_t prompt_len, const PagedKvCache& cache,
                      SequenceId seq) {
  const KvCacheConfig& cfg = cache.config();
  const int64_t rows = static_cast<int64_t>(cfg.n_layer) * cfg.n_head_kv;
  if (b.kind == CacheBudget::kFractionKept) {
    validate_budget(b);
    if (b.value == 1.0) return cache.owned_blocks(seq);
    // KVs kept over all rows = ceil(f * retained), computed from f directly (not from the
    // rounded mean C) so that no precision is lost on long sequences.
    const auto kvs =
        static_cast<int64_t>(std::ceil(b.value * static_cast<double>(cache.retained_kvs(seq))));
    return ceil_div(kvs, cfg.block_size);
  }
  // C is a whole number here (kMaxCacheTokens validated integral; kCompressionRate a multiple
  // of bs or min_cache).
  const auto c = static_cast<int64_t>(cache_tokens_per_row(b, prompt_len, cache, seq));
  return ceil_div(c * rows, cfg.block_size);
}

}  // namespace kvc
