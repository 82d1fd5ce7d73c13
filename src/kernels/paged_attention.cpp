#include "kernels/paged_attention.h"

#include "kernels/cpu/paged_attention_avx2.h"
#include "kernels/cpu_features.h"

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

}  // namespace kvc
