#include "kv/compaction.h"

#include <cstring>
#include <limits>

#include "util/error.h"

namespace kvc {
namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Physical slot of logical slot s in row r: [num_blocks * block_size] index.
int64_t physical_slot(const HeadRow& r, int32_t s, int32_t bs) {
  return static_cast<int64_t>(r.blocks[static_cast<size_t>(s / bs)]) * bs + s % bs;
}

}  // namespace

CompactionPlan plan_compaction(const PagedKvCache& cache, SequenceId seq,
                               const EvictionPlan& plan) {
  KVC_ASSERT(plan.seq == seq && cache.has_sequence(seq));
  const KvCacheConfig& cfg = cache.config();
  const int32_t bs = cfg.block_size;
  CompactionPlan out;
  out.seq = seq;
  out.rows.reserve(plan.rows.size());
  std::vector<uint8_t> row_seen(static_cast<size_t>(cfg.n_layer) * cfg.n_head_kv, 0);
  for (const RowEviction& ev : plan.rows) {
    KVC_ASSERT(ev.layer >= 0 && ev.layer < cfg.n_layer && ev.kv_head >= 0 &&
               ev.kv_head < cfg.n_head_kv);
    uint8_t& seen = row_seen[static_cast<size_t>(ev.layer) * cfg.n_head_kv + ev.kv_head];
    KVC_ASSERT(!seen);  // a row appears at most once
    seen = 1;
    if (ev.slots.empty()) continue;
    const int32_t n = cache.row(seq, ev.layer, ev.kv_head).length;
    const int32_t k = static_cast<int32_t>(ev.slots.size());
    KVC_ASSERT(k <= n);
    for (int32_t i = 0; i < k; ++i) {
      KVC_ASSERT(ev.slots[i] >= 0 && ev.slots[i] < n);
      KVC_ASSERT(i == 0 || ev.slots[i - 1] < ev.slots[i]);  // sorted and unique
    }
    RowCompaction rc;
    rc.layer = ev.layer;
    rc.kv_head = ev.kv_head;
    rc.evicted = ev.slots;
    rc.old_length = n;
    rc.new_length = n - k;
    rc.blocks_freed = static_cast<int32_t>(ceil_div(n, bs) - ceil_div(n - k, bs));
    // Holes are the evicted slots below new_length: a prefix of the sorted list. Tail
    // survivors are the slots in [new_length, n) not in the (also sorted) rest of the list.
    // There are equally many: k - holes evicted slots lie in the tail of k slots.
    int32_t holes = 0;
    while (holes < k && ev.slots[holes] < rc.new_length) ++holes;
    rc.moves.reserve(static_cast<size_t>(holes));
    int32_t next_evicted = holes;
    int32_t next_hole = 0;
    for (int32_t s = rc.new_length; s < n; ++s) {
      if (next_evicted < k && ev.slots[next_evicted] == s) {
        ++next_evicted;
        continue;
      }
      rc.moves.push_back(SlotMove{s, ev.slots[next_hole++]});
    }
    KVC_ASSERT(next_hole == holes && next_evicted == k);
    out.blocks_freed += rc.blocks_freed;
    out.rows.push_back(std::move(rc));
  }
  return out;
}

void apply_compaction(PagedKvCache& cache, const CompactionPlan& plan) {
  const int32_t bs = cache.config().block_size;
  BlockPool& pool = cache.pool();
  const size_t kv_bytes = pool.row_bytes();
  float* metric = pool.metric();
  float* mass = pool.mass();
  int32_t* positions = pool.positions();
  for (const RowCompaction& rc : plan.rows) {
    const HeadRow& r = cache.row(plan.seq, rc.layer, rc.kv_head);
    KVC_ASSERT(r.length == rc.old_length);  // the plan is stale
    for (const SlotMove& m : rc.moves) {
      const int64_t from = physical_slot(r, m.from, bs);
      const int64_t to = physical_slot(r, m.to, bs);
      std::memcpy(pool.k_slot(to), pool.k_slot(from), kv_bytes);
      std::memcpy(pool.v_slot(to), pool.v_slot(from), kv_bytes);
      metric[to] = metric[from];
      mass[to] = mass[from];
      positions[to] = positions[from];
    }
    // Dead slots that stay owned: the tail of the new last block. The blocks past it are
    // poisoned by the pool when released.
    const int32_t owned_end = static_cast<int32_t>(ceil_div(rc.new_length, bs)) * bs;
    for (int32_t s = rc.new_length; s < owned_end; ++s) pool.poison_slot(physical_slot(r, s, bs));
    cache.truncate_row(plan.seq, rc.layer, rc.kv_head, rc.new_length);
  }
#ifndef NDEBUG
  cache.check_invariants();
#endif
}

}  // namespace kvc
