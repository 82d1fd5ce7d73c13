// Row kernels over quantized data: dequantize, quantize activations, dot products.
//
// Every public function dispatches at run time to the fastest implementation the CPU supports
// (AVX-512 VNNI, AVX-512, AVX2+FMA+F16C, else scalar; see cpu_features.h). The scalar versions in kvc::reference are the
// specification: each optimized path is tested against them.
//
// Dot products follow llama.cpp's scheme so that results are comparable with it and as fast:
// activations are quantized once per row to the weight type's `dot_type`
// (Q8_0 for Q4_0/Q5_0/Q8_0, Q8_1 for Q4_1/Q5_1, Q8_K for K-quants, F32 for F32/F16/BF16),
// then each weight row is dotted against the quantized activations with integer arithmetic.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/types.h"

namespace kvc {

// dst[n] = dequantized src (one row of `type`, n a multiple of its block size).
void dequantize_row(TensorType type, const void* src, float* dst, int64_t n);

// Quantizes src[n] to `dot_type` (Q8_0, Q8_1, Q8_K or F32) into dst (row_bytes(dot_type, n)).
void quantize_row_for_dot(TensorType dot_type, const float* src, void* dst, int64_t n);

// Dot product of one weight row of `weight_type` with activations already quantized to
// type_traits(weight_type).dot_type. n: elements in the row.
float vec_dot(TensorType weight_type, int64_t n, const void* weight_row, const void* activations);

// The dispatched dot kernels of one weight type, looked up once per matmul instead of per row.
// `one` is null where only the scalar reference exists (call reference::vec_dot then);
// `four` (weights unpacked once for four tokens, same bits as four calls of `one`) is null
// where the kernel set has none.
struct VecDotKernels {
  float (*one)(int64_t n, const void* weight_row, const void* activations) = nullptr;
  void (*four)(int64_t n, const void* weight_row, const void* activations,
               size_t activation_stride, float* out) = nullptr;
};
VecDotKernels vec_dot_kernels(TensorType weight_type);

// Name of the kernel set the dispatcher uses ("avx512-vnni", "avx512", "avx2", "scalar").
const char* cpu_kernel_isa();

namespace cpu {
struct RowKernelSet;
}
// Tests only: every row-kernel dispatch goes to `set` (nullptr: back to the CPU's own), so
// that a whole model can run on the AVX-512 kernels emulated on an AVX2 CPU (see
// kernels/cpu/quant_avx512.h). Call while no kernel runs; the caller vouches for the CPU.
void override_row_kernels_for_testing(const cpu::RowKernelSet* set);

namespace reference {
void dequantize_row(TensorType type, const void* src, float* dst, int64_t n);
void quantize_row_for_dot(TensorType dot_type, const float* src, void* dst, int64_t n);
float vec_dot(TensorType weight_type, int64_t n, const void* weight_row, const void* activations);
}  // namespace reference

}  // namespace kvc
