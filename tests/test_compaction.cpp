// Compaction (kv/compaction.h): hand-computed moves; every survivor's K, V, metric and
// position unchanged when looked up by position; blocks back in the pool; dead slots poisoned;
// a long append/plan/compact loop leaks nothing; and attention over a compacted row equals
// dense attention over the surviving KVs (poisoned slots would turn it into NaN).
#include <gtest/gtest.h>

#include "dense_attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <random>
#include <vector>

#include "compress/kvcompress_planner.h"
#include "kernels/paged_attention.h"
#include "kernels/quant.h"
#include "kv/compaction.h"
#include "util/fp16.h"

namespace kvc {
namespace {

int64_t slot_of(const PagedKvCache& cache, SequenceId seq, int32_t l, int32_t h, int32_t s) {
  const HeadRow& r = cache.row(seq, l, h);
  const int32_t bs = cache.config().block_size;
  return static_cast<int64_t>(r.blocks[static_cast<size_t>(s / bs)]) * bs + s % bs;
}

// Appends `n` tokens at positions [start, start + n) to every row with random K/V and metrics.
void append_random(PagedKvCache& cache, SequenceId seq, int32_t start, int32_t n,
                   std::mt19937& rng) {
  const KvCacheConfig& c = cache.config();
  std::normal_distribution<float> g;
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  std::vector<float> k(static_cast<size_t>(n) * c.head_dim), v(k.size());
  std::vector<int32_t> pos(static_cast<size_t>(n));
  for (int32_t i = 0; i < n; ++i) pos[static_cast<size_t>(i)] = start + i;
  for (int32_t l = 0; l < c.n_layer; ++l) {
    for (int32_t h = 0; h < c.n_head_kv; ++h) {
      for (float& x : k) x = g(rng);
      for (float& x : v) x = g(rng);
      const int32_t first = cache.row(seq, l, h).length;
      cache.append(seq, l, h, k.data(), c.head_dim, v.data(), c.head_dim, pos.data(), n);
      for (int32_t i = 0; i < n; ++i) {
        cache.pool().metric()[slot_of(cache, seq, l, h, first + i)] = u(rng);
        cache.pool().mass()[slot_of(cache, seq, l, h, first + i)] = u(rng);
      }
    }
  }
}

// Everything stored for one KV, raw bytes for K and V (so f16 compares bit for bit).
struct Stored {
  std::vector<uint8_t> k, v;
  float metric, mass;
  bool operator==(const Stored&) const = default;
};

// Row contents keyed by position (positions are unique within a row).
std::map<int32_t, Stored> snapshot(const PagedKvCache& cache, SequenceId seq, int32_t l,
                                   int32_t h) {
  const BlockPool& pool = cache.pool();
  const size_t bytes = pool.row_bytes();
  std::map<int32_t, Stored> out;
  for (int32_t s = 0; s < cache.row(seq, l, h).length; ++s) {
    const int64_t p = slot_of(cache, seq, l, h, s);
    Stored st{std::vector<uint8_t>(pool.k_slot(p), pool.k_slot(p) + bytes),
              std::vector<uint8_t>(pool.v_slot(p), pool.v_slot(p) + bytes), pool.metric()[p],
              pool.mass()[p]};
    EXPECT_TRUE(out.emplace(pool.positions()[p], std::move(st)).second) << "duplicate position";
  }
  return out;
}

TEST(Compaction, HandComputedMovesFillHolesFromTheTail) {
  // Row of 10, bs 4, evict {1, 5, 8}: new length 7; holes in [0, 7) are 1 and 5; the tail
  // [7, 10) holds survivors 7 and 9 (8 is evicted): moves 7 -> 1, 9 -> 5; 3 - 2 = 1 block freed.
  PagedKvCache cache(KvCacheConfig{1, 2, 4, 4, 8, KvStorageType::kF32, true});
  const SequenceId seq = cache.add_sequence();
  std::mt19937 rng(1);
  append_random(cache, seq, 0, 10, rng);
  EvictionPlan plan{seq, {RowEviction{0, 1, {1, 5, 8}}}, 1, 3};
  const CompactionPlan cp = plan_compaction(cache, seq, plan);
  ASSERT_EQ(cp.rows.size(), 1u);
  const RowCompaction& rc = cp.rows[0];
  EXPECT_EQ(rc.layer, 0);
  EXPECT_EQ(rc.kv_head, 1);
  EXPECT_EQ(rc.evicted, (std::vector<int32_t>{1, 5, 8}));
  ASSERT_EQ(rc.moves.size(), 2u);
  EXPECT_EQ(rc.moves[0].from, 7);
  EXPECT_EQ(rc.moves[0].to, 1);
  EXPECT_EQ(rc.moves[1].from, 9);
  EXPECT_EQ(rc.moves[1].to, 5);
  EXPECT_EQ(rc.new_length, 7);
  EXPECT_EQ(rc.blocks_freed, 1);
  EXPECT_EQ(cp.blocks_freed, 1);

  const int32_t last_block = cache.row(seq, 0, 1).blocks[2];
  const int32_t free_before = cache.pool().free_blocks();
  const auto before = snapshot(cache, seq, 0, 1);
  const auto untouched = snapshot(cache, seq, 0, 0);
  apply_compaction(cache, cp);
  cache.check_invariants();
  EXPECT_EQ(cache.pool().free_blocks(), free_before + 1);
  EXPECT_TRUE(cache.pool().is_free(last_block));
  EXPECT_EQ(cache.row(seq, 0, 1).length, 7);
  EXPECT_EQ(cache.row(seq, 0, 1).blocks.size(), 2u);
  EXPECT_EQ(snapshot(cache, seq, 0, 0), untouched);
  auto want = before;
  for (int32_t pos : {1, 5, 8}) want.erase(pos);  // positions == original slots here
  EXPECT_EQ(snapshot(cache, seq, 0, 1), want);
  EXPECT_EQ(cache.pool().positions()[slot_of(cache, seq, 0, 1, 1)], 7);
  EXPECT_EQ(cache.pool().positions()[slot_of(cache, seq, 0, 1, 5)], 9);
  // The dead tail slot (7) of the new last block is poisoned like a freed block.
  const int64_t dead = static_cast<int64_t>(cache.row(seq, 0, 1).blocks[1]) * 4 + 3;
  EXPECT_TRUE(std::isnan(reinterpret_cast<const float*>(cache.pool().k_slot(dead))[0]));
  EXPECT_TRUE(std::isnan(reinterpret_cast<const float*>(cache.pool().v_slot(dead))[3]));
  EXPECT_TRUE(std::isnan(cache.pool().metric()[dead]));
  EXPECT_TRUE(std::isnan(cache.pool().mass()[dead]));
  EXPECT_EQ(cache.pool().positions()[dead], INT32_MIN);
  EXPECT_TRUE(
      std::isnan(reinterpret_cast<const float*>(cache.pool().k_slot(int64_t{last_block} * 4))[0]));
}

TEST(Compaction, EvictingOnlyTailSlotsMovesNothingAndEmptyPlansAreNoOps) {
  PagedKvCache cache(KvCacheConfig{1, 1, 4, 4, 8, KvStorageType::kF16, true});
  const SequenceId seq = cache.add_sequence();
  std::mt19937 rng(2);
  append_random(cache, seq, 0, 9, rng);
  const CompactionPlan empty = plan_compaction(cache, seq, EvictionPlan{seq, {}, 0, 0});
  EXPECT_TRUE(empty.rows.empty());
  apply_compaction(cache, empty);
  EXPECT_EQ(cache.row(seq, 0, 0).length, 9);
  const CompactionPlan cp =
      plan_compaction(cache, seq, EvictionPlan{seq, {RowEviction{0, 0, {5, 6, 7, 8}}}, 1, 4});
  EXPECT_TRUE(cp.rows[0].moves.empty());
  EXPECT_EQ(cp.rows[0].blocks_freed, 1);  // 9 -> 5 KVs: 3 -> 2 blocks
  apply_compaction(cache, cp);
  cache.check_invariants();
  EXPECT_EQ(cache.row(seq, 0, 0).length, 5);
  EXPECT_EQ(cache.pool().free_blocks(), 6);
}

class SurvivorsUnchanged : public ::testing::TestWithParam<KvStorageType> {};

TEST_P(SurvivorsUnchanged, KvMetricAndPositionFollowEveryMovedKv) {
  PagedKvCache cache(KvCacheConfig{3, 2, 32, 8, 512, GetParam(), true});
  std::mt19937 rng(3);
  for (int trial = 0; trial < 40; ++trial) {
    const SequenceId seq = cache.add_sequence();
    append_random(cache, seq, 0, 20 + static_cast<int32_t>(rng() % 150), rng);
    std::vector<std::map<int32_t, Stored>> before;
    for (int32_t r = 0; r < 6; ++r) before.push_back(snapshot(cache, seq, r / 2, r % 2));
    const int64_t owned = cache.owned_blocks(seq);
    const int32_t free_before = cache.pool().free_blocks();
    const int64_t target = static_cast<int64_t>(rng() % static_cast<uint32_t>(owned + 1));
    const EvictionPlan plan = plan_kvcompress_eviction(cache, seq, target, PlannerOptions{});
    const CompactionPlan cp = plan_compaction(cache, seq, plan);
    EXPECT_EQ(cp.blocks_freed, plan.blocks_to_free);
    apply_compaction(cache, cp);
    cache.check_invariants();
    EXPECT_EQ(cache.pool().free_blocks(), free_before + plan.blocks_to_free);
    EXPECT_EQ(cache.owned_blocks(seq), owned - plan.blocks_to_free);
    int64_t kept = 0;
    for (int32_t r = 0; r < 6; ++r) {
      auto want = before[static_cast<size_t>(r)];
      const HeadRow& row = cache.row(seq, r / 2, r % 2);
      for (const RowCompaction& rc : cp.rows) {
        if (rc.layer != r / 2 || rc.kv_head != r % 2) continue;
        EXPECT_EQ(row.length, rc.new_length);
        EXPECT_EQ(rc.old_length - rc.new_length, static_cast<int32_t>(rc.evicted.size()));
      }
      // Survivors by position: identical K, V bytes and metric; evicted positions are gone.
      const auto got = snapshot(cache, seq, r / 2, r % 2);
      EXPECT_EQ(got.size(), static_cast<size_t>(row.length));
      for (const auto& [pos, st] : got) {
        ASSERT_TRUE(want.count(pos)) << "position " << pos << " appeared from nowhere";
        EXPECT_EQ(st, want.at(pos)) << "position " << pos;
      }
      kept += static_cast<int64_t>(got.size());
    }
    EXPECT_EQ(kept + plan.kvs_evicted, 6 * static_cast<int64_t>(before[0].size()));
    cache.remove_sequence(seq);
    EXPECT_EQ(cache.pool().free_blocks(), cache.pool().num_blocks());
  }
}

INSTANTIATE_TEST_SUITE_P(Storage, SurvivorsUnchanged,
                         ::testing::Values(KvStorageType::kF16, KvStorageType::kF32,
                                           KvStorageType::kQ8_0));

TEST(Compaction, ThousandAppendPlanCompactCyclesLeakNothing) {
  // Two sequences grow token by token (sometimes in chunks), are compressed to a random
  // budget each cycle, and are occasionally finished and restarted.
  PagedKvCache cache(KvCacheConfig{2, 3, 8, 4, 600, KvStorageType::kF16, true});
  std::mt19937 rng(4);
  SequenceId seqs[2] = {cache.add_sequence(), cache.add_sequence()};
  int32_t next_pos[2] = {0, 0};
  int64_t freed_total = 0;
  for (int cycle = 0; cycle < 1000; ++cycle) {
    const int i = cycle % 2;
    const int32_t n = rng() % 4 == 0 ? 1 + static_cast<int32_t>(rng() % 20) : 1;
    if (rng() % 50 == 0 || !cache.can_append(seqs[i], n)) {
      cache.remove_sequence(seqs[i]);
      seqs[i] = cache.add_sequence();
      next_pos[i] = 0;
    }
    ASSERT_TRUE(cache.can_append(seqs[i], n));
    append_random(cache, seqs[i], next_pos[i], n, rng);
    next_pos[i] += n;
    // Decode-style metric growth on the survivors, so old KVs are not always the cheapest.
    for (int32_t l = 0; l < 2; ++l) {
      for (int32_t h = 0; h < 3; ++h) {
        for (int32_t s = 0; s < cache.row(seqs[i], l, h).length; ++s) {
          cache.pool().metric()[slot_of(cache, seqs[i], l, h, s)] +=
              0.01f * static_cast<float>(rng() % 7);
        }
      }
    }
    const int64_t c = 4 + rng() % 40;  // KVs per row
    const int64_t target = (c * 6 + 3) / 4;
    const PlannerOptions options{static_cast<int32_t>(rng() % 9), static_cast<int32_t>(rng() % 3)};
    const EvictionPlan plan = plan_kvcompress_eviction(cache, seqs[i], target, options);
    const int32_t free_before = cache.pool().free_blocks();
    apply_compaction(cache, plan_compaction(cache, seqs[i], plan));
    cache.check_invariants();
    ASSERT_EQ(cache.pool().free_blocks(), free_before + plan.blocks_to_free);
    ASSERT_EQ(
        cache.owned_blocks(seqs[0]) + cache.owned_blocks(seqs[1]) + cache.pool().free_blocks(),
        cache.pool().num_blocks());
    freed_total += plan.blocks_to_free;
  }
  EXPECT_GT(freed_total, 500);
  cache.remove_sequence(seqs[0]);
  cache.remove_sequence(seqs[1]);
  cache.check_invariants();
  EXPECT_EQ(cache.pool().free_blocks(), cache.pool().num_blocks());
}

class AttentionAfterCompaction : public ::testing::TestWithParam<KvStorageType> {};

TEST_P(AttentionAfterCompaction, EqualsDenseAttentionOverTheSurvivors) {
  const int32_t d = 64, group = 3, bs = 16;
  PagedKvCache cache(KvCacheConfig{1, 2, d, bs, 64, GetParam(), true});
  std::mt19937 rng(5);
  const SequenceId seq = cache.add_sequence();
  append_random(cache, seq, 0, 203, rng);
  // K and V of every KV by (head, position), read before compaction: the survivors' reference.
  auto load = [&](const uint8_t* base, int32_t i) {
    switch (GetParam()) {
      case KvStorageType::kF16: return fp16_to_float(reinterpret_cast<const uint16_t*>(base)[i]);
      case KvStorageType::kF32: return reinterpret_cast<const float*>(base)[i];
      case KvStorageType::kQ8_0: break;
    }
    std::vector<float> row(static_cast<size_t>(d));
    reference::dequantize_row(TensorType::Q8_0, base, row.data(), d);
    return row[static_cast<size_t>(i)];
  };
  std::map<std::pair<int32_t, int32_t>, std::pair<std::vector<float>, std::vector<float>>> original;
  for (int32_t h = 0; h < 2; ++h) {
    for (int32_t s = 0; s < 203; ++s) {
      const int64_t p = slot_of(cache, seq, 0, h, s);
      auto& [k, v] = original[{h, cache.pool().positions()[p]}];
      for (int32_t i = 0; i < d; ++i) {
        k.push_back(load(cache.pool().k_slot(p), i));
        v.push_back(load(cache.pool().v_slot(p), i));
      }
    }
  }
  const EvictionPlan plan = plan_kvcompress_eviction(cache, seq, 2 * 40 / bs + 1, PlannerOptions{});
  ASSERT_GT(plan.kvs_evicted, 250);
  apply_compaction(cache, plan_compaction(cache, seq, plan));
  const PagedKvPool pool = cache.pool().view();
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  std::normal_distribution<float> g;
  for (int32_t h = 0; h < 2; ++h) {
    const HeadRow& row = cache.row(seq, 0, h);
    ASSERT_GT(row.length, 0);
    ASSERT_LT(row.length, 203);
    // Gather the surviving positions' pre-compaction K/V densely, in position order.
    std::vector<float> k, v;
    std::vector<int32_t> pos;
    for (int32_t s = 0; s < row.length; ++s)
      pos.push_back(cache.pool().positions()[slot_of(cache, seq, 0, h, s)]);
    std::sort(pos.begin(), pos.end());
    for (int32_t p : pos) {
      const auto& [kk, vv] = original.at({h, p});
      k.insert(k.end(), kk.begin(), kk.end());
      v.insert(v.end(), vv.begin(), vv.end());
    }
    // Queries: a decode step after the last token, and an earlier position (causal mask bites).
    const int32_t qpos[2] = {203, 150};
    std::vector<float> q(2 * group * d);
    for (float& x : q) x = g(rng);
    if (GetParam() == KvStorageType::kQ8_0) {  // a q8_0 cache meets queries quantized as K is
      std::vector<uint8_t> blocks(static_cast<size_t>(kv_row_bytes(KvStorageType::kQ8_0, d)));
      for (size_t r = 0; r < q.size(); r += d) {
        reference::quantize_row_for_dot(TensorType::Q8_0, &q[r], blocks.data(), d);
        reference::dequantize_row(TensorType::Q8_0, blocks.data(), &q[r], d);
      }
    }
    // On q8_0 the decode kernel's value weights are rounded (test_support::q8_0_value_bound),
    // per 32-slot chunk in row slot order: the survivors' positions in that order.
    std::vector<int32_t> row_pos;
    for (int32_t s = 0; s < row.length; ++s) {
      row_pos.push_back(cache.pool().positions()[slot_of(cache, seq, 0, h, s)]);
    }
    const std::vector<float> vmax_dense = test_support::row_abs_max(v, d);
    const auto weight_bound = [&](const float* qh, int32_t at) {
      if (GetParam() != KvStorageType::kQ8_0) return 0.0;
      std::vector<double> p_dense;
      test_support::dense_attention(qh, k, v, pos, at, d, scale, &p_dense);
      std::vector<double> p(row_pos.size());
      std::vector<float> vmax(row_pos.size());
      for (size_t s = 0; s < row_pos.size(); ++s) {
        const auto j = std::lower_bound(pos.begin(), pos.end(), row_pos[s]) - pos.begin();
        p[s] = p_dense[static_cast<size_t>(j)];
        vmax[s] = vmax_dense[static_cast<size_t>(j)];
      }
      return test_support::q8_0_value_bound(p.data(), vmax.data(), row.length);
    };
    GroupQueries queries{q.data(), group * d, qpos, 2, group};
    std::vector<float> out(2 * group * d), scratch(static_cast<size_t>(group) * row.length);
    for (const bool use_reference : {false, true}) {
      std::fill(out.begin(), out.end(), NAN);
      (use_reference ? reference::paged_attention : paged_attention)(
          pool, cache.row_view(seq, 0, h), queries, scale, MetricAccumulation::kSquared, out.data(),
          group * d, scratch.data());
      for (int32_t t = 0; t < 2; ++t) {
        for (int32_t gi = 0; gi < group; ++gi) {
          const size_t off = static_cast<size_t>(t * group + gi) * d;
          const auto want = test_support::dense_attention(q.data() + off, k, v, pos, qpos[t], d, scale);
          const double bound = use_reference ? 0.0 : weight_bound(q.data() + off, qpos[t]);
          for (int32_t i = 0; i < d; ++i) {
            ASSERT_FALSE(std::isnan(out[off + i])) << "read a poisoned slot";
            ASSERT_NEAR(out[off + i], want[static_cast<size_t>(i)], 2e-5 + bound)
                << (use_reference ? "reference" : "dispatched") << " head " << h << " t " << t;
          }
        }
      }
    }
    // The kernel added finite metrics to the live slots only.
    for (int32_t s = 0; s < row.length; ++s) {
      EXPECT_TRUE(std::isfinite(cache.pool().metric()[slot_of(cache, seq, 0, h, s)]));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Storage, AttentionAfterCompaction,
                         ::testing::Values(KvStorageType::kF16, KvStorageType::kF32,
                                           KvStorageType::kQ8_0));

}  // namespace
}  // namespace kvc
