// Helpers shared by the *_avx512.cpp kernels. Include ONLY from *_avx512.cpp files (see
// x86_shared_helpers.h on why each instruction set keeps its own copies).
//
// The build defines KVC_AVX512_NS (the namespace of this build: avx512, avx512_vnni, or an
// *_emulated twin), KVC_AVX512_VNNI for the VNNI builds, and KVC_SIMD_EMULATED for the test
// builds, which take every _mm512 intrinsic from SIMDe (portable C/AVX2 implementations of
// the same instructions) instead of the compiler's AVX-512 code generation.
#pragma once

#if defined(KVC_SIMD_EMULATED)
#define SIMDE_ENABLE_NATIVE_ALIASES
#include <simde/x86/avx512.h>
// SIMDe 0.7.4 (Debian 12) aliases _mm512_madd_epi16 to its masked form by mistake.
#undef _mm512_madd_epi16
#define _mm512_madd_epi16(a, b) simde_mm512_madd_epi16(a, b)

// Lane-wise operations SIMDe 0.7.4 lacks or gets wrong: the 256-bit instruction on each
// half, which is what the 512-bit one does per lane (the native builds use the real one).
namespace kvc::simde_missing {
inline simde__m512i halves(__m256i lo, __m256i hi) {
  return simde_mm512_inserti64x4(simde_mm512_castsi256_si512(lo), hi, 1);
}
inline simde__m512 halves(__m256 lo, __m256 hi) {
  return simde_mm512_insertf32x8(simde_mm512_castps256_ps512(lo), hi, 1);
}
inline __m256i low(simde__m512i v) { return simde_mm512_castsi512_si256(v); }
inline __m256i high(simde__m512i v) { return simde_mm512_extracti64x4_epi64(v, 1); }
inline __m256 low(simde__m512 v) { return simde_mm512_castps512_ps256(v); }
inline __m256 high(simde__m512 v) {
  return _mm256_castpd_ps(simde_mm512_extractf64x4_pd(simde_mm512_castps_pd(v), 1));
}
inline simde__m512 cvtepi32_ps(simde__m512i v) {
  return halves(_mm256_cvtepi32_ps(low(v)), _mm256_cvtepi32_ps(high(v)));
}
inline simde__m512i cvtps_epi32(simde__m512 v) {
  return halves(_mm256_cvtps_epi32(low(v)), _mm256_cvtps_epi32(high(v)));
}
inline simde__m512i cvtepi8_epi32(__m128i v) {
  return halves(_mm256_cvtepi8_epi32(v), _mm256_cvtepi8_epi32(_mm_srli_si128(v, 8)));
}
inline simde__m512i cvtepu16_epi32(__m256i v) {
  return halves(_mm256_cvtepu16_epi32(_mm256_castsi256_si128(v)),
                _mm256_cvtepu16_epi32(_mm256_extracti128_si256(v, 1)));
}
inline simde__m512 cvtph_ps(__m256i v) {
  return halves(_mm256_cvtph_ps(_mm256_castsi256_si128(v)),
                _mm256_cvtph_ps(_mm256_extracti128_si256(v, 1)));
}
// vrndscaleps with scale 0 (imm8 bits 7:4 clear) rounds as vroundps does with the same
// imm8; SIMDe 0.7.4's version returns its input unchanged for _MM_FROUND_TO_ZERO.
template <int kImm8>
simde__m512 roundscale_ps(simde__m512 v) {
  static_assert((kImm8 & 0xF0) == 0, "only scale 0 is emulated");
  return halves(_mm256_round_ps(low(v), kImm8), _mm256_round_ps(high(v), kImm8));
}
}  // namespace kvc::simde_missing
#define _mm512_cvtepi32_ps(v) ::kvc::simde_missing::cvtepi32_ps(v)
#define _mm512_cvtps_epi32(v) ::kvc::simde_missing::cvtps_epi32(v)
#define _mm512_cvtepi8_epi32(v) ::kvc::simde_missing::cvtepi8_epi32(v)
#define _mm512_cvtepu16_epi32(v) ::kvc::simde_missing::cvtepu16_epi32(v)
#define _mm512_cvtph_ps(v) ::kvc::simde_missing::cvtph_ps(v)
#undef _mm512_roundscale_ps
#define _mm512_roundscale_ps(v, imm8) ::kvc::simde_missing::roundscale_ps<(imm8)>(v)
// SIMDe 0.7.4 implements _mm512_shuffle_f32x4 but gives it no native alias.
#define _mm512_shuffle_f32x4(a, b, imm8) simde_mm512_shuffle_f32x4(a, b, imm8)
#endif

#include <immintrin.h>

#include <cstdint>
#include <cstring>

#if !defined(KVC_AVX512_NS)
#error "compile *_avx512.cpp through CMake's kvc_avx512_kernels(), which sets KVC_AVX512_NS"
#endif

namespace kvc::KVC_AVX512_NS::simd {

#include "kernels/cpu/x86_shared_helpers.h"  // NOLINT(build/include): inside the namespace

inline __m512i load_512(const void* p) { return _mm512_loadu_si512(p); }

// [lo | hi]: two 256-bit halves as one 512-bit vector.
inline __m512i combine(__m256i lo, __m256i hi) {
  return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

// The high 256 bits of v (vextractf64x4: plain AVX512F, unlike vextractf32x8).
inline __m256 high_256(__m512 v) {
  return _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
}

inline float hsum_ps(__m512 v) {
  return hsum_ps(_mm256_add_ps(_mm512_castps512_ps256(v), high_256(v)));
}

inline int hsum_epi32(__m512i v) {
  return hsum_epi32(_mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1)));
}

inline float hmax_ps(__m512 v) {
  return hmax_ps(_mm256_max_ps(_mm512_castps512_ps256(v), high_256(v)));
}

// int16 permutation index: lane l takes element first + l / lanes_per_group (for
// _mm512_permutexvar_epi16, which spreads per-group scales over the lanes of their group).
inline __m512i group_index_i16(int first, int lanes_per_group) {
  alignas(64) int16_t index[32];
  for (int l = 0; l < 32; ++l) index[l] = static_cast<int16_t>(first + l / lanes_per_group);
  return _mm512_load_si512(index);
}

// 16 lanes of int32 sums of x[i] * y[i] over 64 unsigned-by-signed byte products (4 per
// lane). Without VNNI, vpmaddubsw saturates int16 pairs: exact while 2 * max|x| * max|y| <
// 32768 (x <= 63, |y| <= 128 here), so both paths give the same integers.
inline __m512i dot_u8_i8(__m512i x, __m512i y) {
#if defined(KVC_AVX512_VNNI)
  return _mm512_dpbusd_epi32(_mm512_setzero_si512(), x, y);
#else
  return _mm512_madd_epi16(_mm512_maddubs_epi16(x, y), _mm512_set1_epi16(1));
#endif
}

// As dot_u8_i8 for signed x (AVX-512 has no vpsignb): |x| times y negated where x < 0 (valid
// for y > -128; activations are never -128; |-128| is read as the unsigned byte 128).
inline __m512i dot_i8_i8(__m512i x, __m512i y) {
  const __mmask64 negative = _mm512_movepi8_mask(x);
  return dot_u8_i8(_mm512_abs_epi8(x),
                   _mm512_mask_sub_epi8(y, negative, _mm512_setzero_si512(), y));
}

}  // namespace kvc::KVC_AVX512_NS::simd
