// AVX2 paged attention. Each K and V row is read once per query token and shared by every
// query head of the group (GQA without repeating KVs). Requires head_dim % 8 == 0.
#include <immintrin.h>

#include <cmath>
#include <limits>

#include "kernels/cpu/paged_attention_avx2.h"

namespace kvc::avx2 {
namespace {

inline __m256 load8(const void* base, int64_t index, KvStorageType storage) {
  if (storage == KvStorageType::kF16) {
    const auto* p = static_cast<const uint16_t*>(base) + index;
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  return _mm256_loadu_ps(static_cast<const float*>(base) + index);
}

inline float hsum(__m256 v) {
  __m128 lo = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
  return _mm_cvtss_f32(lo);
}

constexpr int kMaxGroup = 16;

}  // namespace

void paged_attention(const PagedKvPool& pool, const PagedHeadRow& row, const GroupQueries& queries,
                     float scale, MetricAccumulation accumulation, float* out, int64_t out_stride,
                     float* scratch) {
  const int32_t d = pool.head_dim;
  const int32_t n = row.length;
  const int32_t bs = pool.block_size;
  const int32_t group = queries.group;
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();

  for (int32_t t = 0; t < queries.n_query; ++t) {
    const int32_t qpos = queries.positions[t];
    const float* q = queries.q + t * queries.q_stride;  // [group, d]
    float max[kMaxGroup];
    for (int32_t g = 0; g < group; ++g) max[g] = kNegInf;

    // Scores: scratch[g * n + s] = scale * q_g . k_s (or -inf when the slot is in the future).
    for (int32_t s = 0; s < n; ++s) {
      const int64_t slot = static_cast<int64_t>(row.block_table[s / bs]) * bs + s % bs;
      if (pool.positions[slot] > qpos) {
        for (int32_t g = 0; g < group; ++g) scratch[static_cast<int64_t>(g) * n + s] = kNegInf;
        continue;
      }
      __m256 acc[kMaxGroup];
      for (int32_t g = 0; g < group; ++g) acc[g] = _mm256_setzero_ps();
      for (int32_t i = 0; i < d; i += 8) {
        const __m256 k = load8(pool.k, slot * d + i, pool.storage);
        for (int32_t g = 0; g < group; ++g) {
          acc[g] = _mm256_fmadd_ps(_mm256_loadu_ps(q + g * d + i), k, acc[g]);
        }
      }
      for (int32_t g = 0; g < group; ++g) {
        const float score = hsum(acc[g]) * scale;
        scratch[static_cast<int64_t>(g) * n + s] = score;
        max[g] = score > max[g] ? score : max[g];
      }
    }

    // Softmax per query head.
    for (int32_t g = 0; g < group; ++g) {
      float* p = scratch + static_cast<int64_t>(g) * n;
      double sum = 0.0;
      for (int32_t s = 0; s < n; ++s) {
        p[s] = p[s] == kNegInf ? 0.0f : std::exp(p[s] - max[g]);
        sum += p[s];
      }
      const float inv = static_cast<float>(1.0 / sum);
      for (int32_t s = 0; s < n; ++s) p[s] *= inv;
    }

    // Output: o_g = sum_s p_g[s] * v_s; each V row loaded once for the whole group.
    float* o = out + t * out_stride;  // [group, d]
    for (int32_t j = 0; j < group * d; ++j) o[j] = 0.0f;
    for (int32_t s = 0; s < n; ++s) {
      const int64_t slot = static_cast<int64_t>(row.block_table[s / bs]) * bs + s % bs;
      if (pool.positions[slot] > qpos) continue;
      float metric_add = 0.0f;
      for (int32_t i = 0; i < d; i += 8) {
        const __m256 v = load8(pool.v, slot * d + i, pool.storage);
        for (int32_t g = 0; g < group; ++g) {
          const __m256 p = _mm256_set1_ps(scratch[static_cast<int64_t>(g) * n + s]);
          float* og = o + g * d + i;
          _mm256_storeu_ps(og, _mm256_fmadd_ps(p, v, _mm256_loadu_ps(og)));
        }
      }
      if (accumulation != MetricAccumulation::kNone && pool.metric != nullptr) {
        for (int32_t g = 0; g < group; ++g) {
          const float p = scratch[static_cast<int64_t>(g) * n + s];
          metric_add += accumulation == MetricAccumulation::kSquared ? p * p : p;
        }
        pool.metric[slot] += metric_add;
      }
    }
  }
}

bool paged_attention_supported(const PagedKvPool& pool, int32_t group) {
  return pool.head_dim % 8 == 0 && group <= kMaxGroup;
}

}  // namespace kvc::avx2
