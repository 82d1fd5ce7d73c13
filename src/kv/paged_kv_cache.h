// PagedKvCache: the engine's one KV cache. Owns every head row and, through BlockPool, every
// block. The full cache is this structure with no eviction; KV-Compress evicts per head row.
//
// Layout (docs/design.md §1): for every sequence × layer × KV head there is a head row
// (block table + length). Rows of one sequence may hold different numbers of KVs.
//
// Invariants (checked by check_invariants(); debug builds call it after every sequence removal
// and compaction, tests after every step):
//   - every block is either free in the pool or owned by exactly one head row;
//   - free + owned == total (nothing leaked);
//   - a row of length n owns exactly ceil(n / block_size) blocks; only its last block may be
//     partly filled;
//   - only this class calls BlockPool::allocate/release, and block tables change only in
//     grow(), append(), remove_sequence() and truncate_row() (called by apply_compaction
//     between model steps);
//   - within a model step, between grow() and the forward pass's stores, the newest slots of
//     a row are allocated but not yet written (NaN when poisoned); nothing reads them before
//     the store of the same layer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "kv/block_pool.h"

namespace kvc {

struct KvCacheConfig {
  int32_t n_layer = 0;
  int32_t n_head_kv = 0;
  int32_t head_dim = 0;
  int32_t block_size = 16;
  int32_t num_blocks = 0;
  KvStorageType storage = KvStorageType::kF16;
  bool poison_freed = false;  // see BlockPoolConfig
};

using SequenceId = int32_t;

struct HeadRow {
  std::vector<int32_t> blocks;  // physical block ids, in logical order
  int32_t length = 0;           // KVs held
};

class PagedKvCache {
 public:
  explicit PagedKvCache(const KvCacheConfig& config);

  const KvCacheConfig& config() const { return config_; }

  SequenceId add_sequence();
  // Returns all of the sequence's blocks to the pool. The id may be reused later.
  void remove_sequence(SequenceId seq);
  bool has_sequence(SequenceId seq) const;
  // A new sequence holding a copy of every row of `src` (K, V, metric, positions) in freshly
  // allocated blocks, or -1 (nothing allocated) when the pool has too few free blocks. Lets
  // several policies start from one prefill (`kvc eval`).
  SequenceId copy_sequence(SequenceId src);

  // Free blocks needed so that every head row of `seq` can take `n_tokens` more KVs.
  int64_t blocks_needed(SequenceId seq, int32_t n_tokens) const;
  bool can_append(SequenceId seq, int32_t n_tokens) const {
    return blocks_needed(seq, n_tokens) <= pool_.free_blocks();
  }

  // Raises every head row of `seq` by n_tokens slots, allocating blocks as rows fill, before a
  // model step stores its KVs there through row_view() (kernels/paged_kv_store.h). Caller
  // checked can_append (asserted). Block tables do not change again until the step is done, so
  // the views stay valid for the whole step.
  void grow(SequenceId seq, int32_t n_tokens);

  // Appends n KVs (already RoPE'd keys) to row (seq, layer, kv_head), allocating blocks as it
  // fills them; new KVs start with metric 0. Caller checked can_append (asserted).
  // k, v: [n] rows of head_dim floats with strides k_stride / v_stride; positions: [n].
  void append(SequenceId seq, int32_t layer, int32_t kv_head, const float* k, int64_t k_stride,
              const float* v, int64_t v_stride, const int32_t* positions, int32_t n);

  // Shrinks row (seq, layer, kv_head) to its first `new_length` slots (<= its length) and
  // returns the blocks past ceil(new_length / block_size) to the pool. Slot contents are not
  // touched. Only compaction (kv/compaction.h) calls this, between model steps.
  void truncate_row(SequenceId seq, int32_t layer, int32_t kv_head, int32_t new_length);

  const HeadRow& row(SequenceId seq, int32_t layer, int32_t kv_head) const;
  HeadRow& mutable_row(SequenceId seq, int32_t layer, int32_t kv_head);
  PagedHeadRow row_view(SequenceId seq, int32_t layer, int32_t kv_head) const;

  BlockPool& pool() { return pool_; }
  const BlockPool& pool() const { return pool_; }

  // KVs held by the sequence over all its rows, and the blocks those rows own.
  int64_t retained_kvs(SequenceId seq) const;
  int64_t owned_blocks(SequenceId seq) const;
  // Physical bytes of the blocks the sequence owns.
  size_t bytes_owned(SequenceId seq) const { return owned_blocks(seq) * pool_.block_bytes(); }

  // Verifies every invariant above; aborts with a message on violation. O(blocks).
  void check_invariants() const;

 private:
  struct Sequence {
    bool active = false;
    std::vector<HeadRow> rows;  // [n_layer * n_head_kv], index layer * n_head_kv + kv_head
  };
  const Sequence& sequence(SequenceId seq) const;
  size_t row_index(int32_t layer, int32_t kv_head) const;

  KvCacheConfig config_;
  BlockPool pool_;
  std::vector<Sequence> sequences_;
};

}  // namespace kvc
