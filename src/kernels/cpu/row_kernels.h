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

struct RowKernelSet {
  const char* name;  // "avx2", "avx512", "avx512-vnni" (tests add "-emulated" variants)
  DequantizeRowFn (*dequantize)(TensorType type);
  QuantizeRowFn (*quantize)(TensorType dot_type);
  VecDotFn (*vec_dot)(TensorType weight_type);
  VecDot4Fn (*vec_dot_4)(TensorType weight_type);
};

}  // namespace kvc::cpu
