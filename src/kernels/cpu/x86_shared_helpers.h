// 128/256-bit helpers shared by every x86 kernel set (AVX2 and the AVX-512 variants).
//
// This file has no include guard, includes nothing and opens no namespace on purpose: each
// kernel set's common header includes it INSIDE its own namespace (kvc::avx2::simd,
// kvc::avx512::simd, ...), after <immintrin.h> and <cstdint>/<cstring>. Every translation unit
// compiled for one instruction set therefore gets its own copies of these inline functions,
// and the linker can never merge an AVX-512 copy into AVX2 code (or the reverse).

// Exact scalar fp16 <-> float through F16C (round to nearest even, as util/fp16.h); used
// instead of util/fp16.h so no inline function from a generic header is instantiated here.
inline float half_to_float(uint16_t h) { return _cvtsh_ss(h); }
inline uint16_t float_to_half(float f) { return _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT); }

// bf16 is the top half of a float.
inline float bf16_to_float(uint16_t h) {
  float f;
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

inline uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

inline __m256i load_256(const void* p) {
  return _mm256_loadu_si256(static_cast<const __m256i*>(p));
}
inline __m128i load_128(const void* p) { return _mm_loadu_si128(static_cast<const __m128i*>(p)); }

inline float hsum_ps(__m128 v) {
  __m128 s = _mm_add_ps(v, _mm_movehl_ps(v, v));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline float hsum_ps(__m256 v) {
  return hsum_ps(_mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1)));
}

inline int hsum_epi32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01));
  return _mm_cvtsi128_si32(s);
}

inline float hmax_ps(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}

// e^x for 8 lanes (Cephes expf polynomial, about 1 ulp on [-87, 88]); inputs below -87.3
// give 0 or a denormal-sized value, which callers mask anyway.
inline __m256 exp_ps(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3365f)), _mm256_set1_ps(88.3762f));
  // x = n ln2 + r, |r| <= ln2 / 2; ln2 split in two for an exact n ln2.
  const __m256 n = _mm256_floor_ps(
      _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f)));
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i pow2n = _mm256_slli_epi32(
      _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(pow2n));
}

// Transposes the 8x8 float matrix whose rows are r[0..7] in place.
inline void transpose8(__m256 r[8]) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 u1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 u3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 u5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 u7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
  r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
  r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
  r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
  r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
  r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
  r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
  r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
  r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

// Values [i, i + 8) (i % 8 == 0) of one slot's K or V row, as floats, for each KV storage
// type (kernels/paged_attention.h): fp16, f32, or q8_0 blocks of 34 bytes (fp16 scale d, then
// 32 int8 q; the 8 values lie in one block). d * q is exact in float.
inline __m256 load_kv_f16_8(const uint8_t* row, int32_t i) {
  return _mm256_cvtph_ps(load_128(row + 2 * static_cast<int64_t>(i)));
}
inline __m256 load_kv_f32_8(const uint8_t* row, int32_t i) {
  return _mm256_loadu_ps(reinterpret_cast<const float*>(row + 4 * static_cast<int64_t>(i)));
}
inline __m256 load_kv_q8_0_8(const uint8_t* row, int32_t i) {
  const uint8_t* block = row + static_cast<int64_t>(i / 32) * 34;
  uint16_t scale;
  std::memcpy(&scale, block, sizeof(scale));
  const __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(block + 2 + i % 32));
  return _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)),
                       _mm256_set1_ps(half_to_float(scale)));
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

// The kTokens activation rows of a multi-token dot, `stride` bytes apart, as blocks.
template <typename Block, int kTokens>
void activation_rows(const void* activations, size_t stride, const Block* (&rows)[kTokens]) {
  for (int t = 0; t < kTokens; ++t) {
    rows[t] = reinterpret_cast<const Block*>(static_cast<const uint8_t*>(activations) + t * stride);
  }
}

// ---- legacy blocks (32 elements) ------------------------------------------------------------

// Weight blocks with a min m (Q4_1, Q5_1) against Q8_1, whose s = da * sum of its quants:
// sum_j (dw q_j + m)(da y_j) = dw da sum_j q_j y_j + m s.
template <typename WBlock>
constexpr bool kHasMin = requires(WBlock b) { b.m; };

// The fp16 scale fields of blocks i and j (j = i + 1, or none at a row's odd end: its fields
// read as 0) as floats. Blocks with a second field (m of Q4_1/Q5_1, s of Q8_1) give
// [d_i, m_i, d_j, m_j], others [d_i, d_j, 0, 0].
template <typename Block>
__m128 block_pair_scales(const Block* bi, const Block* bj) {
  if constexpr (requires(Block b) { b.m; } || requires(Block b) { b.s; }) {
    // (d, m) and (d, s) are adjacent fp16 pairs: one 32-bit load each.
    const auto pair_bits = [](const Block* b) {
      return static_cast<int>(load_u32(reinterpret_cast<const uint8_t*>(&b->d)));
    };
    return _mm_cvtph_ps(_mm_setr_epi32(pair_bits(bi), bj ? pair_bits(bj) : 0, 0, 0));
  } else {
    return _mm_cvtph_ps(_mm_setr_epi16(static_cast<int16_t>(bi->d),
                                       static_cast<int16_t>(bj ? bj->d : 0), 0, 0, 0, 0, 0, 0));
  }
}

// Scale products of weight blocks i, j and their activation blocks: without a min
// [dw_i da_i, dw_j da_j, 0, 0]; with one [dw_i da_i, m_i s_i, dw_j da_j, m_j s_j].
template <typename WBlock, typename ABlock>
__m128 block_pair_products(const WBlock* wi, const ABlock* ai, const WBlock* wj,
                           const ABlock* aj) {
  return _mm_mul_ps(block_pair_scales(wi, wj), block_pair_scales(ai, aj));
}

// m_i s_i + m_j s_j: the min terms block_pair_products leaves in lanes 1 and 3 (summed over
// blocks), in that order.
inline float pair_min_terms(__m128 mins) {
  return _mm_cvtss_f32(_mm_movehdup_ps(mins)) + _mm_cvtss_f32(_mm_shuffle_ps(mins, mins, 3));
}

// ---- K-quant unpacking (256-element super-blocks) ----------------------------------------

// Q4_K/Q5_K scale field (12 bytes) -> int16 [scale 0..7 | min 0..7]; the same values as
// blocks::unpack_scales_mins_k4, four sub-blocks at a time with 32-bit masks.
inline __m256i unpack_scales_mins_k4_16(const uint8_t* packed) {
  const uint32_t u0 = load_u32(packed), u1 = load_u32(packed + 4), u2 = load_u32(packed + 8);
  const uint32_t low6 = 0x3f3f3f3f, low4 = 0x0f0f0f0f, low2 = 0x03030303;
  const uint32_t scales_lo = u0 & low6, mins_lo = u1 & low6;
  const uint32_t scales_hi = (u2 & low4) | (((u0 >> 6) & low2) << 4);
  const uint32_t mins_hi = ((u2 >> 4) & low4) | (((u1 >> 6) & low2) << 4);
  return _mm256_cvtepu8_epi16(_mm_setr_epi32(static_cast<int>(scales_lo),
                                             static_cast<int>(scales_hi), static_cast<int>(mins_lo),
                                             static_cast<int>(mins_hi)));
}

// The Q4_K/Q5_K min terms of one super-block against one Q8_K block, added to acc:
// dmin * da * sum_s m[s] * (sum of the 32 activation quants of sub-block s). mins: int16
// [8] (the high half of unpack_scales_mins_k4_16); bsums: int16 [16], one per 16 elements.
inline __m128 add_k_min_terms(__m128 acc, __m128i mins, float dmin_da, const int16_t* bsums) {
  const __m256i sums = load_256(bsums);
  const __m128i sub_sums =
      _mm_hadd_epi16(_mm256_castsi256_si128(sums), _mm256_extracti128_si256(sums, 1));
  return _mm_fmadd_ps(_mm_set1_ps(dmin_da), _mm_cvtepi32_ps(_mm_madd_epi16(mins, sub_sums)), acc);
}

// Q4_K sub-blocks 2*pair (low nibbles of qs[32 pair ..]) and 2*pair+1 (high nibbles) as
// bytes 0..15. qs: [128].
inline void unpack_q4_k_pair(const uint8_t* qs, int pair, __m256i& lo, __m256i& hi) {
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  const __m256i q = load_256(qs + 32 * pair);
  lo = _mm256_and_si256(q, low4);
  hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), low4);
}

// Q5_K sub-blocks 2*pair and 2*pair+1 as bytes 0..31. qs: [128], qh: [32].
inline void unpack_q5_k_pair(const uint8_t* qs, const uint8_t* qh, int pair, __m256i& lo,
                             __m256i& hi) {
  const __m256i low4 = _mm256_set1_epi8(0x0F), bit4 = _mm256_set1_epi8(0x10);
  const __m256i q = load_256(qs + 32 * pair);
  // Sub-block s takes bit s of qh: bring bits 2*pair and 2*pair+1 of each byte to bit 4.
  // (16-bit shifts are safe: only bits that stay inside their byte survive the masks.)
  const __m256i h = _mm256_srli_epi16(load_256(qh), 2 * pair);
  lo = _mm256_or_si256(_mm256_and_si256(q, low4), _mm256_and_si256(_mm256_slli_epi16(h, 4), bit4));
  hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q, 4), low4),
                       _mm256_and_si256(_mm256_slli_epi16(h, 3), bit4));
}

// Q6_K elements 128*half .. 128*half+127 as unsigned bytes 0..63 (the stored value + 32),
// in element order, 32 per vector. ql: [128], qh: [64].
inline void unpack_q6_k_half(const uint8_t* ql, const uint8_t* qh, int half, __m256i q[4]) {
  const __m256i low4 = _mm256_set1_epi8(0x0F), low2 = _mm256_set1_epi8(0x03);
  const __m256i ql0 = load_256(ql + 64 * half), ql1 = load_256(ql + 64 * half + 32);
  const __m256i h = load_256(qh + 32 * half);
  const __m256i low[4] = {_mm256_and_si256(ql0, low4), _mm256_and_si256(ql1, low4),
                          _mm256_and_si256(_mm256_srli_epi16(ql0, 4), low4),
                          _mm256_and_si256(_mm256_srli_epi16(ql1, 4), low4)};
  for (int k = 0; k < 4; ++k) {
    const __m256i high = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 2 * k), low2), 4);
    q[k] = _mm256_or_si256(low[k], high);
  }
}
