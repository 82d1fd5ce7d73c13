// AVX-512 row kernels for the quantized types: one source (quant_avx512.cpp,
// vec_dot_avx512.cpp, packed_gemm_avx512.cpp), compiled once per namespace below.
//
//   kvc::avx512                F + BW + DQ + VL (x86-64-v4): int8 dots by vpmaddubsw + vpmaddwd
//   kvc::avx512_vnni           the same plus AVX512-VNNI: int8 dots by vpdpbusd
//   kvc::avx512_emulated       } the same two sources built WITHOUT AVX-512, against SIMDe's
//   kvc::avx512_vnni_emulated  } portable _mm512 intrinsics; library kvc_kernels_emulated,
//                              } linked only into tests so that every CPU checks the AVX-512
//                              } code paths against the scalar reference.
//
// Call the native sets only after cpu_features.h says the CPU runs their instructions.
#pragma once

#include "kernels/cpu/row_kernels.h"

#define KVC_DECLARE_AVX512_ROW_KERNELS(ns, set_name)                                        \
  namespace kvc::ns {                                                                      \
  cpu::DequantizeRowFn dequantize_row_kernel(TensorType type);  /* quant_avx512.cpp */     \
  cpu::QuantizeRowFn quantize_row_kernel(TensorType dot_type);  /* quant_avx512.cpp */     \
  cpu::VecDotFn vec_dot_kernel(TensorType weight_type);         /* vec_dot_avx512.cpp */   \
  cpu::VecDot4Fn vec_dot_4_kernel(TensorType weight_type);      /* vec_dot_avx512.cpp */   \
  cpu::PackedGemmFn packed_gemm_kernel(cpu::PackedFormat f);    /* packed_gemm_avx512.cpp */ \
  inline constexpr cpu::RowKernelSet kRowKernels{set_name,           dequantize_row_kernel, \
                                                 quantize_row_kernel, vec_dot_kernel,      \
                                                 vec_dot_4_kernel,    packed_gemm_kernel}; \
  }

KVC_DECLARE_AVX512_ROW_KERNELS(avx512, "avx512")
KVC_DECLARE_AVX512_ROW_KERNELS(avx512_vnni, "avx512-vnni")
KVC_DECLARE_AVX512_ROW_KERNELS(avx512_emulated, "avx512-emulated")
KVC_DECLARE_AVX512_ROW_KERNELS(avx512_vnni_emulated, "avx512-vnni-emulated")

#undef KVC_DECLARE_AVX512_ROW_KERNELS
