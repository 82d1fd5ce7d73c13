#include "kernels/paged_attention.h"

#include "kernels/cpu/paged_attention_avx2.h"
#include "kernels/cpu_features.h"
#include "util/error.h"

namespace kvc {

void paged_attention(const PagedKvPool& pool, const PagedHeadRow& row, const GroupQueries& queries,
                     float scale, MetricAccumulation accumulation, float* out, int64_t out_stride,
                     float* scratch) {
  if (cpu_has_avx2() && avx2::paged_attention_supported(pool, queries.group)) {
    avx2::paged_attention(pool, row, queries, scale, accumulation, out, out_stride, scratch);
  } else {
    reference::paged_attention(pool, row, queries, scale, accumulation, out, out_stride, scratch);
  }
}

void paged_attention_tiled(const PagedKvPool& pool, const PagedHeadRow& row,
                           const GroupQueries& queries, float scale, float* out,
                           int64_t out_stride) {
  KVC_ASSERT(queries.n_query >= 1);
  KVC_ASSERT(queries.group >= 1);
  if (cpu_has_avx2() && avx2::paged_attention_tiled_supported(pool, queries.group)) {
    avx2::paged_attention_tiled(pool, row, queries, scale, out, out_stride);
  } else {
    reference::paged_attention_tiled(pool, row, queries, scale, out, out_stride);
  }
}

}  // namespace kvc
