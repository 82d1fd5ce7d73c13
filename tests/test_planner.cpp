// KV-Compress eviction planner (compress/kvcompress_planner.h) and cache budgets
// (compress/budget.h): hand-computed plans, protection, block granularity, and a randomized
// property test that checks every guarantee stated in the planner header against an
// independent, naive re-derivation (full sorts, no radix, no selection).
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <set>
#include <tuple>

#include "compress/budget.h"
#include "compress/kvcompress_planner.h"
#include "kv/compaction.h"
#include "eviction_fixtures.h"
#include "util/error.h"

namespace kvc {
namespace {

using test_support::append_row;
using test_support::evicted;
using test_support::iota_positions;
using test_support::slot_of;
using test_support::Slots;

KvCacheConfig config(int32_t n_layer, int32_t n_head_kv, int32_t block_size, int32_t num_blocks) {
  return test_support::metric_cache_config(n_layer, n_head_kv, block_size, num_blocks);
}

void compact(PagedKvCache& cache, const EvictionPlan& plan) {
  apply_compaction(cache, plan_compaction(cache, plan.seq, plan));
  cache.check_invariants();
}

// 2 layers x 2 KV heads, bs 4, rows of 10 KVs (positions 0..9), window 2: positions 8 and 9
// are protected (here given metric 0 to show that protection beats a low metric).
//   row (0,0) metrics [5 1 7 2 30 31 32 33 | 0 0]: sorted s1 s3 | s0 s2 s4 s5 | ...
//             candidates: {1,3} key 2, {0,2,4,5} key 31, then +inf
//   row (0,1) [10..17 | 0 0]:          {0,1} key 11, {2,3,4,5} key 15
//   row (1,0) [3 x8 | 0 0] (ties):     {0,1} key 3,  {2,3,4,5} key 3
//   row (1,1) [100 4 100 x6 | 0 0]:    {1,0} key 100, {2,3,4,5} key 100
// Global order: A0(2) C0(3) C1(3) B0(11) B1(15) A1(31) D0(100) D1(100).
class HandComputed : public ::testing::Test {
 protected:
  HandComputed() : cache(config(2, 2, 4, 64)) {
    seq = cache.add_sequence();
    const std::vector<std::vector<float>> metrics = {{5, 1, 7, 2, 30, 31, 32, 33, 0, 0},
                                                     {10, 11, 12, 13, 14, 15, 16, 17, 0, 0},
                                                     {3, 3, 3, 3, 3, 3, 3, 3, 0, 0},
                                                     {100, 4, 100, 100, 100, 100, 100, 100, 0, 0}};
    for (int32_t r = 0; r < 4; ++r)
      append_row(cache, seq, r / 2, r % 2, iota_positions(10), metrics[r]);
  }
  PagedKvCache cache;
  SequenceId seq;
  PlannerOptions options{2, 0};
};

TEST_F(HandComputed, FreesTheLowestCandidatesAcrossRows) {
  ASSERT_EQ(cache.owned_blocks(seq), 12);
  const EvictionPlan plan = plan_kvcompress_eviction(cache, seq, 8, options);  // free 4
  EXPECT_EQ(plan.blocks_to_free, 4);
  EXPECT_EQ(evicted(plan, 0, 0), (Slots{1, 3}));
  EXPECT_EQ(evicted(plan, 0, 1), (Slots{0, 1}));
  EXPECT_EQ(evicted(plan, 1, 0), (Slots{0, 1, 2, 3, 4, 5}));
  EXPECT_EQ(evicted(plan, 1, 1), (Slots{}));
  EXPECT_EQ(plan.kvs_evicted, 10);
  EXPECT_EQ(plan.rows.size(), 3u);
  compact(cache, plan);
  EXPECT_EQ(cache.owned_blocks(seq), 8);
  EXPECT_EQ(cache.row(seq, 0, 0).length, 8);
  EXPECT_EQ(cache.row(seq, 0, 1).length, 8);
  EXPECT_EQ(cache.row(seq, 1, 0).length, 4);
  EXPECT_EQ(cache.row(seq, 1, 1).length, 10);
}

TEST_F(HandComputed, TiesBreakByCandidateIndexThenLayerAndHead) {
  // Free 2: A0 (key 2), then C0 before C1 (both key 3, same row: index order).
  EvictionPlan plan = plan_kvcompress_eviction(cache, seq, 10, options);
  EXPECT_EQ(evicted(plan, 0, 0), (Slots{1, 3}));
  EXPECT_EQ(evicted(plan, 1, 0), (Slots{0, 1}));
  EXPECT_EQ(plan.rows.size(), 2u);
  // Free 7: everything up to A1, then D0 (key 100, ahead of D1 by index).
  plan = plan_kvcompress_eviction(cache, seq, 5, options);
  EXPECT_EQ(plan.blocks_to_free, 7);
  EXPECT_EQ(evicted(plan, 0, 0), (Slots{0, 1, 2, 3, 4, 5}));
  EXPECT_EQ(evicted(plan, 0, 1), (Slots{0, 1, 2, 3, 4, 5}));
  EXPECT_EQ(evicted(plan, 1, 0), (Slots{0, 1, 2, 3, 4, 5}));
  EXPECT_EQ(evicted(plan, 1, 1), (Slots{0, 1}));
}

TEST_F(HandComputed, ProtectedWindowIsNeverEvictedEvenAtMetricZero) {
  // Ask for everything: only the 8 finite candidates go; slots 6..9 of every row stay
  // (8, 9 protected; 6, 7 share the last block with them, whose key is +inf).
  const EvictionPlan plan = plan_kvcompress_eviction(cache, seq, 0, options);
  EXPECT_EQ(plan.blocks_to_free, 8);
  for (int32_t r = 0; r < 4; ++r) EXPECT_EQ(evicted(plan, r / 2, r % 2), (Slots{0, 1, 2, 3, 4, 5}));
  compact(cache, plan);
  for (int32_t r = 0; r < 4; ++r) {
    const HeadRow& row = cache.row(seq, r / 2, r % 2);
    ASSERT_EQ(row.length, 4);
    std::set<int32_t> kept;
    for (int32_t s = 0; s < 4; ++s)
      kept.insert(cache.pool().positions()[slot_of(cache, seq, r / 2, r % 2, s)]);
    EXPECT_EQ(kept, (std::set<int32_t>{6, 7, 8, 9}));
  }
}

TEST_F(HandComputed, NothingToFreeGivesAnEmptyPlan) {
  for (int64_t target : {12, 13, 1000}) {
    const EvictionPlan plan = plan_kvcompress_eviction(cache, seq, target, options);
    EXPECT_TRUE(plan.rows.empty());
    EXPECT_EQ(plan.blocks_to_free, 0);
    EXPECT_EQ(plan.kvs_evicted, 0);
  }
}

TEST(Planner, EqualKeysAcrossRowsGoToTheLowerLayerAndHeadFirst) {
  PagedKvCache cache(config(2, 2, 2, 32));
  const SequenceId seq = cache.add_sequence();
  for (int32_t r = 0; r < 4; ++r)
    append_row(cache, seq, r / 2, r % 2, iota_positions(4), {1, 1, 1, 1});
  const PlannerOptions none{0, 0};
  EvictionPlan plan = plan_kvcompress_eviction(cache, seq, 7, none);  // free 1 of 8
  ASSERT_EQ(plan.rows.size(), 1u);
  EXPECT_EQ(plan.rows[0].layer, 0);
  EXPECT_EQ(plan.rows[0].kv_head, 0);
  EXPECT_EQ(plan.rows[0].slots, (Slots{0, 1}));
  plan = plan_kvcompress_eviction(cache, seq, 5, none);  // free 3: (0,0) x2, then (0,1)
  EXPECT_EQ(evicted(plan, 0, 0), (Slots{0, 1, 2, 3}));
  EXPECT_EQ(evicted(plan, 0, 1), (Slots{0, 1}));
  EXPECT_EQ(evicted(plan, 1, 0), (Slots{}));
}

TEST(Planner, HangingKvsOfAPartlyFilledLastBlockFormTheFirstCandidate) {
  // One row of 7 KVs, bs 4: 3 hanging. Freeing one block evicts exactly the 3 lowest.
  PagedKvCache cache(config(1, 1, 4, 8));
  const SequenceId seq = cache.add_sequence();
  append_row(cache, seq, 0, 0, iota_positions(7), {0.6f, 0.1f, 0.7f, 0.3f, 0.2f, 0.9f, 0.8f});
  const EvictionPlan plan = plan_kvcompress_eviction(cache, seq, 1, PlannerOptions{0, 0});
  EXPECT_EQ(plan.blocks_to_free, 1);
  EXPECT_EQ(plan.kvs_evicted, 3);
  EXPECT_EQ(evicted(plan, 0, 0), (Slots{1, 3, 4}));  // metrics 0.1, 0.3, 0.2
  compact(cache, plan);
  EXPECT_EQ(cache.row(seq, 0, 0).length, 4);
  EXPECT_EQ(cache.owned_blocks(seq), 1);
  // Full last block: the first candidate is a whole block (hanging = bs).
  const EvictionPlan next = plan_kvcompress_eviction(cache, seq, 0, PlannerOptions{0, 0});
  EXPECT_EQ(next.kvs_evicted, 4);  // the row may be emptied: nothing protects it
  compact(cache, next);
  EXPECT_EQ(cache.row(seq, 0, 0).length, 0);
  EXPECT_EQ(cache.pool().free_blocks(), 8);
}

TEST(Planner, NonFiniteMetricsAreNeverEvicted) {
  // A NaN or inf metric is an upstream bug; the planner keeps such KVs rather than guess.
  PagedKvCache cache(config(1, 1, 2, 8));
  const SequenceId seq = cache.add_sequence();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  append_row(cache, seq, 0, 0, iota_positions(8), {nan, 1, inf, 2, -inf, 3, 4, 5});
  const EvictionPlan plan = plan_kvcompress_eviction(cache, seq, 0, PlannerOptions{0, 0});
  // Sorted finite metrics: s1 s3 s5 s6 s7, then the three non-finite ones: candidates of 2
  // (hanging = bs = 2): {1,3} {5,6} are finite; {7, non-finite} is not.
  EXPECT_EQ(evicted(plan, 0, 0), (Slots{1, 3, 5, 6}));
  EXPECT_EQ(plan.blocks_to_free, 2);
}

TEST(Planner, SinkTokensAreKept) {
  PagedKvCache cache(config(1, 2, 4, 32));
  const SequenceId seq = cache.add_sequence();
  std::vector<float> metrics(24, 5.0f);
  for (int i = 0; i < 4; ++i) metrics[static_cast<size_t>(i)] = 0.0f;  // sinks look useless
  append_row(cache, seq, 0, 0, iota_positions(24), metrics);
  append_row(cache, seq, 0, 1, iota_positions(24), metrics);
  const EvictionPlan plan = plan_kvcompress_eviction(cache, seq, 0, PlannerOptions{4, 4});
  compact(cache, plan);
  for (int32_t h = 0; h < 2; ++h) {
    std::set<int32_t> kept;
    for (int32_t s = 0; s < cache.row(seq, 0, h).length; ++s) {
      kept.insert(cache.pool().positions()[slot_of(cache, seq, 0, h, s)]);
    }
    EXPECT_EQ(kept, (std::set<int32_t>{0, 1, 2, 3, 20, 21, 22, 23}));  // sinks + window
  }
}

// 2 x 2 rows of n KVs (positions 0..n-1); row r's metrics are uniform in [0, r + 1), seed 7.
// Returns the metrics, [row][position].
std::vector<std::vector<float>> append_rising_metric_rows(PagedKvCache& cache, SequenceId seq,
                                                          int32_t n) {
  std::mt19937 rng(7);
  std::vector<std::vector<float>> metrics;
  for (int32_t r = 0; r < 4; ++r) {
    std::uniform_real_distribution<float> u(0.0f, static_cast<float>(r + 1));
    std::vector<float>& m = metrics.emplace_back(n);
    for (float& x : m) x = u(rng);
    append_row(cache, seq, r / 2, r % 2, iota_positions(n), m);
  }
  return metrics;
}

TEST(Planner, RowsWithDifferentMetricsKeepDifferentLengthsWithinTheBudget) {
  // 2 x 2 rows of 256 KVs, bs 16; row r's metrics are uniform in [0, r + 1): the low-metric
  // rows lose the most. Budget C = 128 KVs per row on average: a global metric threshold t
  // with sum_r (1 - t / (r + 1)) = 2 gives t ~ 0.96, i.e. rows keep ~4% (-> the 8 protected
  // KVs, one block), ~52%, ~68% and ~76%.
  const int32_t bs = 16, n = 256, rows = 4;
  PagedKvCache cache(config(2, 2, bs, 128));
  const SequenceId seq = cache.add_sequence();
  append_rising_metric_rows(cache, seq, n);
  const CacheBudget budget{CacheBudget::kMaxCacheTokens, 128.0};
  const int64_t target = target_blocks(budget, n, cache, seq);
  EXPECT_EQ(target, 128 * rows / bs);
  compact(cache, plan_kvcompress_eviction(cache, seq, target, PlannerOptions{}));
  EXPECT_EQ(cache.owned_blocks(seq), target);
  const int64_t retained = cache.retained_kvs(seq);
  // Exactly target blocks; each non-empty row's last block holds >= 1 KV.
  EXPECT_LE(retained, target * bs);
  EXPECT_GE(retained, target * bs - rows * (bs - 1));
  std::vector<int32_t> lengths;
  for (int32_t r = 0; r < rows; ++r) lengths.push_back(cache.row(seq, r / 2, r % 2).length);
  for (int32_t r = 1; r < rows; ++r) EXPECT_LT(lengths[r - 1], lengths[r]) << "row " << r;
  EXPECT_EQ(lengths[0], 16);  // one block: the protected window plus the lowest-key leftovers
  EXPECT_GE(lengths[0], 8);   // the protected window survives in every row
}

TEST(Planner, HeadFloorKeepsEachRowsTopKvsInsideTheGlobalOrder) {
  // The rows of RowsWithDifferentMetricsKeepDifferentLengthsWithinTheBudget: without a floor,
  // row 0 keeps one block. With head_floor 0.5 (of the mean C = 128) every row first keeps its
  // 64 best KVs, so row 0 keeps exactly those 64 plus what the global order gives it; the
  // total stays the budget.
  const int32_t bs = 16, n = 256, rows = 4;
  PagedKvCache cache(config(2, 2, bs, 128));
  const SequenceId seq = cache.add_sequence();
  const std::vector<std::vector<float>> metrics = append_rising_metric_rows(cache, seq, n);
  const int64_t target = 128 * rows / bs;
  PlannerOptions floored;
  floored.head_floor = 0.5;
  compact(cache, plan_kvcompress_eviction(cache, seq, target, floored));
  EXPECT_EQ(cache.owned_blocks(seq), target);
  for (int32_t r = 0; r < rows; ++r) {
    const HeadRow& row = cache.row(seq, r / 2, r % 2);
    EXPECT_GE(row.length, 64) << "row " << r;
    // The 64 best (unprotected) metrics of the row, by position, are all still held.
    std::vector<int32_t> by_metric(n - 8);  // positions 248..255 are the protected window
    std::iota(by_metric.begin(), by_metric.end(), 0);
    std::sort(by_metric.begin(), by_metric.end(),
              [&](int32_t a, int32_t b) { return metrics[r][a] > metrics[r][b]; });
    std::set<int32_t> kept;
    for (int32_t s = 0; s < row.length; ++s)
      kept.insert(cache.pool().positions()[slot_of(cache, seq, r / 2, r % 2, s)]);
    for (int32_t i = 0; i < 64 - 8; ++i) EXPECT_TRUE(kept.count(by_metric[i])) << r << " " << i;
  }
  EXPECT_EQ(cache.row(seq, 0, 0).length, 64);  // floor only: it had a single block without
  PlannerOptions bad;
  bad.head_floor = 1.5;
  EXPECT_THROW(plan_kvcompress_eviction(cache, seq, target, bad), Error);
}

// Sets the attention mass of row (l, h)'s slots to `mass` (logical slot order).
void set_mass(PagedKvCache& cache, SequenceId seq, int32_t l, int32_t h,
              const std::vector<float>& mass) {
  for (size_t i = 0; i < mass.size(); ++i) {
    cache.pool().mass()[slot_of(cache, seq, l, h, static_cast<int32_t>(i))] = mass[i];
  }
}

TEST(Planner, MarginalErrorSparesTheRowThatWouldLoseMostOfItsAttention) {
  // 1 layer x 2 KV heads, bs 4, rows of 12 KVs, window 4 (positions 8..11 protected): each row
  // has two candidates. Row A: metric 1 everywhere, mass 10 on the evictable KVs and 1 on the
  // protected ones: its 8 evictable KVs hold 80 of its 84 mass. Row B: metric 2, mass 1, and
  // 100 on the protected KVs (8 of 408). The key rule frees row A (keys 1 < 2). By marginal
  // error, A's first candidate costs 4 + (40/44)^2 * 8 = 10.6 and B's each cost ~8.0: B goes.
  PagedKvCache cache(config(1, 2, 4, 16));
  const SequenceId seq = cache.add_sequence();
  append_row(cache, seq, 0, 0, iota_positions(12), std::vector<float>(12, 1.0f));
  append_row(cache, seq, 0, 1, iota_positions(12), std::vector<float>(12, 2.0f));
  std::vector<float> mass_a(12, 10.0f), mass_b(12, 1.0f);
  for (int32_t i = 8; i < 12; ++i) mass_a[i] = 1.0f, mass_b[i] = 100.0f;
  set_mass(cache, seq, 0, 0, mass_a);
  set_mass(cache, seq, 0, 1, mass_b);
  PlannerOptions by_key{4, 0};
  PlannerOptions by_error = by_key;
  by_error.marginal_error = true;
  const Slots first_eight{0, 1, 2, 3, 4, 5, 6, 7};
  const EvictionPlan key_plan = plan_kvcompress_eviction(cache, seq, 4, by_key);  // free 2
  EXPECT_EQ(evicted(key_plan, 0, 0), first_eight);
  EXPECT_EQ(evicted(key_plan, 0, 1), Slots{});
  const EvictionPlan error_plan = plan_kvcompress_eviction(cache, seq, 4, by_error);
  EXPECT_EQ(error_plan.blocks_to_free, 2);
  EXPECT_EQ(evicted(error_plan, 0, 0), Slots{});
  EXPECT_EQ(evicted(error_plan, 0, 1), first_eight);
  // Without mass the rule compares metric sums: row A (4 per candidate) goes first again.
  set_mass(cache, seq, 0, 0, std::vector<float>(12, 0.0f));
  set_mass(cache, seq, 0, 1, std::vector<float>(12, 0.0f));
  EXPECT_EQ(evicted(plan_kvcompress_eviction(cache, seq, 4, by_error), 0, 0), first_eight);
}

// ---- Randomized property test -------------------------------------------------------------

struct Kv {
  int32_t slot;
  int32_t position;
  float metric;
};

// Row contents read back from the cache: [rows] of (slot, position, metric).
std::vector<std::vector<Kv>> read_rows(const PagedKvCache& cache, SequenceId seq) {
  const int32_t H = cache.config().n_head_kv;
  std::vector<std::vector<Kv>> rows(static_cast<size_t>(cache.config().n_layer * H));
  for (size_t r = 0; r < rows.size(); ++r) {
    const auto l = static_cast<int32_t>(r) / H, h = static_cast<int32_t>(r) % H;
    for (int32_t s = 0; s < cache.row(seq, l, h).length; ++s) {
      const int64_t p = slot_of(cache, seq, l, h, s);
      rows[r].push_back(Kv{s, cache.pool().positions()[p], cache.pool().metric()[p]});
    }
  }
  return rows;
}

// Plans, checks the plan against an independent naive derivation of every guarantee in the
// planner header, compacts, and checks the result. Returns {blocks freed, blocks requested}.
std::pair<int64_t, int64_t> check_plan_and_compact(PagedKvCache& cache, SequenceId seq,
                                                   int64_t target, const PlannerOptions& options) {
  const int32_t H = cache.config().n_head_kv, bs = cache.config().block_size;
  const std::vector<std::vector<Kv>> original = read_rows(cache, seq);
  const int64_t owned = cache.owned_blocks(seq);
  const EvictionPlan plan = plan_kvcompress_eviction(cache, seq, target, options);
  EXPECT_EQ(plan.seq, seq);

  // Independent derivation: protection, per-row sorted order and candidate keys.
  int32_t max_pos = std::numeric_limits<int32_t>::min();
  for (const auto& row : original) {
    for (const Kv& kv : row) max_pos = std::max(max_pos, kv.position);
  }
  auto is_protected = [&](const Kv& kv) {
    return kv.position >= int64_t{max_pos} - options.protected_window + 1 ||
           kv.position < options.sink_tokens;
  };
  auto eff = [&](const Kv& kv) {
    return is_protected(kv) ? std::numeric_limits<float>::infinity() : kv.metric;
  };
  using Cand = std::tuple<float, int32_t, int32_t>;  // key, row (= layer-major index), index
  std::vector<Cand> finite_cands;
  std::vector<std::vector<Kv>> sorted_rows(original.size());
  for (size_t r = 0; r < original.size(); ++r) {
    std::vector<Kv> s = original[r];
    std::sort(s.begin(), s.end(), [&](const Kv& a, const Kv& b) {
      return std::make_pair(eff(a), a.slot) < std::make_pair(eff(b), b.slot);
    });
    const auto n = static_cast<int32_t>(s.size());
    const int32_t hanging = n % bs == 0 ? bs : n % bs;
    for (int32_t c = 0, end = hanging; n > 0 && end <= n; ++c, end += bs) {
      const float key = eff(s[static_cast<size_t>(end - 1)]);
      if (std::isfinite(key)) finite_cands.emplace_back(key, static_cast<int32_t>(r), c);
    }
    sorted_rows[r] = std::move(s);
  }
  std::sort(finite_cands.begin(), finite_cands.end());
  const int64_t to_free = std::max<int64_t>(0, owned - target);
  const auto expect_freed = std::min<int64_t>(to_free, static_cast<int64_t>(finite_cands.size()));
  EXPECT_EQ(plan.blocks_to_free, expect_freed);
  std::vector<int32_t> cands_per_row(original.size(), 0);
  for (int64_t i = 0; i < expect_freed; ++i) {
    ++cands_per_row[static_cast<size_t>(std::get<1>(finite_cands[static_cast<size_t>(i)]))];
  }

  // Plan shape: rows unique, slots sorted, unique, in range; totals consistent.
  std::set<std::pair<int32_t, int32_t>> seen_rows;
  int64_t kvs = 0;
  for (const RowEviction& ev : plan.rows) {
    EXPECT_TRUE(seen_rows.insert({ev.layer, ev.kv_head}).second);
    EXPECT_FALSE(ev.slots.empty());
    if (ev.slots.empty()) continue;
    EXPECT_TRUE(std::adjacent_find(ev.slots.begin(), ev.slots.end(), std::greater_equal<>()) ==
                ev.slots.end());
    EXPECT_GE(ev.slots.front(), 0);
    EXPECT_LT(ev.slots.back(), cache.row(seq, ev.layer, ev.kv_head).length);
    kvs += static_cast<int64_t>(ev.slots.size());
  }
  EXPECT_EQ(plan.kvs_evicted, kvs);

  float max_evicted_metric = -std::numeric_limits<float>::infinity();
  for (size_t r = 0; r < original.size(); ++r) {
    const auto& s = sorted_rows[r];
    const auto n = static_cast<int32_t>(s.size());
    const Slots got = evicted(plan, static_cast<int32_t>(r) / H, static_cast<int32_t>(r) % H);
    const int32_t e = cands_per_row[r];
    const int32_t hanging = n % bs == 0 ? bs : n % bs;
    // Granularity: hanging + (e-1)*bs KVs, i.e. exactly e blocks.
    const int32_t k = e == 0 ? 0 : hanging + (e - 1) * bs;
    EXPECT_EQ(static_cast<int32_t>(got.size()), k) << "row " << r;
    // The evicted set is the prefix of the row's (metric, slot) order.
    Slots want;
    for (int32_t i = 0; i < k; ++i) want.push_back(s[static_cast<size_t>(i)].slot);
    std::sort(want.begin(), want.end());
    EXPECT_EQ(got, want) << "row " << r;
    float min_kept = std::numeric_limits<float>::infinity();
    for (int32_t j = k; j < n; ++j) min_kept = std::min(min_kept, eff(s[static_cast<size_t>(j)]));
    for (int32_t i = 0; i < k; ++i) {
      const Kv& kv = s[static_cast<size_t>(i)];
      EXPECT_FALSE(is_protected(kv)) << "protected position " << kv.position << " evicted";
      max_evicted_metric = std::max(max_evicted_metric, kv.metric);
      // Within the row: every evicted metric <= every kept metric (protected = +inf).
      EXPECT_LE(kv.metric, min_kept) << "row " << r;
    }
  }
  // Across rows: evicted metrics <= the key of every kept finite candidate.
  for (size_t i = static_cast<size_t>(expect_freed); i < finite_cands.size(); ++i) {
    EXPECT_LE(max_evicted_metric, std::get<0>(finite_cands[i]));
  }

  // Compaction frees exactly the planned blocks; survivors are the non-evicted KVs.
  const int32_t free_before = cache.pool().free_blocks();
  const CompactionPlan cp = plan_compaction(cache, seq, plan);
  EXPECT_EQ(cp.blocks_freed, expect_freed);
  apply_compaction(cache, cp);
  cache.check_invariants();
  EXPECT_EQ(cache.pool().free_blocks(), free_before + expect_freed);
  EXPECT_EQ(cache.owned_blocks(seq), owned - expect_freed);
  if (expect_freed == to_free && to_free > 0) EXPECT_EQ(cache.owned_blocks(seq), target);
  const std::vector<std::vector<Kv>> after = read_rows(cache, seq);
  for (size_t r = 0; r < original.size(); ++r) {
    const Slots ev = evicted(plan, static_cast<int32_t>(r) / H, static_cast<int32_t>(r) % H);
    std::multiset<std::pair<int32_t, float>> want, got;
    for (const Kv& kv : original[r]) {
      if (!std::binary_search(ev.begin(), ev.end(), kv.slot)) want.insert({kv.position, kv.metric});
    }
    for (const Kv& kv : after[r]) got.insert({kv.position, kv.metric});
    EXPECT_EQ(got, want) << "row " << r;
  }
  return {expect_freed, to_free};
}

// Fills every row with a random subset of positions [0, span) in random slot order (as after
// earlier compactions) and random metrics: 0 few distinct values (ties), 1 continuous, 2 mixed.
void fill_random(PagedKvCache& cache, SequenceId seq, int32_t max_len, int32_t span,
                 int metric_kind, std::mt19937& rng) {
  auto uniform = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  const int32_t H = cache.config().n_head_kv;
  for (int32_t r = 0; r < cache.config().n_layer * H; ++r) {
    const int32_t n = uniform(0, max_len);
    std::vector<int32_t> pos(static_cast<size_t>(span));
    for (size_t i = 0; i < pos.size(); ++i) pos[i] = static_cast<int32_t>(i);
    std::shuffle(pos.begin(), pos.end(), rng);
    pos.resize(static_cast<size_t>(n));
    std::vector<float> m(static_cast<size_t>(n));
    for (float& x : m) {
      const bool tie = metric_kind == 0 || (metric_kind == 2 && uniform(0, 1) == 0);
      x = tie ? 0.25f * static_cast<float>(uniform(0, 4))
              : std::uniform_real_distribution<float>(0.0f, 3.0f)(rng);
    }
    append_row(cache, seq, r / H, r % H, pos, m);
  }
}

TEST(PlannerProperty, RandomCachesSatisfyEveryStatedGuarantee) {
  std::mt19937 rng(12345);
  auto uniform = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  const int32_t block_sizes[] = {1, 2, 3, 4, 8, 16};
  int64_t total_freed = 0, cases_with_shortfall = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    const int32_t L = uniform(1, 4), H = uniform(1, 3), bs = block_sizes[uniform(0, 5)];
    const int32_t max_len = uniform(0, 48);
    PagedKvCache cache(config(L, H, bs, L * H * (max_len / bs + 1) + 4));
    const SequenceId seq = cache.add_sequence();
    const PlannerOptions options{uniform(0, 6), uniform(0, 3)};
    fill_random(cache, seq, max_len, max_len + 4, uniform(0, 2), rng);
    const int64_t owned = cache.owned_blocks(seq);
    const int64_t target = uniform(0, static_cast<int>(owned) + 2);
    SCOPED_TRACE(testing::Message() << "iter " << iter << " L" << L << " H" << H << " bs" << bs
                                    << " target " << target << " owned " << owned);
    const auto [freed, requested] = check_plan_and_compact(cache, seq, target, options);
    if (::testing::Test::HasFailure()) return;  // one failing case is enough to read
    total_freed += freed;
    cases_with_shortfall += freed < requested;
  }
  // The generator must exercise both full and partial (protection-limited) evictions.
  EXPECT_GT(total_freed, 10000);
  EXPECT_GT(cases_with_shortfall, 100);
}

TEST(PlannerProperty, LargeSequencesUseThreadsAndPlanExactlyAsOneThread) {
  // 30 x 3 rows of up to 600 KVs: above the planner's threading threshold.
  std::mt19937 rng(99);
  for (int metric_kind = 0; metric_kind < 3; ++metric_kind) {
    PagedKvCache cache(config(30, 3, 16, 30 * 3 * 40));
    const SequenceId seq = cache.add_sequence();
    fill_random(cache, seq, 600, 640, metric_kind, rng);
    ASSERT_GE(cache.retained_kvs(seq), 16384);
    const int64_t target = cache.owned_blocks(seq) / 5;
    const PlannerOptions options{8, 2};
    const int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    const EvictionPlan one = plan_kvcompress_eviction(cache, seq, target, options);
    omp_set_num_threads(std::max(threads, 4));
    const EvictionPlan many = plan_kvcompress_eviction(cache, seq, target, options);
    omp_set_num_threads(threads);
    ASSERT_EQ(one.rows.size(), many.rows.size());
    for (size_t i = 0; i < one.rows.size(); ++i) {
      EXPECT_EQ(one.rows[i].layer, many.rows[i].layer);
      EXPECT_EQ(one.rows[i].kv_head, many.rows[i].kv_head);
      EXPECT_EQ(one.rows[i].slots, many.rows[i].slots);
    }
    EXPECT_EQ(one.blocks_to_free, many.blocks_to_free);
    const auto [freed, requested] = check_plan_and_compact(cache, seq, target, options);
    EXPECT_EQ(freed, requested);
  }
}

TEST(PlannerProperty, MarginalErrorTakesTheCheapestNextCandidateEachTime) {
  // Random caches with random mass; the per-row counts must be those of a naive greedy over
  // the header's cost(E) = M_E + (f / (1 - f))^2 M_K, recomputed from scratch for every
  // candidate, and each row must give up a prefix of its (metric, slot) order.
  std::mt19937 rng(2024);
  auto uniform = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  const int32_t block_sizes[] = {1, 2, 4, 8};
  int64_t differs_from_key_rule = 0;
  for (int iter = 0; iter < 400; ++iter) {
    const int32_t L = uniform(1, 3), H = uniform(1, 3), bs = block_sizes[uniform(0, 3)];
    const int32_t max_len = uniform(1, 40);
    PagedKvCache cache(config(L, H, bs, L * H * (max_len / bs + 1) + 4));
    const SequenceId seq = cache.add_sequence();
    fill_random(cache, seq, max_len, max_len + 4, uniform(0, 2), rng);
    const int32_t n_rows = L * H;
    for (int32_t r = 0; r < n_rows; ++r) {
      std::vector<float> mass(static_cast<size_t>(cache.row(seq, r / H, r % H).length));
      std::uniform_real_distribution<float> u(0.0f, 3.0f);
      for (float& m : mass) m = uniform(0, 3) == 0 ? 0.0f : u(rng);
      set_mass(cache, seq, r / H, r % H, mass);
    }
    PlannerOptions options{uniform(0, 4), 0};
    const int64_t owned = cache.owned_blocks(seq);
    const int64_t target = uniform(0, static_cast<int>(owned));
    SCOPED_TRACE(testing::Message() << "iter " << iter << " bs" << bs << " target " << target);
    const PlannerOptions by_key = options;
    options.marginal_error = true;
    const EvictionPlan plan = plan_kvcompress_eviction(cache, seq, target, options);

    int32_t max_pos = std::numeric_limits<int32_t>::min();
    const std::vector<std::vector<Kv>> rows = read_rows(cache, seq);
    for (const auto& row : rows)
      for (const Kv& kv : row) max_pos = std::max(max_pos, kv.position);
    const auto evictable = [&](const Kv& kv) {
      return kv.position < int64_t{max_pos} - options.protected_window + 1;
    };
    std::vector<std::vector<double>> cost(rows.size());  // [row][e]: after e + 1 candidates
    std::vector<std::vector<Kv>> sorted(rows.size());
    for (size_t r = 0; r < rows.size(); ++r) {
      const auto l = static_cast<int32_t>(r) / H, h = static_cast<int32_t>(r) % H;
      const auto mass_of = [&](const Kv& kv) {
        return double{cache.pool().mass()[slot_of(cache, seq, l, h, kv.slot)]};
      };
      double m_row = 0.0, a_row = 0.0;
      for (const Kv& kv : rows[r]) m_row += kv.metric, a_row += mass_of(kv);
      std::vector<Kv> s = rows[r];
      std::sort(s.begin(), s.end(), [&](const Kv& a, const Kv& b) {
        const float ka = evictable(a) ? a.metric : std::numeric_limits<float>::infinity();
        const float kb = evictable(b) ? b.metric : std::numeric_limits<float>::infinity();
        return std::make_pair(ka, a.slot) < std::make_pair(kb, b.slot);
      });
      const auto n = static_cast<int32_t>(s.size());
      const int32_t hanging = n % bs == 0 ? bs : n % bs;
      for (int32_t end = hanging; n > 0 && end <= n && evictable(s[end - 1]); end += bs) {
        double m_e = 0.0, a_e = 0.0;
        for (int32_t i = 0; i < end; ++i) m_e += s[i].metric, a_e += mass_of(s[i]);
        const double f = a_row > 0.0 ? std::min(1.0, a_e / a_row) : 0.0;
        const double m_k = std::max(0.0, m_row - m_e);
        const double g = f <= 0.0 || m_k <= 0.0 ? 0.0
                         : f < 1.0              ? (f / (1.0 - f)) * (f / (1.0 - f)) * m_k
                                                : std::numeric_limits<double>::infinity();
        cost[r].push_back(m_e + g);
      }
      sorted[r] = std::move(s);
    }
    std::vector<int32_t> taken(rows.size(), 0);
    int64_t freed = 0;
    for (; freed < owned - target; ++freed) {
      int32_t best = -1;
      double best_marginal = 0.0;
      for (size_t r = 0; r < rows.size(); ++r) {
        const int32_t e = taken[r];
        if (e >= static_cast<int32_t>(cost[r].size())) continue;
        const double marginal = cost[r][e] - (e == 0 ? 0.0 : cost[r][e - 1]);
        if (best < 0 || marginal < best_marginal) {
          best = static_cast<int32_t>(r);
          best_marginal = marginal;
        }
      }
      if (best < 0) break;
      ++taken[static_cast<size_t>(best)];
    }
    ASSERT_EQ(plan.blocks_to_free, freed);
    for (size_t r = 0; r < rows.size(); ++r) {
      const auto n = static_cast<int32_t>(sorted[r].size());
      const int32_t hanging = n % bs == 0 ? bs : n % bs;
      const int32_t k = taken[r] == 0 ? 0 : hanging + (taken[r] - 1) * bs;
      Slots want;
      for (int32_t i = 0; i < k; ++i) want.push_back(sorted[r][static_cast<size_t>(i)].slot);
      std::sort(want.begin(), want.end());
      ASSERT_EQ(evicted(plan, static_cast<int32_t>(r) / H, static_cast<int32_t>(r) % H), want)
          << "row " << r;
    }
    const EvictionPlan key_plan = plan_kvcompress_eviction(cache, seq, target, by_key);
    for (size_t r = 0; r < rows.size(); ++r) {
      const auto l = static_cast<int32_t>(r) / H, h = static_cast<int32_t>(r) % H;
      if (evicted(key_plan, l, h).size() != evicted(plan, l, h).size()) {
        ++differs_from_key_rule;
        break;
      }
    }
    compact(cache, plan);
    EXPECT_EQ(cache.owned_blocks(seq), owned - freed);
  }
  EXPECT_GT(differs_from_key_rule, 50);  // the mass term changes real decisions
}

// ---- Budgets ------------------------------------------------------------------------------

TEST(Budget, CompressionRateUsesThePaperFormulaWithMinCache) {
  // C = max(min_cache, floor((prompt_len / cr - 1) / bs) * bs), bs 16; prompt of 6000 tokens
  // (the paper's throughput setting): cr 8 -> floor(749/16)*16 = 736; cr 32 -> floor(186.5/16)*16
  // = 176; cr 64 -> 80 < 128 -> 128 (min_cache); with min_cache 0 -> 80.
  PagedKvCache cache(KvCacheConfig{30, 3, 64, 16, 8, KvStorageType::kF16, true});
  const SequenceId seq = cache.add_sequence();
  auto c = [&](double cr, int32_t min_cache, int64_t prompt) {
    return cache_tokens_per_row(CacheBudget{CacheBudget::kCompressionRate, cr, min_cache}, prompt,
                                cache, seq);
  };
  EXPECT_EQ(c(8, 128, 6000), 736);
  EXPECT_EQ(c(32, 128, 6000), 176);
  EXPECT_EQ(c(64, 128, 6000), 128);
  EXPECT_EQ(c(64, 0, 6000), 80);
  EXPECT_EQ(c(2, 128, 1000), 496);  // (500 - 1) / 16 = 31.2 -> 31 * 16
  EXPECT_EQ(c(1, 0, 17), 16);       // cr 1 still drops the partial block: floor(16/16)*16
  EXPECT_EQ(c(4, 0, 2), 0);         // negative before clamping
  // Blocks: ceil(C * L * H / bs) = ceil(736 * 90 / 16) = 4140.
  EXPECT_EQ(target_blocks(CacheBudget{CacheBudget::kCompressionRate, 8, 128}, 6000, cache, seq),
            4140);
}

TEST(Budget, MaxCacheTokensRoundsUpToWholeBlocksOverTheSequence) {
  PagedKvCache cache(KvCacheConfig{2, 2, 4, 16, 64, KvStorageType::kF32, true});
  const SequenceId seq = cache.add_sequence();
  auto blocks = [&](double c) {
    return target_blocks(CacheBudget{CacheBudget::kMaxCacheTokens, c}, 0, cache, seq);
  };
  EXPECT_EQ(blocks(4), 1);  // 16 KVs over 4 rows = one block of 16
  EXPECT_EQ(blocks(5), 2);  // 20 -> ceil(20/16)
  EXPECT_EQ(blocks(256), 64);
  EXPECT_EQ(blocks(1), 1);
}

TEST(Budget, FractionKeptRoundsKvsUpThenBlocksUpAndOneMeansNoCompression) {
  PagedKvCache cache(config(2, 2, 4, 64));
  const SequenceId seq = cache.add_sequence();
  for (int32_t r = 0; r < 4; ++r)
    append_row(cache, seq, r / 2, r % 2, iota_positions(10), std::vector<float>(10, 1.0f));
  ASSERT_EQ(cache.owned_blocks(seq), 12);  // 40 KVs in 4 x 3 blocks
  auto blocks = [&](double f) {
    return target_blocks(CacheBudget{CacheBudget::kFractionKept, f}, 10, cache, seq);
  };
  EXPECT_EQ(blocks(0.5), 5);   // 20 KVs -> 5 blocks
  EXPECT_EQ(blocks(0.25), 3);  // 10 KVs -> ceil(10/4)
  EXPECT_EQ(blocks(0.01), 1);  // 0.4 -> 1 KV -> 1 block
  EXPECT_EQ(blocks(1.0), 12);  // not ceil(40/4) = 10: f = 1 keeps every block
  EXPECT_DOUBLE_EQ(
      cache_tokens_per_row(CacheBudget{CacheBudget::kFractionKept, 0.5}, 10, cache, seq), 5.0);
}

TEST(Budget, InvalidValuesAreRejected) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  using K = CacheBudget;
  for (const CacheBudget& b :
       {K{K::kMaxCacheTokens, 0}, K{K::kMaxCacheTokens, -16}, K{K::kMaxCacheTokens, 2.5},
        K{K::kMaxCacheTokens, nan}, K{K::kMaxCacheTokens, inf}, K{K::kMaxCacheTokens, 1e13},
        K{K::kCompressionRate, 0.5}, K{K::kCompressionRate, 0}, K{K::kCompressionRate, -2},
        K{K::kCompressionRate, nan}, K{K::kCompressionRate, inf}, K{K::kCompressionRate, 8, -1},
        K{K::kFractionKept, 0}, K{K::kFractionKept, -0.1}, K{K::kFractionKept, 1.5},
        K{K::kFractionKept, nan}}) {
    EXPECT_THROW(validate_budget(b), Error) << describe(b);
  }
  for (const CacheBudget& b :
       {K{K::kMaxCacheTokens, 1}, K{K::kMaxCacheTokens, 128}, K{K::kCompressionRate, 1},
        K{K::kCompressionRate, 64, 0}, K{K::kFractionKept, 1}, K{K::kFractionKept, 1e-6}}) {
    EXPECT_NO_THROW(validate_budget(b)) << describe(b);
  }
  PagedKvCache cache(config(1, 1, 4, 4));
  const SequenceId seq = cache.add_sequence();
  EXPECT_THROW(target_blocks(K{K::kFractionKept, 2}, 0, cache, seq), Error);
  EXPECT_THROW(plan_kvcompress_eviction(cache, seq, 0, PlannerOptions{-1, 0}), Error);
  EXPECT_THROW(plan_kvcompress_eviction(cache, seq, 0, PlannerOptions{8, -1}), Error);
}

}  // namespace
}  // namespace kvc
