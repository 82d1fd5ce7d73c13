// AVX2+FMA+F16C row kernels for the quantized types (compiled with -mavx2 -mfma -mf16c).
//
// Only call these after checking that the CPU has AVX2, FMA and F16C (quant.cpp does, once).
#pragma once

#include "kernels/cpu/row_kernels.h"

namespace kvc::avx2 {

using cpu::DequantizeRowFn;
using cpu::QuantizeRowFn;
using cpu::VecDot4Fn;
using cpu::VecDotFn;

DequantizeRowFn dequantize_row_kernel(TensorType type);  // quant_avx2.cpp
QuantizeRowFn quantize_row_kernel(TensorType dot_type);  // quant_avx2.cpp
VecDotFn vec_dot_kernel(TensorType weight_type);         // vec_dot_avx2.cpp
VecDot4Fn vec_dot_4_kernel(TensorType weight_type);      // vec_dot_avx2.cpp
cpu::PackedGemmFn packed_gemm_kernel(cpu::PackedFormat format);  // packed_gemm_avx2.cpp

inline constexpr cpu::RowKernelSet kRowKernels{"avx2",         dequantize_row_kernel,
                                               quantize_row_kernel, vec_dot_kernel,
                                               vec_dot_4_kernel,    packed_gemm_kernel};

}  // namespace kvc::avx2
