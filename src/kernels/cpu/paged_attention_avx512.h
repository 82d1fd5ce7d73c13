// AVX-512 paged attention: the query-tiled prefill kernel and the one-query decode kernel
// (paged_attention_decode's contract in paged_attention_avx2.h; the same bits as the AVX2
// build). Two sources (paged_attention_avx512.cpp: tiled; paged_attention_decode_avx512.cpp:
// decode), compiled once per namespace as the AVX-512 row kernels are (quant_avx512.h):
// kvc::avx512 and kvc::avx512_vnni for the dispatcher (they differ only in the q8_0 decode
// kernel, where VNNI computes the scores slot-parallel and multiplies the value weights with
// vpdpwssd: the same exact integer sums, so the same bits), and the *_emulated twins built
// against SIMDe, linked into tests only, so CPUs without AVX-512 check this code.
//
// Call the native builds only after cpu_features.h says the CPU runs AVX-512.
#pragma once

#include "kernels/paged_attention.h"

#define KVC_DECLARE_AVX512_ATTENTION(ns)                                                    \
  namespace kvc::ns {                                                                      \
  bool paged_attention_tiled_supported(const PagedKvPool& pool, int32_t group);           \
  void paged_attention_tiled(const PagedKvPool& pool, const PagedHeadRow& row,             \
                             const GroupQueries& queries, float scale, float* out,         \
                             int64_t out_stride);                                          \
  bool paged_attention_decode_supported(const PagedKvPool& pool, int32_t group);           \
  void paged_attention_decode(const PagedKvPool& pool, const PagedHeadRow& row,            \
                              const GroupQueries& queries, float scale, int32_t begin,     \
                              int32_t end, float* acc, float* max, float* sum,             \
                              float* scratch);                                             \
  }

KVC_DECLARE_AVX512_ATTENTION(avx512)
KVC_DECLARE_AVX512_ATTENTION(avx512_vnni)
KVC_DECLARE_AVX512_ATTENTION(avx512_emulated)
KVC_DECLARE_AVX512_ATTENTION(avx512_vnni_emulated)

#undef KVC_DECLARE_AVX512_ATTENTION
