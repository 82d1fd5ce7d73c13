// AVX-512 packed matmul kernels (layout and arithmetic: kernels/packed_layout.h): one 512-bit
// lane per weight row, so each multiply-add advances all 16 rows of a group for one token.
//
// Int8 products: vpdpbusd with VNNI, else vpmaddubsw + vpmaddwd (exact here: nibbles are at
// most 15, and Q8_0's signed weights go as |w| against x negated where w < 0). With VNNI,
// Q8_0 weights go unsigned as w + 128 (an xor) and 128 * sum(x) is taken off the exact sum.
#include "kernels/cpu/avx512_common.h"
#include "kernels/cpu/quant_avx512.h"
#include "kernels/packed_layout.h"

namespace kvc::KVC_AVX512_NS {
namespace {

using namespace kvc::KVC_AVX512_NS::simd;
using cpu::PackedFormat;
using cpu::PackedGemmArgs;

#if defined(KVC_AVX512_VNNI)
constexpr bool kVnni = true;
#else
constexpr bool kVnni = false;
#endif

// Four activation bytes broadcast to every 32-bit lane.
inline __m512i broadcast_4(const int8_t* p) {
  return _mm512_set1_epi32(static_cast<int32_t>(load_u32(reinterpret_cast<const uint8_t*>(p))));
}

// acc + per-lane sums of four unsigned-by-signed byte products.
inline __m512i dot_add(__m512i acc, __m512i u, __m512i x) {
#if defined(KVC_AVX512_VNNI)
  return _mm512_dpbusd_epi32(acc, u, x);
#else
  return _mm512_add_epi32(acc, _mm512_madd_epi16(_mm512_maddubs_epi16(u, x), _mm512_set1_epi16(1)));
#endif
}

template <PackedFormat F, int kTokens>
void gemm_group(const PackedGemmArgs& a) {
  // Q8_0 with VNNI reads its weights as w + 128 and takes 128 * sum(x) off.
  constexpr bool kUnsignedQ8 = F == PackedFormat::kQ8_0 && kVnni;
  constexpr int kOffset = kUnsignedQ8 ? 128 : packed::kOffset<F>;
  const __m512i low4 = _mm512_set1_epi8(0x0F);
  __m512 acc[kTokens];
  for (int t = 0; t < kTokens; ++t) acc[t] = _mm512_setzero_ps();
  for (int64_t b = 0; b < a.n_blocks; ++b) {
    const uint8_t* qs = packed::block_quants<F>(a.group, b);
    const int8_t* x[kTokens];
    __m512i isum[kTokens];
    for (int t = 0; t < kTokens; ++t) {
      x[t] = a.q + t * a.q_stride + packed::kBlockElems * b;
      isum[t] = _mm512_setzero_si512();
    }
    if constexpr (F == PackedFormat::kQ8_0) {
      for (int j = 0; j < 8; ++j) {
        const __m512i w = load_512(qs + packed::kChunkBytes * j);
        if constexpr (kUnsignedQ8) {
          const __m512i u = _mm512_xor_si512(w, _mm512_set1_epi8(static_cast<char>(0x80)));
          for (int t = 0; t < kTokens; ++t) isum[t] = dot_add(isum[t], u, broadcast_4(x[t] + 4 * j));
        } else {
          const __mmask64 negative = _mm512_movepi8_mask(w);
          const __m512i u = _mm512_abs_epi8(w);
          for (int t = 0; t < kTokens; ++t) {
            const __m512i xt = broadcast_4(x[t] + 4 * j);
            isum[t] = dot_add(isum[t], u,
                              _mm512_mask_sub_epi8(xt, negative, _mm512_setzero_si512(), xt));
          }
        }
      }
    } else {
      for (int j = 0; j < 4; ++j) {
        const __m512i w = load_512(qs + packed::kChunkBytes * j);
        const __m512i lo = _mm512_and_si512(w, low4);
        const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(w, 4), low4);
        for (int t = 0; t < kTokens; ++t) {
          isum[t] = dot_add(isum[t], lo, broadcast_4(x[t] + 8 * j));
          isum[t] = dot_add(isum[t], hi, broadcast_4(x[t] + 8 * j + 4));
        }
      }
    }
    const uint16_t* scales = packed::block_scales<F>(a.group, b);
    const __m512 dw = _mm512_cvtph_ps(load_256(scales));
    for (int t = 0; t < kTokens; ++t) {
      const int64_t k = t * a.scale_stride + b;
      if constexpr (kOffset != 0) {
        isum[t] = _mm512_sub_epi32(isum[t], _mm512_set1_epi32(kOffset * a.sum[k]));
      }
      acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[t]), _mm512_mul_ps(dw, _mm512_set1_ps(a.d[k])),
                               acc[t]);
      if constexpr (packed::kHasMin<F>) {
        const __m512 mw = _mm512_cvtph_ps(load_256(scales + packed::kGroupRows));
        acc[t] = _mm512_fmadd_ps(mw, _mm512_set1_ps(a.s[k]), acc[t]);
      }
    }
  }
  for (int t = 0; t < kTokens; ++t) {
    float* y = a.y + t * a.y_stride;
    if (a.n_rows == packed::kGroupRows) {
      _mm512_storeu_ps(y, acc[t]);
    } else {
      alignas(64) float out[packed::kGroupRows];
      _mm512_store_ps(out, acc[t]);
      std::memcpy(y, out, sizeof(float) * static_cast<size_t>(a.n_rows));
    }
  }
}

// One instance per token count, so each keeps its accumulators in registers.
template <PackedFormat F>
void gemm(const PackedGemmArgs& a) {
  static constexpr void (*kByTokens[])(const PackedGemmArgs&) = {
      gemm_group<F, 1>, gemm_group<F, 2>, gemm_group<F, 3>, gemm_group<F, 4>,
      gemm_group<F, 5>, gemm_group<F, 6>, gemm_group<F, 7>, gemm_group<F, 8>};
  static_assert(sizeof(kByTokens) / sizeof(kByTokens[0]) == packed::kMaxTokens);
  kByTokens[a.n_tokens - 1](a);
}

}  // namespace

#include "kernels/packed_gemm_dispatch.h"  // NOLINT(build/include): inside the namespace

}  // namespace kvc::KVC_AVX512_NS
