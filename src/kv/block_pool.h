// The physical KV memory: a fixed number of blocks, each holding `block_size` token slots of
// ONE (layer, KV head). Allocated once at start-up; nothing grows afterwards.
//
// Invariant: a block id is either free or handed out (owned by exactly one head row of
// PagedKvCache, which is the only caller of allocate/release).
//
// Allocation takes the lowest free id, so the blocks a row gains one after another lie at
// rising addresses wherever the pool has room, however blocks were freed before. (A LIFO free
// list handed a recycled pool's blocks out in falling order, and decode attention over such
// rows ran at about half the speed: the streams of 2 KiB blocks walked memory backwards.)
// With poison_freed (tests, `--poison-kv`), released blocks are filled with NaN keys/values (a
// NaN scale for q8_0), metric NaN and
// position INT32_MIN (so causal masking cannot hide the slot): any stray read shows up as NaN.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "kernels/paged_attention.h"
#include "util/huge_page_buffer.h"
#include "util/unbacked_vector.h"

namespace kvc {

struct BlockPoolConfig {
  int32_t num_blocks = 0;
  int32_t block_size = 16;
  int32_t head_dim = 64;
  KvStorageType storage = KvStorageType::kF16;
  bool poison_freed = false;  // NaN-fill free and dead slots (tests); costs a write per free
};

class BlockPool {
 public:
  explicit BlockPool(const BlockPoolConfig& config);

  // Returns the lowest free block id, or -1 when none is left.
  int32_t allocate();
  void release(int32_t block);

  int32_t num_blocks() const { return config_.num_blocks; }
  int32_t free_blocks() const { return n_free_; }
  int32_t used_blocks() const { return num_blocks() - free_blocks(); }
  int32_t block_size() const { return config_.block_size; }
  int32_t head_dim() const { return config_.head_dim; }
  KvStorageType storage() const { return config_.storage; }

  // Bytes of one block: K + V + metric + mass + position for block_size slots.
  size_t block_bytes() const;
  // Bytes of one slot's K (or V) row: kv_row_bytes(storage, head_dim).
  size_t row_bytes() const { return row_bytes_; }

  // Raw views for kernels. k/v: [num_blocks * block_size] slot rows; metric/positions:
  // [num_blocks, block_size].
  PagedKvPool view();
  uint8_t* k_slot(int64_t slot) { return k_.data() + slot * row_bytes_; }
  uint8_t* v_slot(int64_t slot) { return v_.data() + slot * row_bytes_; }
  float* metric() { return metric_.data(); }
  float* mass() { return mass_.data(); }
  int32_t* positions() { return positions_.data(); }
  // Read-only views of the same slots (planners and tests read through a const cache).
  const uint8_t* k_slot(int64_t slot) const { return k_.data() + slot * row_bytes_; }
  const uint8_t* v_slot(int64_t slot) const { return v_.data() + slot * row_bytes_; }
  const float* metric() const { return metric_.data(); }
  const float* mass() const { return mass_.data(); }
  const int32_t* positions() const { return positions_.data(); }

  bool is_free(int32_t block) const {
    return ((free_bits_[static_cast<size_t>(block) / 64] >> (block % 64)) & 1) != 0;
  }

  // Marks one slot unreadable (NaN K/V/metric/mass, INT32_MIN position) when poison_freed is on:
  // freed blocks, and dead slots past a row's length after compaction.
  void poison_slot(int64_t slot);

 private:
  void poison(int32_t block);

  BlockPoolConfig config_;
  size_t row_bytes_;
  HugePageBuffer k_;                // [num_blocks * block_size] slot rows of row_bytes_
  HugePageBuffer v_;                // [num_blocks * block_size] slot rows of row_bytes_
  // Per-slot metadata, backed as blocks are first used (like K and V).
  UnbackedVector<float> metric_;       // [num_blocks, block_size]
  UnbackedVector<float> mass_;         // [num_blocks, block_size] (PagedKvPool::mass)
  UnbackedVector<int32_t> positions_;  // [num_blocks, block_size]
  std::vector<uint64_t> free_bits_;  // bit b % 64 of word b / 64 set: block b is free
  size_t first_word_ = 0;            // every word below it is 0 (no free block there)
  int32_t n_free_ = 0;
};

}  // namespace kvc
