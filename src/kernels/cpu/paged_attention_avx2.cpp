// AVX2 paged attention. paged_attention (decode): each K and V row is read and converted once
// per query token for every query head of the group (GQA without repeating KVs); scores of four
// slots at a time end in one shared reduction, the softmax runs 8 lanes at a time, and each
// head's output stays in a register per 8-column strip. Groups up to 8 (larger: the reference).
// paged_attention_tiled:
// each K and V row is read once per tile of up to kMaxQueryTile tokens x group heads.
// Requires head_dim % 8 == 0 (and head_dim <= kMaxTiledHeadDim for the tiled kernel).
//
// No std:: templates here (std::min, std::max, ...): a copy instantiated with AVX2 enabled
// could be chosen by the linker for non-AVX2 callers (see avx2_common.h).
#include <cmath>
#include <limits>

#include "kernels/cpu/avx2_common.h"
#include "kernels/cpu/paged_attention_avx2.h"

namespace kvc::avx2 {
namespace {

#include "kernels/cpu/x86_tile_helpers.h"  // NOLINT(build/include): inside the namespace

using simd::exp_ps;
using simd::hmax_ps;
using simd::hsum_ps;
using simd::transpose8;

// Values [i, i + 8) of the K (or V) row of physical slot `slot`, as floats.
inline __m256 load8(const PagedKvPool& pool, const void* base, int64_t slot, int32_t i) {
  const uint8_t* row = static_cast<const uint8_t*>(base) + slot * pool.row_bytes;
  switch (pool.storage) {
    case KvStorageType::kF16: return simd::load_kv_f16_8(row, i);
    case KvStorageType::kF32: return simd::load_kv_f32_8(row, i);
    case KvStorageType::kQ8_0: break;
  }
  return simd::load_kv_q8_0_8(row, i);
}

constexpr int kMaxGroup = 16;

// ---- Tiled kernel helpers ----

// Slots per online-softmax step (four 8-lane vectors). The chunking and the order of every
// float operation per output lane are the AVX-512 kernel's (paged_attention_avx512.cpp), so
// both kernel sets give the same bits and a sequence's tokens never depend on the CPU.
constexpr int32_t kChunk = 32;
constexpr int32_t kQuarters = kChunk / 8;
constexpr int32_t kMaxTiledHeadDim = 256;  // bounds the stack buffers below
constexpr int32_t kMaxRows = kMaxQueryTile * kMaxGroup;
constexpr int kScoreRows = 2;  // query rows scored together (2 x 4 accumulators)

// The chunk's K rows as f32, transposed: kt [d, kChunk]; V rows as f32: vc [kChunk, d].
// Slots j >= nc are zero and never read from the pool (they may be poisoned or foreign).
void load_chunk(const PagedKvPool& pool, const int64_t* slot, int32_t nc, float* kt, float* vc) {
  const int32_t d = pool.head_dim;
  for (int32_t first = 0; first < kChunk; first += 8) {
    for (int32_t i = 0; i < d; i += 8) {
      __m256 r[8];
      for (int32_t j = 0; j < 8; ++j) {
        r[j] = first + j < nc ? load8(pool, pool.k, slot[first + j], i)
                              : _mm256_setzero_ps();
      }
      transpose8(r);
      for (int32_t j = 0; j < 8; ++j) _mm256_store_ps(kt + (i + j) * kChunk + first, r[j]);
    }
  }
  for (int32_t j = 0; j < kChunk; ++j) {
    for (int32_t i = 0; i < d; i += 8) {
      _mm256_store_ps(vc + j * d + i, j < nc ? load8(pool, pool.v, slot[j], i)
                                             : _mm256_setzero_ps());
    }
  }
}

// Raw scores of R query rows against the chunk: s[r][u] lane j = q_r . k_(8u + j), one FMA
// chain over the head dimension per slot.
template <int R>
inline void chunk_scores(const float* const* q, const float* kt, int32_t d,
                         __m256 (*s)[kQuarters]) {
  __m256 acc[R][kQuarters];
  for (int r = 0; r < R; ++r)
    for (int u = 0; u < kQuarters; ++u) acc[r][u] = _mm256_setzero_ps();
  for (int32_t i = 0; i < d; ++i) {
    for (int r = 0; r < R; ++r) {
      const __m256 qi = _mm256_broadcast_ss(q[r] + i);
      for (int u = 0; u < kQuarters; ++u) {
        acc[r][u] = _mm256_fmadd_ps(qi, _mm256_load_ps(kt + i * kChunk + 8 * u), acc[r][u]);
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int u = 0; u < kQuarters; ++u) s[r][u] = acc[r][u];
}

// o[0, d) = (alpha * o + sum over even j of p[j] vc[j]) + sum over odd j of p[j] vc[j], each
// sum one FMA chain in slot order; p [kChunk] (0 for masked and padding slots). Four 8-column
// strips at a time (8 independent chains), then single strips; the same per-lane arithmetic.
inline void accumulate_values(float* o, const float* p, const float* vc, int32_t d, float alpha) {
  const __m256 a = _mm256_set1_ps(alpha);
  int32_t i = 0;
  for (; i + 32 <= d; i += 32) {
    __m256 e[4], od[4];
    for (int u = 0; u < 4; ++u) {
      e[u] = _mm256_mul_ps(a, _mm256_loadu_ps(o + i + 8 * u));
      od[u] = _mm256_setzero_ps();
    }
    for (int32_t j = 0; j < kChunk; j += 2) {
      const __m256 pe = _mm256_broadcast_ss(p + j);
      const __m256 po = _mm256_broadcast_ss(p + j + 1);
      const float* ve = vc + j * d + i;
      const float* vo = ve + d;
      for (int u = 0; u < 4; ++u) {
        e[u] = _mm256_fmadd_ps(pe, _mm256_load_ps(ve + 8 * u), e[u]);
        od[u] = _mm256_fmadd_ps(po, _mm256_load_ps(vo + 8 * u), od[u]);
      }
    }
    for (int u = 0; u < 4; ++u) _mm256_storeu_ps(o + i + 8 * u, _mm256_add_ps(e[u], od[u]));
  }
  for (; i < d; i += 8) {
    __m256 e = _mm256_mul_ps(a, _mm256_loadu_ps(o + i));
    __m256 od = _mm256_setzero_ps();
    for (int32_t j = 0; j < kChunk; j += 2) {
      e = _mm256_fmadd_ps(_mm256_broadcast_ss(p + j), _mm256_load_ps(vc + j * d + i), e);
      od = _mm256_fmadd_ps(_mm256_broadcast_ss(p + j + 1), _mm256_load_ps(vc + (j + 1) * d + i),
                           od);
    }
    _mm256_storeu_ps(o + i, _mm256_add_ps(e, od));
  }
}

// ---- Per-query kernel (decode) ----

constexpr int32_t kMaxQueryGroup = 8;  // register-blocked group sizes; larger groups: reference

constexpr int32_t kSlotChunk = 256;  // slots whose pool indices are resolved at a time

// Pool indices of row slots [s0, s0 + count) and whether each is visible from position qpos
// (a future slot is never read: it may be poisoned). One division per chunk, not per slot.
inline void resolve_slots(const PagedKvPool& pool, const PagedHeadRow& row, int32_t s0,
                          int32_t count, int32_t qpos, int64_t* slot, bool* visible) {
  const int32_t bs = pool.block_size;
  int32_t b = s0 / bs, j = s0 % bs;
  for (int32_t i = 0; i < count; ++i) {
    slot[i] = static_cast<int64_t>(row.block_table[b]) * bs + j;
    visible[i] = pool.positions[slot[i]] <= qpos;
    if (++j == bs) {
      j = 0;
      ++b;
    }
  }
}

// Scores of kSlots slots for every head of the group: p[g * n + j] = scale * q_g . k_j, or -inf
// for a hidden slot. Each K row is converted from f16 once for the whole group; kSlots x G
// accumulators, reduced to one 4-lane vector of sums per head.
template <int G, int kSlots>
inline void group_scores(const PagedKvPool& pool, const float* q, const int64_t* slot,
                         const bool* visible, int32_t n, float scale, float* p) {
  const int32_t d = pool.head_dim;
  __m256 acc[kSlots][G];
  for (int j = 0; j < kSlots; ++j)
    for (int g = 0; g < G; ++g) acc[j][g] = _mm256_setzero_ps();
  for (int32_t i = 0; i < d; i += 8) {
    for (int j = 0; j < kSlots; ++j) {
      if (!visible[j]) continue;
      const __m256 k = load8(pool, pool.k, slot[j], i);
      for (int g = 0; g < G; ++g) acc[j][g] = _mm256_fmadd_ps(_mm256_loadu_ps(q + g * d + i), k, acc[j][g]);
    }
  }
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  for (int g = 0; g < G; ++g) {
    float* pg = p + static_cast<int64_t>(g) * n;
    if constexpr (kSlots == 4) {
      // [a0 a1 a2 a3] per 128-bit half after two hadds; the halves' sum is the four dots.
      const __m256 h01 = _mm256_hadd_ps(acc[0][g], acc[1][g]);
      const __m256 h23 = _mm256_hadd_ps(acc[2][g], acc[3][g]);
      const __m256 h = _mm256_hadd_ps(h01, h23);
      const __m128 sums = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
      _mm_storeu_ps(pg, _mm_mul_ps(sums, _mm_set1_ps(scale)));
    } else {
      for (int j = 0; j < kSlots; ++j) pg[j] = hsum_ps(acc[j][g]) * scale;
    }
    for (int j = 0; j < kSlots; ++j) {
      if (!visible[j]) pg[j] = kNegInf;
    }
  }
}

// p[0, n) = e^(p - max) in place (-inf -> 0), 8 lanes at a time; returns max (-inf when
// nothing is visible: then every p is 0 and *sum is 0) and the sum of the exponentials.
inline float exp_row(float* p, int32_t n, float* sum_out) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  const __m256 neg_inf8 = _mm256_set1_ps(kNegInf);
  __m256 max8 = neg_inf8;
  int32_t s = 0;
  for (; s + 8 <= n; s += 8) max8 = _mm256_max_ps(max8, _mm256_loadu_ps(p + s));
  float max = hmax_ps(max8);
  for (; s < n; ++s) max = p[s] > max ? p[s] : max;
  if (max == kNegInf) {  // nothing visible
    for (s = 0; s < n; ++s) p[s] = 0.0f;
    *sum_out = 0.0f;
    return max;
  }
  max8 = _mm256_set1_ps(max);
  __m256 sum8 = _mm256_setzero_ps();
  for (s = 0; s + 8 <= n; s += 8) {
    const __m256 x = _mm256_loadu_ps(p + s);
    const __m256 hidden = _mm256_cmp_ps(x, neg_inf8, _CMP_EQ_OQ);
    const __m256 e = _mm256_andnot_ps(hidden, exp_ps(_mm256_sub_ps(x, max8)));
    _mm256_storeu_ps(p + s, e);
    sum8 = _mm256_add_ps(sum8, e);
  }
  float sum = hsum_ps(sum8);
  for (; s < n; ++s) {
    p[s] = p[s] == kNegInf ? 0.0f : std::exp(p[s] - max);
    sum += p[s];
  }
  *sum_out = sum;
  return max;
}

// p[0, n) = softmax(p) in place (-inf -> 0), 8 lanes at a time.
inline void softmax_row(float* p, int32_t n) {
  float sum = 0.0f;
  if (exp_row(p, n, &sum) == -std::numeric_limits<float>::infinity()) return;
  int32_t s = 0;
  const float inv = 1.0f / sum;
  const __m256 inv8 = _mm256_set1_ps(inv);
  for (s = 0; s + 8 <= n; s += 8) _mm256_storeu_ps(p + s, _mm256_mul_ps(inv8, _mm256_loadu_ps(p + s)));
  for (; s < n; ++s) p[s] *= inv;
}

// o_g[i .. i+7] += sum_j p_g[j] v_j[i .. i+7] over `count` resolved slots, for every head g:
// one 8-column strip at a time so the G accumulators stay in registers, V converted once per
// slot and strip. Hidden slots are skipped, never read.
template <int G>
inline void group_values(const PagedKvPool& pool, const float* p, int32_t n, const int64_t* slot,
                         const bool* visible, int32_t count, float* o) {
  const int32_t d = pool.head_dim;
  for (int32_t i = 0; i < d; i += 8) {
    __m256 acc[G];
    for (int g = 0; g < G; ++g) acc[g] = _mm256_loadu_ps(o + g * d + i);
    for (int32_t j = 0; j < count; ++j) {
      if (!visible[j]) continue;
      const __m256 v = load8(pool, pool.v, slot[j], i);
      for (int g = 0; g < G; ++g) {
        acc[g] = _mm256_fmadd_ps(_mm256_broadcast_ss(p + static_cast<int64_t>(g) * n + j), v, acc[g]);
      }
    }
    for (int g = 0; g < G; ++g) _mm256_storeu_ps(o + g * d + i, acc[g]);
  }
}

template <int G>
void attend_queries(const PagedKvPool& pool, const PagedHeadRow& row, const GroupQueries& queries,
                    float scale, MetricAccumulation accumulation, float* out, int64_t out_stride,
                    float* scratch) {
  constexpr int kSlots = G <= 3 ? 4 : 1;  // kSlots x G score accumulators in 16 registers
  const int32_t n = row.length;
  const int32_t d = pool.head_dim;
  int64_t slot[kSlotChunk];
  bool visible[kSlotChunk];
  for (int32_t t = 0; t < queries.n_query; ++t) {
    const int32_t qpos = queries.positions[t];
    const float* q = queries.q + t * queries.q_stride;  // [G, d]
    for (int32_t c0 = 0; c0 < n; c0 += kSlotChunk) {
      const int32_t count = n - c0 < kSlotChunk ? n - c0 : kSlotChunk;
      resolve_slots(pool, row, c0, count, qpos, slot, visible);
      int32_t j = 0;
      for (; j + kSlots <= count; j += kSlots) {
        group_scores<G, kSlots>(pool, q, slot + j, visible + j, n, scale, scratch + c0 + j);
      }
      for (; j < count; ++j) group_scores<G, 1>(pool, q, slot + j, visible + j, n, scale, scratch + c0 + j);
    }
    for (int g = 0; g < G; ++g) softmax_row(scratch + static_cast<int64_t>(g) * n, n);
    float* o = out + t * out_stride;
    for (int32_t i = 0; i < G * d; i += 8) _mm256_storeu_ps(o + i, _mm256_setzero_ps());
    for (int32_t c0 = 0; c0 < n; c0 += kSlotChunk) {
      const int32_t count = n - c0 < kSlotChunk ? n - c0 : kSlotChunk;
      resolve_slots(pool, row, c0, count, qpos, slot, visible);
      group_values<G>(pool, scratch + c0, n, slot, visible, count, o);
      if (accumulation == MetricAccumulation::kNone || pool.metric == nullptr) continue;
      for (int32_t j = 0; j < count; ++j) {
        if (!visible[j]) continue;
        float add = 0.0f;
        for (int g = 0; g < G; ++g) {
          const float pg = scratch[static_cast<int64_t>(g) * n + c0 + j];
          add += accumulation == MetricAccumulation::kSquared ? pg * pg : pg;
        }
        pool.metric[slot[j]] += add;
      }
    }
  }
}

// One query over row slots [begin, end), unnormalized (paged_attention_part's contract).
template <int G>
void attend_part(const PagedKvPool& pool, const PagedHeadRow& row, const GroupQueries& queries,
                 float scale, int32_t begin, int32_t end, float* acc, float* max, float* sum,
                 float* scratch) {
  constexpr int kSlots = G <= 3 ? 4 : 1;
  const int32_t n = end - begin;
  const int32_t d = pool.head_dim;
  int64_t slot[kSlotChunk];
  bool visible[kSlotChunk];
  const int32_t qpos = queries.positions[0];
  for (int32_t c0 = 0; c0 < n; c0 += kSlotChunk) {
    const int32_t count = n - c0 < kSlotChunk ? n - c0 : kSlotChunk;
    resolve_slots(pool, row, begin + c0, count, qpos, slot, visible);
    int32_t j = 0;
    for (; j + kSlots <= count; j += kSlots) {
      group_scores<G, kSlots>(pool, queries.q, slot + j, visible + j, n, scale, scratch + c0 + j);
    }
    for (; j < count; ++j) group_scores<G, 1>(pool, queries.q, slot + j, visible + j, n, scale, scratch + c0 + j);
  }
  for (int g = 0; g < G; ++g) max[g] = exp_row(scratch + static_cast<int64_t>(g) * n, n, sum + g);
  for (int32_t i = 0; i < G * d; i += 8) _mm256_storeu_ps(acc + i, _mm256_setzero_ps());
  for (int32_t c0 = 0; c0 < n; c0 += kSlotChunk) {
    const int32_t count = n - c0 < kSlotChunk ? n - c0 : kSlotChunk;
    resolve_slots(pool, row, begin + c0, count, qpos, slot, visible);
    group_values<G>(pool, scratch + c0, n, slot, visible, count, acc);
  }
}

}  // namespace

void paged_attention_part(const PagedKvPool& pool, const PagedHeadRow& row,
                          const GroupQueries& queries, float scale, int32_t begin, int32_t end,
                          float* acc, float* max, float* sum, float* scratch) {
  switch (queries.group) {
    case 1: return attend_part<1>(pool, row, queries, scale, begin, end, acc, max, sum, scratch);
    case 2: return attend_part<2>(pool, row, queries, scale, begin, end, acc, max, sum, scratch);
    case 3: return attend_part<3>(pool, row, queries, scale, begin, end, acc, max, sum, scratch);
    case 4: return attend_part<4>(pool, row, queries, scale, begin, end, acc, max, sum, scratch);
    case 5: return attend_part<5>(pool, row, queries, scale, begin, end, acc, max, sum, scratch);
    case 6: return attend_part<6>(pool, row, queries, scale, begin, end, acc, max, sum, scratch);
    case 7: return attend_part<7>(pool, row, queries, scale, begin, end, acc, max, sum, scratch);
    default: return attend_part<8>(pool, row, queries, scale, begin, end, acc, max, sum, scratch);
  }
}

void paged_attention(const PagedKvPool& pool, const PagedHeadRow& row, const GroupQueries& queries,
                     float scale, MetricAccumulation accumulation, float* out, int64_t out_stride,
                     float* scratch) {
  switch (queries.group) {
    case 1: return attend_queries<1>(pool, row, queries, scale, accumulation, out, out_stride, scratch);
    case 2: return attend_queries<2>(pool, row, queries, scale, accumulation, out, out_stride, scratch);
    case 3: return attend_queries<3>(pool, row, queries, scale, accumulation, out, out_stride, scratch);
    case 4: return attend_queries<4>(pool, row, queries, scale, accumulation, out, out_stride, scratch);
    case 5: return attend_queries<5>(pool, row, queries, scale, accumulation, out, out_stride, scratch);
    case 6: return attend_queries<6>(pool, row, queries, scale, accumulation, out, out_stride, scratch);
    case 7: return attend_queries<7>(pool, row, queries, scale, accumulation, out, out_stride, scratch);
    default: return attend_queries<8>(pool, row, queries, scale, accumulation, out, out_stride, scratch);
  }
}

bool paged_attention_supported(const PagedKvPool& pool, int32_t group) {
  return pool.head_dim % 8 == 0 && group >= 1 && group <= kMaxQueryGroup;
}

namespace {

// Online softmax as reference::paged_attention_tiled, kChunk slots per step: K/V of the chunk
// are converted once, scores come kScoreRows query rows at a time from the transposed K, then
// each row rescales its running output and sum only when its max grows.
// n_query <= kMaxQueryTile.
void attend_tile(const PagedKvPool& pool, const PagedHeadRow& row, const GroupQueries& queries,
                 float scale, float* out, int64_t out_stride) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  const int32_t d = pool.head_dim;
  const int32_t group = queries.group;
  const int32_t n_rows = queries.n_query * group;  // query row m = t * group + g

  float row_max[kMaxRows];  // [n_rows] running max of the scaled scores
  float row_sum[kMaxRows];  // [n_rows] running sum of exp(score - row_max)
  const float* q_row[kMaxRows];  // [n_rows] -> [d]
  float* out_row[kMaxRows];      // [n_rows] -> [d], the running (unnormalized) output
  const int32_t max_qpos = tile_max_position(queries);
  for (int32_t m = 0; m < n_rows; ++m) {
    const int32_t t = m / group, g = m % group;
    row_max[m] = kNegInf;
    row_sum[m] = 0.0f;
    q_row[m] = queries.q + t * queries.q_stride + static_cast<int64_t>(g) * d;
    out_row[m] = out + t * out_stride + static_cast<int64_t>(g) * d;
    for (int32_t i = 0; i < d; i += 8) _mm256_storeu_ps(out_row[m] + i, _mm256_setzero_ps());
  }

  alignas(32) float kt[kMaxTiledHeadDim * kChunk];  // [d, kChunk]
  alignas(32) float vc[kChunk * kMaxTiledHeadDim];  // [kChunk, d]
  alignas(32) int32_t kpos[kChunk];                 // [kChunk], INT32_MAX for padding
  alignas(32) float p[kChunk];                      // [kChunk] one row's exp(score - max)
  int64_t slot[kChunk];
  const __m256 scale8 = _mm256_set1_ps(scale);
  const __m256 neg_inf8 = _mm256_set1_ps(kNegInf);

  for (int32_t c0 = 0; c0 < row.length; c0 += kChunk) {
    const int32_t left = row.length - c0;
    const int32_t nc = left < kChunk ? left : kChunk;
    const int32_t min_kpos = resolve_tile_chunk(pool, row, c0, nc, kChunk, slot, kpos);
    if (min_kpos > max_qpos) continue;  // every slot is in the future of the whole tile
    load_chunk(pool, slot, nc, kt, vc);
    __m256i kpos8[kQuarters];
    for (int u = 0; u < kQuarters; ++u) {
      kpos8[u] = _mm256_load_si256(reinterpret_cast<const __m256i*>(kpos + 8 * u));
    }

    for (int32_t m0 = 0; m0 < n_rows; m0 += kScoreRows) {
      __m256 sc[kScoreRows][kQuarters];
      const int32_t r_count = n_rows - m0 < kScoreRows ? n_rows - m0 : kScoreRows;
      if (r_count == 2) {
        chunk_scores<2>(q_row + m0, kt, d, sc);
      } else {
        chunk_scores<1>(q_row + m0, kt, d, sc);
      }
      for (int32_t r = 0; r < r_count; ++r) {
        const int32_t m = m0 + r;
        const int32_t qpos = queries.positions[m / group];
        if (min_kpos > qpos) continue;  // nothing visible to this query in the chunk
        const __m256i qpos8 = _mm256_set1_epi32(qpos);
        __m256 hidden[kQuarters], scaled[kQuarters];
        for (int u = 0; u < kQuarters; ++u) {
          hidden[u] = _mm256_castsi256_ps(_mm256_cmpgt_epi32(kpos8[u], qpos8));
          scaled[u] = _mm256_blendv_ps(_mm256_mul_ps(sc[r][u], scale8), neg_inf8, hidden[u]);
        }
        const float chunk_max = hmax_ps(_mm256_max_ps(_mm256_max_ps(scaled[0], scaled[1]),
                                                      _mm256_max_ps(scaled[2], scaled[3])));
        float alpha = 1.0f;
        if (chunk_max > row_max[m]) {
          alpha = std::exp(row_max[m] - chunk_max);  // 0 on the first visible chunk
          row_max[m] = chunk_max;
        }
        const __m256 max8 = _mm256_set1_ps(row_max[m]);
        __m256 pv[kQuarters];
        for (int u = 0; u < kQuarters; ++u) {
          pv[u] = _mm256_andnot_ps(hidden[u], exp_ps(_mm256_sub_ps(scaled[u], max8)));
          _mm256_store_ps(p + 8 * u, pv[u]);
        }
        // The AVX-512 kernel's order: its two 16-lane halves added, then reduced.
        row_sum[m] = row_sum[m] * alpha + hsum_ps(_mm256_add_ps(_mm256_add_ps(pv[0], pv[2]),
                                                                _mm256_add_ps(pv[1], pv[3])));
        accumulate_values(out_row[m], p, vc, d, alpha);
      }
    }
  }

  for (int32_t m = 0; m < n_rows; ++m) {
    const __m256 inv = _mm256_set1_ps(row_sum[m] > 0.0f ? 1.0f / row_sum[m] : 0.0f);
    for (int32_t i = 0; i < d; i += 8) {
      _mm256_storeu_ps(out_row[m] + i, _mm256_mul_ps(inv, _mm256_loadu_ps(out_row[m] + i)));
    }
  }
}

}  // namespace

void paged_attention_tiled(const PagedKvPool& pool, const PagedHeadRow& row,
                           const GroupQueries& queries, float scale, float* out,
                           int64_t out_stride) {
  for_each_query_tile(queries, kMaxQueryTile, out, out_stride,
                      [&](const GroupQueries& tile, float* tile_out) {
                        attend_tile(pool, row, tile, scale, tile_out, out_stride);
                      });
}

bool paged_attention_tiled_supported(const PagedKvPool& pool, int32_t group) {
  return pool.head_dim % 8 == 0 && pool.head_dim <= kMaxTiledHeadDim && group <= kMaxGroup;
}

}  // namespace kvc::avx2
