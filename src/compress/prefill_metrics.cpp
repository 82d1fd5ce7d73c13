#include "compress/prefill_metrics.h"

#include <algorithm>
#include <vector>

#include "util/error.h"

namespace kvc {

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
                           std::span<const int32_t> span_start, MetricMerge merge,
                           PoolReach reach) {
  const KvCacheConfig& c = cache.config();
  KVC_ASSERT(scores.n_layer == c.n_layer && scores.n_head == c.n_head_kv * group_size);
  KVC_ASSERT(pool_kernel >= 1 && pool_kernel % 2 == 1);
  const int32_t bs = c.block_size;
  const int32_t half = pool_kernel / 2;
  const int32_t after = reach == PoolReach::kSuccessors ? 0 : half;  // positions after a KV
  const int32_t* positions = cache.pool().positions();
  float* dst = cache.pool().metric();
  std::vector<int64_t> slot;    // [n] physical slot of each logical slot
  std::vector<int32_t> order;   // [n] logical slots in position order
  std::vector<int32_t> pos;     // [n] positions, in that order
  std::vector<float> pooled;    // [n] one query head's pooled scores, in that order
  std::vector<float> metric;    // [n] the group sum, in that order
  for (int32_t layer = 0; layer < c.n_layer; ++layer) {
    for (int32_t h = 0; h < c.n_head_kv; ++h) {
      const HeadRow& row = cache.row(seq, layer, h);
      const int32_t n = row.length;
      KVC_ASSERT(n <= scores.stride);
      slot.resize(static_cast<size_t>(n));
      order.resize(static_cast<size_t>(n));
      pos.resize(static_cast<size_t>(n));
      for (int32_t s = 0; s < n; ++s) {
        slot[s] = static_cast<int64_t>(row.blocks[s / bs]) * bs + s % bs;
        order[s] = s;
      }
      const auto position_of = [&](int32_t s) { return positions[slot[s]]; };
      if (!std::is_sorted(order.begin(), order.end(),
                          [&](int32_t a, int32_t b) { return position_of(a) < position_of(b); })) {
        std::sort(order.begin(), order.end(),
                  [&](int32_t a, int32_t b) { return position_of(a) < position_of(b); });
      }
      for (int32_t i = 0; i < n; ++i) pos[i] = position_of(order[i]);
      pooled.resize(static_cast<size_t>(n));
      metric.assign(static_cast<size_t>(n), 0.0f);
      for (int32_t g = 0; g < group_size; ++g) {
        const float* raw = scores.head(layer, h * group_size + g);
        for (int32_t i = 0; i < n; ++i) {
          float m = raw[order[i]];
          for (int32_t j = i - 1; j >= 0 && pos[i] - pos[j] <= half; --j) {
            m = std::max(m, raw[order[j]]);
          }
          for (int32_t j = i + 1; j < n && pos[j] - pos[i] <= after; ++j) {
            m = std::max(m, raw[order[j]]);
          }
          pooled[i] = m;
        }
        if (!span_start.empty()) {
          // Spans are runs of positions; in position order a span's KVs are adjacent.
          for (int32_t a = 0; a < n;) {
            KVC_ASSERT(pos[a] >= 0 && pos[a] < static_cast<int32_t>(span_start.size()));
            const int32_t span = span_start[pos[a]];
            int32_t b = a + 1;
            while (b < n && span_start[pos[b]] == span) ++b;
            const float best = *std::max_element(pooled.begin() + a, pooled.begin() + b);
            std::fill(pooled.begin() + a, pooled.begin() + b, best);
            a = b;
          }
        }
        for (int32_t i = 0; i < n; ++i) metric[i] += pooled[i];
      }
      for (int32_t i = 0; i < n; ++i) {
        float& m = dst[slot[order[i]]];
        switch (merge) {
          case MetricMerge::kMax: m = std::max(m, metric[i]); break;
          case MetricMerge::kAdd: m += metric[i]; break;
          case MetricMerge::kReplace: m = metric[i]; break;
        }
      }
    }
  }
}

void write_prefill_mass(PagedKvCache& cache, SequenceId seq, const ObservationScores& scores,
                        int32_t group_size, MetricMerge merge) {
  const KvCacheConfig& c = cache.config();
  KVC_ASSERT(scores.n_layer == c.n_layer && scores.n_head == c.n_head_kv * group_size);
  const int32_t bs = c.block_size;
  float* dst = cache.pool().mass();
  for (int32_t layer = 0; layer < c.n_layer; ++layer) {
    for (int32_t h = 0; h < c.n_head_kv; ++h) {
      const HeadRow& row = cache.row(seq, layer, h);
      KVC_ASSERT(row.length <= scores.stride);
      for (int32_t s = 0; s < row.length; ++s) {
        float sum = 0.0f;
        for (int32_t g = 0; g < group_size; ++g) sum += scores.head(layer, h * group_size + g)[s];
        float& m = dst[static_cast<int64_t>(row.blocks[s / bs]) * bs + s % bs];
        switch (merge) {
          case MetricMerge::kMax: m = std::max(m, sum); break;
          case MetricMerge::kAdd: m += sum; break;
          case MetricMerge::kReplace: m = sum; break;
        }
      }
    }
  }
}

}  // namespace kvc
