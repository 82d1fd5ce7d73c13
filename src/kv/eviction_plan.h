// EvictionPlan: the plain record a compression policy (compress/) hands to the compaction
// mechanism (kv/compaction.h). It lives in kv/ so that the mechanism never includes a policy.
//
// Contract (checked by plan_compaction, KVC_ASSERT: a bad plan is a programmer error):
//   - `seq` is a live sequence of the cache the plan was made from, and the cache has not been
//     mutated (no append, no other compaction) between planning and compaction;
//   - each (layer, kv_head) appears at most once in `rows`; rows that lose nothing are omitted;
//   - `slots` are logical slots of that row (0 <= slot < row length), sorted ascending, unique.
// `blocks_to_free` and `kvs_evicted` are totals the policy promises; compaction re-derives the
// blocks it frees from the row lengths and the tests check that the two agree.
#pragma once

#include <cstdint>
#include <vector>

#include "kv/paged_kv_cache.h"

namespace kvc {

struct RowEviction {
  int32_t layer = 0;
  int32_t kv_head = 0;
  std::vector<int32_t> slots;  // [k] logical slots to evict, sorted ascending, unique
};

struct EvictionPlan {
  SequenceId seq = -1;
  std::vector<RowEviction> rows;  // only rows that lose at least one KV
  int64_t blocks_to_free = 0;     // physical blocks the plan frees once compacted
  int64_t kvs_evicted = 0;        // sum of rows[i].slots.size()
};

}  // namespace kvc
