// Turns what the prompt's observing queries saw (ObservationScores, per query head) into the
// KV-Compress eviction metric of every KV (docs/design.md §2):
//
//   metric(l, h_kv, s) = sum over query heads h in the group of h_kv of pool_k(scores[l][h])[s]
//
// pool_k is a max-pool along the key axis (the row's logical slot order, which is position
// order right after prefill), kernel k, stride 1, same padding (padding never wins the max);
// k = 1 means no pooling (full observation). Pooling per query head BEFORE summing over the
// group is what the method specifies (SnapKV pools per head too).
#pragma once

#include <cstdint>

#include "kv/observation_scores.h"
#include "kv/paged_kv_cache.h"

namespace kvc {

// Overwrites the metric of every KV of `seq` (its rows must not have moved since observation).
void write_prefill_metrics(PagedKvCache& cache, SequenceId seq, const ObservationScores& scores,
                           int32_t group_size, int32_t pool_kernel);

// out[n] = max over in[max(0, s - k/2) .. min(n-1, s + k/2)]. k odd (asserted).
void max_pool_1d(const float* in, float* out, int32_t n, int32_t kernel);

}  // namespace kvc
