#include "kernels/paged_kv_store.h"

#include <cstring>

#include "util/error.h"
#include "util/fp16.h"

namespace kvc {

void paged_kv_store(const PagedKvPool& pool, const PagedHeadRow& row, int32_t first_slot,
                    const float* k, int64_t k_stride, const float* v, int64_t v_stride,
                    const int32_t* positions, int32_t n) {
  KVC_ASSERT(first_slot >= 0 && n >= 0 && first_slot + n <= row.length);
  const int32_t bs = pool.block_size;
  const int32_t d = pool.head_dim;
  for (int32_t i = 0; i < n; ++i) {
    const int32_t s = first_slot + i;
    const int64_t slot = static_cast<int64_t>(row.block_table[s / bs]) * bs + s % bs;
    const float* ki = k + i * k_stride;
    const float* vi = v + i * v_stride;
    if (pool.storage == KvStorageType::kF16) {
      uint16_t* kd = static_cast<uint16_t*>(pool.k) + slot * d;
      uint16_t* vd = static_cast<uint16_t*>(pool.v) + slot * d;
      for (int32_t j = 0; j < d; ++j) {
        kd[j] = float_to_fp16(ki[j]);
        vd[j] = float_to_fp16(vi[j]);
      }
    } else {
      std::memcpy(static_cast<float*>(pool.k) + slot * d, ki, sizeof(float) * d);
      std::memcpy(static_cast<float*>(pool.v) + slot * d, vi, sizeof(float) * d);
    }
    if (pool.metric != nullptr) pool.metric[slot] = 0.0f;
    pool.positions[slot] = positions[i];
  }
}

}  // namespace kvc
