// The row kernels one x86 kernel set provides (AVX2, AVX-512, AVX-512 VNNI), as plain function
// pointers the dispatcher (kernels/quant.cpp) tables once per type.
//
// Every lookup returns nullptr for a type the set has no kernel for; the dispatcher then uses
// the scalar reference. Arguments are validated by the dispatcher, never by the kernels. Call
// a set's kernels only after cpu_features.h says the CPU runs its instructions.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/types.h"

namespace kvc::cpu {

// dst[n] = dequantized src[row_bytes(type, n)].
using DequantizeRowFn = void (*)(const void* src, float* dst, int64_t n);
// dst[row_bytes(dot_type, n)] = quantized src[n].
using QuantizeRowFn = void (*)(const float* src, void* dst, int64_t n);
// weight_row[row_bytes(weight_type, n)] . activations[row_bytes(dot_type, n)].
using VecDotFn = float (*)(int64_t n, const void* weight_row, const void* activations);
// out[t] = weight_row . activation row t for t < 4, the rows `activation_stride` bytes apart:
// the weights are unpacked once for four tokens (prefill). For every t, the same bits as
// VecDotFn on row t, so a token's result never depends on how a matmul groups tokens.
using VecDot4Fn = void (*)(int64_t n, const void* weight_row, const void* activations,
                           size_t activation_stride, float* out);

// Weight formats repacked at load time, 16 rows interleaved (layout: kernels/packed_layout.h).
enum class PackedFormat : uint8_t { kQ4_0, kQ4_1, kQ8_0 };
inline constexpr int kPackedFormats = 3;

// One call of a packed kernel: one group of 16 weight rows times 1..packed::kMaxTokens tokens.
//   y[t * y_stride + r] = sum over blocks b of the group's row r . token t's block b,
// for r < n_rows and t < n_tokens, each (row, token) accumulated in the same order whatever
// n_tokens is (kernels/packed_layout.h states the arithmetic, bit for bit).
struct PackedGemmArgs {
  const uint8_t* group;  // n_blocks blocks, in the units of kernels/packed_layout.h
  int64_t n_blocks;
  int n_tokens;          // 1..packed::kMaxTokens
  int n_rows;            // rows of the group to store, 1..16 (the rest are padding)
  const int8_t* q;       // token t's quants: q[t * q_stride + 32 * b + i]
  int64_t q_stride;
  const float* d;        // token t's block scales: d[t * scale_stride + b]
  const float* s;        // Q4_1 only: d * sum of the block's quants (Q8_1's s)
  const int32_t* sum;    // sum of the block's quants (Q4_0 and Q8_0 fold offsets through it)
  int64_t scale_stride;
  float* y;
  int64_t y_stride;
};
using PackedGemmFn = void (*)(const PackedGemmArgs& args);

struct RowKernelSet {
  const char* name;  // "avx2", "avx512", "avx512-vnni" (tests add "-emulated" variants)
  DequantizeRowFn (*dequantize)(TensorType type);
  QuantizeRowFn (*quantize)(TensorType dot_type);
  VecDotFn (*vec_dot)(TensorType weight_type);
  VecDot4Fn (*vec_dot_4)(TensorType weight_type);
  PackedGemmFn (*packed_gemm)(PackedFormat format);
};

}  // namespace kvc::cpu
