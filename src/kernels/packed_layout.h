// The repacked weight layout of the 32-element legacy types (Q4_0, Q4_1, Q8_0), private to
// src/kernels/. Built once at model load by pack_weights() (kernels/packed_weights.h); read by
// the packed kernels (reference/packed_gemm_reference.cpp, cpu/packed_gemm_*.cpp).
//
// Rows are taken 16 at a time (a group; the last group is padded with zero rows). A group
// covers n_blocks consecutive blocks, block b covering columns 32b .. 32b+31 of its 16 rows.
// Blocks go in units of 64 bytes of scales followed by the quants of the blocks they scale
// (one block for Q4_1, two for Q4_0 and Q8_0), so the weights are read as one stream, the
// quants stay 64-byte aligned and a unit takes the bytes the file's blocks take:
//
//   scales of block b      fp16 d[16], row r's scale, then (Q4_1 only) fp16 m[16], its min:
//                          the file's halves; a kernel widens them (exactly) as it reads them.
//   quants of block b      16 rows x 32 elements, in 64-byte chunks:
//     Q4_0, Q4_1: 4 chunks; chunk j, byte 4r + p (p < 4) holds element 8j + p of row r in its
//                 low nibble and element 8j + 4 + p in its high nibble (values 0..15);
//     Q8_0:       8 chunks; chunk j, byte 4r + p holds element 4j + p of row r (int8).
//
// An odd block count leaves the last unit of Q4_0 and Q8_0 half used (zeros).
//
// The arithmetic, bit for bit in every kernel set (the scalar reference is the specification):
// for every (row r, token t), acc = 0, then for b = 0, 1, ... in order
//   isum = sum_i (w_i - offset) * x_i                 exact int32 (x: the token's int8 quants;
//                                                     offset 8 for Q4_0, else 0)
//   acc  = fma(float(isum), d[r] * dx[b], acc)        dx: the token's block scale (d, m:
//   acc  = fma(m[r], sx[b], acc)                      widened to float); Q4_1 only, with
//                                                     sx = Q8_1's s (dx * sum x)
// and y = acc. No order depends on how many tokens or rows a call takes.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/cpu/row_kernels.h"

namespace kvc::packed {

using cpu::PackedFormat;

inline constexpr int kGroupRows = 16;
inline constexpr int kBlockElems = 32;
inline constexpr int kChunkBytes = 64;
// Tokens per kernel call: the kernels keep one accumulator per token and row half in registers,
// and each weight chunk is loaded and unpacked once for all of them.
inline constexpr int kMaxTokens = 8;

template <PackedFormat F>
inline constexpr bool kHasMin = F == PackedFormat::kQ4_1;
template <PackedFormat F>
inline constexpr int kChunks = F == PackedFormat::kQ8_0 ? 8 : 4;
template <PackedFormat F>
inline constexpr int kOffset = F == PackedFormat::kQ4_0 ? 8 : 0;
template <PackedFormat F>
inline constexpr size_t kQuantBytes = static_cast<size_t>(kChunks<F>) * kChunkBytes;
template <PackedFormat F>
inline constexpr size_t kScaleBytes = (kHasMin<F> ? 2 : 1) * kGroupRows * sizeof(uint16_t);
inline constexpr size_t kUnitScaleBytes = 64;
template <PackedFormat F>
inline constexpr int64_t kUnitBlocks = static_cast<int64_t>(kUnitScaleBytes / kScaleBytes<F>);
template <PackedFormat F>
inline constexpr size_t kUnitBytes = kUnitScaleBytes + kUnitBlocks<F> * kQuantBytes<F>;

// A unit holds its blocks in the file's bytes (18, 20 or 34 per row of a block).
static_assert(kUnitBytes<PackedFormat::kQ4_0> == 2 * 16 * 18);
static_assert(kUnitBytes<PackedFormat::kQ4_1> == 16 * 20);
static_assert(kUnitBytes<PackedFormat::kQ8_0> == 2 * 16 * 34);

template <PackedFormat F>
inline constexpr size_t group_bytes(int64_t n_blocks) {
  return static_cast<size_t>((n_blocks + kUnitBlocks<F> - 1) / kUnitBlocks<F>) * kUnitBytes<F>;
}
// Block b's scales and quants inside its group.
template <PackedFormat F>
inline const uint16_t* block_scales(const uint8_t* group, int64_t b) {
  return reinterpret_cast<const uint16_t*>(
      group + static_cast<size_t>(b / kUnitBlocks<F>) * kUnitBytes<F> +
      static_cast<size_t>(b % kUnitBlocks<F>) * kScaleBytes<F>);
}
template <PackedFormat F>
inline const uint8_t* block_quants(const uint8_t* group, int64_t b) {
  return group + static_cast<size_t>(b / kUnitBlocks<F>) * kUnitBytes<F> + kUnitScaleBytes +
         static_cast<size_t>(b % kUnitBlocks<F>) * kQuantBytes<F>;
}
// The same, writable (the packer's).
template <PackedFormat F>
inline uint16_t* block_scales(uint8_t* group, int64_t b) {
  return const_cast<uint16_t*>(block_scales<F>(static_cast<const uint8_t*>(group), b));
}
template <PackedFormat F>
inline uint8_t* block_quants(uint8_t* group, int64_t b) {
  return const_cast<uint8_t*>(block_quants<F>(static_cast<const uint8_t*>(group), b));
}

}  // namespace kvc::packed
