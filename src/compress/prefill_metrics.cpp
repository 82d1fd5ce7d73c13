#include "compress/prefill_metrics.h"

#include <algorithm>
#include <vector>

#include "util/error.h"

namespace kvc {

void max_pool_1d(const float* in, float* out, int32_t n, int32_t kernel) {
  KVC_ASSERT(kernel >= 1 && kernel % 2 == 1);
  const int32_t half = kernel / 2;
  for (int32_t s = 0; s < n; ++s) {
    const int32_t lo = std::max(0, s - half);
    const int32_t hi = std::min(n - 1, s + half);
    out[s] = *std::max_element(in + lo, in + hi + 1);
  }
}

void span_max(float* v, int32_t n, const int32_t* span_start) {
  for (int32_t a = 0; a < n;) {
    int32_t b = a + 1;
    while (b < n && span_start[b] == a) ++b;
    const float m = *std::max_element(v + a, v + b);
    std::fill(v + a, v + b, m);
    a = b;
  }
}

std::vector<int32_t> word_span_starts(std::span<const uint8_t> begins_word) {
  std::vector<int32_t> start(begins_word.size());
  int32_t current = 0;
  for (size_t i = 0; i < begins_word.size(); ++i) {
    const auto pos = static_cast<int32_t>(i);
    if (i == 0 || begins_word[i] || pos - current >= kMaxWordSpan) current = pos;
    start[i] = current;
  }
  return start;
}

void write_prefill_metrics(PagedKvCache& cache, SequenceId seq, const ObservationScores& scores,
                           int32_t group_size, int32_t pool_kernel,
                           std::span<const int32_t> span_start) {
  const KvCacheConfig& c = cache.config();
  KVC_ASSERT(scores.n_layer == c.n_layer && scores.n_head == c.n_head_kv * group_size);
  const int32_t bs = c.block_size;
  std::vector<float> pooled;
  std::vector<float> metric;
  for (int32_t layer = 0; layer < c.n_layer; ++layer) {
    for (int32_t h = 0; h < c.n_head_kv; ++h) {
      const HeadRow& row = cache.row(seq, layer, h);
      KVC_ASSERT(row.length <= scores.stride);
      pooled.resize(static_cast<size_t>(row.length));
      metric.assign(static_cast<size_t>(row.length), 0.0f);
      for (int32_t g = 0; g < group_size; ++g) {
        max_pool_1d(scores.head(layer, h * group_size + g), pooled.data(), row.length, pool_kernel);
        if (!span_start.empty()) {
          KVC_ASSERT(static_cast<int32_t>(span_start.size()) >= row.length);
          span_max(pooled.data(), row.length, span_start.data());
        }
        for (int32_t s = 0; s < row.length; ++s) metric[s] += pooled[s];
      }
      float* dst = cache.pool().metric();
      for (int32_t s = 0; s < row.length; ++s) {
        dst[static_cast<int64_t>(row.blocks[s / bs]) * bs + s % bs] = metric[s];
      }
    }
  }
}

}  // namespace kvc
