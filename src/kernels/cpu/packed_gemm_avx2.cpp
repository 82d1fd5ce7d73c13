// AVX2 packed matmul kernels (layout and arithmetic: kernels/packed_layout.h). A group's 16
// rows go as two halves of 8, one 256-bit lane per row; int8 products by vpmaddubsw +
// vpmaddwd (exact: nibbles are at most 15, and Q8_0's signed weights go as |w| against x with
// w's sign, so no pair of products leaves int16).
#include "kernels/cpu/avx2_common.h"
#include "kernels/cpu/quant_avx2.h"
#include "kernels/packed_layout.h"

namespace kvc::avx2 {
namespace {

using namespace kvc::avx2::simd;
using cpu::PackedFormat;
using cpu::PackedGemmArgs;

inline __m256i broadcast_4(const int8_t* p) {
  return _mm256_set1_epi32(static_cast<int32_t>(load_u32(reinterpret_cast<const uint8_t*>(p))));
}

// Rows 8 * half .. 8 * half + 7 of the group for kTokens tokens.
template <PackedFormat F, int kTokens>
void gemm_half(const PackedGemmArgs& a, int half, __m256 (&acc)[kTokens]) {
  constexpr int kOffset = packed::kOffset<F>;
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  const size_t lane0 = 32 * static_cast<size_t>(half);  // byte of row 8 * half in a chunk
  for (int t = 0; t < kTokens; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t b = 0; b < a.n_blocks; ++b) {
    const uint8_t* qs = packed::block_quants<F>(a.group, b) + lane0;
    const int8_t* x[kTokens];
    __m256i isum[kTokens];
    for (int t = 0; t < kTokens; ++t) {
      x[t] = a.q + t * a.q_stride + packed::kBlockElems * b;
      isum[t] = _mm256_setzero_si256();
    }
    if constexpr (F == PackedFormat::kQ8_0) {
      for (int j = 0; j < 8; ++j) {
        const __m256i w = load_256(qs + packed::kChunkBytes * j);
        const __m256i u = _mm256_abs_epi8(w);
        for (int t = 0; t < kTokens; ++t) {
          const __m256i xt = _mm256_sign_epi8(broadcast_4(x[t] + 4 * j), w);
          isum[t] = _mm256_add_epi32(isum[t], dot_u8_i8(u, xt));
        }
      }
    } else {
      for (int j = 0; j < 4; ++j) {
        const __m256i w = load_256(qs + packed::kChunkBytes * j);
        const __m256i lo = _mm256_and_si256(w, low4);
        const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(w, 4), low4);
        for (int t = 0; t < kTokens; ++t) {
          isum[t] = _mm256_add_epi32(isum[t], dot_u8_i8(lo, broadcast_4(x[t] + 8 * j)));
          isum[t] = _mm256_add_epi32(isum[t], dot_u8_i8(hi, broadcast_4(x[t] + 8 * j + 4)));
        }
      }
    }
    const uint16_t* scales = packed::block_scales<F>(a.group, b) + 8 * half;
    const __m256 dw = _mm256_cvtph_ps(load_128(scales));
    for (int t = 0; t < kTokens; ++t) {
      const int64_t k = t * a.scale_stride + b;
      if constexpr (kOffset != 0) {
        isum[t] = _mm256_sub_epi32(isum[t], _mm256_set1_epi32(kOffset * a.sum[k]));
      }
      acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[t]), _mm256_mul_ps(dw, _mm256_set1_ps(a.d[k])),
                               acc[t]);
      if constexpr (packed::kHasMin<F>) {
        acc[t] = _mm256_fmadd_ps(_mm256_cvtph_ps(load_128(scales + packed::kGroupRows)),
                                 _mm256_set1_ps(a.s[k]), acc[t]);
      }
    }
  }
}

template <PackedFormat F, int kTokens>
void gemm_group(const PackedGemmArgs& a) {
  alignas(32) float out[kTokens][packed::kGroupRows];
  const bool direct = a.n_rows == packed::kGroupRows;
  for (int half = 0; half < 2; ++half) {
    if (8 * half >= a.n_rows) break;
    __m256 acc[kTokens];
    gemm_half<F, kTokens>(a, half, acc);
    for (int t = 0; t < kTokens; ++t) {
      if (direct) {
        _mm256_storeu_ps(a.y + t * a.y_stride + 8 * half, acc[t]);
      } else {
        _mm256_store_ps(out[t] + 8 * half, acc[t]);
      }
    }
  }
  if (!direct) {
    for (int t = 0; t < kTokens; ++t) {
      std::memcpy(a.y + t * a.y_stride, out[t], sizeof(float) * static_cast<size_t>(a.n_rows));
    }
  }
}

// One instance per token count, so each keeps its accumulators in registers: at most 4 tokens,
// whose 8 accumulators and 8 integer sums leave room in the 16 ymm registers for a chunk's
// weights. A call with more tokens runs as calls of 4 and the rest (the same bits).
constexpr int kTokensPerPass = 4;

template <PackedFormat F>
void gemm(const PackedGemmArgs& a) {
  static constexpr void (*kByTokens[])(const PackedGemmArgs&) = {
      gemm_group<F, 1>, gemm_group<F, 2>, gemm_group<F, 3>, gemm_group<F, 4>};
  static_assert(sizeof(kByTokens) / sizeof(kByTokens[0]) == kTokensPerPass);
  PackedGemmArgs part = a;
  for (int t0 = 0; t0 < a.n_tokens; t0 += kTokensPerPass) {
    part.n_tokens = a.n_tokens - t0 < kTokensPerPass ? a.n_tokens - t0 : kTokensPerPass;
    part.q = a.q + t0 * a.q_stride;
    part.d = a.d + t0 * a.scale_stride;
    part.s = a.s != nullptr ? a.s + t0 * a.scale_stride : nullptr;
    part.sum = a.sum + t0 * a.scale_stride;
    part.y = a.y + t0 * a.y_stride;
    kByTokens[part.n_tokens - 1](part);
  }
}

}  // namespace

#include "kernels/packed_gemm_dispatch.h"  // NOLINT(build/include): inside the namespace

}  // namespace kvc::avx2
