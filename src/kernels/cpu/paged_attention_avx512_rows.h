// Row loads and the exponential shared by the AVX-512 attention sources
// (paged_attention_avx512.cpp: the tiled kernel; paged_attention_decode_avx512.cpp: the decode
// kernel). Like x86_tile_helpers.h it has no include guard, opens no namespace and includes
// nothing: each source includes it inside its own anonymous namespace, after
// kernels/cpu/avx512_common.h and x86_tile_helpers.h, so every build keeps its own copies.

constexpr int32_t kMaxHeadDim = 256;

// e^x for 16 lanes: simd::exp_ps's polynomial.
inline __m512 exp_ps(__m512 x) {
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.3365f)), _mm512_set1_ps(88.3762f));
  const __m512 n = _mm512_roundscale_ps(
      _mm512_fmadd_ps(x, _mm512_set1_ps(1.44269504088896341f), _mm512_set1_ps(0.5f)),
      _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 y = _mm512_set1_ps(1.9875691500e-4f);
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.3981999507e-3f));
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(8.3334519073e-3f));
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(4.1665795894e-2f));
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.6666665459e-1f));
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(5.0000001201e-1f));
  y = _mm512_fmadd_ps(y, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  const __m512i pow2n = _mm512_slli_epi32(
      _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
  return _mm512_mul_ps(y, _mm512_castsi512_ps(pow2n));
}

// Values [i, i + n) (n = 8 or 16, i % n == 0) of the K (or V) row of physical slot `slot`, as
// floats (simd::load_kv_*_8 and their 16-lane versions: q8_0 values d * q, exact).
inline const uint8_t* slot_row(const PagedKvPool& pool, const void* base, int64_t slot) {
  return static_cast<const uint8_t*>(base) + slot * pool.row_bytes;
}
inline __m256 load_kv_8(const PagedKvPool& pool, const void* base, int64_t slot, int32_t i) {
  const uint8_t* row = slot_row(pool, base, slot);
  switch (pool.storage) {
    case KvStorageType::kF16: return simd::load_kv_f16_8(row, i);
    case KvStorageType::kF32: return simd::load_kv_f32_8(row, i);
    case KvStorageType::kQ8_0: break;
  }
  return simd::load_kv_q8_0_8(row, i);
}
template <KvStorageType S>
inline __m512 load_kv_16_as(const uint8_t* row, int32_t i) {
  if constexpr (S == KvStorageType::kF16) {
    return _mm512_cvtph_ps(simd::load_256(row + 2 * static_cast<int64_t>(i)));
  } else if constexpr (S == KvStorageType::kF32) {
    return _mm512_loadu_ps(reinterpret_cast<const float*>(row + 4 * static_cast<int64_t>(i)));
  } else {
    const uint8_t* block = row + static_cast<int64_t>(i / 32) * 34;
    uint16_t scale;
    std::memcpy(&scale, block, sizeof(scale));
    const __m512i q = _mm512_cvtepi8_epi32(simd::load_128(block + 2 + i % 32));
    return _mm512_mul_ps(_mm512_cvtepi32_ps(q), _mm512_set1_ps(simd::half_to_float(scale)));
  }
}
inline __m512 load_kv_16(const PagedKvPool& pool, const void* base, int64_t slot, int32_t i) {
  const uint8_t* row = slot_row(pool, base, slot);
  switch (pool.storage) {
    case KvStorageType::kF16: return load_kv_16_as<KvStorageType::kF16>(row, i);
    case KvStorageType::kF32: return load_kv_16_as<KvStorageType::kF32>(row, i);
    case KvStorageType::kQ8_0: break;
  }
  return load_kv_16_as<KvStorageType::kQ8_0>(row, i);
}
