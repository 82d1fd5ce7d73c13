// AMX packed matmul kernels (kernels/cpu/packed_gemm_amx.h).
//
// Per block b of 32 columns, one tile product C[token][row] = A[token][k] . B[k][row]:
//   A: 16 tokens x 32 int8 quants, read straight from the activation array (rows q_stride apart);
//   B: 8 rows of 64 bytes, row j holding elements 4j..4j+3 of each of the 16 weight rows, which
//      is how a packed chunk already lies (Q8_0: chunk j as is; Q4_0/Q4_1: the low nibbles of
//      chunk j are elements 8j..8j+3 and the high nibbles 8j+4..8j+7, so B rows 2j and 2j+1);
//   signed activations times unsigned nibbles (tdpbsud) or signed Q8_0 weights (tdpbssd).
// C goes to memory and each token's 16 row sums are scaled into its accumulator exactly as the
// VNNI kernel does. Two tile sets alternate, so block b+1's product runs while block b is scaled.
#include "kernels/cpu/packed_gemm_amx.h"

#include <immintrin.h>

#include <cstdint>
#include <cstdlib>
#include <new>

#include "kernels/packed_layout.h"

namespace kvc::amx {
namespace {

using cpu::PackedFormat;
using cpu::PackedGemmArgs;

// The tile configuration (palette 1) as ldtilecfg reads it.
struct alignas(64) TileConfig {
  uint8_t palette_id;
  uint8_t start_row;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

// A per-thread 64-byte aligned buffer that only grows.
struct TileBuffer {
  uint8_t* data = nullptr;
  size_t size = 0;
  ~TileBuffer() { std::free(data); }
  uint8_t* reserve(size_t bytes) {
    if (bytes > size) {
      std::free(data);
      data = static_cast<uint8_t*>(std::aligned_alloc(64, (bytes + 63) / 64 * 64));
      if (data == nullptr) throw std::bad_alloc();
      size = bytes;
    }
    return data;
  }
};

// Tiles 0/1: C (16 tokens x 16 int32); 2/3: A (16 tokens x 32 bytes); 4/5: B (8 x 64 bytes).
constexpr TileConfig make_config() {
  TileConfig c{};
  c.palette_id = 1;
  for (int i = 0; i < 2; ++i) {
    c.rows[i] = kTileTokens;
    c.colsb[i] = packed::kGroupRows * sizeof(int32_t);
    c.rows[2 + i] = kTileTokens;
    c.colsb[2 + i] = packed::kBlockElems;
    c.rows[4 + i] = packed::kBlockElems / 4;
    c.colsb[4 + i] = packed::kChunkBytes;
  }
  return c;
}
// In read-only data, not on the stack, where a compiler may drop the stores that only the
// ldtilecfg reads (the cause of llama.cpp's AMX crash, its PR #26954).
constexpr TileConfig kTileConfig = make_config();

void configure_tiles() {
  thread_local bool configured = false;
  if (configured) return;
  _tile_loadconfig(&kTileConfig);
  configured = true;
}

// Tile set kSet's product C = x[token][:32] . w (signed weights for kSigned, else unsigned),
// left in its C tile; store_product writes it out. The tile intrinsics take their tile numbers
// as literals, hence the two spelled-out sets.
#define KVC_TILE_PRODUCT(kC, kA, kB)          \
  do {                                        \
    _tile_loadd(kB, w, packed::kChunkBytes);  \
    _tile_loadd(kA, x, x_stride);             \
    _tile_zero(kC);                           \
    if constexpr (kSigned) {                  \
      _tile_dpbssd(kC, kA, kB);               \
    } else {                                  \
      _tile_dpbsud(kC, kA, kB);               \
    }                                         \
  } while (false)

template <bool kSigned, int kSet>
inline void tile_product(const uint8_t* w, const int8_t* x, int64_t x_stride) {
  if constexpr (kSet == 0) {
    KVC_TILE_PRODUCT(0, 2, 4);
  } else {
    KVC_TILE_PRODUCT(1, 3, 5);
  }
}
#undef KVC_TILE_PRODUCT

template <int kSet>
inline void store_product(int32_t* c) {
  constexpr int kStride = packed::kGroupRows * sizeof(int32_t);
  if constexpr (kSet == 0) {
    _tile_stored(0, c, kStride);
  } else {
    _tile_stored(1, c, kStride);
  }
}

// The group's quants as tile rows: Q8_0's chunks are already B rows (block b's at
// packed::block_quants); Q4_0/Q4_1's nibbles are split into a per-thread buffer once per call,
// long before the tiles read them back, block b's at b * kUnpackedBytes.
constexpr int64_t kUnpackedBytes = packed::kBlockElems / 4 * packed::kChunkBytes;

template <PackedFormat F>
const uint8_t* unpack_tile_weights(const PackedGemmArgs& a) {
  if constexpr (F == PackedFormat::kQ8_0) {
    return nullptr;
  } else {
    thread_local TileBuffer buffer;
    uint8_t* unpacked = buffer.reserve(static_cast<size_t>(a.n_blocks * kUnpackedBytes));
    const __m512i low4 = _mm512_set1_epi8(0x0F);
    for (int64_t b = 0; b < a.n_blocks; ++b) {
      const uint8_t* qs = packed::block_quants<F>(a.group, b);
      uint8_t* out = unpacked + b * kUnpackedBytes;
      for (int j = 0; j < 4; ++j) {
        const __m512i w = _mm512_load_si512(qs + packed::kChunkBytes * j);
        _mm512_store_si512(out + packed::kChunkBytes * (2 * j), _mm512_and_si512(w, low4));
        _mm512_store_si512(out + packed::kChunkBytes * (2 * j + 1),
                           _mm512_and_si512(_mm512_srli_epi16(w, 4), low4));
      }
    }
    return unpacked;
  }
}

template <PackedFormat F>
inline const uint8_t* tile_weights(const PackedGemmArgs& a, const uint8_t* unpacked, int64_t b) {
  if constexpr (F == PackedFormat::kQ8_0) {
    return packed::block_quants<F>(a.group, b);
  } else {
    return unpacked + b * kUnpackedBytes;
  }
}

// 16 tokens' accumulators: block b's integer sums in c[token][row], scaled as the VNNI kernel
// scales them.
template <PackedFormat F>
inline void scale_block(const int32_t* c, const uint16_t* scales, const float* d, const float* s,
                        const int32_t* sum, int64_t scale_stride, __m512 (&acc)[kTileTokens]) {
  const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(scales)));
  for (int t = 0; t < kTileTokens; ++t) {
    const int64_t k = t * scale_stride;
    __m512i isum = _mm512_load_si512(c + packed::kGroupRows * t);
    if constexpr (packed::kOffset<F> != 0) {
      isum = _mm512_sub_epi32(isum, _mm512_set1_epi32(packed::kOffset<F> * sum[k]));
    }
    acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_mul_ps(dw, _mm512_set1_ps(d[k])),
                             acc[t]);
    if constexpr (packed::kHasMin<F>) {
      const auto* m = reinterpret_cast<const __m256i*>(scales + packed::kGroupRows);
      acc[t] = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256(m)), _mm512_set1_ps(s[k]),
                               acc[t]);
    }
  }
}

template <PackedFormat F>
void gemm(const PackedGemmArgs& a) {
  configure_tiles();
  const uint8_t* unpacked = unpack_tile_weights<F>(a);
  constexpr bool kSigned = F == PackedFormat::kQ8_0;
  const int64_t nb = a.n_blocks, q_stride = a.q_stride, scale_stride = a.scale_stride;
  const auto rows = static_cast<__mmask16>((1u << a.n_rows) - 1u);
  alignas(64) int32_t c[2][kTileTokens * packed::kGroupRows];
  for (int t0 = 0; t0 < a.n_tokens; t0 += kTileTokens) {
    const int8_t* x = a.q + t0 * q_stride;
    const float* d = a.d + t0 * scale_stride;
    const float* s = a.s + t0 * scale_stride;
    const int32_t* sum = a.sum + t0 * scale_stride;
    __m512 acc[kTileTokens];
    for (auto& v : acc) v = _mm512_setzero_ps();
    // Block b+1's product runs on the tiles while block b is scaled; only then is it stored.
    if (nb > 0) {
      tile_product<kSigned, 0>(tile_weights<F>(a, unpacked, 0), x, q_stride);
      store_product<0>(c[0]);
    }
    for (int64_t b = 0; b < nb; ++b) {
      const int set = static_cast<int>(b & 1);
      const bool next = b + 1 < nb;
      if (next) {
        const uint8_t* w = tile_weights<F>(a, unpacked, b + 1);
        const int8_t* xb = x + packed::kBlockElems * (b + 1);
        if (set == 0) {
          tile_product<kSigned, 1>(w, xb, q_stride);
        } else {
          tile_product<kSigned, 0>(w, xb, q_stride);
        }
      }
      scale_block<F>(c[set], packed::block_scales<F>(a.group, b), d + b, s + b, sum + b,
                     scale_stride, acc);
      if (next) {
        if (set == 0) {
          store_product<1>(c[1]);
        } else {
          store_product<0>(c[0]);
        }
      }
    }
    for (int t = 0; t < kTileTokens; ++t) {
      _mm512_mask_storeu_ps(a.y + (t0 + t) * a.y_stride, rows, acc[t]);
    }
  }
}

}  // namespace

cpu::PackedGemmFn packed_gemm_kernel(PackedFormat format) {
  switch (format) {
    case PackedFormat::kQ4_0: return gemm<PackedFormat::kQ4_0>;
    case PackedFormat::kQ4_1: return gemm<PackedFormat::kQ4_1>;
    case PackedFormat::kQ8_0: return gemm<PackedFormat::kQ8_0>;
  }
  return nullptr;
}

}  // namespace kvc::amx
