// Baseline eviction policies (docs/design.md §6), re-implemented on the same paged cache as
// KV-Compress so that they free real memory: each planner reads the cache's per-slot metric and
// positions and returns a plain EvictionPlan; kv/compaction.h frees the blocks. Planners only
// read the cache.
//
// Budget: every policy gets the same physical budget, `target_blocks` (compress/budget.h), and
// keeps at most that many blocks (times `budget_multiplier`, capped by `max_blocks`). Budgets
// are whole blocks per row, so a row keeping k KVs owns exactly ceil(k / bs) <= budget blocks:
//   uniform (streamingllm, h2o, snapkv, random): every row keeps
//       C_row = min(m * floor(T / (L*H)), floor(max_blocks / (L*H))) * bs KVs
//     (T = target_blocks, m = budget_multiplier), so blocks <= L*H*C_row/bs <= m*T. The
//     remainder T mod (L*H) blocks is left unused (rounding down keeps every row equal).
//   pyramidkv: see pyramid_row_budgets.   ada-snapkv: see ada_row_budgets.
// A sequence whose owned blocks already fit the policy's total is left alone (empty plan).
//
// Within a row every policy keeps the KVs of highest rank, rank = (tier, value) descending,
// ties by lower logical slot; with P = the newest position held by any row of the sequence:
//   tier 3  position >= P - protected_window + 1 (the protected window, newest first)
//   tier 2  position < sink_tokens (sinks, oldest first)
//   tier 1  non-finite metric (an upstream bug: never a reason to evict)
//   tier 0  the policy's value: metric (h2o, snapkv, pyramidkv, ada), position (streamingllm:
//           most recent first), a seeded hash of (seed, layer, kv_head, position) (random).
// StreamingLLM uses only sinks + tier 0 (its recent tokens are its tier 0). When a row's
// budget is smaller than its protected KVs the budget wins: the highest-ranked protected KVs
// stay (so a forced pass always frees memory).
//
// Cost: O(n) per row (selection) plus a sort of each row's evicted slots.
#pragma once

#include <cstdint>
#include <vector>

#include "kv/eviction_plan.h"
#include "kv/paged_kv_cache.h"

namespace kvc {

struct BaselineOptions {
  int32_t protected_window = 8;    // newest positions kept first (>= 0; not streamingllm)
  int32_t sink_tokens = 0;         // first positions kept first (streamingllm: its sinks)
  int32_t budget_multiplier = 1;   // per-row budget x m (charge_repeated_kvs: group size)
  int64_t max_blocks = INT64_MAX;  // hard cap on blocks kept, after the multiplier
  uint64_t seed = 0;               // random only
  double ada_safeguard = 0.2;      // ada-snapkv: fraction of the mean head budget each head
                                   // keeps before the layer-wide selection (Ada-KV's alpha)
};

// Throws kvc::Error for negative window/sinks or multiplier < 1 (values come from the CLI).
void validate_baseline_options(const BaselineOptions& options);

// Total blocks the policy may keep: min(m * T, max_blocks) (T clamped at 0).
int64_t baseline_total_blocks(int64_t target_blocks, const BaselineOptions& options);

// C_row of the uniform policies, in KVs (a multiple of block_size).
int64_t uniform_row_budget(const KvCacheConfig& config, int64_t target_blocks,
                           const BaselineOptions& options);

// PyramidKV's arithmetic schedule, KVs per row for each layer ([n_layer], multiples of bs,
// non-increasing with depth). With B = baseline_total_blocks, mean per row mu = B*bs/(L*H),
// always-kept w = protected_window + sink_tokens, s = mu - w, beta = 20 (PyramidKV's default):
//   lo = s / beta,  hi = 2*s - lo,  c_l = w + hi - l * (hi - lo) / (L - 1),   sum_l c_l = L*mu
// (PyramidKV: max_num = 2*(C - w) - min_num, steps = (max_num - min_num) / (L - 1)), then each
// layer rounds down to blocks but keeps room for its window: budget_l = max(floor(c_l / bs),
// ceil(w / bs)) * bs. If then H * sum_l budget_l / bs > B, blocks are taken back one at a time
// from the largest layer budget (the deepest of equal ones) until it fits, so the total never
// exceeds B and budgets stay non-increasing. L == 1 or mu <= w: c_l = mu for every layer.
std::vector<int64_t> pyramid_row_budgets(const KvCacheConfig& config, int64_t target_blocks,
                                         const BaselineOptions& options);

// Ada-KV's per-head allocation, KVs kept per row ([L*H], layer-major). Every layer gets the
// same block budget B_l = min(m * floor(T / L), floor(max_blocks / L)); inside a layer each head
// first takes its own top r = floor(alpha * B_l*bs / H) KVs (Ada-KV's safeguard, alpha =
// ada_safeguard, 0.2 as in Ada-KV/kvpress; 0 = the pure rule), then the top B_l*bs - sum r of
// the rest, by rank across all its heads, are selected (ties: lower head, then lower slot);
// k_h = the count selected in head h. Rounding to blocks (largest remainder): head h gets
// floor(k_h / bs) blocks, then the B_l - sum floor blocks left go one each to the heads with
// the largest k_h mod bs > 0 (ties: lower head); the row keeps min(length, blocks_h * bs).
std::vector<int64_t> ada_row_budgets(const PagedKvCache& cache, SequenceId seq,
                                     int64_t target_blocks, const BaselineOptions& options);

EvictionPlan plan_streamingllm_eviction(const PagedKvCache& cache, SequenceId seq,
                                        int64_t target_blocks, const BaselineOptions& options);
// H2O and SnapKV share the rule (uniform budget, protected window + top metric); they differ in
// the metric the engine writes (H2O: L1 accumulated over all queries; SnapKV: L1 of the last
// w queries, max-pooled).
EvictionPlan plan_h2o_eviction(const PagedKvCache& cache, SequenceId seq, int64_t target_blocks,
                               const BaselineOptions& options);
EvictionPlan plan_snapkv_eviction(const PagedKvCache& cache, SequenceId seq, int64_t target_blocks,
                                  const BaselineOptions& options);
EvictionPlan plan_pyramidkv_eviction(const PagedKvCache& cache, SequenceId seq,
                                     int64_t target_blocks, const BaselineOptions& options);
EvictionPlan plan_ada_snapkv_eviction(const PagedKvCache& cache, SequenceId seq,
                                      int64_t target_blocks, const BaselineOptions& options);
EvictionPlan plan_random_eviction(const PagedKvCache& cache, SequenceId seq, int64_t target_blocks,
                                  const BaselineOptions& options);

}  // namespace kvc
