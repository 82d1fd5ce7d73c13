// Paged attention over the per-head cache equals naive dense attention over exactly the same
// KVs; the query-tiled prefill kernel equals the single-query reference. Unused and freed slots
// are NaN-poisoned (poison_freed), so a stray read fails.
#include <gtest/gtest.h>

#include "dense_attention.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <memory>
#include <random>
#include <string>

#include "kernels/cpu/paged_attention_avx2.h"
#include "kernels/cpu/paged_attention_avx512.h"
#include "kernels/cpu_features.h"
#include "kernels/paged_attention.h"
#include "kernels/quant.h"
#include "kv/paged_kv_cache.h"
#include "util/fp16.h"

namespace kvc {
namespace {

struct Case {
  int32_t group;
  int32_t length;
  int32_t head_dim;
  KvStorageType storage;
};

// x: rows of head_dim values, rounded as the cache stores them (q8_0 through the reference
// quantizer, block by block).
void round_to_storage(std::vector<float>& x, int32_t head_dim, KvStorageType storage) {
  if (storage == KvStorageType::kF16) {
    for (float& e : x) e = fp16_to_float(float_to_fp16(e));
  } else if (storage == KvStorageType::kQ8_0) {
    std::vector<uint8_t> q(static_cast<size_t>(kv_row_bytes(storage, head_dim)));
    for (size_t r = 0; r < x.size(); r += static_cast<size_t>(head_dim)) {
      reference::quantize_row_for_dot(TensorType::Q8_0, &x[r], q.data(), head_dim);
      reference::dequantize_row(TensorType::Q8_0, q.data(), &x[r], head_dim);
    }
  }
}

// One head row of n KVs (head 1 of a one-layer, two-head cache) with shuffled positions (slot
// order must not matter, as after compaction), its blocks interleaved with those of a second
// sequence that is then removed: NaN-poisoned free blocks sit between ours and past our tail.
struct ScatteredRow {
  std::unique_ptr<PagedKvCache> cache;
  SequenceId seq = 0;
  std::vector<float> k, v;    // [n, d] as drawn (before the cache's rounding)
  std::vector<int32_t> pos;   // [n] a permutation of 0 .. n - 1
  PagedKvPool pool() const { return cache->pool().view(); }
  PagedHeadRow row() const { return cache->row_view(seq, 0, 1); }
};

ScatteredRow scattered_row(int32_t n, int32_t d, int32_t bs, KvStorageType storage,
                           std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  ScatteredRow r;
  r.cache = std::make_unique<PagedKvCache>(
      KvCacheConfig{1, 2, d, bs, 2 * ((n + bs - 1) / bs) + 4, storage, true});
  r.seq = r.cache->add_sequence();
  const SequenceId other = r.cache->add_sequence();
  r.k.resize(static_cast<size_t>(n) * d);
  r.v.resize(r.k.size());
  for (auto& x : r.k) x = normal(rng);
  for (auto& x : r.v) x = normal(rng);
  r.pos.resize(static_cast<size_t>(n));
  for (int32_t j = 0; j < n; ++j) r.pos[j] = j;
  std::shuffle(r.pos.begin(), r.pos.end(), rng);
  for (int32_t j = 0; j < n; ++j) {
    r.cache->append(r.seq, 0, 1, &r.k[j * d], d, &r.v[j * d], d, &r.pos[j], 1);
    r.cache->append(other, 0, 0, &r.k[j * d], d, &r.v[j * d], d, &r.pos[j], 1);
  }
  r.cache->remove_sequence(other);
  return r;
}

// One token's queries (group rows of head_dim) as a q8_0 cache meets them: quantized as K is
// (paged_attention.h). Other storage types meet the float query: unchanged.
void round_queries(float* q, int32_t group, int32_t head_dim, KvStorageType storage) {
  if (storage != KvStorageType::kQ8_0) return;
  std::vector<float> row(q, q + static_cast<size_t>(group) * head_dim);
  round_to_storage(row, head_dim, storage);
  std::copy(row.begin(), row.end(), q);
}

class PagedAttentionTest : public ::testing::TestWithParam<Case> {};

TEST_P(PagedAttentionTest, MatchesDenseAttentionOverTheSameKvs) {
  const Case c = GetParam();
  const int32_t d = c.head_dim;
  const int32_t block_size = 16;
  std::mt19937 rng(c.group * 1000 + c.length);
  std::normal_distribution<float> normal(0.0f, 1.0f);

  ScatteredRow sr = scattered_row(c.length, d, block_size, c.storage, rng);
  std::vector<float>& k = sr.k;
  std::vector<float>& v = sr.v;
  const std::vector<int32_t>& pos = sr.pos;
  PagedKvCache& cache = *sr.cache;
  const SequenceId seq = sr.seq;
  round_to_storage(k, d, c.storage);
  round_to_storage(v, d, c.storage);

  const int32_t n_query = 3;
  std::vector<float> q(static_cast<size_t>(n_query) * c.group * d);
  for (auto& x : q) x = normal(rng);
  // A q8_0 cache meets the query quantized as K is (paged_attention.h): so does the reference.
  std::vector<float> q_dense = q;
  for (int32_t t = 0; t < n_query; ++t) round_queries(&q_dense[t * c.group * d], c.group, d, c.storage);
  // The last query sees everything; the others see a prefix of positions (causal mask).
  std::vector<int32_t> qpos = {c.length - 1, c.length / 2, 0};
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));

  const std::vector<float> vmax = test_support::row_abs_max(v, d);
  for (bool force_scalar : {false, true}) {
    force_scalar_kernels(force_scalar);
    SCOPED_TRACE(force_scalar ? "scalar" : "dispatched");
    // The decode kernels' int16 weights on q8_0 (the reference's sums are exact): the bound
    // of the output from row slots [begin, end), per 32-slot chunk from begin.
    const bool rounded_weights = !force_scalar && c.storage == KvStorageType::kQ8_0;
    const auto weight_bound = [&](int32_t t, int32_t g, int32_t begin, int32_t end) {
      if (!rounded_weights || end <= begin) return 0.0f;
      std::vector<double> p;  // in row slot order, as k, v and pos are
      test_support::dense_attention(&q_dense[(static_cast<size_t>(t) * c.group + g) * d], k, v,
                                    pos, qpos[t], d, scale, &p);
      return static_cast<float>(
          test_support::q8_0_value_bound(p.data() + begin, vmax.data() + begin, end - begin));
    };
    std::vector<float> out(q.size(), NAN);
    std::vector<float> scratch(static_cast<size_t>(c.group) * c.length);
    GroupQueries queries{q.data(), static_cast<int64_t>(c.group) * d, qpos.data(), n_query, c.group};
    paged_attention(cache.pool().view(), cache.row_view(seq, 0, 1), queries, scale,
                    MetricAccumulation::kNone, out.data(), static_cast<int64_t>(c.group) * d,
                    scratch.data());
    for (int32_t t = 0; t < n_query; ++t) {
      for (int32_t g = 0; g < c.group; ++g) {
        const float* qh = &q_dense[(static_cast<size_t>(t) * c.group + g) * d];
        const std::vector<float> expected = test_support::dense_attention(qh, k, v, pos, qpos[t], d, scale, nullptr);
        const float bound = weight_bound(t, g, 0, c.length);
        for (int32_t i = 0; i < d; ++i) {
          const float got = out[(static_cast<size_t>(t) * c.group + g) * d + i];
          ASSERT_FALSE(std::isnan(got)) << "read a poisoned slot";
          ASSERT_NEAR(got, expected[i], 2e-5f + 2e-5f * std::fabs(expected[i]) + bound)
              << "t=" << t << " g=" << g << " i=" << i;
        }
      }
    }
    // Flash-decoding: the row split into parts (some of them fully hidden from the earlier
    // queries), each unnormalized, merged in order, equals dense attention too.
    for (const int32_t part : {1, 7, 16, 100}) {
      const int32_t n_parts = (c.length + part - 1) / part;
      std::vector<float> acc(static_cast<size_t>(n_parts) * c.group * d, NAN);
      std::vector<float> max(static_cast<size_t>(n_parts) * c.group, NAN);
      std::vector<float> sum(max.size(), NAN);
      for (int32_t t = 0; t < n_query; ++t) {
        GroupQueries one{&q[static_cast<size_t>(t) * c.group * d], 0, &qpos[t], 1, c.group};
        for (int32_t p = 0; p < n_parts; ++p) {
          paged_attention_part(cache.pool().view(), cache.row_view(seq, 0, 1), one, scale, p * part,
                               std::min(c.length, (p + 1) * part),
                               &acc[static_cast<size_t>(p) * c.group * d],
                               &max[static_cast<size_t>(p) * c.group],
                               &sum[static_cast<size_t>(p) * c.group], scratch.data());
        }
        std::vector<float> merged(static_cast<size_t>(c.group) * d, NAN);
        merge_attention_parts(n_parts, c.group, d, acc.data(), max.data(), sum.data(), merged.data());
        for (int32_t g = 0; g < c.group; ++g) {
          const float* qh = &q_dense[(static_cast<size_t>(t) * c.group + g) * d];
          const std::vector<float> expected =
              test_support::dense_attention(qh, k, v, pos, qpos[t], d, scale, nullptr);
          float bound = 0.0f;
          for (int32_t p = 0; p < n_parts; ++p) {
            bound += weight_bound(t, g, p * part, std::min(c.length, (p + 1) * part));
          }
          for (int32_t i = 0; i < d; ++i) {
            ASSERT_NEAR(merged[static_cast<size_t>(g) * d + i], expected[i],
                        2e-5f + 2e-5f * std::fabs(expected[i]) + bound)
                << "parts of " << part << " t=" << t << " g=" << g << " i=" << i;
          }
        }
      }
    }
  }
  force_scalar_kernels(false);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, PagedAttentionTest,
    ::testing::Values(Case{1, 1, 64, KvStorageType::kF16}, Case{1, 37, 64, KvStorageType::kF16},
                      Case{3, 16, 64, KvStorageType::kF16}, Case{3, 100, 64, KvStorageType::kF16},
                      Case{4, 33, 128, KvStorageType::kF16}, Case{4, 257, 64, KvStorageType::kF32},
                      Case{3, 15, 256, KvStorageType::kF32}, Case{1, 48, 8, KvStorageType::kF16},
                      Case{3, 21, 12, KvStorageType::kF16},  // head_dim 12: scalar fallback
                      Case{3, 100, 64, KvStorageType::kQ8_0}, Case{4, 530, 128, KvStorageType::kQ8_0},
                      Case{1, 7, 32, KvStorageType::kQ8_0}));

TEST(PagedAttentionMetric, AccumulatesGroupSummedSquaredAndAbsoluteProbabilities) {
  const int32_t d = 64, n = 40, group = 3;
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  PagedKvCache cache(KvCacheConfig{1, 1, d, 16, 8, KvStorageType::kF32, true});
  const SequenceId seq = cache.add_sequence();
  std::vector<float> k(n * d), v(n * d), q(group * d);
  std::vector<int32_t> pos(n);
  for (auto& x : k) x = normal(rng);
  for (auto& x : v) x = normal(rng);
  for (auto& x : q) x = normal(rng);
  for (int32_t j = 0; j < n; ++j) pos[j] = j;
  cache.append(seq, 0, 0, k.data(), d, v.data(), d, pos.data(), n);
  const float scale = 0.125f;
  std::vector<double> expected_l2(n, 0.0), expected_l1(n, 0.0);
  for (int32_t g = 0; g < group; ++g) {
    std::vector<double> p;
    test_support::dense_attention(&q[g * d], k, v, pos, n, d, scale, &p);
    for (int32_t j = 0; j < n; ++j) {
      expected_l2[j] += p[j] * p[j];
      expected_l1[j] += p[j];
    }
  }
  for (bool force_scalar : {false, true}) {
    force_scalar_kernels(force_scalar);
    for (MetricAccumulation mode : {MetricAccumulation::kSquared, MetricAccumulation::kAbsolute}) {
      const HeadRow& row = cache.row(seq, 0, 0);
      for (int32_t s = 0; s < n; ++s) {
        cache.pool().metric()[row.blocks[s / 16] * 16 + s % 16] = 0.0f;
        cache.pool().mass()[row.blocks[s / 16] * 16 + s % 16] = 0.0f;
      }
      std::vector<float> out(group * d), scratch(group * n);
      const int32_t qpos = n;
      GroupQueries queries{q.data(), group * d, &qpos, 1, group};
      // Two identical decode steps: the metric accumulates (adds), it is not overwritten.
      for (int step = 0; step < 2; ++step) {
        paged_attention(cache.pool().view(), cache.row_view(seq, 0, 0), queries, scale, mode,
                        out.data(), group * d, scratch.data());
      }
      const auto& expected = mode == MetricAccumulation::kSquared ? expected_l2 : expected_l1;
      for (int32_t s = 0; s < n; ++s) {
        const float got = cache.pool().metric()[row.blocks[s / 16] * 16 + s % 16];
        EXPECT_NEAR(got, 2 * expected[s], 1e-6 + 1e-4 * expected[s]) << "slot " << s;
        // The mass is the plain sum whatever the metric sums.
        const float mass = cache.pool().mass()[row.blocks[s / 16] * 16 + s % 16];
        EXPECT_NEAR(mass, 2 * expected_l1[s], 1e-6 + 1e-4 * expected_l1[s]) << "slot " << s;
      }
    }
  }
  force_scalar_kernels(false);
}

// Every build of the decode kernel (AVX2, AVX-512 and its SIMDe twin, the ones this CPU runs)
// on slot ranges of rows with shuffled positions, hidden slots and poisoned neighbours: the
// same bits in acc, max, sum and the exponentials, and within float rounding of the reference.
struct DecodeKernel {
  const char* name;
  KernelIsa needs;
  bool (*supported)(const PagedKvPool& pool, int32_t group);
  void (*run)(const PagedKvPool& pool, const PagedHeadRow& row, const GroupQueries& queries,
              float scale, int32_t begin, int32_t end, float* acc, float* max, float* sum,
              float* scratch);
};
const DecodeKernel kDecodeKernels[] = {
    {"avx2", KernelIsa::kAvx2, avx2::paged_attention_decode_supported,
     avx2::paged_attention_decode},
    {"avx512", KernelIsa::kAvx512, avx512::paged_attention_decode_supported,
     avx512::paged_attention_decode},
    {"avx512-emulated", KernelIsa::kAvx2, avx512_emulated::paged_attention_decode_supported,
     avx512_emulated::paged_attention_decode},
    {"avx512-vnni", KernelIsa::kAvx512Vnni, avx512_vnni::paged_attention_decode_supported,
     avx512_vnni::paged_attention_decode},
    {"avx512-vnni-emulated", KernelIsa::kAvx2,
     avx512_vnni_emulated::paged_attention_decode_supported,
     avx512_vnni_emulated::paged_attention_decode},
};

TEST(DecodeAttention, EveryBuildGivesTheSameBits) {
  struct Shape {
    int32_t group, length, head_dim, block_size;
    KvStorageType storage;
  };
  const Shape shapes[] = {
      {3, 1, 64, 16, KvStorageType::kF16},    {3, 100, 64, 16, KvStorageType::kF16},
      {1, 37, 16, 7, KvStorageType::kF16},    {2, 531, 32, 16, KvStorageType::kF32},
      {4, 77, 48, 5, KvStorageType::kF16},    {5, 64, 96, 16, KvStorageType::kQ8_0},
      {6, 300, 128, 16, KvStorageType::kQ8_0}, {7, 45, 80, 3, KvStorageType::kF32},
      {8, 129, 256, 16, KvStorageType::kF16},  {3, 100, 64, 16, KvStorageType::kQ8_0},
      {8, 77, 32, 5, KvStorageType::kQ8_0},
  };
  for (const Shape& c : shapes) {
    SCOPED_TRACE(::testing::Message() << "group=" << c.group << " n=" << c.length
                                      << " d=" << c.head_dim << " bs=" << c.block_size);
    const int32_t d = c.head_dim, n = c.length, bs = c.block_size;
    std::mt19937 rng(static_cast<uint32_t>(c.group * 131 + n + d));
    std::normal_distribution<float> normal(0.0f, 1.0f);
    const ScatteredRow sr = scattered_row(n, d, bs, c.storage, rng);
    const PagedKvPool pool = sr.pool();
    const PagedHeadRow row = sr.row();
    std::vector<float> v_stored = sr.v;
    round_to_storage(v_stored, d, c.storage);
    const std::vector<float> vmax = test_support::row_abs_max(v_stored, d);
    std::vector<float> q(static_cast<size_t>(c.group) * d);
    for (auto& x : q) x = 2.0f * normal(rng);
    // The reference meets the query as q8_0 scores do (quantized; int8 dots are exact).
    std::vector<float> q_ref = q;
    round_queries(q_ref.data(), c.group, d, c.storage);
    // Whole row, a range inside it, an empty range; a query that sees all, about half, none.
    const int32_t ranges[][2] = {{0, n}, {n / 3, n - n / 4}, {n / 2, n / 2}};
    for (const int32_t qpos : {n, n / 2, -1}) {
      for (const auto& range : ranges) {
        const int32_t begin = range[0], end = range[1];
        SCOPED_TRACE(::testing::Message() << "qpos=" << qpos << " [" << begin << ", " << end << ")");
        const GroupQueries query{q.data(), 0, &qpos, 1, c.group};
        const size_t m = static_cast<size_t>(end - begin) * c.group;
        std::vector<float> want_acc(static_cast<size_t>(c.group) * d), want_max(c.group),
            want_sum(c.group), scratch(m + 1);
        const GroupQueries query_ref{q_ref.data(), 0, &qpos, 1, c.group};
        reference::paged_attention_part(pool, row, query_ref, 0.125f, begin, end, want_acc.data(),
                                        want_max.data(), want_sum.data(), scratch.data());
        // On q8_0 the kernels' value weights are rounded (q8_0_value_bound); the reference's
        // scratch holds the scores, its max the largest.
        std::vector<float> bound(c.group, 0.0f);
        if (c.storage == KvStorageType::kQ8_0 && end > begin) {
          for (int32_t g = 0; g < c.group; ++g) {
            std::vector<double> e(static_cast<size_t>(end - begin));
            for (int32_t j = 0; j < end - begin; ++j) {
              const float sc = scratch[static_cast<size_t>(g) * (end - begin) + j];
              e[j] = std::isinf(sc) ? 0.0 : std::exp(static_cast<double>(sc) - want_max[g]);
            }
            bound[g] = static_cast<float>(
                test_support::q8_0_value_bound(e.data(), vmax.data() + begin, end - begin));
          }
        }
        std::vector<float> first;  // acc, max, sum, exponentials of the first build that ran
        for (const DecodeKernel& kernel : kDecodeKernels) {
          if (cpu_best_kernel_isa() < kernel.needs || !kernel.supported(pool, c.group)) continue;
          SCOPED_TRACE(kernel.name);
          std::vector<float> acc(want_acc.size(), NAN), max(c.group, NAN), sum(c.group, NAN);
          std::vector<float> e(m + 1, NAN);
          kernel.run(pool, row, query, 0.125f, begin, end, acc.data(), max.data(), sum.data(),
                     e.data());
          ASSERT_TRUE(std::isnan(e[m])) << "wrote past the scratch";
          e.pop_back();
          for (int32_t g = 0; g < c.group; ++g) {
            if (std::isinf(want_max[g])) {
              ASSERT_EQ(max[g], want_max[g]) << "g=" << g << ": nothing visible";
            } else {
              ASSERT_NEAR(max[g], want_max[g], 1e-5f * (1.0f + std::fabs(want_max[g])))
                  << "g=" << g;
            }
            ASSERT_NEAR(sum[g], want_sum[g], 1e-5f * want_sum[g]) << "g=" << g;
            for (int32_t i = 0; i < d; ++i) {
              const float want = want_acc[static_cast<size_t>(g) * d + i];
              ASSERT_NEAR(acc[static_cast<size_t>(g) * d + i], want,
                          1e-4f + 1e-5f * want_sum[g] + bound[g])
                  << "g=" << g << " i=" << i;
            }
          }
          std::vector<float> all = acc;
          all.insert(all.end(), max.begin(), max.end());
          all.insert(all.end(), sum.begin(), sum.end());
          all.insert(all.end(), e.begin(), e.end());
          if (first.empty()) {
            first = all;
            continue;
          }
          for (size_t j = 0; j < all.size(); ++j) {
            ASSERT_EQ(std::bit_cast<uint32_t>(all[j]), std::bit_cast<uint32_t>(first[j]))
                << "differs from the first build at " << j;
          }
        }
      }
    }
  }
}

struct TiledCase {
  int32_t group;
  int32_t length;
  int32_t head_dim;
  int32_t block_size;
  KvStorageType storage;
  float scale_factor;  // times 1/sqrt(head_dim); > 1 sharpens attention (online max updates)
};

std::ostream& operator<<(std::ostream& os, const TiledCase& c) {
  return os << "group=" << c.group << " length=" << c.length << " d=" << c.head_dim
            << " bs=" << c.block_size << (c.storage == KvStorageType::kF16   ? " f16"
                                         : c.storage == KvStorageType::kF32 ? " f32"
                                                                            : " q8_0")
            << " scale_factor=" << c.scale_factor;
}

class TiledAttentionTest : public ::testing::TestWithParam<TiledCase> {};

// Every build of the tiled kernel, called directly: the dispatcher picks only the best one the
// CPU runs, and the AVX-512 source built against SIMDe runs on any AVX2 CPU.
struct TiledKernel {
  const char* name;
  KernelIsa needs;
  bool (*supported)(const PagedKvPool& pool, int32_t group);
  void (*run)(const PagedKvPool& pool, const PagedHeadRow& row, const GroupQueries& queries,
              float scale, float* out, int64_t out_stride);
};
bool always(const PagedKvPool&, int32_t) { return true; }
const TiledKernel kTiledKernels[] = {
    {"dispatched", KernelIsa::kScalar, always, paged_attention_tiled},
    {"scalar", KernelIsa::kScalar, always, reference::paged_attention_tiled},
    {"avx2", KernelIsa::kAvx2, avx2::paged_attention_tiled_supported, avx2::paged_attention_tiled},
    {"avx512", KernelIsa::kAvx512, avx512::paged_attention_tiled_supported,
     avx512::paged_attention_tiled},
    {"avx512-emulated", KernelIsa::kAvx2, avx512_emulated::paged_attention_tiled_supported,
     avx512_emulated::paged_attention_tiled},
};

// Every tile size 1..33 (33 crosses kMaxQueryTile), consecutive query positions at a random
// place in the row, and every other tile with its positions shuffled; every build of the
// tiled kernel this CPU runs (kTiledKernels) against reference::paged_attention run one query
// at a time.
TEST_P(TiledAttentionTest, MatchesSingleQueryReference) {
  const TiledCase c = GetParam();
  const int32_t d = c.head_dim, n = c.length, bs = c.block_size;
  std::mt19937 rng(static_cast<uint32_t>(c.group * 7919 + n * 31 + d + bs));
  std::normal_distribution<float> normal(0.0f, 1.0f);

  const ScatteredRow sr = scattered_row(n, d, bs, c.storage, rng);
  const PagedKvPool pool = sr.pool();
  const PagedHeadRow row = sr.row();
  const float scale = c.scale_factor / std::sqrt(static_cast<float>(d));

  for (int32_t n_query = 1; n_query <= 33; ++n_query) {
    SCOPED_TRACE(::testing::Message() << "n_query=" << n_query);
    // Padded strides: the kernel must honour q_stride and out_stride, and leave the gaps alone.
    const int64_t q_stride = static_cast<int64_t>(c.group) * d + 5;
    const int64_t out_stride = static_cast<int64_t>(c.group) * d + 3;
    std::vector<float> q(static_cast<size_t>(n_query * q_stride));
    for (auto& x : q) x = normal(rng);
    // On q8_0 the dispatcher quantizes queries as K is; pre-rounded, every build sees the same.
    for (int32_t t = 0; t < n_query; ++t) round_queries(&q[t * q_stride], c.group, d, c.storage);
    std::vector<int32_t> qpos(static_cast<size_t>(n_query));
    const int32_t start = std::uniform_int_distribution<int32_t>(0, std::max(0, n - n_query))(rng);
    for (int32_t t = 0; t < n_query; ++t) qpos[t] = start + t;
    if (n_query % 2 == 0) std::shuffle(qpos.begin(), qpos.end(), rng);
    const GroupQueries queries{q.data(), q_stride, qpos.data(), n_query, c.group};

    std::vector<float> expected(static_cast<size_t>(n_query * out_stride), 0.0f);
    std::vector<float> scratch(static_cast<size_t>(c.group) * n);
    for (int32_t t = 0; t < n_query; ++t) {
      const GroupQueries one{q.data() + t * q_stride, q_stride, &qpos[t], 1, c.group};
      reference::paged_attention(pool, row, one, scale, MetricAccumulation::kNone,
                                 expected.data() + t * out_stride, out_stride, scratch.data());
    }
    std::vector<float> avx2_out;  // the AVX2 kernel's output, when it ran
    for (const TiledKernel& kernel : kTiledKernels) {
      if (cpu_best_kernel_isa() < kernel.needs || !kernel.supported(pool, c.group)) continue;
      SCOPED_TRACE(kernel.name);
      constexpr float kSentinel = 12345.0f;
      std::vector<float> out(static_cast<size_t>(n_query * out_stride), kSentinel);
      kernel.run(pool, row, queries, scale, out.data(), out_stride);
      // The SIMD builds do the same float operations in the same order per output lane.
      const std::string name = kernel.name;
      if (name == "avx2") avx2_out = out;
      if (name.starts_with("avx512") && !avx2_out.empty()) {
        for (size_t j = 0; j < out.size(); ++j) {
          ASSERT_EQ(std::bit_cast<uint32_t>(out[j]), std::bit_cast<uint32_t>(avx2_out[j]))
              << "differs from the AVX2 kernel at " << j;
        }
      }
      for (int32_t t = 0; t < n_query; ++t) {
        for (int64_t j = 0; j < out_stride; ++j) {
          const float got = out[t * out_stride + j];
          if (j >= static_cast<int64_t>(c.group) * d) {
            ASSERT_EQ(got, kSentinel) << "wrote into the output stride gap";
            continue;
          }
          const float want = expected[t * out_stride + j];
          ASSERT_FALSE(std::isnan(got)) << "read a poisoned slot";
          ASSERT_NEAR(got, want, 2e-5f + 2e-5f * std::fabs(want))
              << "t=" << t << " qpos=" << qpos[t] << " g=" << j / d << " i=" << j % d;
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, TiledAttentionTest,
    ::testing::Values(TiledCase{1, 1, 64, 16, KvStorageType::kF16, 1.0f},
                      TiledCase{1, 37, 64, 16, KvStorageType::kF16, 1.0f},
                      TiledCase{3, 100, 64, 16, KvStorageType::kF16, 1.0f},
                      TiledCase{3, 257, 64, 7, KvStorageType::kF16, 4.0f},
                      TiledCase{3, 2050, 64, 16, KvStorageType::kF16, 1.0f},
                      TiledCase{4, 33, 128, 5, KvStorageType::kF32, 1.0f},
                      TiledCase{4, 301, 64, 16, KvStorageType::kF32, 8.0f},
                      TiledCase{3, 45, 256, 3, KvStorageType::kF32, 1.0f},
                      TiledCase{1, 48, 8, 1, KvStorageType::kF16, 1.0f},
                      TiledCase{16, 70, 40, 16, KvStorageType::kF16, 2.0f},
                      TiledCase{8, 90, 128, 16, KvStorageType::kF16, 2.0f},  // AVX-512: 16-token tiles
                      TiledCase{3, 300, 64, 16, KvStorageType::kQ8_0, 2.0f},
                      TiledCase{4, 77, 96, 5, KvStorageType::kQ8_0, 1.0f},
                      TiledCase{3, 21, 12, 16, KvStorageType::kF16, 1.0f},    // head_dim 12: scalar
                      TiledCase{17, 19, 16, 16, KvStorageType::kF32, 1.0f},   // group 17: scalar
                      TiledCase{1, 50, 264, 16, KvStorageType::kF16, 1.0f}));  // d 264: scalar

TEST(TiledAttention, QueryThatSeesNoSlotGetsZeros) {
  const int32_t d = 64, n = 20, group = 3;
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  PagedKvCache cache(KvCacheConfig{1, 1, d, 16, 4, KvStorageType::kF16, true});
  const SequenceId seq = cache.add_sequence();
  std::vector<float> k(n * d), v(n * d), q(2 * group * d);
  std::vector<int32_t> pos(n);
  for (auto& x : k) x = normal(rng);
  for (auto& x : v) x = normal(rng);
  for (auto& x : q) x = normal(rng);
  for (int32_t j = 0; j < n; ++j) pos[j] = 10 + j;
  cache.append(seq, 0, 0, k.data(), d, v.data(), d, pos.data(), n);
  const int32_t qpos[2] = {5, 12};  // the first sees nothing, the second slots 10..12
  for (bool force_scalar : {false, true}) {
    force_scalar_kernels(force_scalar);
    std::vector<float> out(q.size(), NAN);
    paged_attention_tiled(cache.pool().view(), cache.row_view(seq, 0, 0),
                          GroupQueries{q.data(), group * d, qpos, 2, group}, 0.125f, out.data(),
                          group * d);
    for (int32_t j = 0; j < group * d; ++j) EXPECT_EQ(out[j], 0.0f) << j;
    for (int32_t j = group * d; j < 2 * group * d; ++j) EXPECT_FALSE(std::isnan(out[j])) << j;
  }
  force_scalar_kernels(false);
}

}  // namespace
}  // namespace kvc
