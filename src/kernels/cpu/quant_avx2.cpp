// AVX2 dequantization of weight rows and quantization of activation rows.
//
// Both must equal the scalar reference (reference/quant_reference.cpp) bit for bit: the same
// float operations are done in the same order, only eight or 32 elements at a time (no FMA
// contraction: a multiply and an add stay two roundings, as in the reference).
#include "kernels/cpu/quant_avx2.h"

#include "kernels/block_layouts.h"
#include "kernels/cpu/avx2_common.h"

namespace kvc::avx2 {
namespace {

using namespace kvc::blocks;
using namespace kvc::avx2::simd;

enum class Offset { kNone, kAdd, kSubtract };

// dst[32] = float(q[j]) * scale (scale_first for j < 16, scale_last for j >= 16), then
// + or - offset. q: 32 signed bytes.
template <Offset kOffset>
inline void store_scaled_32(__m256i q, float scale_first, float scale_last, float offset,
                            float* dst) {
  const __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
  const __m256i ints[4] = {_mm256_cvtepi8_epi32(lo), _mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8)),
                           _mm256_cvtepi8_epi32(hi), _mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8))};
  const __m256 off = _mm256_set1_ps(offset);
  for (int k = 0; k < 4; ++k) {
    __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(ints[k]),
                             _mm256_set1_ps(k < 2 ? scale_first : scale_last));
    if constexpr (kOffset == Offset::kAdd) v = _mm256_add_ps(v, off);
    if constexpr (kOffset == Offset::kSubtract) v = _mm256_sub_ps(v, off);
    _mm256_storeu_ps(dst + 8 * k, v);
  }
}

void dequantize_f16(const void* src, float* y, int64_t n) {
  const auto* h = static_cast<const uint16_t*>(src);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_cvtph_ps(load_128(h + i)));
  for (; i < n; ++i) y[i] = half_to_float(h[i]);
}

void dequantize_bf16(const void* src, float* y, int64_t n) {
  const auto* h = static_cast<const uint16_t*>(src);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i bits = _mm256_slli_epi32(_mm256_cvtepu16_epi32(load_128(h + i)), 16);
    _mm256_storeu_ps(y + i, _mm256_castsi256_ps(bits));
  }
  for (; i < n; ++i) y[i] = bf16_to_float(h[i]);
}

void dequantize_q4_0(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const BlockQ4_0*>(src);
  for (int64_t i = 0; i < n / kQK; ++i, y += kQK) {
    const __m256i q = _mm256_sub_epi8(unpack_nibbles_32(b[i].qs), _mm256_set1_epi8(8));
    const float d = half_to_float(b[i].d);
    store_scaled_32<Offset::kNone>(q, d, d, 0.0f, y);
  }
}

void dequantize_q4_1(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const BlockQ4_1*>(src);
  for (int64_t i = 0; i < n / kQK; ++i, y += kQK) {
    const float d = half_to_float(b[i].d);
    store_scaled_32<Offset::kAdd>(unpack_nibbles_32(b[i].qs), d, d, half_to_float(b[i].m), y);
  }
}

void dequantize_q5_0(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const BlockQ5_0*>(src);
  for (int64_t i = 0; i < n / kQK; ++i, y += kQK) {
    const __m256i high =
        _mm256_and_si256(bits_to_bytes_32(load_u32(b[i].qh)), _mm256_set1_epi8(0x10));
    const __m256i q =
        _mm256_sub_epi8(_mm256_or_si256(unpack_nibbles_32(b[i].qs), high), _mm256_set1_epi8(16));
    const float d = half_to_float(b[i].d);
    store_scaled_32<Offset::kNone>(q, d, d, 0.0f, y);
  }
}

void dequantize_q5_1(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const BlockQ5_1*>(src);
  for (int64_t i = 0; i < n / kQK; ++i, y += kQK) {
    const __m256i high =
        _mm256_and_si256(bits_to_bytes_32(load_u32(b[i].qh)), _mm256_set1_epi8(0x10));
    const __m256i q = _mm256_or_si256(unpack_nibbles_32(b[i].qs), high);
    const float d = half_to_float(b[i].d);
    store_scaled_32<Offset::kAdd>(q, d, d, half_to_float(b[i].m), y);
  }
}

void dequantize_q8_0(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const BlockQ8_0*>(src);
  for (int64_t i = 0; i < n / kQK; ++i, y += kQK) {
    const float d = half_to_float(b[i].d);
    store_scaled_32<Offset::kNone>(load_256(b[i].qs), d, d, 0.0f, y);
  }
}

// Q4_K/Q5_K: y = (d * sc[s]) * q - dmin * m[s] per 32-element sub-block s. `quants(i, pair,
// lo, hi)` unpacks sub-blocks 2*pair, 2*pair+1 of block i to bytes.
template <typename Block, typename Quants>
void dequantize_k_with_mins(const Block* b, float* y, int64_t n, Quants quants) {
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const float d = half_to_float(b[i].d), dmin = half_to_float(b[i].dmin);
    alignas(32) int16_t scales_mins[16];  // [scale 0..7 | min 0..7]
    _mm256_store_si256(reinterpret_cast<__m256i*>(scales_mins),
                       unpack_scales_mins_k4_16(b[i].scales));
    for (int pair = 0; pair < 4; ++pair, y += 64) {
      __m256i lo, hi;
      quants(i, pair, lo, hi);
      const float d_lo = d * static_cast<float>(scales_mins[2 * pair]);
      const float d_hi = d * static_cast<float>(scales_mins[2 * pair + 1]);
      store_scaled_32<Offset::kSubtract>(lo, d_lo, d_lo,
                                         dmin * static_cast<float>(scales_mins[8 + 2 * pair]), y);
      store_scaled_32<Offset::kSubtract>(
          hi, d_hi, d_hi, dmin * static_cast<float>(scales_mins[9 + 2 * pair]), y + 32);
    }
  }
}

void dequantize_q4_k(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const BlockQ4_K*>(src);
  dequantize_k_with_mins(b, y, n, [&](int64_t i, int pair, __m256i& lo, __m256i& hi) {
    unpack_q4_k_pair(b[i].qs, pair, lo, hi);
  });
}

void dequantize_q5_k(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const BlockQ5_K*>(src);
  dequantize_k_with_mins(b, y, n, [&](int64_t i, int pair, __m256i& lo, __m256i& hi) {
    unpack_q5_k_pair(b[i].qs, b[i].qh, pair, lo, hi);
  });
}

void dequantize_q6_k(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const BlockQ6_K*>(src);
  const __m256i bias = _mm256_set1_epi8(32);
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const float d = half_to_float(b[i].d);
    for (int half = 0; half < 2; ++half, y += 128) {
      __m256i q[4];
      unpack_q6_k_half(b[i].ql, b[i].qh, half, q);
      for (int k = 0; k < 4; ++k) {
        const int g = 8 * half + 2 * k;  // scale of elements 0..15; g + 1 for 16..31
        store_scaled_32<Offset::kNone>(_mm256_sub_epi8(q[k], bias),
                                       d * static_cast<float>(b[i].scales[g]),
                                       d * static_cast<float>(b[i].scales[g + 1]), 0.0f,
                                       y + 32 * k);
      }
    }
  }
}

// ---- activation quantization ----------------------------------------------------------

inline __m256 abs_ps(__m256 v) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v); }

// roundf: nearest integer, halfway cases away from zero (exact for all floats).
inline __m256 round_half_away(__m256 v) {
  const __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
  const __m256 halfway_or_more =
      _mm256_cmp_ps(abs_ps(_mm256_sub_ps(v, t)), _mm256_set1_ps(0.5f), _CMP_GE_OQ);
  const __m256 step =
      _mm256_or_ps(_mm256_and_ps(v, _mm256_set1_ps(-0.0f)), _mm256_set1_ps(1.0f));  // +-1
  return _mm256_add_ps(t, _mm256_and_ps(halfway_or_more, step));
}

// Four vectors of int32 (32 values) -> 32 int8 in order (values already within int8).
inline __m256i pack_32(const __m256i q[4]) {
  const __m256i packed =
      _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
  // The packs work per 128-bit lane, leaving 4-element groups in order 0,2,4,6,1,3,5,7.
  return _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

// Q8_0 / Q8_1, as quantize_q8_legacy in the reference.
template <typename Block>
void quantize_q8_legacy(const float* x, void* dst, int64_t n) {
  auto* y = static_cast<Block*>(dst);
  for (int64_t i = 0; i < n / kQK; ++i, x += kQK) {
    __m256 v[4];
    for (int k = 0; k < 4; ++k) v[k] = _mm256_loadu_ps(x + 8 * k);
    const float amax = hmax_ps(_mm256_max_ps(_mm256_max_ps(abs_ps(v[0]), abs_ps(v[1])),
                                             _mm256_max_ps(abs_ps(v[2]), abs_ps(v[3]))));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    __m256i q[4];
    for (int k = 0; k < 4; ++k)
      q[k] = _mm256_cvtps_epi32(round_half_away(_mm256_mul_ps(v[k], _mm256_set1_ps(id))));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(y[i].qs), pack_32(q));
    y[i].d = float_to_half(d);
    if constexpr (requires { y[i].s; }) {
      const int sum =
          hsum_epi32(_mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3])));
      y[i].s = float_to_half(static_cast<float>(sum) * d);
    }
  }
}

// Q8_K, as quantize_q8_k in the reference (d = 1 / (-127 / max), max = first element of
// largest magnitude, quants rounded half to even and capped at 127).
void quantize_q8_k(const float* x, void* dst, int64_t n) {
  auto* y = static_cast<BlockQ8_K*>(dst);
  for (int64_t i = 0; i < n / kQK_K; ++i, x += kQK_K) {
    __m256 vmax = _mm256_setzero_ps();
    for (int k = 0; k < kQK_K; k += 8) vmax = _mm256_max_ps(vmax, abs_ps(_mm256_loadu_ps(x + k)));
    const float amax = hmax_ps(vmax);
    if (amax == 0.0f) {
      std::memset(&y[i], 0, sizeof(BlockQ8_K));
      continue;
    }
    float max = 0.0f;
    for (int k = 0; k < kQK_K; k += 8) {
      const int hits = _mm256_movemask_ps(
          _mm256_cmp_ps(abs_ps(_mm256_loadu_ps(x + k)), _mm256_set1_ps(amax), _CMP_EQ_OQ));
      if (hits != 0) {
        max = x[k + __builtin_ctz(static_cast<unsigned>(hits))];
        break;
      }
    }
    const float iscale = -127.0f / max;
    const __m256 scale = _mm256_set1_ps(iscale);
    for (int g = 0; g < kQK_K; g += 32) {
      __m256i q[4];
      for (int k = 0; k < 4; ++k) {
        const __m256 v = _mm256_round_ps(_mm256_mul_ps(scale, _mm256_loadu_ps(x + g + 8 * k)),
                                         _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        q[k] = _mm256_min_epi32(_mm256_cvtps_epi32(v), _mm256_set1_epi32(127));
      }
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(y[i].qs + g), pack_32(q));
      y[i].bsums[g / 16] = static_cast<int16_t>(hsum_epi32(_mm256_add_epi32(q[0], q[1])));
      y[i].bsums[g / 16 + 1] = static_cast<int16_t>(hsum_epi32(_mm256_add_epi32(q[2], q[3])));
    }
    y[i].d = 1.0f / iscale;
  }
}

}  // namespace

DequantizeRowFn dequantize_row_kernel(TensorType type) {
  switch (type) {
    case TensorType::F16:
      return dequantize_f16;
    case TensorType::BF16:
      return dequantize_bf16;
    case TensorType::Q4_0:
      return dequantize_q4_0;
    case TensorType::Q4_1:
      return dequantize_q4_1;
    case TensorType::Q5_0:
      return dequantize_q5_0;
    case TensorType::Q5_1:
      return dequantize_q5_1;
    case TensorType::Q8_0:
      return dequantize_q8_0;
    case TensorType::Q4_K:
      return dequantize_q4_k;
    case TensorType::Q5_K:
      return dequantize_q5_k;
    case TensorType::Q6_K:
      return dequantize_q6_k;
    default:
      return nullptr;  // F32 is a copy; Q8_1/Q8_K are activation types
  }
}

QuantizeRowFn quantize_row_kernel(TensorType dot_type) {
  switch (dot_type) {
    case TensorType::Q8_0:
      return quantize_q8_legacy<BlockQ8_0>;
    case TensorType::Q8_1:
      return quantize_q8_legacy<BlockQ8_1>;
    case TensorType::Q8_K:
      return quantize_q8_k;
    default:
      return nullptr;  // F32 is a copy
  }
}

}  // namespace kvc::avx2
