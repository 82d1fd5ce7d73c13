// AVX-512 dot products of one weight row with quantized activations (see kernels/quant.h and
// quant_avx512.h for the builds of this file).
//
// The integer scheme is the AVX2 one (vec_dot_avx2.cpp) at twice the width:
//   - legacy blocks (32 elements): two blocks per 512-bit vector, block i in the low half and
//     block i+1 in the high half; their two scale products are spread over the halves by one
//     permute, and the Q8_1 min terms are accumulated four lanes at a time (same bits as AVX2);
//   - K-quants: the two 32-element sub-blocks that share a 64-byte run of activations go in
//     one vector, with their 6-bit (Q4_K/Q5_K) or 8-bit (Q6_K) scales spread per lane group
//     by vpermw.
// Signed-by-signed products use |x| and y negated under x's sign mask (no vpsignb here).
#include "kernels/block_layouts.h"
#include "kernels/cpu/avx512_common.h"
#include "kernels/cpu/quant_avx512.h"

namespace kvc::KVC_AVX512_NS {
namespace {

using namespace kvc::blocks;
using namespace kvc::KVC_AVX512_NS::simd;

// ---- float weights against F32 activations --------------------------------------------

// out[t] = w[n] . a_t[n] for kTokens activation rows `stride` bytes apart; `load16(i)` returns
// weights i..i+15 as floats, loaded (and widened) once for every token. Four accumulators per
// token hide FMA latency, in the same order whatever kTokens is (the one-token kernel is the
// kTokens = 1 instance); rows that are not a multiple of 16 finish with scalar products.
template <int kTokens, typename Load16, typename Load1>
void dot_float(int64_t n, const void* activations, size_t stride, Load16 load16, Load1 load1,
               float* out) {
  const float* a[kTokens];
  __m512 acc[kTokens][4];
  for (int t = 0; t < kTokens; ++t) {
    a[t] = reinterpret_cast<const float*>(static_cast<const uint8_t*>(activations) + t * stride);
    for (int k = 0; k < 4; ++k) acc[t][k] = _mm512_setzero_ps();
  }
  int64_t i = 0;
  for (; i + 64 <= n; i += 64) {
    for (int k = 0; k < 4; ++k) {
      const __m512 w = load16(i + 16 * k);
      for (int t = 0; t < kTokens; ++t) {
        acc[t][k] = _mm512_fmadd_ps(w, _mm512_loadu_ps(a[t] + i + 16 * k), acc[t][k]);
      }
    }
  }
  for (; i + 16 <= n; i += 16) {
    const __m512 w = load16(i);
    for (int t = 0; t < kTokens; ++t) {
      acc[t][0] = _mm512_fmadd_ps(w, _mm512_loadu_ps(a[t] + i), acc[t][0]);
    }
  }
  for (int t = 0; t < kTokens; ++t) {
    float sum = hsum_ps(_mm512_add_ps(_mm512_add_ps(acc[t][0], acc[t][1]),
                                      _mm512_add_ps(acc[t][2], acc[t][3])));
    for (int64_t j = i; j < n; ++j) sum += load1(j) * a[t][j];
    out[t] = sum;
  }
}

// 16 weights of a float row from w as floats (the float kernels' loads; x86_dot_types.h
// builds F32Dot / F16Dot / BF16Dot on them and dot_float).
inline __m512 widen_f32(const float* w) { return _mm512_loadu_ps(w); }
inline __m512 widen_f16(const uint16_t* w) { return _mm512_cvtph_ps(load_256(w)); }
inline __m512 widen_bf16(const uint16_t* w) {  // bf16 is the top half of a float
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(load_256(w)), 16));
}

// ---- legacy blocks (32 elements) against Q8_0 / Q8_1 ----------------------------------

// out[t] = weight row . activation row t, for kTokens rows `stride` bytes apart (see
// row_kernels.h). `quants(i)` returns the 32 weight quants of block i as bytes, signed
// (kSignedQuants) or unsigned; each pair of blocks is unpacked once for all tokens. One
// accumulator per token: its low half gathers the even blocks and its high half the odd ones,
// the AVX2 kernel's two chains exactly, so both sets give the same bits. The one-token kernel
// is the kTokens = 1 instance.
template <int kTokens, bool kSignedQuants, typename WBlock, typename ABlock, typename Quants>
void dot_legacy(int64_t nb, const WBlock* w, const void* activations, size_t stride,
                Quants quants, float* out) {
  // Spreads lane 0 of the products over the low half and block j's lane over the high half.
  const __m512i spread = combine(_mm256_setzero_si256(), _mm256_set1_epi32(kHasMin<WBlock> ? 2 : 1));
  const ABlock* a[kTokens];
  __m512 acc[kTokens];
  __m128 mins[kTokens];
  activation_rows(activations, stride, a);
  for (int t = 0; t < kTokens; ++t) {
    acc[t] = _mm512_setzero_ps();
    mins[t] = _mm_setzero_ps();
  }
  for (int64_t i = 0; i < nb; i += 2) {
    const bool has_j = i + 1 < nb;
    const __m256i zero = _mm256_setzero_si256();
    const __m512i qw = combine(quants(i), has_j ? quants(i + 1) : zero);
    for (int t = 0; t < kTokens; ++t) {
      const __m512i qa = combine(load_256(a[t][i].qs), has_j ? load_256(a[t][i + 1].qs) : zero);
      const __m512i sums = kSignedQuants ? dot_i8_i8(qw, qa) : dot_u8_i8(qw, qa);
      const __m128 products = block_pair_products(&w[i], &a[t][i], has_j ? &w[i + 1] : nullptr,
                                                  has_j ? &a[t][i + 1] : nullptr);
      const __m512 scale = _mm512_permutexvar_ps(spread, _mm512_castps128_ps512(products));
      acc[t] = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(sums), acc[t]);
      if constexpr (kHasMin<WBlock>) mins[t] = _mm_add_ps(mins[t], products);
    }
  }
  for (int t = 0; t < kTokens; ++t) {
    out[t] = hsum_ps(acc[t]);
    if constexpr (kHasMin<WBlock>) {
      out[t] += pair_min_terms(mins[t]);
    }
  }
}

// ---- K-quants (256-element super-blocks) against Q8_K ---------------------------------

// Shared by Q4_K and Q5_K: `quants(i, pair, lo, hi)` unpacks sub-blocks 2*pair and 2*pair+1
// of block i into bytes (values 0..15 or 0..31), once for all kTokens activation rows; both
// meet the 64 activations at 64 * pair. The one-token kernel is the kTokens = 1 instance.
template <int kTokens, typename WBlock, typename Quants>
void dot_k_with_mins(int64_t n, const WBlock* w, const void* activations, size_t stride,
                     Quants quants, float* out) {
  // int16 lanes 0..15 of pair p take scale 2p, lanes 16..31 scale 2p + 1.
  const __m512i scale_index[4] = {group_index_i16(0, 16), group_index_i16(2, 16),
                                  group_index_i16(4, 16), group_index_i16(6, 16)};
  const BlockQ8_K* a[kTokens];
  activation_rows(activations, stride, a);
  __m512 acc[kTokens];
  __m128 acc_mins[kTokens];
  for (int t = 0; t < kTokens; ++t) {
    acc[t] = _mm512_setzero_ps();
    acc_mins[t] = _mm_setzero_ps();
  }
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const __m256i scales_mins = unpack_scales_mins_k4_16(w[i].scales);  // int16 [16]
    const __m128i mins = _mm256_extracti128_si256(scales_mins, 1);
    const float d = half_to_float(w[i].d), dmin = half_to_float(w[i].dmin);
    __m512i sumi[kTokens];
    for (int t = 0; t < kTokens; ++t) {
      acc_mins[t] = add_k_min_terms(acc_mins[t], mins, dmin * a[t][i].d, a[t][i].bsums);
      sumi[t] = _mm512_setzero_si512();
    }
    const __m512i scales = _mm512_castsi256_si512(scales_mins);
    for (int pair = 0; pair < 4; ++pair) {
      __m256i lo, hi;
      quants(i, pair, lo, hi);
      const __m512i x = combine(lo, hi);
      const __m512i sc = _mm512_permutexvar_epi16(scale_index[pair], scales);
      for (int t = 0; t < kTokens; ++t) {
        const __m512i p = _mm512_maddubs_epi16(x, load_512(a[t][i].qs + 64 * pair));
        sumi[t] = _mm512_add_epi32(sumi[t], _mm512_madd_epi16(sc, p));
      }
    }
    for (int t = 0; t < kTokens; ++t) {
      acc[t] = _mm512_fmadd_ps(_mm512_set1_ps(d * a[t][i].d), _mm512_cvtepi32_ps(sumi[t]), acc[t]);
    }
  }
  for (int t = 0; t < kTokens; ++t) out[t] = hsum_ps(acc[t]) - hsum_ps(acc_mins[t]);
}

struct Q6_KDot {
  template <int kTokens>
  static void rows(int64_t n, const void* vw, const void* va, size_t stride, float* out) {
    const auto* w = static_cast<const BlockQ6_K*>(vw);
    // int16 lane l of the 64 elements starting at 64 * run uses scale 4 * run + l / 8.
    const __m512i scale_index[4] = {group_index_i16(0, 8), group_index_i16(4, 8),
                                    group_index_i16(8, 8), group_index_i16(12, 8)};
    const BlockQ8_K* a[kTokens];
    activation_rows(va, stride, a);
    __m256 acc[kTokens];
    for (int t = 0; t < kTokens; ++t) acc[t] = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / kQK_K; ++i) {
      const __m256i scales = _mm256_cvtepi8_epi16(load_128(w[i].scales));  // int16 [16]
      const __m512i scales_512 = _mm512_castsi256_si512(scales);
      const float d = half_to_float(w[i].d);
      // Quants are used unsigned (0..63); the -32 offset is applied through the activation
      // block sums: sum_s sc[s] * 32 * bsums[s].
      __m256i offset[kTokens];
      __m512i sumi[kTokens];
      for (int t = 0; t < kTokens; ++t) {
        offset[t] = _mm256_madd_epi16(scales, load_256(a[t][i].bsums));
        sumi[t] = _mm512_setzero_si512();
      }
      for (int half = 0; half < 2; ++half) {
        __m256i q[4];
        unpack_q6_k_half(w[i].ql, w[i].qh, half, q);
        for (int k = 0; k < 2; ++k) {
          const int run = 2 * half + k;  // elements 64 * run .. 64 * run + 63
          const __m512i x = combine(q[2 * k], q[2 * k + 1]);
          const __m512i sc = _mm512_permutexvar_epi16(scale_index[run], scales_512);
          for (int t = 0; t < kTokens; ++t) {
            const __m512i p = _mm512_maddubs_epi16(x, load_512(a[t][i].qs + 64 * run));
            sumi[t] = _mm512_add_epi32(sumi[t], _mm512_madd_epi16(sc, p));
          }
        }
      }
      for (int t = 0; t < kTokens; ++t) {
        const __m256i folded = _mm256_add_epi32(_mm512_castsi512_si256(sumi[t]),
                                                _mm512_extracti64x4_epi64(sumi[t], 1));
        const __m256i total = _mm256_sub_epi32(folded, _mm256_slli_epi32(offset[t], 5));
        acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * a[t][i].d), _mm256_cvtepi32_ps(total), acc[t]);
      }
    }
    for (int t = 0; t < kTokens; ++t) out[t] = hsum_ps(acc[t]);
  }
};

#include "kernels/cpu/x86_dot_types.h"  // NOLINT(build/include): inside the namespace

}  // namespace

cpu::VecDotFn vec_dot_kernel(TensorType weight_type) { return lookup_vec_dot(weight_type); }

cpu::VecDot4Fn vec_dot_4_kernel(TensorType weight_type) { return lookup_vec_dot_4(weight_type); }

}  // namespace kvc::KVC_AVX512_NS
