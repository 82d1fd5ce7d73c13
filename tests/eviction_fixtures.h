// Shared by the policy tests (test_planner.cpp, test_baselines.cpp): small caches whose rows
// carry hand-chosen positions and metrics, and lookups into the plans made from them.
#pragma once

#include <cstdint>
#include <vector>

#include "kv/eviction_plan.h"
#include "kv/paged_kv_cache.h"

namespace kvc::test_support {

using Slots = std::vector<int32_t>;

// head_dim 4, f32, poisoned: K/V content is irrelevant to the planners.
inline KvCacheConfig metric_cache_config(int32_t n_layer, int32_t n_head_kv, int32_t block_size,
                                         int32_t num_blocks) {
  return KvCacheConfig{n_layer, n_head_kv, 4, block_size, num_blocks, KvStorageType::kF32, true};
}

// Physical slot of logical slot s of row (l, h).
inline int64_t slot_of(const PagedKvCache& cache, SequenceId seq, int32_t l, int32_t h,
                       int32_t s) {
  const HeadRow& r = cache.row(seq, l, h);
  const int32_t bs = cache.config().block_size;
  return static_cast<int64_t>(r.blocks[static_cast<size_t>(s / bs)]) * bs + s % bs;
}

// Appends KVs with the given positions and metrics to one row.
inline void append_row(PagedKvCache& cache, SequenceId seq, int32_t l, int32_t h,
                       const std::vector<int32_t>& positions, const std::vector<float>& metrics) {
  const int32_t d = cache.config().head_dim;
  const auto n = static_cast<int32_t>(positions.size());
  const int32_t first = cache.row(seq, l, h).length;
  std::vector<float> kv(static_cast<size_t>(n) * d, 0.5f);
  cache.append(seq, l, h, kv.data(), d, kv.data(), d, positions.data(), n);
  for (int32_t i = 0; i < n; ++i) {
    cache.pool().metric()[slot_of(cache, seq, l, h, first + i)] = metrics[static_cast<size_t>(i)];
  }
}

inline std::vector<int32_t> iota_positions(int32_t n) {
  std::vector<int32_t> p(static_cast<size_t>(n));
  for (int32_t i = 0; i < n; ++i) p[static_cast<size_t>(i)] = i;
  return p;
}

// Evicted slots of row (l, h) in the plan; empty when the row is not in it.
inline Slots evicted(const EvictionPlan& plan, int32_t l, int32_t h) {
  for (const RowEviction& r : plan.rows) {
    if (r.layer == l && r.kv_head == h) return r.slots;
  }
  return {};
}

}  // namespace kvc::test_support
