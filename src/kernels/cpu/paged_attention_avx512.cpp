// AVX-512 query-tiled paged attention (paged_attention_tiled's contract; see
// paged_attention_avx512.h for the builds of this file). The AVX2 kernel's algorithm and, per
// output lane, its exact float operations in the same order (32-slot chunks with an online
// softmax, one FMA chain per score, even/odd value chains, the same exponential polynomial),
// so both kernel sets give the same bits: a sequence's tokens never depend on the CPU. A chunk
// is two 16-lane vectors instead of four 8-lane ones, so a query row's scores and value update
// take half the instructions, and the causal mask is a compare into a mask register. K of the
// chunk is converted once per tile and transposed, V converted once per tile; the tile's
// queries are copied into one contiguous block so the score loop indexes a single array.
//
// Requires head_dim % 16 == 0 and head_dim <= kMaxHeadDim, groups up to kMaxGroup. The decode
// kernel is in paged_attention_decode_avx512.cpp.
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
using simd::hsum_ps;

constexpr int32_t kChunk = 32;  // slots per online-softmax step: two vectors
constexpr int32_t kMaxGroup = 16;
constexpr int32_t kMaxRows = kMaxQueryTile * kMaxGroup;
// Floats of one tile's queries copied together (64 KiB): a tile holds at most this many
// (token, head) rows of head_dim; 32 tokens on SmolLM2's and Qwen2.5's shapes (group <= 7,
// head_dim 64). A row's result does not depend on which tile it is in.
constexpr int32_t kMaxTileQueryFloats = 16384;
constexpr int kScoreRows = 8;  // query rows scored together against one chunk

// The chunk's K rows as f32, transposed: kt [d, kChunk]; V rows as f32: vc [kChunk, d].
// Slots j >= nc are zero and never read from the pool (they may be poisoned or foreign).
// K is transposed in 8x8 pieces (two per 8 columns of the chunk's 16 slots).
void load_chunk(const PagedKvPool& pool, const int64_t* slot, int32_t nc, float* kt, float* vc) {
  const int32_t d = pool.head_dim;
  for (int32_t half = 0; half < kChunk; half += 8) {
    for (int32_t i = 0; i < d; i += 8) {
      __m256 r[8];
      for (int32_t j = 0; j < 8; ++j) {
        r[j] = half + j < nc ? load_kv_8(pool, pool.k, slot[half + j], i)
                             : _mm256_setzero_ps();
      }
      simd::transpose8(r);
      for (int32_t j = 0; j < 8; ++j) _mm256_store_ps(kt + (i + j) * kChunk + half, r[j]);
    }
  }
  for (int32_t j = 0; j < kChunk; ++j) {
    for (int32_t i = 0; i < d; i += 16) {
      _mm512_store_ps(vc + j * d + i,
                      j < nc ? load_kv_16(pool, pool.v, slot[j], i) : _mm512_setzero_ps());
    }
  }
}

// Raw scores of R query rows against the chunk: lo/hi[r] lane j = q_r . k_j for slots j and
// 16 + j. q: R rows of d floats, contiguous.
template <int R>
inline void chunk_scores(const float* q, const float* kt, int32_t d, __m512* lo, __m512* hi) {
  __m512 a_lo[R], a_hi[R];
  for (int r = 0; r < R; ++r) a_lo[r] = a_hi[r] = _mm512_setzero_ps();
  for (int32_t i = 0; i < d; ++i) {
    const __m512 k_lo = _mm512_load_ps(kt + i * kChunk);
    const __m512 k_hi = _mm512_load_ps(kt + i * kChunk + 16);
    for (int r = 0; r < R; ++r) {
      const __m512 qi = _mm512_set1_ps(q[r * d + i]);
      a_lo[r] = _mm512_fmadd_ps(qi, k_lo, a_lo[r]);
      a_hi[r] = _mm512_fmadd_ps(qi, k_hi, a_hi[r]);
    }
  }
  for (int r = 0; r < R; ++r) {
    lo[r] = a_lo[r];
    hi[r] = a_hi[r];
  }
}

// o[0, d) = (alpha * o + sum over even j of p[j] vc[j]) + sum over odd j of p[j] vc[j], each
// sum one FMA chain in slot order (the AVX2 kernel's arithmetic per lane); p [kChunk] (0 for
// masked and padding slots). Four 16-column strips at a time, then single strips.
inline void accumulate_values(float* o, const float* p, const float* vc, int32_t d, float alpha) {
  const __m512 a = _mm512_set1_ps(alpha);
  int32_t i = 0;
  for (; i + 64 <= d; i += 64) {
    __m512 e[4], od[4];
    for (int u = 0; u < 4; ++u) {
      e[u] = _mm512_mul_ps(a, _mm512_loadu_ps(o + i + 16 * u));
      od[u] = _mm512_setzero_ps();
    }
    for (int32_t j = 0; j < kChunk; j += 2) {
      const __m512 pe = _mm512_set1_ps(p[j]);
      const __m512 po = _mm512_set1_ps(p[j + 1]);
      const float* ve = vc + j * d + i;
      const float* vo = ve + d;
      for (int u = 0; u < 4; ++u) {
        e[u] = _mm512_fmadd_ps(pe, _mm512_load_ps(ve + 16 * u), e[u]);
        od[u] = _mm512_fmadd_ps(po, _mm512_load_ps(vo + 16 * u), od[u]);
      }
    }
    for (int u = 0; u < 4; ++u) _mm512_storeu_ps(o + i + 16 * u, _mm512_add_ps(e[u], od[u]));
  }
  for (; i < d; i += 16) {
    __m512 e = _mm512_mul_ps(a, _mm512_loadu_ps(o + i));
    __m512 od = _mm512_setzero_ps();
    for (int32_t j = 0; j < kChunk; j += 2) {
      e = _mm512_fmadd_ps(_mm512_set1_ps(p[j]), _mm512_load_ps(vc + j * d + i), e);
      od = _mm512_fmadd_ps(_mm512_set1_ps(p[j + 1]), _mm512_load_ps(vc + (j + 1) * d + i), od);
    }
    _mm512_storeu_ps(o + i, _mm512_add_ps(e, od));
  }
}

// One tile of at most kMaxQueryTile tokens.
void attend_tile(const PagedKvPool& pool, const PagedHeadRow& row, const GroupQueries& queries,
                 float scale, float* out, int64_t out_stride) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  const int32_t d = pool.head_dim;
  const int32_t group = queries.group;
  const int32_t n_rows = queries.n_query * group;  // query row m = t * group + g

  float row_max[kMaxRows];   // [n_rows] running max of the scaled scores
  float row_sum[kMaxRows];   // [n_rows] running sum of exp(score - row_max)
  float* out_row[kMaxRows];  // [n_rows] -> [d], the running (unnormalized) output
  alignas(64) float q_rows[kMaxTileQueryFloats];  // [n_rows, d] the tile's queries
  const int32_t max_qpos = tile_max_position(queries);
  for (int32_t m = 0; m < n_rows; ++m) {
    const int32_t t = m / group, g = m % group;
    row_max[m] = kNegInf;
    row_sum[m] = 0.0f;
    const float* q = queries.q + t * queries.q_stride + static_cast<int64_t>(g) * d;
    out_row[m] = out + t * out_stride + static_cast<int64_t>(g) * d;
    for (int32_t i = 0; i < d; i += 16) {
      _mm512_store_ps(q_rows + m * d + i, _mm512_loadu_ps(q + i));
      _mm512_storeu_ps(out_row[m] + i, _mm512_setzero_ps());
    }
  }

  alignas(64) float kt[kMaxHeadDim * kChunk];  // [d, kChunk]
  alignas(64) float vc[kChunk * kMaxHeadDim];  // [kChunk, d]
  alignas(64) int32_t kpos[kChunk];            // [kChunk], INT32_MAX for padding
  alignas(64) float p[kChunk];                 // [kChunk] one row's exp(score - max)
  int64_t slot[kChunk];
  const __m512 scale16 = _mm512_set1_ps(scale);
  const __m512 neg_inf16 = _mm512_set1_ps(kNegInf);

  for (int32_t c0 = 0; c0 < row.length; c0 += kChunk) {
    const int32_t left = row.length - c0;
    const int32_t nc = left < kChunk ? left : kChunk;
    const int32_t min_kpos = resolve_tile_chunk(pool, row, c0, nc, kChunk, slot, kpos);
    if (min_kpos > max_qpos) continue;  // every slot is in the future of the whole tile
    load_chunk(pool, slot, nc, kt, vc);
    const __m512i kpos_lo = _mm512_load_si512(kpos);
    const __m512i kpos_hi = _mm512_load_si512(kpos + 16);

    for (int32_t m0 = 0; m0 < n_rows; m0 += kScoreRows) {
      __m512 lo[kScoreRows], hi[kScoreRows];
      const int32_t r_count = n_rows - m0 < kScoreRows ? n_rows - m0 : kScoreRows;
      const float* q = q_rows + m0 * d;
      switch (r_count) {
        case 8: chunk_scores<8>(q, kt, d, lo, hi); break;
        case 7: chunk_scores<7>(q, kt, d, lo, hi); break;
        case 6: chunk_scores<6>(q, kt, d, lo, hi); break;
        case 5: chunk_scores<5>(q, kt, d, lo, hi); break;
        case 4: chunk_scores<4>(q, kt, d, lo, hi); break;
        case 3: chunk_scores<3>(q, kt, d, lo, hi); break;
        case 2: chunk_scores<2>(q, kt, d, lo, hi); break;
        default: chunk_scores<1>(q, kt, d, lo, hi); break;
      }
      for (int32_t r = 0; r < r_count; ++r) {
        const int32_t m = m0 + r;
        const int32_t qpos = queries.positions[m / group];
        if (min_kpos > qpos) continue;  // nothing visible to this query in the chunk
        const __m512i qpos16 = _mm512_set1_epi32(qpos);
        const __mmask16 hidden_lo = _mm512_cmpgt_epi32_mask(kpos_lo, qpos16);
        const __mmask16 hidden_hi = _mm512_cmpgt_epi32_mask(kpos_hi, qpos16);
        const __m512 s_lo = _mm512_mask_blend_ps(hidden_lo, _mm512_mul_ps(lo[r], scale16), neg_inf16);
        const __m512 s_hi = _mm512_mask_blend_ps(hidden_hi, _mm512_mul_ps(hi[r], scale16), neg_inf16);
        const float chunk_max = hmax_ps(_mm512_max_ps(s_lo, s_hi));
        float alpha = 1.0f;
        if (chunk_max > row_max[m]) {
          alpha = expf(row_max[m] - chunk_max);  // 0 on the first visible chunk
          row_max[m] = chunk_max;
        }
        const __m512 max16 = _mm512_set1_ps(row_max[m]);
        const __m512 p_lo =
            _mm512_mask_blend_ps(hidden_lo, exp_ps(_mm512_sub_ps(s_lo, max16)), _mm512_setzero_ps());
        const __m512 p_hi =
            _mm512_mask_blend_ps(hidden_hi, exp_ps(_mm512_sub_ps(s_hi, max16)), _mm512_setzero_ps());
        row_sum[m] = row_sum[m] * alpha + hsum_ps(_mm512_add_ps(p_lo, p_hi));
        _mm512_store_ps(p, p_lo);
        _mm512_store_ps(p + 16, p_hi);
        accumulate_values(out_row[m], p, vc, d, alpha);
      }
    }
  }

  for (int32_t m = 0; m < n_rows; ++m) {
    const __m512 inv = _mm512_set1_ps(row_sum[m] > 0.0f ? 1.0f / row_sum[m] : 0.0f);
    for (int32_t i = 0; i < d; i += 16) {
      _mm512_storeu_ps(out_row[m] + i, _mm512_mul_ps(inv, _mm512_loadu_ps(out_row[m] + i)));
    }
  }
}

}  // namespace

bool paged_attention_tiled_supported(const PagedKvPool& pool, int32_t group) {
  return pool.head_dim % 16 == 0 && pool.head_dim <= kMaxHeadDim && group >= 1 &&
         group <= kMaxGroup;
}

void paged_attention_tiled(const PagedKvPool& pool, const PagedHeadRow& row,
                           const GroupQueries& queries, float scale, float* out,
                           int64_t out_stride) {
  const int32_t fit = kMaxTileQueryFloats / (queries.group * pool.head_dim);
  const int32_t tile_tokens = fit < kMaxQueryTile ? fit : kMaxQueryTile;  // >= 1 (supported)
  for_each_query_tile(queries, tile_tokens, out, out_stride,
                      [&](const GroupQueries& tile, float* tile_out) {
                        attend_tile(pool, row, tile, scale, tile_out, out_stride);
                      });
}

}  // namespace kvc::KVC_AVX512_NS
