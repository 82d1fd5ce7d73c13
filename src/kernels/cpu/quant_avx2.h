// AVX2+FMA+F16C row kernels for the quantized types (compiled with -mavx2 -mfma -mf16c).
//
// Only call these after checking that the CPU has AVX2, FMA and F16C (quant.cpp does, once).
// Each lookup returns nullptr for a type without an AVX2 kernel; the dispatcher then falls
// back to the scalar reference. Arguments are validated by the dispatcher, not here.
#pragma once

#include <cstdint>

#include "kernels/types.h"

namespace kvc::avx2 {

// dst[n] = dequantized src[row_bytes(type, n)].
using DequantizeRowFn = void (*)(const void* src, float* dst, int64_t n);
// dst[row_bytes(dot_type, n)] = quantized src[n].
using QuantizeRowFn = void (*)(const float* src, void* dst, int64_t n);
// weight_row[row_bytes(weight_type, n)] . activations[row_bytes(dot_type, n)].
using VecDotFn = float (*)(int64_t n, const void* weight_row, const void* activations);

DequantizeRowFn dequantize_row_kernel(TensorType type);  // quant_avx2.cpp
QuantizeRowFn quantize_row_kernel(TensorType dot_type);  // quant_avx2.cpp
VecDotFn vec_dot_kernel(TensorType weight_type);         // vec_dot_avx2.cpp

}  // namespace kvc::avx2
