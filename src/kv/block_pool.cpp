#include "kv/block_pool.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>

#include "util/error.h"
#include "util/fp16.h"

namespace kvc {

BlockPool::BlockPool(const BlockPoolConfig& config)
    : config_(config),
      row_bytes_(static_cast<size_t>(kv_row_bytes(config.storage, config.head_dim))) {
  KVC_ASSERT(config.num_blocks >= 0 && config.block_size > 0 && config.head_dim > 0);
  KVC_ASSERT(row_bytes_ > 0);  // q8_0 needs head_dim % 32 == 0 (callers check it first)
  const size_t slots = static_cast<size_t>(config.num_blocks) * config.block_size;
  k_ = HugePageBuffer(slots * row_bytes_);
  v_ = HugePageBuffer(slots * row_bytes_);
  metric_.resize(slots);
  mass_.resize(slots);
  positions_.resize(slots);
  free_bits_.assign((static_cast<size_t>(config.num_blocks) + 63) / 64, ~uint64_t{0});
  const int32_t tail = config.num_blocks % 64;  // ids past num_blocks never look free
  if (tail != 0) free_bits_.back() = (uint64_t{1} << tail) - 1;
  n_free_ = config.num_blocks;
  for (int32_t b = 0; b < config.num_blocks; ++b) poison(b);
}

size_t BlockPool::block_bytes() const {
  return static_cast<size_t>(config_.block_size) *
         (2 * row_bytes_ + 2 * sizeof(float) + sizeof(int32_t));
}

int32_t BlockPool::allocate() {
  if (n_free_ == 0) return -1;
  while (free_bits_[first_word_] == 0) ++first_word_;  // a free block lies at or above it
  uint64_t& word = free_bits_[first_word_];
  const auto block = static_cast<int32_t>(first_word_ * 64 + std::countr_zero(word));
  word &= word - 1;
  --n_free_;
  return block;
}

void BlockPool::release(int32_t block) {
  KVC_ASSERT(block >= 0 && block < config_.num_blocks);
  KVC_ASSERT(!is_free(block));  // double free
  const size_t w = static_cast<size_t>(block) / 64;
  free_bits_[w] |= uint64_t{1} << (block % 64);
  first_word_ = std::min(first_word_, w);
  ++n_free_;
  poison(block);
}

PagedKvPool BlockPool::view() {
  PagedKvPool pool;
  pool.k = k_.data();
  pool.v = v_.data();
  pool.positions = positions_.data();
  pool.metric = metric_.data();
  pool.mass = mass_.data();
  pool.block_size = config_.block_size;
  pool.head_dim = config_.head_dim;
  pool.storage = config_.storage;
  pool.row_bytes = static_cast<int64_t>(row_bytes_);
  return pool;
}

void BlockPool::poison(int32_t block) {
  if (!config_.poison_freed) return;
  for (int32_t s = 0; s < config_.block_size; ++s) {
    poison_slot(static_cast<int64_t>(block) * config_.block_size + s);
  }
}

void BlockPool::poison_slot(int64_t slot) {
  if (!config_.poison_freed) return;
  const int32_t d = config_.head_dim;
  if (config_.storage == KvStorageType::kF16) {
    auto* k = reinterpret_cast<uint16_t*>(k_slot(slot));
    auto* v = reinterpret_cast<uint16_t*>(v_slot(slot));
    for (int32_t i = 0; i < d; ++i) k[i] = v[i] = 0x7e00;  // fp16 quiet NaN
  } else if (config_.storage == KvStorageType::kQ8_0) {
    // Every block's scale an fp16 NaN (so every value reads NaN), the quants 1.
    for (uint8_t* row : {k_slot(slot), v_slot(slot)}) {
      for (int32_t b = 0; b < d / 32; ++b) {
        uint8_t* block = row + static_cast<size_t>(b) * 34;
        const uint16_t nan = 0x7e00;
        std::memcpy(block, &nan, sizeof(nan));
        std::memset(block + 2, 1, 32);
      }
    }
  } else {
    auto* k = reinterpret_cast<float*>(k_slot(slot));
    auto* v = reinterpret_cast<float*>(v_slot(slot));
    for (int32_t i = 0; i < d; ++i) k[i] = v[i] = std::numeric_limits<float>::quiet_NaN();
  }
  metric_[static_cast<size_t>(slot)] = std::numeric_limits<float>::quiet_NaN();
  mass_[static_cast<size_t>(slot)] = std::numeric_limits<float>::quiet_NaN();
  positions_[static_cast<size_t>(slot)] = std::numeric_limits<int32_t>::min();
}

}  // namespace kvc
