// AVX2 entry points of paged attention; call only when cpu_has_avx2().
#pragma once

#include "kernels/paged_attention.h"

namespace kvc::avx2 {

bool paged_attention_supported(const PagedKvPool& pool, int32_t group);
void paged_attention(const PagedKvPool& pool, const PagedHeadRow& row, const GroupQueries& queries,
                     float scale, MetricAccumulation accumulation, float* out, int64_t out_stride,
                     float* scratch);
void paged_attention_part(const PagedKvPool& pool, const PagedHeadRow& row,
                          const GroupQueries& queries, float scale, int32_t begin, int32_t end,
                          float* acc, float* max, float* sum, float* scratch);

bool paged_attention_tiled_supported(const PagedKvPool& pool, int32_t group);
void paged_attention_tiled(const PagedKvPool& pool, const PagedHeadRow& row,
                           const GroupQueries& queries, float scale, float* out,
                           int64_t out_stride);

}  // namespace kvc::avx2
