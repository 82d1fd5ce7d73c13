// KV-Compress eviction schedule (policy, docs/design.md §3): chooses which KVs of one
// sequence to evict so that it keeps at most `target_blocks` blocks, with a rate that varies
// per (layer, KV head). Reads the cache, never mutates it; the result is a plain EvictionPlan
// for kv/compaction.h.
//
// The rule, exactly:
//   1. Protection is by stored position, over the whole sequence: with P = the largest
//      position any row of the sequence holds, a KV is protected when its position
//      >= P - protected_window + 1 or < sink_tokens. Protected KVs, and KVs whose metric is not
//      finite (NaN/inf: a bug upstream, never a reason to evict), count as metric +inf.
//   2. Each row sorts its KVs by (metric, logical slot) ascending.
//   3. The sorted list is cut into candidates: the first holds the row's `hanging` KVs
//      (length % bs, or bs when the last block is full), each later one the next bs KVs, so
//      evicting a row's first e candidates frees exactly e blocks. A candidate's key is the
//      largest metric in it.
//   4. All candidates of the sequence with a finite key are ordered by
//      (key, layer, kv_head, candidate index) and the lowest F = max(0, owned - target_blocks)
//      are evicted (a selection, O(candidates), equivalent to the global sort). Keys rise
//      along a row and the order breaks ties by candidate index, so each row gives up a prefix
//      of its sorted order.
//
// Guarantees (asserted by tests/test_planner.cpp):
//   - exactly min(F, E) blocks are freed by the compaction of the plan, E = number of
//     finite-key candidates; protected KVs are never evicted;
//   - within a row: every evicted KV's metric <= every kept KV's metric (a sorted prefix);
//   - across rows: every evicted KV's metric <= the key of every kept finite-key candidate
//     (block granularity: a kept KV may have a lower metric than an evicted KV of another row
//     when its candidate holds a higher-metric KV);
//   - when E >= F > 0 the sequence ends with exactly target_blocks blocks, so its retained
//     KVs R satisfy target*bs - R_nonempty*(bs-1) <= R <= target*bs, R_nonempty <= L*H rows.
//   - deterministic: the same cache state gives the same plan.
// Emptying a row: allowed, as in the paper, when every KV of the row is evictable (only
// possible with protected_window = 0 and sink_tokens = 0, or rows that no longer hold the
// newest tokens); the default window keeps min(length, 8) KVs in every row.
//
// Cost: one radix sort per row (O(n), 3 passes of 11 bits) plus an O(candidates) selection;
// buffers are sized once per call. Rows are spread over OpenMP threads when the sequence holds
// >= 16K KVs (the plan is identical for any thread count). bench/bench_compression: 30 layers
// x 3 heads x 8K tokens plans in ~25 ms on one core, ~13 ms on two, of a slow 2-core VM (a
// single-threaded decode step's attention alone at that context: 85-155 ms there).
#pragma once

#include <cstdint>

#include "kv/eviction_plan.h"
#include "kv/paged_kv_cache.h"

namespace kvc {

struct PlannerOptions {
  int32_t protected_window = 8;  // most recent positions never evicted (>= 0)
  int32_t sink_tokens = 0;       // first positions never evicted (>= 0)
  // Per-row floor inside the global order, as a share of the mean row budget
  // (target_blocks * bs / rows): each row's top floor(head_floor * mean) KVs by metric are
  // never evicted. 0: the paper's rule. In [0, 1].
  double head_floor = 0.0;
  // Step 4 by marginal error instead of by key (docs/design.md §3, "Marginal error"): a row
  // giving up the prefix E of its sorted order costs
  //   cost(E) = M_E + (f / (1 - f))^2 * M_K,   f = A_E / A,
  // with M_E, M_K the metric sums of E and of the rest K of the row, A_E and A the attention
  // mass (PagedKvPool::mass) of E and of the whole row; the F candidates are taken one at a
  // time, each the cheapest next candidate of any row by cost(e + 1) - cost(e). The first term
  // is what the metric already measures; the second is what renormalizing the kept
  // attention costs once a row has lost a share f of its mass. With no mass (A = 0) it is the
  // key rule with sums instead of maxima. false: the paper's rule.
  bool marginal_error = false;
};

// Throws kvc::Error for negative options (they come from the CLI / requests).
void validate_planner_options(const PlannerOptions& options);

EvictionPlan plan_kvcompress_eviction(const PagedKvCache& cache, SequenceId seq,
                                      int64_t target_blocks, const PlannerOptions& options);

}  // namespace kvc
