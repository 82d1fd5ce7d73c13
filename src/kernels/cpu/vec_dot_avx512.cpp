// AVX-512 dot products of one weight row with quantized activations (see kernels/quant.h and
// quant_avx512.h for the builds of this file).
//
// The integer scheme is the AVX2 one (vec_dot_avx2.cpp) at twice the width:
//   - legacy blocks (32 elements): two blocks per 512-bit vector, block i in the low half and
//     block i+1 in the high half; their two scale products are spread over the halves by one
//     permute, and the Q8_1 min terms are accumulated four lanes at a time;
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

// w[n] . a[n]; `load16(i)` returns weights i..i+15 as floats. Four accumulators hide FMA
// latency; rows that are not a multiple of 16 finish with scalar products.
template <typename Load16, typename Load1>
float dot_float(int64_t n, const float* a, Load16 load16, Load1 load1) {
  __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(),
                   _mm512_setzero_ps()};
  int64_t i = 0;
  for (; i + 64 <= n; i += 64) {
    for (int k = 0; k < 4; ++k)
      acc[k] = _mm512_fmadd_ps(load16(i + 16 * k), _mm512_loadu_ps(a + i + 16 * k), acc[k]);
  }
  for (; i + 16 <= n; i += 16) acc[0] = _mm512_fmadd_ps(load16(i), _mm512_loadu_ps(a + i), acc[0]);
  float sum = hsum_ps(_mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3])));
  for (; i < n; ++i) sum += load1(i) * a[i];
  return sum;
}

float bf16_to_float(uint16_t h) {
  float f;
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

float dot_f32(int64_t n, const void* vw, const void* va) {
  const auto* w = static_cast<const float*>(vw);
  return dot_float(
      n, static_cast<const float*>(va), [w](int64_t i) { return _mm512_loadu_ps(w + i); },
      [w](int64_t i) { return w[i]; });
}

float dot_f16(int64_t n, const void* vw, const void* va) {
  const auto* w = static_cast<const uint16_t*>(vw);
  return dot_float(
      n, static_cast<const float*>(va), [w](int64_t i) { return _mm512_cvtph_ps(load_256(w + i)); },
      [w](int64_t i) { return half_to_float(w[i]); });
}

float dot_bf16(int64_t n, const void* vw, const void* va) {
  const auto* w = static_cast<const uint16_t*>(vw);
  // bf16 is the top half of a float: widen to 32 bits and shift into place.
  return dot_float(
      n, static_cast<const float*>(va),
      [w](int64_t i) {
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(load_256(w + i)), 16));
      },
      [w](int64_t i) { return bf16_to_float(w[i]); });
}

// ---- legacy blocks (32 elements) against Q8_0 / Q8_1 ----------------------------------

// Weight blocks with a min m (Q4_1, Q5_1) against Q8_1, whose s = da * sum of its quants:
// sum_j (dw q_j + m)(da y_j) = dw da sum_j q_j y_j + m s.
template <typename WBlock>
constexpr bool kHasMin = requires(WBlock b) { b.m; };

// Scale products of blocks i and j (j = i + 1, or none at a row's odd end: its fields read
// as 0). Lanes: without a min [dw_i da_i, dw_j da_j, 0, 0]; with one [dw_i da_i, m_i s_i,
// dw_j da_j, m_j s_j].
template <typename WBlock, typename ABlock>
__m128 block_pair_products(const WBlock& wi, const ABlock& ai, const WBlock* wj,
                           const ABlock* aj) {
  if constexpr (kHasMin<WBlock>) {
    // (d, m) and (d, s) are adjacent fp16 pairs: one 32-bit load each.
    const auto pair_bits = [](const uint16_t* first) {
      return static_cast<int>(load_u32(reinterpret_cast<const uint8_t*>(first)));
    };
    const __m256 f = _mm256_cvtph_ps(_mm_setr_epi32(pair_bits(&wi.d), wj ? pair_bits(&wj->d) : 0,
                                                    pair_bits(&ai.d), aj ? pair_bits(&aj->d) : 0));
    return _mm_mul_ps(_mm256_castps256_ps128(f), _mm256_extractf128_ps(f, 1));
  } else {
    const __m128 f = _mm_cvtph_ps(_mm_setr_epi16(static_cast<int16_t>(wi.d),
                                                 static_cast<int16_t>(wj ? wj->d : 0),
                                                 static_cast<int16_t>(ai.d),
                                                 static_cast<int16_t>(aj ? aj->d : 0), 0, 0, 0, 0));
    return _mm_mul_ps(f, _mm_movehl_ps(f, f));
  }
}

// Dot of a legacy weight row with its Q8_0/Q8_1 activations. `quants(i)` returns the 32
// weight quants of block i as bytes, signed (kSignedQuants) or unsigned.
template <bool kSignedQuants, typename WBlock, typename ABlock, typename Quants>
float dot_legacy(int64_t nb, const WBlock* w, const ABlock* a, Quants quants) {
  // Spreads lane 0 of the products over the low half and block j's lane over the high half.
  const __m512i spread = combine(_mm256_setzero_si256(), _mm256_set1_epi32(kHasMin<WBlock> ? 2 : 1));
  __m512 acc = _mm512_setzero_ps();
  __m128 mins = _mm_setzero_ps();
  for (int64_t i = 0; i < nb; i += 2) {
    const bool has_j = i + 1 < nb;
    const __m256i zero = _mm256_setzero_si256();
    const __m512i qw = combine(quants(i), has_j ? quants(i + 1) : zero);
    const __m512i qa = combine(load_256(a[i].qs), has_j ? load_256(a[i + 1].qs) : zero);
    const __m512i sums = kSignedQuants ? dot_i8_i8(qw, qa) : dot_u8_i8(qw, qa);
    const __m128 products = block_pair_products(w[i], a[i], has_j ? &w[i + 1] : nullptr,
                                                has_j ? &a[i + 1] : nullptr);
    const __m512 scale = _mm512_permutexvar_ps(spread, _mm512_castps128_ps512(products));
    acc = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(sums), acc);
    if constexpr (kHasMin<WBlock>) mins = _mm_add_ps(mins, products);
  }
  float sum = hsum_ps(acc);
  if constexpr (kHasMin<WBlock>) {
    sum += _mm_cvtss_f32(_mm_movehdup_ps(mins)) + _mm_cvtss_f32(_mm_shuffle_ps(mins, mins, 3));
  }
  return sum;
}

float dot_q4_0(int64_t n, const void* vw, const void* va) {
  const auto* w = static_cast<const BlockQ4_0*>(vw);  // [n / 32]
  return dot_legacy<true>(n / kQK, w, static_cast<const BlockQ8_0*>(va), [w](int64_t i) {
    return _mm256_sub_epi8(unpack_nibbles_32(w[i].qs), _mm256_set1_epi8(8));
  });
}

float dot_q4_1(int64_t n, const void* vw, const void* va) {
  const auto* w = static_cast<const BlockQ4_1*>(vw);  // [n / 32]
  return dot_legacy<false>(n / kQK, w, static_cast<const BlockQ8_1*>(va),
                           [w](int64_t i) { return unpack_nibbles_32(w[i].qs); });
}

float dot_q5_0(int64_t n, const void* vw, const void* va) {
  const auto* w = static_cast<const BlockQ5_0*>(vw);
  return dot_legacy<true>(n / kQK, w, static_cast<const BlockQ8_0*>(va), [w](int64_t i) {
    // (nibble | bit << 4) - 16 as a signed byte is the nibble with 0xF0 or-ed in where bit = 0.
    const __m256i high = _mm256_andnot_si256(bits_to_bytes_32(load_u32(w[i].qh)),
                                             _mm256_set1_epi8(static_cast<char>(0xF0)));
    return _mm256_or_si256(unpack_nibbles_32(w[i].qs), high);
  });
}

float dot_q5_1(int64_t n, const void* vw, const void* va) {
  const auto* w = static_cast<const BlockQ5_1*>(vw);
  return dot_legacy<false>(n / kQK, w, static_cast<const BlockQ8_1*>(va), [w](int64_t i) {
    const __m256i high =
        _mm256_and_si256(bits_to_bytes_32(load_u32(w[i].qh)), _mm256_set1_epi8(0x10));
    return _mm256_or_si256(unpack_nibbles_32(w[i].qs), high);
  });
}

float dot_q8_0(int64_t n, const void* vw, const void* va) {
  const auto* w = static_cast<const BlockQ8_0*>(vw);
  return dot_legacy<true>(n / kQK, w, static_cast<const BlockQ8_0*>(va),
                          [w](int64_t i) { return load_256(w[i].qs); });
}

// ---- K-quants (256-element super-blocks) against Q8_K ---------------------------------

// Shared by Q4_K and Q5_K: `quants(i, pair, lo, hi)` unpacks sub-blocks 2*pair and 2*pair+1
// of block i into bytes (values 0..15 or 0..31); both meet the 64 activations at 64 * pair.
template <typename WBlock, typename Quants>
float dot_k_with_mins(int64_t n, const WBlock* w, const BlockQ8_K* a, Quants quants) {
  // int16 lanes 0..15 of pair p take scale 2p, lanes 16..31 scale 2p + 1.
  const __m512i scale_index[4] = {group_index_i16(0, 16), group_index_i16(2, 16),
                                  group_index_i16(4, 16), group_index_i16(6, 16)};
  __m512 acc = _mm512_setzero_ps();
  __m128 acc_mins = _mm_setzero_ps();
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const __m256i scales_mins = unpack_scales_mins_k4_16(w[i].scales);  // int16 [16]
    // Mins: dmin * da * sum_s m[s] * (sum of the 32 activation quants of sub-block s).
    const __m256i bsums = load_256(a[i].bsums);  // int16 [16], one per 16 elements
    const __m128i sub_sums =
        _mm_hadd_epi16(_mm256_castsi256_si128(bsums), _mm256_extracti128_si256(bsums, 1));
    const __m128i mins_dot = _mm_madd_epi16(_mm256_extracti128_si256(scales_mins, 1), sub_sums);
    acc_mins = _mm_fmadd_ps(_mm_set1_ps(half_to_float(w[i].dmin) * a[i].d),
                            _mm_cvtepi32_ps(mins_dot), acc_mins);

    const __m512i scales = _mm512_castsi256_si512(scales_mins);
    __m512i sumi = _mm512_setzero_si512();
    for (int pair = 0; pair < 4; ++pair) {
      __m256i lo, hi;
      quants(i, pair, lo, hi);
      const __m512i p = _mm512_maddubs_epi16(combine(lo, hi), load_512(a[i].qs + 64 * pair));
      const __m512i sc = _mm512_permutexvar_epi16(scale_index[pair], scales);
      sumi = _mm512_add_epi32(sumi, _mm512_madd_epi16(sc, p));
    }
    acc = _mm512_fmadd_ps(_mm512_set1_ps(half_to_float(w[i].d) * a[i].d), _mm512_cvtepi32_ps(sumi),
                          acc);
  }
  return hsum_ps(acc) - hsum_ps(acc_mins);
}

float dot_q4_k(int64_t n, const void* vw, const void* va) {
  const auto* w = static_cast<const BlockQ4_K*>(vw);
  return dot_k_with_mins(n, w, static_cast<const BlockQ8_K*>(va),
                         [w](int64_t i, int pair, __m256i& lo, __m256i& hi) {
                           unpack_q4_k_pair(w[i].qs, pair, lo, hi);
                         });
}

float dot_q5_k(int64_t n, const void* vw, const void* va) {
  const auto* w = static_cast<const BlockQ5_K*>(vw);
  return dot_k_with_mins(n, w, static_cast<const BlockQ8_K*>(va),
                         [w](int64_t i, int pair, __m256i& lo, __m256i& hi) {
                           unpack_q5_k_pair(w[i].qs, w[i].qh, pair, lo, hi);
                         });
}

float dot_q6_k(int64_t n, const void* vw, const void* va) {
  const auto* w = static_cast<const BlockQ6_K*>(vw);
  const auto* a = static_cast<const BlockQ8_K*>(va);
  // int16 lane l of the 64 elements starting at 64 * run uses scale 4 * run + l / 8.
  const __m512i scale_index[4] = {group_index_i16(0, 8), group_index_i16(4, 8),
                                  group_index_i16(8, 8), group_index_i16(12, 8)};
  __m256 acc = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const __m256i scales = _mm256_cvtepi8_epi16(load_128(w[i].scales));  // int16 [16]
    // Quants are used unsigned (0..63); the -32 offset is applied through the activation
    // block sums: sum_s sc[s] * 32 * bsums[s].
    const __m256i offset = _mm256_madd_epi16(scales, load_256(a[i].bsums));
    const __m512i scales_512 = _mm512_castsi256_si512(scales);
    __m512i sumi = _mm512_setzero_si512();
    for (int half = 0; half < 2; ++half) {
      __m256i q[4];
      unpack_q6_k_half(w[i].ql, w[i].qh, half, q);
      for (int k = 0; k < 2; ++k) {
        const int run = 2 * half + k;  // elements 64 * run .. 64 * run + 63
        const __m512i p =
            _mm512_maddubs_epi16(combine(q[2 * k], q[2 * k + 1]), load_512(a[i].qs + 64 * run));
        const __m512i sc = _mm512_permutexvar_epi16(scale_index[run], scales_512);
        sumi = _mm512_add_epi32(sumi, _mm512_madd_epi16(sc, p));
      }
    }
    const __m256i folded = _mm256_add_epi32(_mm512_castsi512_si256(sumi),
                                            _mm512_extracti64x4_epi64(sumi, 1));
    acc = _mm256_fmadd_ps(_mm256_set1_ps(half_to_float(w[i].d) * a[i].d),
                          _mm256_cvtepi32_ps(_mm256_sub_epi32(folded, _mm256_slli_epi32(offset, 5))),
                          acc);
  }
  return hsum_ps(acc);
}

}  // namespace

cpu::VecDotFn vec_dot_kernel(TensorType weight_type) {
  switch (weight_type) {
    case TensorType::F32:
      return dot_f32;
    case TensorType::F16:
      return dot_f16;
    case TensorType::BF16:
      return dot_bf16;
    case TensorType::Q4_0:
      return dot_q4_0;
    case TensorType::Q4_1:
      return dot_q4_1;
    case TensorType::Q5_0:
      return dot_q5_0;
    case TensorType::Q5_1:
      return dot_q5_1;
    case TensorType::Q8_0:
      return dot_q8_0;
    case TensorType::Q4_K:
      return dot_q4_k;
    case TensorType::Q5_K:
      return dot_q5_k;
    case TensorType::Q6_K:
      return dot_q6_k;
    default:
      return nullptr;
  }
}

}  // namespace kvc::KVC_AVX512_NS
