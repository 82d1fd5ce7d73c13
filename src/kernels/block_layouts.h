// Packed block layouts of the quantized types, bit-exact with ggml (ggml-common.h), so that
// tensors read from GGUF files can be used in place. Private to src/kernels/.
//
// Invariants: every struct is trivially copyable, has no padding (sizes are asserted below)
// and has alignment 2 or 4 at most; rows are read through these structs from mmap'd files
// whose tensor data is only guaranteed 32-byte aligned at the tensor start, and blocks of
// odd sizes (e.g. 18 bytes) follow each other without padding, so a block's address may be
// only 2-byte aligned. SIMD code therefore uses unaligned loads everywhere.
#pragma once

#include <cstddef>
#include <cstdint>

namespace kvc::blocks {

// Elements per block of the "legacy" types (Q4_0 ... Q8_1) and of the K-quants.
inline constexpr int kQK = 32;
inline constexpr int kQK_K = 256;
// Bytes of the packed 6-bit scales and mins of Q4_K/Q5_K (8 scales + 8 mins, 6 bits each).
inline constexpr int kScaleBytesK = 12;

// x[i] = (q[i] - 8) * d; q[i] is the low nibble of qs[i] for i < 16, high nibble of qs[i-16].
struct BlockQ4_0 {
  uint16_t d;           // fp16 scale
  uint8_t qs[kQK / 2];  // [16] two 4-bit quants per byte
};

// x[i] = q[i] * d + m (nibble order as Q4_0).
struct BlockQ4_1 {
  uint16_t d;  // fp16 scale
  uint16_t m;  // fp16 min
  uint8_t qs[kQK / 2];
};

// x[i] = ((q[i] | bit_i(qh) << 4) - 16) * d; qh is a little-endian uint32, bit i for element i.
struct BlockQ5_0 {
  uint16_t d;
  uint8_t qh[4];
  uint8_t qs[kQK / 2];
};

// x[i] = (q[i] | bit_i(qh) << 4) * d + m.
struct BlockQ5_1 {
  uint16_t d;
  uint16_t m;
  uint8_t qh[4];
  uint8_t qs[kQK / 2];
};

// x[i] = qs[i] * d.
struct BlockQ8_0 {
  uint16_t d;
  int8_t qs[kQK];
};

// Activation type for Q4_1/Q5_1: x[i] = qs[i] * d, and s = d * sum(qs) (fp16) so that a
// weight block's min contributes m * s to the dot without touching the quants.
struct BlockQ8_1 {
  uint16_t d;
  uint16_t s;
  int8_t qs[kQK];
};

// Super-block of 16 sub-blocks of 16: x = d * (scales[j] & 15) * q - dmin * (scales[j] >> 4),
// q in 0..3 (2 bits). Only the layout is used today (size validation).
struct BlockQ2_K {
  uint8_t scales[kQK_K / 16];  // [16] 4-bit scale | 4-bit min << 4
  uint8_t qs[kQK_K / 4];       // [64]
  uint16_t d;                  // fp16 super-block scale of the scales
  uint16_t dmin;               // fp16 super-block scale of the mins
};

// 3-bit K-quant; only the layout is used today (size validation).
struct BlockQ3_K {
  uint8_t hmask[kQK_K / 8];  // [32] high bit of each quant
  uint8_t qs[kQK_K / 4];     // [64] low 2 bits
  uint8_t scales[12];        // 16 6-bit scales
  uint16_t d;
};

// Super-block of 8 sub-blocks of 32: x = d * sc[j] * q - dmin * m[j], q in 0..15, with
// sc/m 6-bit values packed in `scales` (see unpack_scales_mins_k4). Within each 64-element
// pair of sub-blocks (2j, 2j+1), qs[32j .. 32j+31] hold sub-block 2j in the low nibbles and
// sub-block 2j+1 in the high nibbles.
struct BlockQ4_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[kScaleBytesK];
  uint8_t qs[kQK_K / 2];  // [128]
};

// As Q4_K with a fifth bit: element l of sub-block s takes bit s of qh[l % 32].
struct BlockQ5_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[kScaleBytesK];
  uint8_t qh[kQK_K / 8];  // [32]
  uint8_t qs[kQK_K / 2];  // [128]
};

// Super-block of 16 sub-blocks of 16: x = d * scales[j] * (q - 32), q in 0..63 from 4 low bits
// (ql) and 2 high bits (qh); layout per 128-element half described in the dequantizer.
struct BlockQ6_K {
  uint8_t ql[kQK_K / 2];      // [128] low 4 bits
  uint8_t qh[kQK_K / 4];      // [64] high 2 bits
  int8_t scales[kQK_K / 16];  // [16] signed 8-bit scales
  uint16_t d;
};

// Activation type for the K-quants: x[i] = qs[i] * d, float scale, with the sum of every 16
// quants precomputed (bsums) to apply the weight mins/offsets without touching the quants.
struct BlockQ8_K {
  float d;
  int8_t qs[kQK_K];           // [256]
  int16_t bsums[kQK_K / 16];  // [16] sum of qs[16j .. 16j+15]
};

static_assert(sizeof(BlockQ4_0) == 18);
static_assert(sizeof(BlockQ4_1) == 20);
static_assert(sizeof(BlockQ5_0) == 22);
static_assert(sizeof(BlockQ5_1) == 24);
static_assert(sizeof(BlockQ8_0) == 34);
static_assert(sizeof(BlockQ8_1) == 36);
static_assert(sizeof(BlockQ2_K) == 84);
static_assert(sizeof(BlockQ3_K) == 110);
static_assert(sizeof(BlockQ4_K) == 144);
static_assert(sizeof(BlockQ5_K) == 176);
static_assert(sizeof(BlockQ6_K) == 210);
static_assert(sizeof(BlockQ8_K) == 292);

// Unpacks the 12-byte Q4_K/Q5_K scale field into 8 scales and 8 mins (6 bits each).
// Sub-blocks 0..3 keep their low 6 bits in bytes 0..3 (scale) and 4..7 (min); sub-blocks 4..7
// keep their low 4 bits in the nibbles of bytes 8..11 and their top 2 bits in the top 2 bits
// of bytes 0..3 (scale) and 4..7 (min). Same result as ggml's get_scale_min_k4 for j = 0..7.
// Not for use in *_avx2.cpp or *_avx512.cpp: an inline function emitted there could carry SIMD
// instructions into the linker's single copy used by every translation unit.
inline void unpack_scales_mins_k4(const uint8_t* packed, uint8_t* scales, uint8_t* mins) {
  for (int j = 0; j < 4; ++j) {
    scales[j] = packed[j] & 63;
    mins[j] = packed[j + 4] & 63;
  }
  for (int j = 4; j < 8; ++j) {
    scales[j] = static_cast<uint8_t>((packed[j + 4] & 0xF) | ((packed[j - 4] >> 6) << 4));
    mins[j] = static_cast<uint8_t>((packed[j + 4] >> 4) | ((packed[j] >> 6) << 4));
  }
}

}  // namespace kvc::blocks
