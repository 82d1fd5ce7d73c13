// AVX2 entry points of paged attention; call only when cpu_has_avx2().
#pragma once

#include "kernels/paged_attention.h"

namespace kvc::avx2 {

// The decode kernel, in this build and in the AVX-512 ones (paged_attention_avx512.h), with the
// same bits in all: ONE query (queries.n_query == 1) over row slots [begin, end), left
// unnormalized as paged_attention_part's contract says (acc [group, head_dim], max and sum
// [group]); on return scratch [group, end - begin] holds e^(score - max[g]) per slot (0 where
// hidden). Needs head_dim % 16 == 0, head_dim <= 256 and group <= 8 (decode_supported).
bool paged_attention_decode_supported(const PagedKvPool& pool, int32_t group);
void paged_attention_decode(const PagedKvPool& pool, const PagedHeadRow& row,
                            const GroupQueries& queries, float scale, int32_t begin, int32_t end,
                            float* acc, float* max, float* sum, float* scratch);

bool paged_attention_tiled_supported(const PagedKvPool& pool, int32_t group);
void paged_attention_tiled(const PagedKvPool& pool, const PagedHeadRow& row,
                           const GroupQueries& queries, float scale, float* out,
                           int64_t out_stride);

}  // namespace kvc::avx2
