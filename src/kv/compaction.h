// Compaction (mechanism, docs/design.md §4): turns an EvictionPlan into slot moves that make
// the evicted KVs block-contiguous at the end of each head row, then frees the trailing blocks.
//
// For a row of length n losing k KVs (evicted logical slots E, |E| = k):
//   - every surviving KV in the tail [n-k, n) moves into an evicted slot ("hole") in [0, n-k);
//     the i-th tail survivor (ascending slot) fills the i-th hole (ascending slot);
//   - K, V, metric and position move together (keys are stored after RoPE, so a KV's slot
//     carries no meaning; attention is order-free);
//   - the last ceil(n/bs) - ceil((n-k)/bs) blocks are returned to the pool and the length
//     becomes n-k. Survivors in [0, n-k) that were not moved keep their slot.
//
// Invariants:
//   - plan_compaction only reads the cache; apply_compaction is the only mutation and is
//     applied between model steps, never during a forward pass (the kernels hold raw block
//     table pointers and slot indices while a step runs);
//   - a CompactionPlan is valid only for the cache state it was planned from: no append or
//     other compaction of that sequence in between (row lengths are re-checked on apply);
//   - after apply, every slot at or beyond a row's new length is dead: with poison_freed,
//     freed blocks and the dead tail of a row's last block hold NaN K/V/metric and INT32_MIN
//     positions, so any stray read fails loudly;
//   - in debug builds (no NDEBUG) apply_compaction ends with cache.check_invariants().
#pragma once

#include <cstdint>
#include <vector>

#include "kv/eviction_plan.h"
#include "kv/paged_kv_cache.h"

namespace kvc {

// One KV moved inside one head row: logical slot `from` (in the tail) -> `to` (a hole).
struct SlotMove {
  int32_t from = 0;
  int32_t to = 0;
};

struct RowCompaction {
  int32_t layer = 0;
  int32_t kv_head = 0;
  std::vector<int32_t> evicted;  // [k] logical slots evicted, sorted ascending
  std::vector<SlotMove> moves;   // [<= k] tail survivors -> holes, by ascending `to`
  int32_t old_length = 0;        // n: row length the plan was made for (checked on apply)
  int32_t new_length = 0;        // n - k
  int32_t blocks_freed = 0;      // ceil(n/bs) - ceil((n-k)/bs)
};

struct CompactionPlan {
  SequenceId seq = -1;
  std::vector<RowCompaction> rows;  // rows with at least one evicted KV, in plan order
  int64_t blocks_freed = 0;         // sum of rows[i].blocks_freed
};

// Validates `plan` against the cache (KVC_ASSERT: slots in range, sorted, unique; rows valid
// and not repeated) and derives the moves. O(total evicted KVs). Reads nothing from the pool.
CompactionPlan plan_compaction(const PagedKvCache& cache, SequenceId seq, const EvictionPlan& plan);

// Performs the moves, truncates the rows and returns their trailing blocks to the pool.
// Cost: one K+V copy (2 * head_dim elements) per move, plus poisoning in poisoned builds.
void apply_compaction(PagedKvCache& cache, const CompactionPlan& plan);

}  // namespace kvc
