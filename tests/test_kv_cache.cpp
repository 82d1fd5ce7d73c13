// PagedKvCache ownership invariants: no block owned twice, nothing leaked, row of length n owns
// ceil(n / block_size) blocks; budget checks; freed blocks are NaN-poisoned in test builds.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <set>
#include <vector>

#include "kv/paged_kv_cache.h"
#include "util/fp16.h"
#include "util/huge_page_buffer.h"

namespace kvc {
namespace {

KvCacheConfig small_config(int32_t num_blocks) {
  return KvCacheConfig{2, 3, 8, 4, num_blocks, KvStorageType::kF16, true};
}

void append_tokens(PagedKvCache& cache, SequenceId seq, int32_t n, int32_t start) {
  const int32_t d = cache.config().head_dim;
  std::vector<float> k(static_cast<size_t>(n) * d, 1.0f), v(k.size(), 2.0f);
  std::vector<int32_t> pos(static_cast<size_t>(n));
  for (int32_t i = 0; i < n; ++i) pos[i] = start + i;
  for (int32_t l = 0; l < cache.config().n_layer; ++l) {
    for (int32_t h = 0; h < cache.config().n_head_kv; ++h) {
      cache.append(seq, l, h, k.data(), d, v.data(), d, pos.data(), n);
    }
  }
}

// The pool's K/V memory: zeroed, 2 MiB aligned (huge-page advice needs it), deep copies, and
// moves that leave the source empty.
TEST(HugePageBuffer, IsZeroedAlignedAndCopiedDeep) {
  HugePageBuffer a(5 << 20);
  ASSERT_NE(a.data(), nullptr);
  EXPECT_EQ(a.size(), size_t{5} << 20);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a.data()) % (uintptr_t{2} << 20), 0u);
  for (size_t i = 0; i < a.size(); i += 4093) ASSERT_EQ(a.data()[i], 0) << i;
  a.data()[123] = 7;
  HugePageBuffer b(a);
  ASSERT_NE(b.data(), a.data());
  EXPECT_EQ(b.data()[123], 7);
  b.data()[123] = 9;
  EXPECT_EQ(a.data()[123], 7);
  HugePageBuffer c(std::move(b));
  EXPECT_EQ(c.data()[123], 9);
  EXPECT_EQ(b.data(), nullptr);  // NOLINT(bugprone-use-after-move): moved-from is empty
  EXPECT_EQ(b.size(), 0u);
  c = a;
  EXPECT_EQ(c.data()[123], 7);
  EXPECT_EQ(HugePageBuffer(0).data(), nullptr);
}

// Allocation takes the lowest free id whatever the order of earlier releases: checked against a
// std::set over 20,000 random allocations and releases, pool sizes around the 64-bit words.
TEST(BlockPool, AllocatesTheLowestFreeBlockLikeASortedSet) {
  std::mt19937 rng(5);
  for (const int32_t n : {0, 1, 63, 64, 65, 200}) {
    BlockPool pool(BlockPoolConfig{n, 4, 8, KvStorageType::kF16, false});
    std::set<int32_t> free_ids;
    for (int32_t b = 0; b < n; ++b) free_ids.insert(b);
    std::vector<int32_t> taken;
    for (int32_t step = 0; step < 20000 / 6; ++step) {
      if (taken.empty() && free_ids.empty()) break;  // the empty pool
      if (taken.empty() || (rng() % 3 != 0 && !free_ids.empty())) {
        const int32_t b = pool.allocate();
        ASSERT_EQ(b, *free_ids.begin()) << "n=" << n << " step=" << step;
        free_ids.erase(free_ids.begin());
        taken.push_back(b);
      } else {
        const size_t i = rng() % taken.size();
        pool.release(taken[i]);
        free_ids.insert(taken[i]);
        taken[i] = taken.back();
        taken.pop_back();
      }
      ASSERT_EQ(pool.free_blocks(), static_cast<int32_t>(free_ids.size()));
      for (const int32_t b : taken) ASSERT_FALSE(pool.is_free(b));
    }
    while (!free_ids.empty()) {
      ASSERT_EQ(pool.allocate(), *free_ids.begin());
      free_ids.erase(free_ids.begin());
    }
    EXPECT_EQ(pool.allocate(), -1);
    EXPECT_EQ(pool.free_blocks(), 0);
  }
}

// After a sequence has come and gone, the next one's rows again get rising block ids (decode
// attention streams each row's blocks in order; falling addresses halved its speed).
TEST(PagedKvCache, RowsOfARecycledPoolGetRisingBlocks) {
  PagedKvCache cache(small_config(64));
  const SequenceId first = cache.add_sequence();
  append_tokens(cache, first, 20, 0);  // 5 blocks per row, handed out chunk by chunk
  cache.remove_sequence(first);
  const SequenceId second = cache.add_sequence();
  for (int32_t start = 0; start < 20; start += 4) append_tokens(cache, second, 4, start);
  for (int32_t l = 0; l < 2; ++l) {
    for (int32_t h = 0; h < 3; ++h) {
      const std::vector<int32_t>& blocks = cache.row(second, l, h).blocks;
      ASSERT_EQ(blocks.size(), 5u);
      for (size_t i = 1; i < blocks.size(); ++i) EXPECT_LT(blocks[i - 1], blocks[i]);
    }
  }
  cache.check_invariants();
}

TEST(PagedKvCache, RowsOwnCeilLengthOverBlockSizeBlocks) {
  PagedKvCache cache(small_config(64));
  const SequenceId seq = cache.add_sequence();
  EXPECT_EQ(cache.blocks_needed(seq, 1), 6);   // one block per (layer, head) row
  EXPECT_EQ(cache.blocks_needed(seq, 5), 12);  // ceil(5/4) = 2 per row
  append_tokens(cache, seq, 5, 0);
  cache.check_invariants();
  EXPECT_EQ(cache.row(seq, 1, 2).length, 5);
  EXPECT_EQ(cache.row(seq, 1, 2).blocks.size(), 2u);
  EXPECT_EQ(cache.owned_blocks(seq), 12);
  EXPECT_EQ(cache.retained_kvs(seq), 30);
  EXPECT_EQ(cache.blocks_needed(seq, 3), 0);  // 5 + 3 = 8 fits in 2 blocks of 4
  EXPECT_EQ(cache.blocks_needed(seq, 4), 6);
  EXPECT_EQ(cache.pool().free_blocks(), 64 - 12);
  EXPECT_EQ(cache.bytes_owned(seq), 12 * cache.pool().block_bytes());
  cache.remove_sequence(seq);
  cache.check_invariants();
  EXPECT_EQ(cache.pool().free_blocks(), 64);
}

TEST(PagedKvCache, BudgetIsEnforcedBeforeAnyBlockIsTaken) {
  PagedKvCache cache(small_config(10));
  const SequenceId seq = cache.add_sequence();
  EXPECT_TRUE(cache.can_append(seq, 4));    // 6 blocks
  EXPECT_FALSE(cache.can_append(seq, 5));   // 12 blocks > 10
  append_tokens(cache, seq, 4, 0);
  EXPECT_FALSE(cache.can_append(seq, 1));   // 6 more needed, 4 free
  EXPECT_EQ(cache.pool().free_blocks(), 4);
  cache.check_invariants();
}

TEST(PagedKvCache, StoresKeysValuesPositionsAndZeroMetric) {
  PagedKvCache cache(KvCacheConfig{1, 1, 4, 2, 4, KvStorageType::kF32, true});
  const SequenceId seq = cache.add_sequence();
  const float k[3][4] = {{1, 2, 3, 4}, {5, 6, 7, 8}, {9, 10, 11, 12}};
  const float v[3][4] = {{-1, -2, -3, -4}, {-5, -6, -7, -8}, {-9, -10, -11, -12}};
  const int32_t pos[3] = {7, 8, 9};
  cache.append(seq, 0, 0, &k[0][0], 4, &v[0][0], 4, pos, 3);
  const HeadRow& row = cache.row(seq, 0, 0);
  for (int32_t s = 0; s < 3; ++s) {
    const int64_t slot = static_cast<int64_t>(row.blocks[s / 2]) * 2 + s % 2;
    const auto* ks = reinterpret_cast<const float*>(cache.pool().k_slot(slot));
    const auto* vs = reinterpret_cast<const float*>(cache.pool().v_slot(slot));
    for (int32_t i = 0; i < 4; ++i) {
      EXPECT_EQ(ks[i], k[s][i]);
      EXPECT_EQ(vs[i], v[s][i]);
    }
    EXPECT_EQ(cache.pool().positions()[slot], pos[s]);
    EXPECT_EQ(cache.pool().metric()[slot], 0.0f);
    EXPECT_EQ(cache.pool().mass()[slot], 0.0f);
  }
}

TEST(PagedKvCache, CopySequenceDuplicatesEveryRowIntoFreshBlocks) {
  PagedKvCache cache(KvCacheConfig{2, 2, 4, 2, 24, KvStorageType::kF32, true});
  const SequenceId src = cache.add_sequence();
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (int32_t l = 0; l < 2; ++l) {
    for (int32_t h = 0; h < 2; ++h) {
      const int32_t n = 3 + l * 2 + h;  // rows of different lengths, partial last blocks
      std::vector<float> k(static_cast<size_t>(n) * 4), v(k.size());
      for (float& x : k) x = u(rng);
      for (float& x : v) x = u(rng);
      std::vector<int32_t> pos(static_cast<size_t>(n));
      for (int32_t i = 0; i < n; ++i) pos[i] = 10 * i + h;
      cache.append(src, l, h, k.data(), 4, v.data(), 4, pos.data(), n);
      const HeadRow& row = cache.row(src, l, h);
      for (int32_t s = 0; s < n; ++s) {
        cache.pool().metric()[row.blocks[s / 2] * 2 + s % 2] = u(rng);
        cache.pool().mass()[row.blocks[s / 2] * 2 + s % 2] = u(rng);
      }
    }
  }
  const int64_t owned = cache.owned_blocks(src);
  const SequenceId dst = cache.copy_sequence(src);
  ASSERT_GE(dst, 0);
  ASSERT_NE(dst, src);
  cache.check_invariants();
  EXPECT_EQ(cache.owned_blocks(dst), owned);
  EXPECT_EQ(cache.pool().free_blocks(), 24 - 2 * owned);
  for (int32_t l = 0; l < 2; ++l) {
    for (int32_t h = 0; h < 2; ++h) {
      const HeadRow& a = cache.row(src, l, h);
      const HeadRow& b = cache.row(dst, l, h);
      ASSERT_EQ(a.length, b.length);
      for (int32_t s = 0; s < a.length; ++s) {
        const int64_t sa = static_cast<int64_t>(a.blocks[s / 2]) * 2 + s % 2;
        const int64_t sb = static_cast<int64_t>(b.blocks[s / 2]) * 2 + s % 2;
        EXPECT_NE(a.blocks[s / 2], b.blocks[s / 2]);
        EXPECT_EQ(std::memcmp(cache.pool().k_slot(sa), cache.pool().k_slot(sb), 16), 0);
        EXPECT_EQ(std::memcmp(cache.pool().v_slot(sa), cache.pool().v_slot(sb), 16), 0);
        EXPECT_EQ(cache.pool().metric()[sa], cache.pool().metric()[sb]);
        EXPECT_EQ(cache.pool().mass()[sa], cache.pool().mass()[sb]);
        EXPECT_EQ(cache.pool().positions()[sa], cache.pool().positions()[sb]);
      }
    }
  }
  // The copy is independent: removing the source leaves it intact and leaks nothing.
  cache.remove_sequence(src);
  cache.check_invariants();
  EXPECT_EQ(cache.row(dst, 1, 1).length, 6);
  EXPECT_EQ(cache.pool().free_blocks(), 24 - owned);
  // Too few free blocks: refused, nothing taken.
  const SequenceId third = cache.copy_sequence(dst);
  ASSERT_GE(third, 0);
  EXPECT_EQ(cache.copy_sequence(dst), -1);
  cache.check_invariants();
  EXPECT_EQ(cache.pool().free_blocks(), 24 - 2 * owned);
}

TEST(PagedKvCache, FreedAndUnusedSlotsArePoisoned) {
  PagedKvCache cache(small_config(12));
  const SequenceId seq = cache.add_sequence();
  append_tokens(cache, seq, 1, 0);  // each row's block has 3 unused slots
  const HeadRow& row = cache.row(seq, 0, 0);
  const int64_t unused = static_cast<int64_t>(row.blocks[0]) * 4 + 1;
  EXPECT_TRUE(std::isnan(fp16_to_float(reinterpret_cast<uint16_t*>(cache.pool().k_slot(unused))[0])));
  EXPECT_TRUE(std::isnan(cache.pool().metric()[unused]));
  EXPECT_TRUE(std::isnan(cache.pool().mass()[unused]));
  const int32_t block = row.blocks[0];
  cache.remove_sequence(seq);
  const int64_t freed = static_cast<int64_t>(block) * 4;
  EXPECT_TRUE(std::isnan(fp16_to_float(reinterpret_cast<uint16_t*>(cache.pool().k_slot(freed))[0])));
  EXPECT_TRUE(std::isnan(fp16_to_float(reinterpret_cast<uint16_t*>(cache.pool().v_slot(freed))[3])));
}

TEST(PagedKvCache, ManySequencesComeAndGoWithoutLeaks) {
  PagedKvCache cache(small_config(200));
  std::mt19937 rng(1);
  std::vector<std::pair<SequenceId, int32_t>> live;
  for (int step = 0; step < 2000; ++step) {
    if (!live.empty() && rng() % 3 == 0) {
      const size_t i = rng() % live.size();
      cache.remove_sequence(live[i].first);
      live.erase(live.begin() + static_cast<long>(i));
    } else if (live.empty() || rng() % 2 == 0) {
      live.emplace_back(cache.add_sequence(), 0);
    } else {
      auto& [seq, len] = live[rng() % live.size()];
      const int32_t n = 1 + static_cast<int32_t>(rng() % 7);
      if (cache.can_append(seq, n)) {
        append_tokens(cache, seq, n, len);
        len += n;
      }
    }
    cache.check_invariants();
  }
  for (auto& [seq, len] : live) cache.remove_sequence(seq);
  cache.check_invariants();
  EXPECT_EQ(cache.pool().free_blocks(), 200);
}

}  // namespace
}  // namespace kvc
