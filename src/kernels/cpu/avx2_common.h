// Small AVX2 helpers shared by the *_avx2.cpp kernels. Include ONLY from *_avx2.cpp files:
// these inline functions contain AVX2 instructions, and a copy emitted by a translation unit
// built without -mavx2 could be merged with them by the linker.
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <cstring>

namespace kvc::avx2::simd {

// Exact scalar fp16 <-> float through F16C (round to nearest even, as util/fp16.h); used
// instead of util/fp16.h so no non-AVX2 inline function is instantiated in AVX2 code.
inline float half_to_float(uint16_t h) { return _cvtsh_ss(h); }
inline uint16_t float_to_half(float f) { return _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT); }

inline uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

inline __m256i load_256(const void* p) {
  return _mm256_loadu_si256(static_cast<const __m256i*>(p));
}
inline __m128i load_128(const void* p) { return _mm_loadu_si128(static_cast<const __m128i*>(p)); }

inline float hsum_ps(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline float hsum_ps(__m128 v) {
  __m128 s = _mm_add_ps(v, _mm_movehl_ps(v, v));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline int hsum_epi32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01));
  return _mm_cvtsi128_si32(s);
}

// 16 bytes of packed nibbles -> 32 bytes: low nibbles in bytes 0..15, high in 16..31 (the
// element order of the legacy blocks).
inline __m256i unpack_nibbles_32(const uint8_t* qs) {
  const __m128i packed = load_128(qs);
  const __m256i both = _mm256_set_m128i(_mm_srli_epi16(packed, 4), packed);
  return _mm256_and_si256(both, _mm256_set1_epi8(0x0F));
}

// uint32 -> 32 bytes, byte i = 0xFF if bit i is set, else 0x00.
inline __m256i bits_to_bytes_32(uint32_t bits) {
  // Byte i takes byte i / 8 of `bits`; OR with a mask that has every bit but (i % 8) set, so
  // the result is 0xFF exactly when bit i % 8 of that byte is set.
  const __m256i byte_of_bit = _mm256_setr_epi64x(0x0000000000000000, 0x0101010101010101,
                                                 0x0202020202020202, 0x0303030303030303);
  __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32(static_cast<int>(bits)), byte_of_bit);
  v = _mm256_or_si256(v, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
  return _mm256_cmpeq_epi8(v, _mm256_set1_epi64x(-1));
}

// 8 lanes of int32 sums of x[i] * y[i] over 32 unsigned-by-signed byte products (4 per lane).
// No saturation as long as 2 * max|x| * max|y| < 32768 (x <= 63, |y| <= 128 here).
inline __m256i dot_u8_i8(__m256i x, __m256i y) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(x, y), _mm256_set1_epi16(1));
}

// As dot_u8_i8 for signed x: moves x's sign onto y so maddubs sees |x| (valid for x >= -128,
// y > -128; activations are never -128).
inline __m256i dot_i8_i8(__m256i x, __m256i y) {
  return dot_u8_i8(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x));
}

// Shuffle control that broadcasts int16 element k of each 128-bit lane to the whole lane.
inline __m256i broadcast_i16_control(int k) {
  return _mm256_set1_epi16(static_cast<int16_t>(0x0100 + 0x0202 * k));
}

}  // namespace kvc::avx2::simd
