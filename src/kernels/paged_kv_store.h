// Writing new KVs into a per-head paged row (the store half of paged attention): the forward
// pass appends each token's K and V through the batch's planned row views, so it never needs
// the cache object. The rows were grown by the cache before the step (blocks allocated, lengths
// raised); this kernel only fills the slots.
#pragma once

#include <cstdint>

#include "kernels/paged_attention.h"

namespace kvc {

// Fills slots [first_slot, first_slot + n) of `row` (first_slot + n <= row.length):
// K and V converted to the pool's storage type, metric 0, position from `positions`.
// k, v: [n] rows of head_dim floats, strides k_stride / v_stride; positions: [n].
void paged_kv_store(const PagedKvPool& pool, const PagedHeadRow& row, int32_t first_slot,
                    const float* k, int64_t k_stride, const float* v, int64_t v_stride,
                    const int32_t* positions, int32_t n);

}  // namespace kvc
