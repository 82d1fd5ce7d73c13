// AVX2 paged attention. paged_attention_decode: one query, three passes over a slot range
// (scores, exponentials, values), each K and V row converted once for every query head of the
// group (GQA without repeating KVs), the start of each block's rows prefetched ahead (a row's
// blocks are scattered over the pool, so the hardware prefetcher is pointed at each one); the
// same bits as the AVX-512 build (x86_tile_helpers.h). Groups up to 8, head_dim % 16 == 0.
// paged_attention_tiled: each K and V row is read once per tile of up to kMaxQueryTile tokens x
// group heads. Requires head_dim % 8 == 0 and head_dim <= kMaxTiledHeadDim.
//
// No std:: templates here (std::min, std::max, ...): a copy instantiated with AVX2 enabled
// could be chosen by the linker for non-AVX2 callers (see avx2_common.h).
#include <cmath>
#include <limits>

#include "kernels/cpu/avx2_common.h"
#include "kernels/cpu/paged_attention_avx2.h"
#include "kernels/quant.h"

namespace kvc::avx2 {
namespace {

#include "kernels/cpu/x86_tile_helpers.h"  // NOLINT(build/include): inside the namespace

using simd::exp_ps;
using simd::hmax_ps;
using simd::hsum_ps;
using simd::transpose8;

// Values [i, i + 8) of the K (or V) row of physical slot `slot`, as floats.
inline const uint8_t* slot_row(const PagedKvPool& pool, const void* base, int64_t slot) {
  return static_cast<const uint8_t*>(base) + slot * pool.row_bytes;
}
template <KvStorageType S>
inline __m256 load8_as(const uint8_t* row, int32_t i) {
  if constexpr (S == KvStorageType::kF16) {
    return simd::load_kv_f16_8(row, i);
  } else if constexpr (S == KvStorageType::kF32) {
    return simd::load_kv_f32_8(row, i);
  } else {
    return simd::load_kv_q8_0_8(row, i);
  }
}
inline __m256 load8(const PagedKvPool& pool, const void* base, int64_t slot, int32_t i) {
  const uint8_t* row = slot_row(pool, base, slot);
  switch (pool.storage) {
    case KvStorageType::kF16: return load8_as<KvStorageType::kF16>(row, i);
    case KvStorageType::kF32: return load8_as<KvStorageType::kF32>(row, i);
    case KvStorageType::kQ8_0: break;
  }
  return load8_as<KvStorageType::kQ8_0>(row, i);
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

// ---- Decode kernel (paged_attention_decode; the arithmetic is spelled out in
// x86_tile_helpers.h and shared with the AVX-512 build) ----

constexpr int32_t kMaxDecodeHeadDim = 256;  // bounds the chunk buffer

// The K rows of the chunk's nc slots as floats: buf [kDecodeChunk, d]; rows j >= nc are zero
// (their lanes are masked; they are never read from the pool).
template <KvStorageType S>
inline void convert_rows(const PagedKvPool& pool, const int64_t* slot, int32_t nc, float* buf) {
  const int32_t d = pool.head_dim;
  for (int32_t j = 0; j < nc; ++j) {
    const uint8_t* row = slot_row(pool, pool.k, slot[j]);
    for (int32_t i = 0; i < d; i += 8) _mm256_store_ps(buf + j * d + i, load8_as<S>(row, i));
  }
  for (int32_t j = nc; j < kDecodeChunk; ++j) {
    for (int32_t i = 0; i < d; i += 8) _mm256_store_ps(buf + j * d + i, _mm256_setzero_ps());
  }
}

// h1 of 8 slots -> R in slot order (levels h2, h3 and the last sum of the 16-lane tree).
// Input k holds slot 4 (k % 2) + k / 2: lane 4h + r ends up holding input 2r + h.
inline __m256 tree_reduce8(const __m256* h1) {
  __m256 u[4], w[2];
  for (int i = 0; i < 4; ++i) {  // h2: l and l + 4
    u[i] = _mm256_add_ps(_mm256_permute2f128_ps(h1[2 * i], h1[2 * i + 1], 0x20),
                         _mm256_permute2f128_ps(h1[2 * i], h1[2 * i + 1], 0x31));
  }
  for (int i = 0; i < 2; ++i) {  // h3: l and l + 2
    w[i] = _mm256_add_ps(_mm256_shuffle_ps(u[2 * i], u[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm256_shuffle_ps(u[2 * i], u[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  }
  return _mm256_add_ps(_mm256_shuffle_ps(w[0], w[1], _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm256_shuffle_ps(w[0], w[1], _MM_SHUFFLE(3, 1, 3, 1)));
}

// Lanes [0, count) set (count clipped to 0 .. 8).
inline __m256i lane_mask(int32_t count) {
  const __m256i index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(count), index);
}

// 8 vectors of partial int32 dots of one block (8 four-byte groups each) -> their exact
// sums, slots in order.
inline __m256i tree_reduce8_i32(const __m256i* v) {
  const __m256i g0 = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
  const __m256i g1 = _mm256_hadd_epi32(_mm256_hadd_epi32(v[4], v[5]), _mm256_hadd_epi32(v[6], v[7]));
  return _mm256_add_epi32(_mm256_permute2x128_si256(g0, g1, 0x20),
                          _mm256_permute2x128_si256(g0, g1, 0x31));
}

// Pass 1 on a q8_0 cache: int8 dot products (x86_tile_helpers.h), one block per vector.
void decode_scores_q8_0(const PagedKvPool& pool, const PagedHeadRow& row,
                        const GroupQueries& queries, float scale, int32_t begin, int32_t end,
                        float* p, float* max) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  const int32_t d = pool.head_dim, nb = d / 32, n = end - begin, group = queries.group;
  const QuantizedQueries& query = quantized_queries_q8_0(queries.q, group, d);
  const auto& qs = query.qs;
  const auto& dq = query.dq;
  const __m256i qpos8 = _mm256_set1_epi32(queries.positions[0]);
  const __m256 scale8 = _mm256_set1_ps(scale);
  const __m256 neg_inf8 = _mm256_set1_ps(kNegInf);
  __m256 max8[kMaxDecodeGroup];
  for (int32_t g = 0; g < group; ++g) max8[g] = neg_inf8;
  alignas(32) int8_t kq[kDecodeChunk * kMaxDecodeHeadDim];
  alignas(32) uint16_t kd[(kMaxDecodeHeadDim / 32) * kDecodeChunk];
  for_each_score_chunk(pool, row, begin, end, [&](int32_t c0, int32_t nc, const int64_t* slot,
                                                  const int32_t* kpos) {
    gather_q8_0_rows(pool, slot, nc, kq, d, kd);
    for (int32_t half = 0; half < kDecodeChunk && half < nc; half += 8) {
      const __m256 hidden = _mm256_castsi256_ps(_mm256_cmpgt_epi32(
          _mm256_load_si256(reinterpret_cast<const __m256i*>(kpos + half)), qpos8));
      const __m256i valid = lane_mask(nc - half);
      for (int32_t g = 0; g < group; ++g) {
        __m256 f = _mm256_setzero_ps();
        for (int32_t b = 0; b < nb; ++b) {
          // maddubs takes |qq| and K with qq's sign moved onto it: exact (|pairs| < 2^15).
          const __m256i x = _mm256_load_si256(reinterpret_cast<const __m256i*>(qs[g] + 32 * b));
          const __m256i x_abs = _mm256_sign_epi8(x, x);
          __m256i v[8];
          for (int k = 0; k < 8; ++k) {
            const __m256i y = _mm256_load_si256(
                reinterpret_cast<const __m256i*>(kq + (half + k) * d + 32 * b));
            v[k] = simd::dot_u8_i8(x_abs, _mm256_sign_epi8(y, x));
          }
          const __m256 xs = _mm256_cvtepi32_ps(tree_reduce8_i32(v));
          const __m256 w = _mm256_mul_ps(
              _mm256_cvtph_ps(simd::load_128(kd + b * kDecodeChunk + half)), _mm256_set1_ps(dq[g][b]));
          f = b == 0 ? _mm256_mul_ps(xs, w) : _mm256_fmadd_ps(xs, w, f);
        }
        const __m256 s = _mm256_blendv_ps(_mm256_mul_ps(f, scale8), neg_inf8, hidden);
        _mm256_maskstore_ps(p + static_cast<int64_t>(g) * n + c0 + half, valid, s);
        max8[g] = _mm256_max_ps(max8[g], s);  // padding lanes are hidden: -inf
      }
    }
  });
  for (int32_t g = 0; g < group; ++g) max[g] = hmax_ps(max8[g]);
}

// Pass 1: scaled scores of row slots [begin, end) into p[g * n + j] (-inf when hidden);
// returns the largest per head in max[g].
template <KvStorageType S>
void decode_scores(const PagedKvPool& pool, const PagedHeadRow& row, const GroupQueries& queries,
                   float scale, int32_t begin, int32_t end, float* p, float* max) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  const int32_t d = pool.head_dim, nv = d / 16, n = end - begin, group = queries.group;
  const __m256i qpos8 = _mm256_set1_epi32(queries.positions[0]);
  const __m256 scale8 = _mm256_set1_ps(scale);
  const __m256 neg_inf8 = _mm256_set1_ps(kNegInf);
  __m256 max8[kMaxDecodeGroup];
  for (int32_t g = 0; g < group; ++g) max8[g] = neg_inf8;
  alignas(32) float kbuf[kDecodeChunk * kMaxDecodeHeadDim];
  for_each_score_chunk(pool, row, begin, end, [&](int32_t c0, int32_t nc, const int64_t* slot,
                                                  const int32_t* kpos) {
    convert_rows<S>(pool, slot, nc, kbuf);
    for (int32_t half = 0; half < kDecodeChunk && half < nc; half += 8) {
      const __m256 hidden = _mm256_castsi256_ps(_mm256_cmpgt_epi32(
          _mm256_load_si256(reinterpret_cast<const __m256i*>(kpos + half)), qpos8));
      const __m256i valid = lane_mask(nc - half);
      for (int32_t g = 0; g < group; ++g) {
        const float* q = queries.q + static_cast<int64_t>(g) * d;
        // Four slots' chains (lanes l < 8 and l >= 8 of each) advance together in registers.
        __m256 h1[8];
        for (int quad = 0; quad < 8; quad += 4) {
          const float* kr[4];
          for (int k = 0; k < 4; ++k) {
            kr[k] = kbuf + (half + 4 * ((quad + k) % 2) + (quad + k) / 2) * d;
          }
          __m256 lo[4], hi[4];
          const __m256 q_lo = _mm256_loadu_ps(q), q_hi = _mm256_loadu_ps(q + 8);
          for (int k = 0; k < 4; ++k) {
            lo[k] = _mm256_mul_ps(q_lo, _mm256_load_ps(kr[k]));
            hi[k] = _mm256_mul_ps(q_hi, _mm256_load_ps(kr[k] + 8));
          }
          for (int32_t c = 1; c < nv; ++c) {
            const __m256 qc_lo = _mm256_loadu_ps(q + 16 * c);
            const __m256 qc_hi = _mm256_loadu_ps(q + 16 * c + 8);
            for (int k = 0; k < 4; ++k) {
              lo[k] = _mm256_fmadd_ps(qc_lo, _mm256_load_ps(kr[k] + 16 * c), lo[k]);
              hi[k] = _mm256_fmadd_ps(qc_hi, _mm256_load_ps(kr[k] + 16 * c + 8), hi[k]);
            }
          }
          for (int k = 0; k < 4; ++k) h1[quad + k] = _mm256_add_ps(lo[k], hi[k]);
        }
        const __m256 s =
            _mm256_blendv_ps(_mm256_mul_ps(tree_reduce8(h1), scale8), neg_inf8, hidden);
        _mm256_maskstore_ps(p + static_cast<int64_t>(g) * n + c0 + half, valid, s);
        max8[g] = _mm256_max_ps(max8[g], s);  // padding lanes are hidden: -inf
      }
    }
  });
  for (int32_t g = 0; g < group; ++g) max[g] = hmax_ps(max8[g]);
}

// Pass 2: p = e^(p - max) in place per head (0 when hidden or nothing is visible), sum[g].
void decode_exps(int32_t group, int32_t n, const float* max, float* p, float* sum) {
  const __m256 neg_inf8 = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  for (int32_t g = 0; g < group; ++g) {
    float* pg = p + static_cast<int64_t>(g) * n;
    const __m256 max8 = _mm256_set1_ps(max[g]);
    const bool none = max[g] == -std::numeric_limits<float>::infinity();
    __m256 b[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};  // lanes j % 16 < 8, >= 8
    for (int32_t c0 = 0; c0 < n; c0 += kDecodeChunk) {
      for (int32_t half = 0; half < kDecodeChunk && c0 + half < n; half += 8) {
        const __m256i valid = lane_mask(n - c0 - half);
        const __m256 s = _mm256_maskload_ps(pg + c0 + half, valid);
        const __m256 keep = _mm256_and_ps(_mm256_castsi256_ps(valid),
                                          _mm256_cmp_ps(s, neg_inf8, _CMP_NEQ_OQ));
        const __m256 e = none ? _mm256_setzero_ps()
                              : _mm256_and_ps(keep, exp_ps(_mm256_sub_ps(s, max8)));
        b[half / 8] = _mm256_add_ps(b[half / 8], e);
        _mm256_maskstore_ps(pg + c0 + half, valid, e);
      }
    }
    alignas(32) float lanes[16];
    _mm256_store_ps(lanes, b[0]);
    _mm256_store_ps(lanes + 8, b[1]);
    sum[g] = tree_sum16(lanes);
  }
}

// The slots of chunk [c0, c0 + nc) whose weight is nonzero for some head of the group, as a
// bit mask (hidden slots have weight 0 for every head and are skipped; NaN counts as nonzero).
inline uint32_t live_slots(const float* p, int32_t group, int32_t n, int32_t c0, int32_t nc) {
  uint32_t live = 0;
  for (int32_t half = 0; half < kDecodeChunk && half < nc; half += 8) {
    const __m256i valid = lane_mask(nc - half);
    for (int32_t g = 0; g < group; ++g) {
      const __m256 e = _mm256_maskload_ps(p + static_cast<int64_t>(g) * n + c0 + half, valid);
      const auto bits = static_cast<uint32_t>(
          _mm256_movemask_ps(_mm256_cmp_ps(e, _mm256_setzero_ps(), _CMP_NEQ_UQ)));
      live |= bits << half;
    }
  }
  return live;
}

// Pass 3: acc[g * d + i] = the chain over slots of e_gj * v_j[i], W 8-column vectors at a
// time per head (G * W accumulators stay in registers).
template <int G, int W, KvStorageType S>
void decode_values(const PagedKvPool& pool, const PagedHeadRow& row, int32_t begin, int32_t end,
                   const float* p, float* acc) {
  const int32_t d = pool.head_dim, n = end - begin;
  for (int32_t i = 0; i < G * d; i += 8) _mm256_storeu_ps(acc + i, _mm256_setzero_ps());
  const auto live_of = [&](int32_t c0, int32_t nc) { return live_slots(p, G, n, c0, nc); };
  for_each_value_chunk(pool, row, begin, end, live_of, [&](int32_t c0, int32_t nc, uint32_t live,
                                                           const int64_t* slot) {
    for (int32_t i0 = 0; i0 < d; i0 += 8 * W) {
      __m256 o[G][W];
      for (int g = 0; g < G; ++g)
        for (int w = 0; w < W; ++w) o[g][w] = _mm256_loadu_ps(acc + g * d + i0 + 8 * w);
      for (uint32_t m = live; m != 0; m &= m - 1) {  // live slots in slot order
        const int32_t j = __builtin_ctz(m);
        const uint8_t* vrow = slot_row(pool, pool.v, slot[j]);
        __m256 v[W];
        for (int w = 0; w < W; ++w) v[w] = load8_as<S>(vrow, i0 + 8 * w);
        for (int g = 0; g < G; ++g) {
          const __m256 eg = _mm256_set1_ps(p[static_cast<int64_t>(g) * n + c0 + j]);
          for (int w = 0; w < W; ++w) o[g][w] = _mm256_fmadd_ps(eg, v[w], o[g][w]);
        }
      }
      for (int g = 0; g < G; ++g)
        for (int w = 0; w < W; ++w) _mm256_storeu_ps(acc + g * d + i0 + 8 * w, o[g][w]);
    }
  });
}

// Pass 3 on a q8_0 cache: the AVX-512 build's integer value sums (x86_tile_helpers.h), with
// the same exact int32 sums and float operations per column, 16 columns per strip.
inline uint32_t hmax_epu32(__m256i v) {
  __m128i x = _mm_max_epu32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  x = _mm_max_epu32(x, _mm_shuffle_epi32(x, _MM_SHUFFLE(1, 0, 3, 2)));
  x = _mm_max_epu32(x, _mm_shuffle_epi32(x, _MM_SHUFFLE(2, 3, 0, 1)));
  return static_cast<uint32_t>(_mm_cvtsi128_si32(x));
}

// The chunk's weights for G heads: pairs[g][b] dword 8q + 4k + m (q < 4, k, m < 2) holds P of
// slots 8q + 4k + 2m and the next as two int16 (vpackssdw's lane order).
template <int G>
void q8_0_value_weights(int32_t nb, int32_t n, const float* p, const Q8ValueChunk& chunk,
                        Q8ValueWeights* w) {
  const __m256i abs_bits = _mm256_set1_epi32(0x7fffffff);
  for (int g = 0; g < G; ++g) {
    const float* pg = p + static_cast<int64_t>(g) * n + chunk.c0;
    __m256 e[4], live[4];
    for (int q = 0; q < 4; ++q) {
      const int32_t m = chunk.nc - 8 * q;
      e[q] = m >= 8 ? _mm256_loadu_ps(pg + 8 * q)
                    : m > 0 ? _mm256_maskload_ps(pg + 8 * q, lane_mask(m)) : _mm256_setzero_ps();
      live[q] = _mm256_cmp_ps(e[q], _mm256_setzero_ps(), _CMP_NEQ_UQ);
    }
    for (int32_t b = 0; b < nb; ++b) {
      __m256 x[4];
      __m256i top = _mm256_setzero_si256();
      for (int q = 0; q < 4; ++q) {
        const __m256 dv = _mm256_cvtph_ps(simd::load_128(chunk.scales[b] + 8 * q));
        x[q] = _mm256_and_ps(_mm256_mul_ps(e[q], dv), live[q]);
        top = _mm256_max_epu32(top, _mm256_and_si256(_mm256_castps_si256(x[q]), abs_bits));
      }
      const Q8WeightScale s = q8_weight_scale(hmax_epu32(top) >> 23);
      const __m256 to_int = _mm256_set1_ps(s.to_int);
      for (int q = 0; q < 4; ++q) {
        const __m256i qi = _mm256_cvtps_epi32(_mm256_mul_ps(x[q], to_int));
        _mm256_store_si256(reinterpret_cast<__m256i*>(w->pairs[g][b] + 8 * q),
                           _mm256_packs_epi32(qi, qi));
      }
      w->to_float[g][b] = s.to_float;
    }
  }
}

template <int G>
void decode_values_q8_0(const PagedKvPool& pool, const PagedHeadRow& row, int32_t begin,
                        int32_t end, const float* p, float* acc) {
  const int32_t d = pool.head_dim, nb = d / 32, n = end - begin;
  alignas(32) float o[G * kMaxDecodeHeadDim];  // acc with each strip's columns permuted
  for (int32_t i = 0; i < G * d; i += 8) _mm256_store_ps(o + i, _mm256_setzero_ps());
  Q8ValueWeights w;
  const auto live_of = [&](int32_t c0, int32_t nc) { return live_slots(p, G, n, c0, nc); };
  for_each_q8_0_value_chunk(pool, row, begin, end, live_of, [&](const Q8ValueChunk& chunk) {
    q8_0_value_weights<G>(nb, n, p, chunk, &w);
    const int32_t pairs = (chunk.nc + 1) / 2;
    for (int32_t b = 0; b < nb; ++b) {
      for (int h = 0; h < 2; ++h) {  // columns 32b + 16h .. + 15
        __m256i a[G][2];
        for (int g = 0; g < G; ++g) a[g][0] = a[g][1] = _mm256_setzero_si256();
        const int64_t off = static_cast<int64_t>(b) * kQ8BlockBytes + 2 + 16 * h;
        for (int32_t pr = 0; pr < pairs; ++pr) {
          const int32_t dword = 8 * (pr / 4) + 4 * (pr % 4 / 2) + pr % 2;
          const __m256i x = _mm256_cvtepi8_epi16(simd::load_128(chunk.rows[2 * pr] + off));
          const __m256i y = _mm256_cvtepi8_epi16(simd::load_128(chunk.rows[2 * pr + 1] + off));
          const __m256i lo = _mm256_unpacklo_epi16(x, y), hi = _mm256_unpackhi_epi16(x, y);
          for (int g = 0; g < G; ++g) {
            const __m256i wp = _mm256_set1_epi32(w.pairs[g][b][dword]);
            a[g][0] = _mm256_add_epi32(a[g][0], _mm256_madd_epi16(lo, wp));
            a[g][1] = _mm256_add_epi32(a[g][1], _mm256_madd_epi16(hi, wp));
          }
        }
        for (int g = 0; g < G; ++g) {
          const __m256 s = _mm256_set1_ps(w.to_float[g][b]);
          float* og = o + g * d + 32 * b + 16 * h;
          for (int k = 0; k < 2; ++k) {
            _mm256_store_ps(og + 8 * k, _mm256_fmadd_ps(_mm256_cvtepi32_ps(a[g][k]), s,
                                                        _mm256_load_ps(og + 8 * k)));
          }
        }
      }
    }
  });
  // Index 8v + 4L + t of a strip holds its column 8L + 4v + t (v: lo or hi, L: 128-bit lane).
  for (int32_t i = 0; i < G * d; i += 16) {
    for (int32_t c = 0; c < 16; ++c) acc[i + c] = o[i + 8 * (c % 8 / 4) + 4 * (c / 8) + c % 4];
  }
}

// The widest strip (in 8-column vectors) that divides the row and keeps G * W <= 12.
template <int G, KvStorageType S>
void decode_values_for(const PagedKvPool& pool, const PagedHeadRow& row, int32_t begin,
                       int32_t end, const float* p, float* acc) {
  const int32_t nv8 = pool.head_dim / 8;  // even: head_dim % 16 == 0
  if constexpr (G <= 3) {
    if (nv8 % 4 == 0) return decode_values<G, 4, S>(pool, row, begin, end, p, acc);
  }
  if constexpr (G <= 6) return decode_values<G, 2, S>(pool, row, begin, end, p, acc);
  decode_values<G, 1, S>(pool, row, begin, end, p, acc);
}

}  // namespace

bool paged_attention_decode_supported(const PagedKvPool& pool, int32_t group) {
  return pool.head_dim % 16 == 0 && pool.head_dim <= kMaxDecodeHeadDim && group >= 1 &&
         group <= kMaxDecodeGroup;
}

void paged_attention_decode(const PagedKvPool& pool, const PagedHeadRow& row,
                            const GroupQueries& queries, float scale, int32_t begin, int32_t end,
                            float* acc, float* max, float* sum, float* scratch) {
  // The first rows of each pass are fetched at once; the passes fetch ahead of themselves.
  prefetch_row_slots(pool, row, pool.k, begin, kPrefetchAhead, end);
  with_kv_storage(pool.storage, [&]<KvStorageType S>() {
    if constexpr (S == KvStorageType::kQ8_0) {
      decode_scores_q8_0(pool, row, queries, scale, begin, end, scratch, max);
    } else {
      decode_scores<S>(pool, row, queries, scale, begin, end, scratch, max);
    }
    prefetch_row_slots(pool, row, pool.v, begin, kPrefetchAhead, end);
    decode_exps(queries.group, end - begin, max, scratch, sum);
    with_decode_group(queries.group, [&]<int G>() {
      if constexpr (S == KvStorageType::kQ8_0) {
        decode_values_q8_0<G>(pool, row, begin, end, scratch, acc);
      } else {
        decode_values_for<G, S>(pool, row, begin, end, scratch, acc);
      }
    });
  });
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
