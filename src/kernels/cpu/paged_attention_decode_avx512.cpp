// AVX-512 decode attention (paged_attention_decode's contract in paged_attention_avx2.h; see
// paged_attention_avx512.h for the builds of this file): the AVX2 build's three passes over a
// slot range (scores, exponentials, values) with the same float operations per result, spelled
// out in x86_tile_helpers.h, 16 slots per vector, so a decode token's attention does not depend
// on the CPU. Groups up to kMaxDecodeGroup, head_dim % 16 == 0 and head_dim <= kMaxHeadDim.
// On a q8_0 cache the scores are int8 dot products (slot-parallel vpdpbusd with VNNI) and the
// values int16-weighted integer sums.
#include <math.h>

#include <limits>

#include "kernels/cpu/avx512_common.h"
#include "kernels/cpu/paged_attention_avx512.h"
#include "kernels/quant.h"

namespace kvc::KVC_AVX512_NS {
namespace {

#include "kernels/cpu/x86_tile_helpers.h"          // NOLINT(build/include): inside the namespace
#include "kernels/cpu/paged_attention_avx512_rows.h"  // NOLINT(build/include): likewise

using simd::hmax_ps;

// Converts the K rows of the chunk's nc slots to floats: buf [kDecodeChunk, d]; rows j >= nc
// are zero (their lanes are masked; they are never read from the pool).
template <KvStorageType S>
inline void convert_rows(const PagedKvPool& pool, const void* base, const int64_t* slot,
                         int32_t nc, float* buf) {
  const int32_t d = pool.head_dim;
  for (int32_t j = 0; j < nc; ++j) {
    const uint8_t* row = slot_row(pool, base, slot[j]);
    for (int32_t i = 0; i < d; i += 16) _mm512_store_ps(buf + j * d + i, load_kv_16_as<S>(row, i));
  }
  for (int32_t j = nc; j < kDecodeChunk; ++j) {
    for (int32_t i = 0; i < d; i += 16) _mm512_store_ps(buf + j * d + i, _mm512_setzero_ps());
  }
}

// The first n (1 .. 16) lanes of v to dst / of src into a vector (the others 0). Masked
// loads and stores of floats would do, but SIMDe (the emulated test builds) lacks them.
inline void store_first(float* dst, __m512 v, int32_t n) {
  if (n == 16) return _mm512_storeu_ps(dst, v);
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, v);
  std::memcpy(dst, lanes, sizeof(float) * static_cast<size_t>(n));
}
inline __m512 load_first(const float* src, int32_t n) {
  if (n == 16) return _mm512_loadu_ps(src);
  alignas(64) float lanes[16] = {};
  std::memcpy(lanes, src, sizeof(float) * static_cast<size_t>(n));
  return _mm512_load_ps(lanes);
}

// a[k] for 16 slots -> one vector of R(a) in slot order. Input k holds slot 4 (k % 4) + k / 4:
// after the four pairwise levels, lane 4q + r holds input q + 4r.
inline __m512 tree_reduce16(const __m512* a) {
  __m512 t[8], u[4], w[2];
  for (int i = 0; i < 8; ++i) {  // h1: lanes l and l + 8
    t[i] = _mm512_add_ps(_mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  }
  for (int i = 0; i < 4; ++i) {  // h2: l and l + 4 of each h1
    u[i] = _mm512_add_ps(_mm512_shuffle_f32x4(t[2 * i], t[2 * i + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_f32x4(t[2 * i], t[2 * i + 1], _MM_SHUFFLE(3, 1, 3, 1)));
  }
  for (int i = 0; i < 2; ++i) {  // h3: l and l + 2 of each h2
    w[i] = _mm512_add_ps(_mm512_shuffle_ps(u[2 * i], u[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm512_shuffle_ps(u[2 * i], u[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  }
  return _mm512_add_ps(_mm512_shuffle_ps(w[0], w[1], _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm512_shuffle_ps(w[0], w[1], _MM_SHUFFLE(3, 1, 3, 1)));
}

#if !defined(KVC_AVX512_VNNI)
// Per 16-lane int32 vector of partial dots (lanes 0-7: one block's 8 four-byte groups, lanes
// 8-15: the next block's) for 16 slots -> the two blocks' exact sums, slots in order.
inline void tree_reduce16_i32(const __m512i* a, __m512i* first, __m512i* second) {
  __m512i t[8], u[4], w[2];
  for (int i = 0; i < 8; ++i) {
    t[i] = _mm512_add_epi32(_mm512_unpacklo_epi32(a[2 * i], a[2 * i + 1]),
                            _mm512_unpackhi_epi32(a[2 * i], a[2 * i + 1]));
  }
  for (int i = 0; i < 4; ++i) {
    u[i] = _mm512_add_epi32(_mm512_unpacklo_epi64(t[2 * i], t[2 * i + 1]),
                            _mm512_unpackhi_epi64(t[2 * i], t[2 * i + 1]));
  }
  for (int i = 0; i < 2; ++i) {
    w[i] = _mm512_add_epi32(_mm512_shuffle_i32x4(u[2 * i], u[2 * i + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                            _mm512_shuffle_i32x4(u[2 * i], u[2 * i + 1], _MM_SHUFFLE(3, 1, 3, 1)));
  }
  *first = _mm512_shuffle_i32x4(w[0], w[1], _MM_SHUFFLE(2, 0, 2, 0));
  *second = _mm512_shuffle_i32x4(w[0], w[1], _MM_SHUFFLE(3, 1, 3, 1));
}

// Pass 1 on a q8_0 cache: int8 dot products (x86_tile_helpers.h), two blocks per vector.
void decode_scores_q8_0(const PagedKvPool& pool, const PagedHeadRow& row,
                        const GroupQueries& queries, float scale, int32_t begin, int32_t end,
                        float* p, float* max) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  const int32_t d = pool.head_dim, nb = d / 32, n = end - begin, group = queries.group;
  // Per head and pair of blocks: |qq| and where qq < 0 (the sign moves onto K: dot_u8_i8).
  constexpr int32_t kMaxPairs = kMaxHeadDim / 64;
  const QuantizedQueries& query = quantized_queries_q8_0(queries.q, group, d);
  const auto& dq = query.dq;
  __m512i q_abs[kMaxDecodeGroup][kMaxPairs];
  __mmask64 q_neg[kMaxDecodeGroup][kMaxPairs];
  for (int32_t g = 0; g < group; ++g) {
    for (int32_t pair = 0; 2 * pair < nb; ++pair) {  // an odd block count meets the padding
      const __m512i v = _mm512_load_si512(query.qs[g] + 64 * pair);
      q_abs[g][pair] = _mm512_abs_epi8(v);
      q_neg[g][pair] = _mm512_movepi8_mask(v);
    }
  }
  const __m512i qpos16 = _mm512_set1_epi32(queries.positions[0]);
  const __m512 scale16 = _mm512_set1_ps(scale);
  const __m512 neg_inf16 = _mm512_set1_ps(kNegInf);
  __m512 max16[kMaxDecodeGroup];
  for (int32_t g = 0; g < group; ++g) max16[g] = neg_inf16;
  // Rows of 64 bytes per pair of blocks; an odd block count leaves a zero half at the end of
  // each row (zeroed once: the gather never writes it).
  alignas(64) int8_t kq[kDecodeChunk * (kMaxHeadDim + 32)];
  alignas(64) uint16_t kd[(kMaxHeadDim / 32) * kDecodeChunk];
  const int32_t stride = 64 * ((nb + 1) / 2);  // bytes per slot in kq
  if (nb % 2 != 0) {
    for (int32_t j = 0; j < kDecodeChunk; ++j) std::memset(kq + j * stride + d, 0, 32);
  }
  for_each_score_chunk(pool, row, begin, end, [&](int32_t c0, int32_t nc, const int64_t* slot,
                                                  const int32_t* kpos) {
    gather_q8_0_rows(pool, slot, nc, kq, stride, kd);
    const __mmask16 hidden = _mm512_cmpgt_epi32_mask(_mm512_load_si512(kpos), qpos16);
    const __mmask16 valid = static_cast<__mmask16>((1u << nc) - 1u);
    for (int32_t g = 0; g < group; ++g) {
      __m512 f = _mm512_setzero_ps();
      for (int32_t pair = 0; 2 * pair < nb; ++pair) {
        __m512i a[kDecodeChunk];
        for (int k = 0; k < kDecodeChunk; ++k) {
          const __m512i y = _mm512_load_si512(kq + k * stride + 64 * pair);
          a[k] = simd::dot_u8_i8(q_abs[g][pair],
                                 _mm512_mask_sub_epi8(y, q_neg[g][pair], _mm512_setzero_si512(), y));
        }
        __m512i isum[2];
        tree_reduce16_i32(a, &isum[0], &isum[1]);
        for (int32_t h = 0; h < 2 && 2 * pair + h < nb; ++h) {
          const int32_t b = 2 * pair + h;
          const __m512 x = _mm512_cvtepi32_ps(isum[h]);
          const __m512 w = _mm512_mul_ps(_mm512_cvtph_ps(simd::load_256(kd + b * kDecodeChunk)),
                                         _mm512_set1_ps(dq[g][b]));
          f = b == 0 ? _mm512_mul_ps(x, w) : _mm512_fmadd_ps(x, w, f);
        }
      }
      const __m512 s = _mm512_mask_blend_ps(hidden, _mm512_mul_ps(f, scale16), neg_inf16);
      store_first(p + static_cast<int64_t>(g) * n + c0, s, nc);
      max16[g] = _mm512_mask_max_ps(max16[g], valid, max16[g], s);
    }
  });
  for (int32_t g = 0; g < group; ++g) max[g] = hmax_ps(max16[g]);
}

#else  // VNNI: the slot-parallel scores
// The 16 rows r[j] of 16 dwords transposed in place: afterwards r[c] lane j = dword c of row j.
// Four levels of 16 shuffles (dwords, qwords, then 128-bit lanes twice).
inline void transpose16_epi32(__m512i* r) {
  __m512i t[16], u[16];
  for (int i = 0; i < 8; ++i) {  // lane L of t[2i] / t[2i+1]: rows 2i, 2i+1, dwords 4L..4L+3
    t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {  // lane L of u[4i + m]: rows 4i..4i+3, dword 4L + m
    u[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
    u[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
    u[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
    u[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
  }
  for (int m = 0; m < 4; ++m) {  // r[4L + m] = lane L of u[m], u[4 + m], u[8 + m], u[12 + m]
    const __m512i ab_lo = _mm512_shuffle_i32x4(u[m], u[4 + m], _MM_SHUFFLE(1, 0, 1, 0));
    const __m512i ab_hi = _mm512_shuffle_i32x4(u[m], u[4 + m], _MM_SHUFFLE(3, 2, 3, 2));
    const __m512i cd_lo = _mm512_shuffle_i32x4(u[8 + m], u[12 + m], _MM_SHUFFLE(1, 0, 1, 0));
    const __m512i cd_hi = _mm512_shuffle_i32x4(u[8 + m], u[12 + m], _MM_SHUFFLE(3, 2, 3, 2));
    r[m] = _mm512_shuffle_i32x4(ab_lo, cd_lo, _MM_SHUFFLE(2, 0, 2, 0));
    r[4 + m] = _mm512_shuffle_i32x4(ab_lo, cd_lo, _MM_SHUFFLE(3, 1, 3, 1));
    r[8 + m] = _mm512_shuffle_i32x4(ab_hi, cd_hi, _MM_SHUFFLE(2, 0, 2, 0));
    r[12 + m] = _mm512_shuffle_i32x4(ab_hi, cd_hi, _MM_SHUFFLE(3, 1, 3, 1));
  }
}

// Pass 1 on a q8_0 cache with VNNI: the same exact isum_jb as decode_scores_q8_0, computed
// slot-parallel. Per pair of blocks the chunk's 16 K rows (64 quant bytes each, read straight
// from the pool) are transposed once for the whole group, so lane j of column c holds slot j's
// four quants 4c..4c+3; each head then needs one vpdpbusd per column against its query's four
// bytes broadcast, and no reduction across lanes. vpdpbusd multiplies unsigned by signed bytes,
// so K is biased by 128 (k + 128 = k xor 0x80 as an unsigned byte) and 128 * sum(qq_b) is
// taken off after; VNNI's int32 sums do not saturate, so isum_jb is exact and the float
// operations after it (and their bits) are those of the other builds.
void decode_scores_q8_0_vnni(const PagedKvPool& pool, const PagedHeadRow& row,
                             const GroupQueries& queries, float scale, int32_t begin,
                             int32_t end, float* p, float* max) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  const int32_t d = pool.head_dim, nb = d / 32, n = end - begin, group = queries.group;
  const QuantizedQueries& query = quantized_queries_q8_0(queries.q, group, d);
  const auto& dq = query.dq;
  int32_t q_bias[kMaxDecodeGroup][kMaxHeadDim / 32];  // 128 * the sum of each block's quants
  for (int32_t g = 0; g < group; ++g) {
    for (int32_t b = 0; b < nb; ++b) {
      int32_t s = 0;
      for (int32_t i = 0; i < 32; ++i) s += query.qs[g][32 * b + i];
      q_bias[g][b] = 128 * s;
    }
  }
  const __m512i qpos16 = _mm512_set1_epi32(queries.positions[0]);
  const __m512 scale16 = _mm512_set1_ps(scale);
  const __m512 neg_inf16 = _mm512_set1_ps(kNegInf);
  const __m512i bias8 = _mm512_set1_epi8(static_cast<char>(0x80));
  __m512 max16[kMaxDecodeGroup];
  for (int32_t g = 0; g < group; ++g) max16[g] = neg_inf16;
  alignas(64) uint16_t kd[(kMaxHeadDim / 32) * kDecodeChunk];
  for_each_score_chunk(pool, row, begin, end, [&](int32_t c0, int32_t nc, const int64_t* slot,
                                                  const int32_t* kpos) {
    const uint8_t* rows[kDecodeChunk];
    for (int32_t j = 0; j < kDecodeChunk; ++j) {
      rows[j] = j < nc ? slot_row(pool, pool.k, slot[j]) : nullptr;
      for (int32_t b = 0; b < nb; ++b) {
        uint16_t h = 0;  // rows past nc: scale 0 (their lanes are masked)
        if (rows[j] != nullptr) std::memcpy(&h, rows[j] + kQ8BlockBytes * b, sizeof(h));
        kd[b * kDecodeChunk + j] = h;
      }
    }
    const __mmask16 hidden = _mm512_cmpgt_epi32_mask(_mm512_load_si512(kpos), qpos16);
    const __mmask16 valid = static_cast<__mmask16>((1u << nc) - 1u);
    __m512 f[kMaxDecodeGroup];
    for (int32_t pair = 0; 2 * pair < nb; ++pair) {
      const bool two = 2 * pair + 1 < nb;
      __m512i col[kDecodeChunk];
      for (int32_t j = 0; j < kDecodeChunk; ++j) {
        if (rows[j] == nullptr) {
          col[j] = bias8;
          continue;
        }
        const uint8_t* block = rows[j] + static_cast<int64_t>(2 * pair) * kQ8BlockBytes + 2;
        const __m256i lo = simd::load_256(block);
        const __m256i hi = two ? simd::load_256(block + kQ8BlockBytes) : _mm256_setzero_si256();
        col[j] = _mm512_xor_si512(_mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1), bias8);
      }
      transpose16_epi32(col);
      for (int32_t g = 0; g < group; ++g) {
        const int8_t* qg = query.qs[g] + 64 * pair;
        for (int32_t h = 0; h < (two ? 2 : 1); ++h) {
          const int32_t b = 2 * pair + h;
          __m512i a = _mm512_setzero_si512();
          for (int c = 0; c < 8; ++c) {
            int32_t q4;
            std::memcpy(&q4, qg + 32 * h + 4 * c, sizeof(q4));
            a = _mm512_dpbusd_epi32(a, col[8 * h + c], _mm512_set1_epi32(q4));
          }
          const __m512 x = _mm512_cvtepi32_ps(_mm512_sub_epi32(a, _mm512_set1_epi32(q_bias[g][b])));
          const __m512 w = _mm512_mul_ps(_mm512_cvtph_ps(simd::load_256(kd + b * kDecodeChunk)),
                                         _mm512_set1_ps(dq[g][b]));
          f[g] = b == 0 ? _mm512_mul_ps(x, w) : _mm512_fmadd_ps(x, w, f[g]);
        }
      }
    }
    for (int32_t g = 0; g < group; ++g) {
      const __m512 s = _mm512_mask_blend_ps(hidden, _mm512_mul_ps(f[g], scale16), neg_inf16);
      store_first(p + static_cast<int64_t>(g) * n + c0, s, nc);
      max16[g] = _mm512_mask_max_ps(max16[g], valid, max16[g], s);
    }
  });
  for (int32_t g = 0; g < group; ++g) max[g] = hmax_ps(max16[g]);
}
#endif

// Pass 1: scaled scores of row slots [begin, end) into p[g * n + j] (-inf when hidden);
// returns the largest per head in max[g].
template <KvStorageType S>
void decode_scores(const PagedKvPool& pool, const PagedHeadRow& row, const GroupQueries& queries,
                   float scale, int32_t begin, int32_t end, float* p, float* max) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  const int32_t d = pool.head_dim, nv = d / 16, n = end - begin, group = queries.group;
  const __m512i qpos16 = _mm512_set1_epi32(queries.positions[0]);
  const __m512 scale16 = _mm512_set1_ps(scale);
  const __m512 neg_inf16 = _mm512_set1_ps(kNegInf);
  __m512 max16[kMaxDecodeGroup];
  for (int32_t g = 0; g < group; ++g) max16[g] = neg_inf16;
  alignas(64) float kbuf[kDecodeChunk * kMaxHeadDim];
  for_each_score_chunk(pool, row, begin, end, [&](int32_t c0, int32_t nc, const int64_t* slot,
                                                  const int32_t* kpos) {
    convert_rows<S>(pool, pool.k, slot, nc, kbuf);
    const __mmask16 hidden = _mm512_cmpgt_epi32_mask(_mm512_load_si512(kpos), qpos16);
    const __mmask16 valid = static_cast<__mmask16>((1u << nc) - 1u);
    for (int32_t g = 0; g < group; ++g) {
      const float* q = queries.q + static_cast<int64_t>(g) * d;
      // The 16 chains advance together (in registers), one 16-column vector at a time.
      __m512 a[kDecodeChunk];
      const __m512 q0 = _mm512_loadu_ps(q);
      for (int k = 0; k < kDecodeChunk; ++k) {
        a[k] = _mm512_mul_ps(q0, _mm512_load_ps(kbuf + (4 * (k % 4) + k / 4) * d));
      }
      for (int32_t c = 1; c < nv; ++c) {
        const __m512 qc = _mm512_loadu_ps(q + 16 * c);
        for (int k = 0; k < kDecodeChunk; ++k) {
          a[k] = _mm512_fmadd_ps(qc, _mm512_load_ps(kbuf + (4 * (k % 4) + k / 4) * d + 16 * c),
                                 a[k]);
        }
      }
      const __m512 s =
          _mm512_mask_blend_ps(hidden, _mm512_mul_ps(tree_reduce16(a), scale16), neg_inf16);
      store_first(p + static_cast<int64_t>(g) * n + c0, s, nc);
      max16[g] = _mm512_mask_max_ps(max16[g], valid, max16[g], s);
    }
  });
  for (int32_t g = 0; g < group; ++g) max[g] = hmax_ps(max16[g]);
}

// Pass 2: p = e^(p - max) in place per head (0 when hidden or nothing is visible), sum[g].
void decode_exps(int32_t group, int32_t n, const float* max, float* p, float* sum) {
  const __m512 neg_inf16 = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  for (int32_t g = 0; g < group; ++g) {
    float* pg = p + static_cast<int64_t>(g) * n;
    const __m512 max16 = _mm512_set1_ps(max[g]);
    const bool none = max[g] == -std::numeric_limits<float>::infinity();
    __m512 b = _mm512_setzero_ps();
    for (int32_t c0 = 0; c0 < n; c0 += kDecodeChunk) {
      const int32_t nc = n - c0 < kDecodeChunk ? n - c0 : kDecodeChunk;
      const __mmask16 valid = static_cast<__mmask16>((1u << nc) - 1u);
      const __m512 s = load_first(pg + c0, nc);
      const __mmask16 keep =
          none ? static_cast<__mmask16>(0)
               : static_cast<__mmask16>(valid & ~_mm512_cmp_ps_mask(s, neg_inf16, _CMP_EQ_OQ));
      const __m512 e = _mm512_maskz_mov_ps(keep, exp_ps(_mm512_sub_ps(s, max16)));
      b = _mm512_add_ps(b, e);
      store_first(pg + c0, e, nc);
    }
    alignas(64) float lanes[16];
    _mm512_store_ps(lanes, b);
    sum[g] = tree_sum16(lanes);
  }
}

// The slots of chunk [c0, c0 + nc) whose weight is nonzero for some head of the group, as a
// bit mask (hidden slots have weight 0 for every head and are skipped; NaN counts as nonzero).
inline uint32_t live_slots(const float* p, int32_t group, int32_t n, int32_t c0, int32_t nc) {
  __mmask16 live = 0;
  for (int32_t g = 0; g < group; ++g) {
    live |= _mm512_cmp_ps_mask(load_first(p + static_cast<int64_t>(g) * n + c0, nc),
                               _mm512_setzero_ps(), _CMP_NEQ_UQ);
  }
  return live;
}

// Pass 3: acc[g * d + i] = the chain over slots of e_gj * v_j[i], W 16-column vectors at a
// time per head (G * W accumulators stay in registers).
template <int G, int W, KvStorageType S>
void decode_values(const PagedKvPool& pool, const PagedHeadRow& row, int32_t begin, int32_t end,
                   const float* p, float* acc) {
  const int32_t d = pool.head_dim, n = end - begin;
  for (int32_t i = 0; i < G * d; i += 16) _mm512_storeu_ps(acc + i, _mm512_setzero_ps());
  const auto live_of = [&](int32_t c0, int32_t nc) { return live_slots(p, G, n, c0, nc); };
  for_each_value_chunk(pool, row, begin, end, live_of, [&](int32_t c0, int32_t nc, uint32_t live,
                                                           const int64_t* slot) {
    for (int32_t i0 = 0; i0 < d; i0 += 16 * W) {
      __m512 o[G][W];
      for (int g = 0; g < G; ++g)
        for (int w = 0; w < W; ++w) o[g][w] = _mm512_loadu_ps(acc + g * d + i0 + 16 * w);
      for (uint32_t m = live; m != 0; m &= m - 1) {  // live slots in slot order
        const int32_t j = __builtin_ctz(m);
        const uint8_t* vrow = slot_row(pool, pool.v, slot[j]);
        __m512 v[W];
        for (int w = 0; w < W; ++w) v[w] = load_kv_16_as<S>(vrow, i0 + 16 * w);
        for (int g = 0; g < G; ++g) {
          const __m512 eg = _mm512_set1_ps(p[static_cast<int64_t>(g) * n + c0 + j]);
          for (int w = 0; w < W; ++w) o[g][w] = _mm512_fmadd_ps(eg, v[w], o[g][w]);
        }
      }
      for (int g = 0; g < G; ++g)
        for (int w = 0; w < W; ++w) _mm512_storeu_ps(acc + g * d + i0 + 16 * w, o[g][w]);
    }
  });
}

// The widest strip (in 16-column vectors) that divides the row and keeps G * W <= 16.
template <int G, KvStorageType S>
void decode_values_for(const PagedKvPool& pool, const PagedHeadRow& row, int32_t begin,
                       int32_t end, const float* p, float* acc) {
  const int32_t nv = pool.head_dim / 16;
  if constexpr (G <= 4) {
    if (nv % 4 == 0) return decode_values<G, 4, S>(pool, row, begin, end, p, acc);
  }
  if (nv % 2 == 0) return decode_values<G, 2, S>(pool, row, begin, end, p, acc);
  decode_values<G, 1, S>(pool, row, begin, end, p, acc);
}


// acc + the int32 sums of x[2i] * y[2i] + x[2i + 1] * y[2i + 1] (int16 pairs; exact).
inline __m512i dot_pairs(__m512i acc, __m512i x, __m512i y) {
#if defined(KVC_AVX512_VNNI)
  return _mm512_dpwssd_epi32(acc, x, y);
#else
  return _mm512_add_epi32(acc, _mm512_madd_epi16(x, y));
#endif
}

// top[k] = the largest lane of a[k], k < 8: three levels of pairwise maxima across vectors,
// then two within each 128-bit lane (lane 4m of u[h] ends up holding vector 4h + m's).
inline void tree_max8_epu32(const __m512i* a, uint32_t* top) {
  __m512i t[4], u[2];
  for (int i = 0; i < 4; ++i) {
    t[i] = _mm512_max_epu32(_mm512_shuffle_i32x4(a[2 * i], a[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                            _mm512_shuffle_i32x4(a[2 * i], a[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  }
  for (int i = 0; i < 2; ++i) {
    u[i] = _mm512_max_epu32(_mm512_shuffle_i32x4(t[2 * i], t[2 * i + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                            _mm512_shuffle_i32x4(t[2 * i], t[2 * i + 1], _MM_SHUFFLE(3, 1, 3, 1)));
    __m512 f = _mm512_castsi512_ps(u[i]);
    u[i] = _mm512_max_epu32(u[i], _mm512_castps_si512(_mm512_shuffle_ps(f, f, 0x4e)));
    f = _mm512_castsi512_ps(u[i]);
    u[i] = _mm512_max_epu32(u[i], _mm512_castps_si512(_mm512_shuffle_ps(f, f, 0xb1)));
  }
  alignas(64) uint32_t lanes[2][16];
  _mm512_store_si512(lanes[0], u[0]);
  _mm512_store_si512(lanes[1], u[1]);
  for (int k = 0; k < 8; ++k) top[k] = lanes[k / 4][4 * (k % 4)];
}

// The chunk's weights for G heads: pairs[g][b] dword 16h + 4L + k (h < 2, L < 4, k < 2) holds
// P of slots 16h + 4L + 2k and the next as two int16 (vpackssdw's lane order).
template <int G>
void q8_0_value_weights(int32_t nb, int32_t n, const float* p, const Q8ValueChunk& chunk,
                        Q8ValueWeights* w) {
  const __m512i abs_bits = _mm512_set1_epi32(0x7fffffff);
  constexpr int32_t kMaxTerms = kMaxDecodeGroup * (kMaxHeadDim / 32);
  alignas(64) float wv[kMaxTerms][kValueChunk];  // w_jb of term g * nb + b
  __m512i bits[kMaxTerms + 8];
  for (int g = 0; g < G; ++g) {
    const float* pg = p + static_cast<int64_t>(g) * n + chunk.c0;
    __m512 e[2];
    __mmask16 live[2];
    for (int h = 0; h < 2; ++h) {
      const int32_t m = chunk.nc - 16 * h;
      e[h] = m >= 16 ? _mm512_loadu_ps(pg + 16 * h)
                     : m > 0 ? load_first(pg + 16 * h, m) : _mm512_setzero_ps();
      live[h] = _mm512_cmp_ps_mask(e[h], _mm512_setzero_ps(), _CMP_NEQ_UQ);
    }
    for (int32_t b = 0; b < nb; ++b) {
      const int32_t k = g * nb + b;
      __m512i top = _mm512_setzero_si512();
      for (int h = 0; h < 2; ++h) {
        const __m512 dv = _mm512_cvtph_ps(simd::load_256(chunk.scales[b] + 16 * h));
        const __m512 x = _mm512_maskz_mul_ps(live[h], e[h], dv);
        _mm512_store_ps(wv[k] + 16 * h, x);
        top = _mm512_max_epu32(top, _mm512_and_si512(_mm512_castps_si512(x), abs_bits));
      }
      bits[k] = top;
    }
  }
  const int32_t terms = G * nb;
  for (int32_t k = terms; k < (terms + 7) / 8 * 8; ++k) bits[k] = _mm512_setzero_si512();
  for (int32_t k0 = 0; k0 < terms; k0 += 8) {
    uint32_t top[8];
    tree_max8_epu32(bits + k0, top);
    for (int32_t k = k0; k < k0 + 8 && k < terms; ++k) {
      const Q8WeightScale s = q8_weight_scale(top[k - k0] >> 23);
      const __m512 to_int = _mm512_set1_ps(s.to_int);
      int32_t* out = w->pairs[k / nb][k % nb];
      for (int h = 0; h < 2; ++h) {
        const __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_load_ps(wv[k] + 16 * h), to_int));
        _mm512_store_si512(out + 16 * h, _mm512_packs_epi32(q, q));
      }
      w->to_float[k / nb][k % nb] = s.to_float;
    }
  }
}

// Pass 3 on a q8_0 cache: integer value sums (the rule in x86_tile_helpers.h). Per chunk of
// kValueChunk slots the int16 weights of every (head, block) are made once
// (q8_0_value_weights); then per strip of WB blocks, slot pairs (j, j + 1) have their quants
// sign-extended and interleaved (one dword per column holds both slots' quants) and meet each
// head's weight pair, broadcast, in one vpdpwssd (vpmaddwd + vpaddd without VNNI: the same
// exact int32 sums). The chunk's sums enter the float accumulators as one FMA by 2^(E - 140).
// Columns sit permuted inside each block while the pass runs (unpacklo/hi work per 128-bit
// lane) and are put back in order at the end.
template <int G, int WB>
void decode_values_q8_0(const PagedKvPool& pool, const PagedHeadRow& row, int32_t begin,
                        int32_t end, const float* p, float* acc) {
  const int32_t d = pool.head_dim, nb = d / 32, n = end - begin;
  alignas(64) float o[G * kMaxHeadDim];  // acc with each block's columns permuted
  for (int32_t i = 0; i < G * d; i += 16) _mm512_store_ps(o + i, _mm512_setzero_ps());
  Q8ValueWeights w;
  const auto live_of = [&](int32_t c0, int32_t nc) { return live_slots(p, G, n, c0, nc); };
  for_each_q8_0_value_chunk(pool, row, begin, end, live_of, [&](const Q8ValueChunk& chunk) {
    q8_0_value_weights<G>(nb, n, p, chunk, &w);
    const int32_t pairs = (chunk.nc + 1) / 2;
    for (int32_t b0 = 0; b0 < nb; b0 += WB) {
      __m512i a[G][WB][2];
      for (int g = 0; g < G; ++g)
        for (int k = 0; k < WB; ++k) a[g][k][0] = a[g][k][1] = _mm512_setzero_si512();
      for (int32_t pr = 0; pr < pairs; ++pr) {
        const int32_t dword = 16 * (pr / 8) + 4 * (pr % 8 / 2) + pr % 2;
        for (int k = 0; k < WB; ++k) {
          const int64_t off = static_cast<int64_t>(b0 + k) * kQ8BlockBytes + 2;
          const __m512i x = _mm512_cvtepi8_epi16(simd::load_256(chunk.rows[2 * pr] + off));
          const __m512i y = _mm512_cvtepi8_epi16(simd::load_256(chunk.rows[2 * pr + 1] + off));
          const __m512i lo = _mm512_unpacklo_epi16(x, y), hi = _mm512_unpackhi_epi16(x, y);
          for (int g = 0; g < G; ++g) {
            const __m512i wp = _mm512_set1_epi32(w.pairs[g][b0 + k][dword]);
            a[g][k][0] = dot_pairs(a[g][k][0], lo, wp);
            a[g][k][1] = dot_pairs(a[g][k][1], hi, wp);
          }
        }
      }
      for (int g = 0; g < G; ++g) {
        for (int k = 0; k < WB; ++k) {
          const __m512 s = _mm512_set1_ps(w.to_float[g][b0 + k]);
          float* og = o + g * d + 32 * (b0 + k);
          for (int h = 0; h < 2; ++h) {
            _mm512_store_ps(og + 16 * h, _mm512_fmadd_ps(_mm512_cvtepi32_ps(a[g][k][h]), s,
                                                         _mm512_load_ps(og + 16 * h)));
          }
        }
      }
    }
  });
  // Lane 4L + t of the lo / hi vector of a block holds column 8L + t / 8L + 4 + t.
  const __m512i first = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23);
  const __m512i second =
      _mm512_setr_epi32(8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31);
  for (int32_t i = 0; i < G * d; i += 32) {
    const __m512 lo = _mm512_load_ps(o + i), hi = _mm512_load_ps(o + i + 16);
    _mm512_storeu_ps(acc + i, _mm512_permutex2var_ps(lo, first, hi));
    _mm512_storeu_ps(acc + i + 16, _mm512_permutex2var_ps(lo, second, hi));
  }
}

// The widest strip of blocks (dividing the row) that keeps 2 * G * WB <= 24 int32 sums in
// registers.
template <int G>
void decode_values_q8_0_for(const PagedKvPool& pool, const PagedHeadRow& row, int32_t begin,
                            int32_t end, const float* p, float* acc) {
  const int32_t nb = pool.head_dim / 32;
  if constexpr (8 * G <= 24) {
    if (nb % 4 == 0) return decode_values_q8_0<G, 4>(pool, row, begin, end, p, acc);
  }
  if constexpr (4 * G <= 24) {
    if (nb % 2 == 0) return decode_values_q8_0<G, 2>(pool, row, begin, end, p, acc);
  }
  decode_values_q8_0<G, 1>(pool, row, begin, end, p, acc);
}

}  // namespace

bool paged_attention_decode_supported(const PagedKvPool& pool, int32_t group) {
  return pool.head_dim % 16 == 0 && pool.head_dim <= kMaxHeadDim && group >= 1 &&
         group <= kMaxDecodeGroup;
}

void paged_attention_decode(const PagedKvPool& pool, const PagedHeadRow& row,
                            const GroupQueries& queries, float scale, int32_t begin, int32_t end,
                            float* acc, float* max, float* sum, float* scratch) {
  // The first rows of each pass are fetched at once; the passes fetch ahead of themselves.
  prefetch_row_slots(pool, row, pool.k, begin, kPrefetchAhead, end);
  with_kv_storage(pool.storage, [&]<KvStorageType S>() {
    if constexpr (S == KvStorageType::kQ8_0) {
#if defined(KVC_AVX512_VNNI)
      decode_scores_q8_0_vnni(pool, row, queries, scale, begin, end, scratch, max);
#else
      decode_scores_q8_0(pool, row, queries, scale, begin, end, scratch, max);
#endif
    } else {
      decode_scores<S>(pool, row, queries, scale, begin, end, scratch, max);
    }
    prefetch_row_slots(pool, row, pool.v, begin, kPrefetchAhead, end);
    decode_exps(queries.group, end - begin, max, scratch, sum);
    with_decode_group(queries.group, [&]<int G>() {
      if constexpr (S == KvStorageType::kQ8_0) {
        decode_values_q8_0_for<G>(pool, row, begin, end, scratch, acc);
      } else {
        decode_values_for<G, S>(pool, row, begin, end, scratch, acc);
      }
    });
  });
}

}  // namespace kvc::KVC_AVX512_NS
