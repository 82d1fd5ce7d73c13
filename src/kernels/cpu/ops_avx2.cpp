#include "kernels/cpu/ops_avx2.h"

#include "kernels/cpu/avx2_common.h"

namespace kvc::avx2 {
namespace {

inline __m256 silu_mul_8(__m256 g, __m256 u) {
  const __m256 e = simd::exp_ps(_mm256_sub_ps(_mm256_setzero_ps(), g));
  return _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(_mm256_set1_ps(1.0f), e)), u);
}

}  // namespace

void silu_mul(float* gate, const float* up, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(gate + i, silu_mul_8(_mm256_loadu_ps(gate + i), _mm256_loadu_ps(up + i)));
  }
  if (i < n) {  // the tail through the same lanes, so no element depends on where n ends
    alignas(32) float g[8] = {}, u[8] = {};
    const auto rest = static_cast<size_t>(n - i);
    std::memcpy(g, gate + i, rest * sizeof(float));
    std::memcpy(u, up + i, rest * sizeof(float));
    _mm256_store_ps(g, silu_mul_8(_mm256_load_ps(g), _mm256_load_ps(u)));
    std::memcpy(gate + i, g, rest * sizeof(float));
  }
}

void float_to_fp16_row(const float* x, uint16_t* out, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
  }
  if (i < n) {
    alignas(32) float v[8] = {};
    alignas(16) uint16_t h[8];
    const auto rest = static_cast<size_t>(n - i);
    std::memcpy(v, x + i, rest * sizeof(float));
    _mm_store_si128(reinterpret_cast<__m128i*>(h),
                    _mm256_cvtps_ph(_mm256_load_ps(v), _MM_FROUND_TO_NEAREST_INT));
    std::memcpy(out + i, h, rest * sizeof(uint16_t));
  }
}

}  // namespace kvc::avx2
