// AVX2 dot products of one weight row with quantized activations (see kernels/quant.h).
//
// Integer paths as in llama.cpp: weight quants are unpacked to bytes, multiplied with the
// int8 activations by maddubs (u8 x i8 -> i16 pairs) and widened by madd to int32. Legacy
// blocks (32 elements) are scaled and accumulated in float per block; K-quant super-blocks
// (256 elements) accumulate their sub-block scales in int32 and convert once per block.
// Block-sum identities (Q8_1's s, Q8_K's bsums) apply weight mins and offsets without
// touching the quants. Prefill (vec_dot_4) unpacks each weight block once for four tokens.
// Scalar references: reference/vec_dot_reference.cpp.
#include "kernels/block_layouts.h"
#include "kernels/cpu/avx2_common.h"
#include "kernels/cpu/quant_avx2.h"

namespace kvc::avx2 {
namespace {

using namespace kvc::blocks;
using namespace kvc::avx2::simd;

// ---- float weights against F32 activations --------------------------------------------

// out[t] = w[n] . a_t[n] for kTokens activation rows `stride` bytes apart; `load8(i)` returns
// weights i..i+7 as floats, loaded (and widened) once for every token. Four accumulators per
// token hide FMA latency, in the same order whatever kTokens is (the one-token kernel is the
// kTokens = 1 instance); F32/F16/BF16 rows need not be multiples of 8 and finish with scalar
// products.
template <int kTokens, typename Load8, typename Load1>
void dot_float(int64_t n, const void* activations, size_t stride, Load8 load8, Load1 load1,
               float* out) {
  const float* a[kTokens];
  __m256 acc[kTokens][4];
  for (int t = 0; t < kTokens; ++t) {
    a[t] = reinterpret_cast<const float*>(static_cast<const uint8_t*>(activations) + t * stride);
    for (int k = 0; k < 4; ++k) acc[t][k] = _mm256_setzero_ps();
  }
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    for (int k = 0; k < 4; ++k) {
      const __m256 w = load8(i + 8 * k);
      for (int t = 0; t < kTokens; ++t) {
        acc[t][k] = _mm256_fmadd_ps(w, _mm256_loadu_ps(a[t] + i + 8 * k), acc[t][k]);
      }
    }
  }
  for (; i + 8 <= n; i += 8) {
    const __m256 w = load8(i);
    for (int t = 0; t < kTokens; ++t) {
      acc[t][0] = _mm256_fmadd_ps(w, _mm256_loadu_ps(a[t] + i), acc[t][0]);
    }
  }
  for (int t = 0; t < kTokens; ++t) {
    float sum = hsum_ps(_mm256_add_ps(_mm256_add_ps(acc[t][0], acc[t][1]),
                                      _mm256_add_ps(acc[t][2], acc[t][3])));
    for (int64_t j = i; j < n; ++j) sum += load1(j) * a[t][j];
    out[t] = sum;
  }
}

// 8 weights of a float row from w as floats (the float kernels' loads; x86_dot_types.h
// builds F32Dot / F16Dot / BF16Dot on them and dot_float).
inline __m256 widen_f32(const float* w) { return _mm256_loadu_ps(w); }
inline __m256 widen_f16(const uint16_t* w) { return _mm256_cvtph_ps(load_128(w)); }
inline __m256 widen_bf16(const uint16_t* w) {  // bf16 is the top half of a float
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(load_128(w)), 16));
}

// ---- legacy blocks (32 elements) against Q8_0 / Q8_1 ----------------------------------

// out[t] = weight row . activation row t, for kTokens rows `stride` bytes apart (see
// row_kernels.h). `quants(i)` returns the 32 weight quants of block i as bytes, signed
// (kSignedQuants) or unsigned; each block is unpacked once for all tokens.
//
// Blocks go in pairs: even blocks into one accumulator per token, odd blocks into another
// (two chains hide the FMA latency), scale products formed as in block_pair_products. That is
// the AVX-512 kernel's order exactly (its low and high halves), so both sets give the same bits;
// and the one-token kernel is the kTokens = 1 instance, so a token's result never depends on
// how a matmul batches it.
template <int kTokens, bool kSignedQuants, typename WBlock, typename ABlock, typename Quants>
void dot_legacy(int64_t nb, const WBlock* w, const void* activations, size_t stride,
                Quants quants, float* out) {
  const ABlock* a[kTokens];
  __m256 acc_even[kTokens], acc_odd[kTokens];
  __m128 mins[kTokens];  // lanes 1 and 3 gather m * s (Q4_1/Q5_1)
  activation_rows(activations, stride, a);
  for (int t = 0; t < kTokens; ++t) {
    acc_even[t] = acc_odd[t] = _mm256_setzero_ps();
    mins[t] = _mm_setzero_ps();
  }
  const __m256i zero = _mm256_setzero_si256();
  for (int64_t i = 0; i < nb; i += 2) {
    const bool has_j = i + 1 < nb;  // a row's odd last block pairs with zeros
    const __m256i qw[2] = {quants(i), has_j ? quants(i + 1) : zero};
    // Signed quants: maddubs takes |x| and y with x's sign moved onto it (valid for x >= -128,
    // y > -128; activations are never -128).
    __m256i x[2];
    for (int k = 0; k < 2; ++k) x[k] = kSignedQuants ? _mm256_sign_epi8(qw[k], qw[k]) : qw[k];
    // The weight half of block_pair_products, once for all tokens: the products below are
    // the same float multiplications, so the bits match the AVX-512 kernel's.
    const __m128 w_scales = block_pair_scales(&w[i], has_j ? &w[i + 1] : nullptr);
    for (int t = 0; t < kTokens; ++t) {
      const ABlock* b = a[t] + i;
      __m256i y[2] = {load_256(b[0].qs), has_j ? load_256(b[1].qs) : zero};
      if constexpr (kSignedQuants) {
        for (int k = 0; k < 2; ++k) y[k] = _mm256_sign_epi8(y[k], qw[k]);
      }
      const __m128 products =
          _mm_mul_ps(w_scales, block_pair_scales(b, has_j ? b + 1 : nullptr));
      const __m128 product_j =
          kHasMin<WBlock> ? _mm_movehl_ps(products, products) : _mm_movehdup_ps(products);
      acc_even[t] = _mm256_fmadd_ps(_mm256_broadcastss_ps(products),
                                    _mm256_cvtepi32_ps(dot_u8_i8(x[0], y[0])), acc_even[t]);
      acc_odd[t] = _mm256_fmadd_ps(_mm256_broadcastss_ps(product_j),
                                   _mm256_cvtepi32_ps(dot_u8_i8(x[1], y[1])), acc_odd[t]);
      if constexpr (kHasMin<WBlock>) mins[t] = _mm_add_ps(mins[t], products);
    }
  }
  for (int t = 0; t < kTokens; ++t) {
    out[t] = hsum_ps(_mm256_add_ps(acc_even[t], acc_odd[t]));
    if constexpr (kHasMin<WBlock>) {
      out[t] += pair_min_terms(mins[t]);
    }
  }
}

// ---- K-quants (256-element super-blocks) against Q8_K ---------------------------------

// Shared by Q4_K and Q5_K: `quants(i, pair, lo, hi)` unpacks sub-blocks 2*pair and 2*pair+1
// of block i into bytes (values 0..15 or 0..31), once for all kTokens activation rows. As for
// the legacy types, the one-token kernel is the kTokens = 1 instance (same bits per token).
template <int kTokens, typename WBlock, typename Quants>
void dot_k_with_mins(int64_t n, const WBlock* w, const void* activations, size_t stride,
                     Quants quants, float* out) {
  const BlockQ8_K* a[kTokens];
  activation_rows(activations, stride, a);
  __m256 acc[kTokens];
  __m128 acc_mins[kTokens];
  for (int t = 0; t < kTokens; ++t) {
    acc[t] = _mm256_setzero_ps();
    acc_mins[t] = _mm_setzero_ps();
  }
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const __m256i scales_mins = unpack_scales_mins_k4_16(w[i].scales);  // int16 [16]
    const __m128i mins = _mm256_extracti128_si256(scales_mins, 1);
    const float d = half_to_float(w[i].d), dmin = half_to_float(w[i].dmin);
    __m256i sumi[kTokens];
    for (int t = 0; t < kTokens; ++t) {
      acc_mins[t] = add_k_min_terms(acc_mins[t], mins, dmin * a[t][i].d, a[t][i].bsums);
      sumi[t] = _mm256_setzero_si256();
    }
    const __m256i scales = _mm256_broadcastsi128_si256(_mm256_castsi256_si128(scales_mins));
    for (int pair = 0; pair < 4; ++pair) {
      __m256i lo, hi;
      quants(i, pair, lo, hi);
      const __m256i sc_lo = _mm256_shuffle_epi8(scales, broadcast_i16_control(2 * pair));
      const __m256i sc_hi = _mm256_shuffle_epi8(scales, broadcast_i16_control(2 * pair + 1));
      for (int t = 0; t < kTokens; ++t) {
        const int8_t* y = a[t][i].qs + 64 * pair;
        sumi[t] = _mm256_add_epi32(sumi[t],
                                   _mm256_madd_epi16(sc_lo, _mm256_maddubs_epi16(lo, load_256(y))));
        sumi[t] = _mm256_add_epi32(
            sumi[t], _mm256_madd_epi16(sc_hi, _mm256_maddubs_epi16(hi, load_256(y + 32))));
      }
    }
    for (int t = 0; t < kTokens; ++t) {
      acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * a[t][i].d), _mm256_cvtepi32_ps(sumi[t]), acc[t]);
    }
  }
  for (int t = 0; t < kTokens; ++t) out[t] = hsum_ps(acc[t]) - hsum_ps(acc_mins[t]);
}

struct Q6_KDot {
  template <int kTokens>
  static void rows(int64_t n, const void* vw, const void* va, size_t stride, float* out) {
    const auto* w = static_cast<const BlockQ6_K*>(vw);
    const BlockQ8_K* a[kTokens];
    activation_rows(va, stride, a);
    __m256 acc[kTokens];
    for (int t = 0; t < kTokens; ++t) acc[t] = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / kQK_K; ++i) {
      const __m128i scales = load_128(w[i].scales);  // int8 [16], one per 16 elements
      const __m256i scales_16 = _mm256_cvtepi8_epi16(scales);
      const float d = half_to_float(w[i].d);
      // Quants are used unsigned (0..63); the -32 offset is applied through the activation
      // block sums: sum_s sc[s] * 32 * bsums[s].
      __m256i sumi[kTokens], offset[kTokens];
      for (int t = 0; t < kTokens; ++t) {
        offset[t] = _mm256_madd_epi16(scales_16, load_256(a[t][i].bsums));
        sumi[t] = _mm256_setzero_si256();
      }
      for (int half = 0; half < 2; ++half) {
        __m256i q[4];
        unpack_q6_k_half(w[i].ql, w[i].qh, half, q);
        for (int k = 0; k < 4; ++k) {
          // Elements 0..15 of q[k] use scale g = 8 * half + 2k, elements 16..31 scale g + 1.
          const int64_t g = 8 * half + 2 * k;
          const __m128i pick =
              _mm_set_epi64x((g + 1) * 0x0101010101010101LL, g * 0x0101010101010101LL);
          const __m256i sc = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(scales, pick));
          for (int t = 0; t < kTokens; ++t) {
            const __m256i p =
                _mm256_maddubs_epi16(q[k], load_256(a[t][i].qs + 128 * half + 32 * k));
            sumi[t] = _mm256_add_epi32(sumi[t], _mm256_madd_epi16(sc, p));
          }
        }
      }
      for (int t = 0; t < kTokens; ++t) {
        const __m256i total = _mm256_sub_epi32(sumi[t], _mm256_slli_epi32(offset[t], 5));
        acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * a[t][i].d), _mm256_cvtepi32_ps(total), acc[t]);
      }
    }
    for (int t = 0; t < kTokens; ++t) out[t] = hsum_ps(acc[t]);
  }
};

#include "kernels/cpu/x86_dot_types.h"  // NOLINT(build/include): inside the namespace

}  // namespace

VecDotFn vec_dot_kernel(TensorType weight_type) { return lookup_vec_dot(weight_type); }

VecDot4Fn vec_dot_4_kernel(TensorType weight_type) { return lookup_vec_dot_4(weight_type); }

}  // namespace kvc::avx2
