// AVX2 dot products of one weight row with quantized activations (see kernels/quant.h).
//
// Integer paths as in llama.cpp: weight quants are unpacked to bytes, multiplied with the
// int8 activations by maddubs (u8 x i8 -> i16 pairs) and widened by madd to int32. Legacy
// blocks (32 elements) are scaled and accumulated in float per block; K-quant super-blocks
// (256 elements) accumulate their sub-block scales in int32 and convert once per block.
// Block-sum identities (Q8_1's s, Q8_K's bsums) apply weight mins and offsets without
// touching the quants. Scalar references: reference/vec_dot_reference.cpp.
#include "kernels/block_layouts.h"
#include "kernels/cpu/avx2_common.h"
#include "kernels/cpu/quant_avx2.h"

namespace kvc::avx2 {
namespace {

using namespace kvc::blocks;
using namespace kvc::avx2::simd;

// ---- float weights against F32 activations --------------------------------------------

// w[n] . a[n]; `load8(i)` returns weights i..i+7 as floats. Four accumulators hide FMA latency.
template <typename Load8, typename Load1>
float dot_float(int64_t n, const float* a, Load8 load8, Load1 load1) {
  __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                   _mm256_setzero_ps()};
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    for (int k = 0; k < 4; ++k)
      acc[k] = _mm256_fmadd_ps(load8(i + 8 * k), _mm256_loadu_ps(a + i + 8 * k), acc[k]);
  }
  for (; i + 8 <= n; i += 8) acc[0] = _mm256_fmadd_ps(load8(i), _mm256_loadu_ps(a + i), acc[0]);
  float sum = hsum_ps(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])));
  for (; i < n; ++i) sum += load1(i) * a[i];  // F32/F16/BF16 rows need not be multiples of 8
  return sum;
}

float dot_f32(int64_t n, const void* vw, const void* va) {
  const auto* w = static_cast<const float*>(vw);
  return dot_float(
      n, static_cast<const float*>(va), [w](int64_t i) { return _mm256_loadu_ps(w + i); },
      [w](int64_t i) { return w[i]; });
}

float dot_f16(int64_t n, const void* vw, const void* va) {
  const auto* w = static_cast<const uint16_t*>(vw);
  return dot_float(
      n, static_cast<const float*>(va), [w](int64_t i) { return _mm256_cvtph_ps(load_128(w + i)); },
      [w](int64_t i) { return half_to_float(w[i]); });
}

float dot_bf16(int64_t n, const void* vw, const void* va) {
  const auto* w = static_cast<const uint16_t*>(vw);
  // bf16 is the top half of a float: widen to 32 bits and shift into place.
  return dot_float(
      n, static_cast<const float*>(va),
      [w](int64_t i) {
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(load_128(w + i)), 16));
      },
      [w](int64_t i) {
        float f;
        const uint32_t bits = static_cast<uint32_t>(w[i]) << 16;
        std::memcpy(&f, &bits, sizeof(f));
        return f;
      });
}

// ---- legacy blocks (32 elements) against Q8_0 / Q8_1 ----------------------------------

// Per-chain accumulators: `sum` gathers scale * integer dot; lane 1 of `mins` gathers the
// m * s terms of Q4_1/Q5_1 (other lanes are ignored).
struct LegacyAcc {
  __m256 sum = _mm256_setzero_ps();
  __m128 mins = _mm_setzero_ps();
};

// Runs block(i, acc) over nb blocks with two independent accumulator chains (FMA latency).
template <typename Block>
float accumulate_blocks(int64_t nb, Block block) {
  LegacyAcc acc0, acc1;
  int64_t i = 0;
  for (; i + 2 <= nb; i += 2) {
    block(i, acc0);
    block(i + 1, acc1);
  }
  if (i < nb) block(i, acc0);
  const __m128 mins = _mm_add_ps(acc0.mins, acc1.mins);
  return hsum_ps(_mm256_add_ps(acc0.sum, acc1.sum)) + _mm_cvtss_f32(_mm_movehdup_ps(mins));
}

// Converting the fp16 scales two or four at a time with one vcvtph2ps, instead of one
// scalar conversion each, is a measurable part of a 32-element block's cost.

// broadcast(dw * da) for two fp16 scales.
inline __m256 scale_product(uint16_t dw, uint16_t da) {
  const __m128 f = _mm_cvtph_ps(_mm_insert_epi16(_mm_cvtsi32_si128(dw), da, 1));  // [dw, da]
  return _mm256_broadcastss_ps(_mm_mul_ss(f, _mm_movehdup_ps(f)));
}

// [dw * da, mw * sa, .., ..] from the adjacent fp16 pairs (d, m) of a Q4_1/Q5_1 block and
// (d, s) of a Q8_1 block.
inline __m128 scale_and_min_products(const uint16_t* w_dm, const uint16_t* a_ds) {
  const __m128i halves = _mm_insert_epi32(
      _mm_cvtsi32_si128(static_cast<int>(load_u32(reinterpret_cast<const uint8_t*>(w_dm)))),
      static_cast<int>(load_u32(reinterpret_cast<const uint8_t*>(a_ds))), 1);
  const __m128 f = _mm_cvtph_ps(halves);      // [dw, mw, da, sa]
  return _mm_mul_ps(f, _mm_movehl_ps(f, f));  // [dw da, mw sa, ...]
}

// Blocks without a min: acc.sum += dw * da * sums.
inline void add_block(uint16_t dw, uint16_t da, __m256i sums, LegacyAcc& acc) {
  acc.sum = _mm256_fmadd_ps(scale_product(dw, da), _mm256_cvtepi32_ps(sums), acc.sum);
}

// Blocks with a min m against Q8_1 (s = da * sum of activation quants):
// sum_j (dw q_j + m)(da y_j) = dw da sum_j q_j y_j + m s.
inline void add_block_with_min(const uint16_t* w_dm, const uint16_t* a_ds, __m256i sums,
                               LegacyAcc& acc) {
  const __m128 products = scale_and_min_products(w_dm, a_ds);
  acc.sum = _mm256_fmadd_ps(_mm256_broadcastss_ps(products), _mm256_cvtepi32_ps(sums), acc.sum);
  acc.mins = _mm_add_ps(acc.mins, products);
}

float dot_q4_0(int64_t n, const void* vw, const void* va) {
  const auto* w = static_cast<const BlockQ4_0*>(vw);  // [n / 32]
  const auto* a = static_cast<const BlockQ8_0*>(va);  // [n / 32]
  return accumulate_blocks(n / kQK, [&](int64_t i, LegacyAcc& acc) {
    const __m256i qw = _mm256_sub_epi8(unpack_nibbles_32(w[i].qs), _mm256_set1_epi8(8));
    add_block(w[i].d, a[i].d, dot_i8_i8(qw, load_256(a[i].qs)), acc);
  });
}

float dot_q4_1(int64_t n, const void* vw, const void* va) {
  const auto* w = static_cast<const BlockQ4_1*>(vw);  // [n / 32]
  const auto* a = static_cast<const BlockQ8_1*>(va);  // [n / 32]
  return accumulate_blocks(n / kQK, [&](int64_t i, LegacyAcc& acc) {
    add_block_with_min(&w[i].d, &a[i].d, dot_u8_i8(unpack_nibbles_32(w[i].qs), load_256(a[i].qs)),
                       acc);
  });
}

float dot_q5_0(int64_t n, const void* vw, const void* va) {
  const auto* w = static_cast<const BlockQ5_0*>(vw);
  const auto* a = static_cast<const BlockQ8_0*>(va);
  return accumulate_blocks(n / kQK, [&](int64_t i, LegacyAcc& acc) {
    // (nibble | bit << 4) - 16 as a signed byte is the nibble with 0xF0 or-ed in where bit = 0.
    const __m256i high = _mm256_andnot_si256(bits_to_bytes_32(load_u32(w[i].qh)),
                                             _mm256_set1_epi8(static_cast<char>(0xF0)));
    const __m256i qw = _mm256_or_si256(unpack_nibbles_32(w[i].qs), high);
    add_block(w[i].d, a[i].d, dot_i8_i8(qw, load_256(a[i].qs)), acc);
  });
}

float dot_q5_1(int64_t n, const void* vw, const void* va) {
  const auto* w = static_cast<const BlockQ5_1*>(vw);
  const auto* a = static_cast<const BlockQ8_1*>(va);
  return accumulate_blocks(n / kQK, [&](int64_t i, LegacyAcc& acc) {
    const __m256i high =
        _mm256_and_si256(bits_to_bytes_32(load_u32(w[i].qh)), _mm256_set1_epi8(0x10));
    const __m256i qw = _mm256_or_si256(unpack_nibbles_32(w[i].qs), high);
    add_block_with_min(&w[i].d, &a[i].d, dot_u8_i8(qw, load_256(a[i].qs)), acc);
  });
}

float dot_q8_0(int64_t n, const void* vw, const void* va) {
  const auto* w = static_cast<const BlockQ8_0*>(vw);
  const auto* a = static_cast<const BlockQ8_0*>(va);
  return accumulate_blocks(n / kQK, [&](int64_t i, LegacyAcc& acc) {
    add_block(w[i].d, a[i].d, dot_i8_i8(load_256(w[i].qs), load_256(a[i].qs)), acc);
  });
}

// ---- K-quants (256-element super-blocks) against Q8_K ---------------------------------

// Shared by Q4_K and Q5_K: `quants(i, pair, lo, hi)` unpacks sub-blocks 2*pair and 2*pair+1
// of block i into bytes (values 0..15 or 0..31).
template <typename WBlock, typename Quants>
float dot_k_with_mins(int64_t n, const WBlock* w, const BlockQ8_K* a, Quants quants) {
  __m256 acc = _mm256_setzero_ps();
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

    const __m256i scales = _mm256_broadcastsi128_si256(_mm256_castsi256_si128(scales_mins));
    const int8_t* y = a[i].qs;
    __m256i sumi = _mm256_setzero_si256();
    for (int pair = 0; pair < 4; ++pair, y += 64) {
      __m256i lo, hi;
      quants(i, pair, lo, hi);
      const __m256i p_lo = _mm256_maddubs_epi16(lo, load_256(y));
      const __m256i p_hi = _mm256_maddubs_epi16(hi, load_256(y + 32));
      sumi = _mm256_add_epi32(
          sumi,
          _mm256_madd_epi16(_mm256_shuffle_epi8(scales, broadcast_i16_control(2 * pair)), p_lo));
      sumi = _mm256_add_epi32(
          sumi, _mm256_madd_epi16(_mm256_shuffle_epi8(scales, broadcast_i16_control(2 * pair + 1)),
                                  p_hi));
    }
    acc = _mm256_fmadd_ps(_mm256_set1_ps(half_to_float(w[i].d) * a[i].d), _mm256_cvtepi32_ps(sumi),
                          acc);
  }
  return hsum_ps(acc) - hsum_ps(acc_mins);
}

float dot_q4_k(int64_t n, const void* vw, const void* va) {
  const auto* w = static_cast<const BlockQ4_K*>(vw);
  return dot_k_with_mins(n, w, static_cast<const BlockQ8_K*>(va),
                         [&](int64_t i, int pair, __m256i& lo, __m256i& hi) {
                           unpack_q4_k_pair(w[i].qs, pair, lo, hi);
                         });
}

float dot_q5_k(int64_t n, const void* vw, const void* va) {
  const auto* w = static_cast<const BlockQ5_K*>(vw);
  return dot_k_with_mins(n, w, static_cast<const BlockQ8_K*>(va),
                         [&](int64_t i, int pair, __m256i& lo, __m256i& hi) {
                           unpack_q5_k_pair(w[i].qs, w[i].qh, pair, lo, hi);
                         });
}

float dot_q6_k(int64_t n, const void* vw, const void* va) {
  const auto* w = static_cast<const BlockQ6_K*>(vw);
  const auto* a = static_cast<const BlockQ8_K*>(va);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const __m128i scales = load_128(w[i].scales);  // int8 [16], one per 16 elements
    // Quants are used unsigned (0..63); the -32 offset is applied through the activation
    // block sums: sum_s sc[s] * 32 * bsums[s].
    const __m256i offset = _mm256_madd_epi16(_mm256_cvtepi8_epi16(scales), load_256(a[i].bsums));
    __m256i sumi = _mm256_setzero_si256();
    for (int half = 0; half < 2; ++half) {
      __m256i q[4];
      unpack_q6_k_half(w[i].ql, w[i].qh, half, q);
      for (int k = 0; k < 4; ++k) {
        // Elements 0..15 of q[k] use scale g = 8 * half + 2k, elements 16..31 scale g + 1.
        const int64_t g = 8 * half + 2 * k;
        const __m128i pick =
            _mm_set_epi64x((g + 1) * 0x0101010101010101LL, g * 0x0101010101010101LL);
        const __m256i sc = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(scales, pick));
        const __m256i p = _mm256_maddubs_epi16(q[k], load_256(a[i].qs + 128 * half + 32 * k));
        sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(sc, p));
      }
    }
    sumi = _mm256_sub_epi32(sumi, _mm256_slli_epi32(offset, 5));
    acc = _mm256_fmadd_ps(_mm256_set1_ps(half_to_float(w[i].d) * a[i].d), _mm256_cvtepi32_ps(sumi),
                          acc);
  }
  return hsum_ps(acc);
}

}  // namespace

VecDotFn vec_dot_kernel(TensorType weight_type) {
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

}  // namespace kvc::avx2
