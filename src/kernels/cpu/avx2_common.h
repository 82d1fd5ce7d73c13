// Small AVX2 helpers shared by the *_avx2.cpp kernels. Include ONLY from *_avx2.cpp files:
// these inline functions contain AVX2 instructions, and a copy emitted by a translation unit
// built without -mavx2 could be merged with them by the linker.
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <cstring>

namespace kvc::avx2::simd {

#include "kernels/cpu/x86_shared_helpers.h"  // NOLINT(build/include): inside the namespace

// 8 lanes of int32 sums of x[i] * y[i] over 32 unsigned-by-signed byte products (4 per lane).
// No saturation as long as 2 * max|x| * max|y| < 32768 (x <= 63, |y| <= 128 here).
inline __m256i dot_u8_i8(__m256i x, __m256i y) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(x, y), _mm256_set1_epi16(1));
}

// Shuffle control that broadcasts int16 element k of each 128-bit lane to the whole lane.
inline __m256i broadcast_i16_control(int k) {
  return _mm256_set1_epi16(static_cast<int16_t>(0x0100 + 0x0202 * k));
}

}  // namespace kvc::avx2::simd
