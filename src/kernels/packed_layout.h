// The repacked weight layout of the 32-element legacy types (Q4_0, Q4_1, Q8_0), private to
// src/kernels/. Built once at model load by pack_weights() (kernels/packed_weights.h); read by
// the packed kernels (reference/packed_gemm_reference.cpp, cpu/packed_gemm_*.cpp).
//
// Rows are taken 16 at a time (a group; the last group is padded with zero rows). A group is
// n_blocks consecutive blocks, block b covering columns 32b .. 32b+31 of its 16 rows:
//
//   float d[16]            row r's scale                      (f16 in the file, widened once)
//   float m[16]            row r's min             (Q4_1 only; f16 in the file, widened once)
//   quants                 16 rows x 32 elements, in 64-byte chunks:
//     Q4_0, Q4_1: 4 chunks; chunk j, byte 4r + p (p < 4) holds element 8j + p of row r in its
//                 low nibble and element 8j + 4 + p in its high nibble (values 0..15);
//     Q8_0:       8 chunks; chunk j, byte 4r + p holds element 4j + p of row r (int8).
//
// So one 32-bit lane of a chunk is four consecutive elements of one row: a 512-bit multiply-add
// of a chunk against four activation bytes broadcast to every lane advances 16 rows at once, and
// a row's sum never needs a horizontal reduction (AVX2 takes the group as two halves of 8 rows:
// bytes 0..31 of each chunk are rows 0..7).
//
// The arithmetic, bit for bit in every kernel set (the scalar reference is the specification):
// for every (row r, token t), acc = 0, then for b = 0, 1, ... in order
//   isum = sum_i (w_i - offset) * x_i                 exact int32 (x: the token's int8 quants;
//                                                     offset 8 for Q4_0, else 0)
//   acc  = fma(float(isum), d[r] * dx[b], acc)        dx: the token's block scale
//   acc  = fma(m[r], sx[b], acc)                      Q4_1 only; sx = Q8_1's s (dx * sum x)
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
inline constexpr size_t kScaleBytes = (kHasMin<F> ? 2 : 1) * kGroupRows * sizeof(float);
template <PackedFormat F>
inline constexpr size_t kBlockBytes = kScaleBytes<F> + static_cast<size_t>(kChunks<F>) * kChunkBytes;

static_assert(kBlockBytes<PackedFormat::kQ4_0> == 320);
static_assert(kBlockBytes<PackedFormat::kQ4_1> == 384);
static_assert(kBlockBytes<PackedFormat::kQ8_0> == 576);

}  // namespace kvc::packed
