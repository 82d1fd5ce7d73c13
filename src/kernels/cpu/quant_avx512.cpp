// AVX-512 dequantization of weight rows and quantization of activation rows (see
// quant_avx512.h for the builds of this file).
//
// Both must equal the scalar reference (reference/quant_reference.cpp) bit for bit, as the
// AVX2 kernels do: the same float operations in the same order, 16 lanes at a time, no FMA
// contraction. Quants are unpacked with the shared 256-bit helpers (one block or sub-block
// pair per vector) and widened, scaled and stored 16 floats at a time.
#include "kernels/block_layouts.h"
#include "kernels/cpu/avx512_common.h"
#include "kernels/cpu/quant_avx512.h"

namespace kvc::KVC_AVX512_NS {
namespace {

using namespace kvc::blocks;
using namespace kvc::KVC_AVX512_NS::simd;

enum class Offset { kNone, kAdd, kSubtract };

// dst[32] = float(q[j]) * scale (scale_first for j < 16, scale_last for j >= 16), then
// + or - offset. q: 32 signed bytes.
template <Offset kOffset>
inline void store_scaled_32(__m256i q, float scale_first, float scale_last, float offset,
                            float* dst) {
  const __m512i ints[2] = {_mm512_cvtepi8_epi32(_mm256_castsi256_si128(q)),
                           _mm512_cvtepi8_epi32(_mm256_extracti128_si256(q, 1))};
  const __m512 off = _mm512_set1_ps(offset);
  for (int k = 0; k < 2; ++k) {
    __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(ints[k]),
                             _mm512_set1_ps(k == 0 ? scale_first : scale_last));
    if constexpr (kOffset == Offset::kAdd) v = _mm512_add_ps(v, off);
    if constexpr (kOffset == Offset::kSubtract) v = _mm512_sub_ps(v, off);
    _mm512_storeu_ps(dst + 16 * k, v);
  }
}

void dequantize_f16(const void* src, float* y, int64_t n) {
  const auto* h = static_cast<const uint16_t*>(src);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, _mm512_cvtph_ps(load_256(h + i)));
  for (; i < n; ++i) y[i] = half_to_float(h[i]);
}

void dequantize_bf16(const void* src, float* y, int64_t n) {
  const auto* h = static_cast<const uint16_t*>(src);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512i bits = _mm512_slli_epi32(_mm512_cvtepu16_epi32(load_256(h + i)), 16);
    _mm512_storeu_ps(y + i, _mm512_castsi512_ps(bits));
  }
  for (; i < n; ++i) y[i] = bf16_to_float(h[i]);
}

// Legacy blocks: `quants(block)` -> 32 signed bytes; `offset(block)` -> the min (or 0).
template <Offset kOffset, typename Block, typename Quants>
void dequantize_legacy(const void* src, float* y, int64_t n, Quants quants) {
  const auto* b = static_cast<const Block*>(src);
  for (int64_t i = 0; i < n / kQK; ++i, y += kQK) {
    const float d = half_to_float(b[i].d);
    float min = 0.0f;
    if constexpr (kOffset != Offset::kNone) min = half_to_float(b[i].m);
    store_scaled_32<kOffset>(quants(b[i]), d, d, min, y);
  }
}

void dequantize_q4_0(const void* src, float* y, int64_t n) {
  dequantize_legacy<Offset::kNone, BlockQ4_0>(src, y, n, [](const BlockQ4_0& b) {
    return _mm256_sub_epi8(unpack_nibbles_32(b.qs), _mm256_set1_epi8(8));
  });
}

void dequantize_q4_1(const void* src, float* y, int64_t n) {
  dequantize_legacy<Offset::kAdd, BlockQ4_1>(
      src, y, n, [](const BlockQ4_1& b) { return unpack_nibbles_32(b.qs); });
}

inline __m256i q5_quants(const uint8_t* qs, const uint8_t* qh) {
  const __m256i high = _mm256_and_si256(bits_to_bytes_32(load_u32(qh)), _mm256_set1_epi8(0x10));
  return _mm256_or_si256(unpack_nibbles_32(qs), high);
}

void dequantize_q5_0(const void* src, float* y, int64_t n) {
  dequantize_legacy<Offset::kNone, BlockQ5_0>(src, y, n, [](const BlockQ5_0& b) {
    return _mm256_sub_epi8(q5_quants(b.qs, b.qh), _mm256_set1_epi8(16));
  });
}

void dequantize_q5_1(const void* src, float* y, int64_t n) {
  dequantize_legacy<Offset::kAdd, BlockQ5_1>(
      src, y, n, [](const BlockQ5_1& b) { return q5_quants(b.qs, b.qh); });
}

void dequantize_q8_0(const void* src, float* y, int64_t n) {
  dequantize_legacy<Offset::kNone, BlockQ8_0>(src, y, n,
                                              [](const BlockQ8_0& b) { return load_256(b.qs); });
}

// Q4_K/Q5_K: y = (d * sc[s]) * q - dmin * m[s] per 32-element sub-block s. `quants(block,
// pair, lo, hi)` unpacks sub-blocks 2*pair, 2*pair+1 to bytes.
template <typename Block, typename Quants>
void dequantize_k_with_mins(const void* src, float* y, int64_t n, Quants quants) {
  const auto* b = static_cast<const Block*>(src);
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const float d = half_to_float(b[i].d), dmin = half_to_float(b[i].dmin);
    alignas(32) int16_t scales_mins[16];  // [scale 0..7 | min 0..7]
    _mm256_store_si256(reinterpret_cast<__m256i*>(scales_mins),
                       unpack_scales_mins_k4_16(b[i].scales));
    for (int pair = 0; pair < 4; ++pair, y += 64) {
      __m256i lo, hi;
      quants(b[i], pair, lo, hi);
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
  dequantize_k_with_mins<BlockQ4_K>(src, y, n,
                                    [](const BlockQ4_K& b, int pair, __m256i& lo, __m256i& hi) {
                                      unpack_q4_k_pair(b.qs, pair, lo, hi);
                                    });
}

void dequantize_q5_k(const void* src, float* y, int64_t n) {
  dequantize_k_with_mins<BlockQ5_K>(src, y, n,
                                    [](const BlockQ5_K& b, int pair, __m256i& lo, __m256i& hi) {
                                      unpack_q5_k_pair(b.qs, b.qh, pair, lo, hi);
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

// roundf: nearest integer, halfway cases away from zero (exact for all floats).
inline __m512 round_half_away(__m512 v) {
  const __m512 t = _mm512_roundscale_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
  const __mmask16 halfway_or_more =
      _mm512_cmp_ps_mask(_mm512_abs_ps(_mm512_sub_ps(v, t)), _mm512_set1_ps(0.5f), _CMP_GE_OQ);
  const __m512 step =
      _mm512_or_ps(_mm512_and_ps(v, _mm512_set1_ps(-0.0f)), _mm512_set1_ps(1.0f));  // +-1
  return _mm512_mask_add_ps(t, halfway_or_more, t, step);
}

// 16 int32 already within int8 -> 16 int8 at dst (vpmovsdb: no lane-crossing packs needed).
inline void store_i8_16(__m512i q, int8_t* dst) {
  _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), _mm512_cvtsepi32_epi8(q));
}

// Q8_0 / Q8_1, as quantize_q8_legacy in the reference.
template <typename Block>
void quantize_q8_legacy(const float* x, void* dst, int64_t n) {
  auto* y = static_cast<Block*>(dst);
  for (int64_t i = 0; i < n / kQK; ++i, x += kQK) {
    const __m512 v[2] = {_mm512_loadu_ps(x), _mm512_loadu_ps(x + 16)};
    const float amax = hmax_ps(_mm512_max_ps(_mm512_abs_ps(v[0]), _mm512_abs_ps(v[1])));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    __m512i q[2];
    for (int k = 0; k < 2; ++k) {
      q[k] = _mm512_cvtps_epi32(round_half_away(_mm512_mul_ps(v[k], _mm512_set1_ps(id))));
      store_i8_16(q[k], y[i].qs + 16 * k);
    }
    y[i].d = float_to_half(d);
    if constexpr (requires { y[i].s; }) {
      y[i].s = float_to_half(static_cast<float>(hsum_epi32(_mm512_add_epi32(q[0], q[1]))) * d);
    }
  }
}

// Q8_K, as quantize_q8_k in the reference (d = 1 / (-127 / max), max = first element of
// largest magnitude, quants rounded half to even and capped at 127).
void quantize_q8_k(const float* x, void* dst, int64_t n) {
  auto* y = static_cast<BlockQ8_K*>(dst);
  for (int64_t i = 0; i < n / kQK_K; ++i, x += kQK_K) {
    __m512 vmax = _mm512_setzero_ps();
    for (int k = 0; k < kQK_K; k += 16) vmax = _mm512_max_ps(vmax, _mm512_abs_ps(_mm512_loadu_ps(x + k)));
    const float amax = hmax_ps(vmax);
    if (amax == 0.0f) {
      std::memset(&y[i], 0, sizeof(BlockQ8_K));
      continue;
    }
    float max = 0.0f;
    for (int k = 0; k < kQK_K; k += 16) {
      const __mmask16 hits = _mm512_cmp_ps_mask(_mm512_abs_ps(_mm512_loadu_ps(x + k)),
                                                _mm512_set1_ps(amax), _CMP_EQ_OQ);
      if (hits != 0) {
        max = x[k + __builtin_ctz(static_cast<unsigned>(hits))];
        break;
      }
    }
    const float iscale = -127.0f / max;
    const __m512 scale = _mm512_set1_ps(iscale);
    for (int g = 0; g < kQK_K; g += 16) {  // one bsums group per vector
      const __m512 v = _mm512_roundscale_ps(_mm512_mul_ps(scale, _mm512_loadu_ps(x + g)),
                                            _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      const __m512i q = _mm512_min_epi32(_mm512_cvtps_epi32(v), _mm512_set1_epi32(127));
      store_i8_16(q, y[i].qs + g);
      y[i].bsums[g / 16] = static_cast<int16_t>(hsum_epi32(q));
    }
    y[i].d = 1.0f / iscale;
  }
}

}  // namespace

cpu::DequantizeRowFn dequantize_row_kernel(TensorType type) {
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

cpu::QuantizeRowFn quantize_row_kernel(TensorType dot_type) {
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

}  // namespace kvc::KVC_AVX512_NS
