#include "kv/paged_kv_cache.h"

#include <cstring>

#include "util/error.h"
#include "kernels/paged_kv_store.h"

namespace kvc {

PagedKvCache::PagedKvCache(const KvCacheConfig& config)
    : config_(config),
      pool_(BlockPoolConfig{config.num_blocks, config.block_size, config.head_dim, config.storage,
                            config.poison_freed}) {
  KVC_ASSERT(config.n_layer > 0 && config.n_head_kv > 0);
}

SequenceId PagedKvCache::add_sequence() {
  SequenceId id = 0;
  while (id < static_cast<SequenceId>(sequences_.size()) && sequences_[id].active) ++id;
  if (id == static_cast<SequenceId>(sequences_.size())) sequences_.emplace_back();
  Sequence& s = sequences_[id];
  s.active = true;
  s.rows.assign(static_cast<size_t>(config_.n_layer) * config_.n_head_kv, HeadRow{});
  return id;
}

void PagedKvCache::remove_sequence(SequenceId seq) {
  Sequence& s = const_cast<Sequence&>(sequence(seq));
  for (HeadRow& r : s.rows) {
    for (int32_t b : r.blocks) pool_.release(b);
  }
  s.rows.clear();
  s.active = false;
#ifndef NDEBUG
  check_invariants();
#endif
}

SequenceId PagedKvCache::copy_sequence(SequenceId src) {
  if (owned_blocks(src) > pool_.free_blocks()) return -1;
  const SequenceId dst = add_sequence();
  const std::vector<HeadRow>& from = sequences_[src].rows;
  std::vector<HeadRow>& to = sequences_[dst].rows;
  const int64_t bs = config_.block_size;
  const size_t kv_bytes = static_cast<size_t>(bs) * pool_.row_bytes();
  for (size_t r = 0; r < from.size(); ++r) {
    to[r].length = from[r].length;
    for (int32_t src_block : from[r].blocks) {
      const int32_t block = pool_.allocate();
      KVC_ASSERT(block >= 0);  // counted above
      to[r].blocks.push_back(block);
      std::memcpy(pool_.k_slot(block * bs), pool_.k_slot(src_block * bs), kv_bytes);
      std::memcpy(pool_.v_slot(block * bs), pool_.v_slot(src_block * bs), kv_bytes);
      std::memcpy(pool_.metric() + block * bs, pool_.metric() + src_block * bs,
                  bs * sizeof(float));
      std::memcpy(pool_.mass() + block * bs, pool_.mass() + src_block * bs, bs * sizeof(float));
      std::memcpy(pool_.positions() + block * bs, pool_.positions() + src_block * bs,
                  bs * sizeof(int32_t));
    }
  }
  return dst;
}

bool PagedKvCache::has_sequence(SequenceId seq) const {
  return seq >= 0 && seq < static_cast<SequenceId>(sequences_.size()) && sequences_[seq].active;
}

const PagedKvCache::Sequence& PagedKvCache::sequence(SequenceId seq) const {
  KVC_ASSERT(has_sequence(seq));
  return sequences_[seq];
}

size_t PagedKvCache::row_index(int32_t layer, int32_t kv_head) const {
  KVC_ASSERT(layer >= 0 && layer < config_.n_layer && kv_head >= 0 && kv_head < config_.n_head_kv);
  return static_cast<size_t>(layer) * config_.n_head_kv + kv_head;
}

int64_t PagedKvCache::blocks_needed(SequenceId seq, int32_t n_tokens) const {
  const int32_t bs = config_.block_size;
  int64_t needed = 0;
  for (const HeadRow& r : sequence(seq).rows) {
    const int64_t have = static_cast<int64_t>(r.blocks.size());
    const int64_t want = (static_cast<int64_t>(r.length) + n_tokens + bs - 1) / bs;
    needed += want > have ? want - have : 0;
  }
  return needed;
}

void PagedKvCache::grow(SequenceId seq, int32_t n_tokens) {
  KVC_ASSERT(n_tokens >= 0 && can_append(seq, n_tokens));
  const int32_t bs = config_.block_size;
  for (HeadRow& r : sequences_[seq].rows) {
    r.length += n_tokens;
    while (static_cast<int64_t>(r.blocks.size()) * bs < r.length) {
      const int32_t block = pool_.allocate();
      KVC_ASSERT(block >= 0);  // counted by can_append
      r.blocks.push_back(block);
    }
  }
}

void PagedKvCache::append(SequenceId seq, int32_t layer, int32_t kv_head, const float* k,
                          int64_t k_stride, const float* v, int64_t v_stride,
                          const int32_t* positions, int32_t n) {
  HeadRow& r = mutable_row(seq, layer, kv_head);
  const int32_t bs = config_.block_size;
  const int32_t first = r.length;
  r.length += n;
  while (static_cast<int64_t>(r.blocks.size()) * bs < r.length) {
    const int32_t block = pool_.allocate();
    KVC_ASSERT(block >= 0);  // caller must check can_append first
    r.blocks.push_back(block);
  }
  paged_kv_store(pool_.view(), row_view(seq, layer, kv_head), first, k, k_stride, v, v_stride,
                 positions, n);
}

void PagedKvCache::truncate_row(SequenceId seq, int32_t layer, int32_t kv_head,
                                int32_t new_length) {
  HeadRow& r = mutable_row(seq, layer, kv_head);
  KVC_ASSERT(new_length >= 0 && new_length <= r.length);
  const int32_t bs = config_.block_size;
  const size_t keep = static_cast<size_t>((new_length + bs - 1) / bs);
  while (r.blocks.size() > keep) {
    pool_.release(r.blocks.back());
    r.blocks.pop_back();
  }
  r.length = new_length;
}

const HeadRow& PagedKvCache::row(SequenceId seq, int32_t layer, int32_t kv_head) const {
  return sequence(seq).rows[row_index(layer, kv_head)];
}

HeadRow& PagedKvCache::mutable_row(SequenceId seq, int32_t layer, int32_t kv_head) {
  return const_cast<HeadRow&>(row(seq, layer, kv_head));
}

PagedHeadRow PagedKvCache::row_view(SequenceId seq, int32_t layer, int32_t kv_head) const {
  const HeadRow& r = row(seq, layer, kv_head);
  return PagedHeadRow{r.blocks.data(), r.length};
}

int64_t PagedKvCache::retained_kvs(SequenceId seq) const {
  int64_t n = 0;
  for (const HeadRow& r : sequence(seq).rows) n += r.length;
  return n;
}

int64_t PagedKvCache::owned_blocks(SequenceId seq) const {
  int64_t n = 0;
  for (const HeadRow& r : sequence(seq).rows) n += static_cast<int64_t>(r.blocks.size());
  return n;
}

void PagedKvCache::check_invariants() const {
  std::vector<uint8_t> owner_count(static_cast<size_t>(pool_.num_blocks()), 0);
  int64_t owned = 0;
  const int32_t bs = config_.block_size;
  for (const Sequence& s : sequences_) {
    if (!s.active) continue;
    for (const HeadRow& r : s.rows) {
      KVC_ASSERT(r.length >= 0);
      KVC_ASSERT(static_cast<int64_t>(r.blocks.size()) == (r.length + bs - 1) / bs);
      for (int32_t b : r.blocks) {
        KVC_ASSERT(b >= 0 && b < pool_.num_blocks());
        KVC_ASSERT(!pool_.is_free(b));
        KVC_ASSERT(owner_count[static_cast<size_t>(b)] == 0);  // owned twice
        owner_count[static_cast<size_t>(b)] = 1;
        ++owned;
      }
    }
  }
  KVC_ASSERT(owned + pool_.free_blocks() == pool_.num_blocks());  // nothing leaked
}

}  // namespace kvc
