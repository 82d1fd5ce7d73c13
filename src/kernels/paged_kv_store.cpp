#include "kernels/paged_kv_store.h"

#include <cstring>

#include "kernels/cpu/ops_avx2.h"
#include "kernels/cpu_features.h"
#include "kernels/quant.h"
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
    uint8_t* kd = static_cast<uint8_t*>(pool.k) + slot * pool.row_bytes;
    uint8_t* vd = static_cast<uint8_t*>(pool.v) + slot * pool.row_bytes;
    switch (pool.storage) {
      case KvStorageType::kF16:
        if (cpu_has_avx2()) {  // the same bits (ops_avx2.h)
          avx2::float_to_fp16_row(ki, reinterpret_cast<uint16_t*>(kd), d);
          avx2::float_to_fp16_row(vi, reinterpret_cast<uint16_t*>(vd), d);
          break;
        }
        for (int32_t j = 0; j < d; ++j) {
          const uint16_t kh = float_to_fp16(ki[j]), vh = float_to_fp16(vi[j]);
          std::memcpy(kd + 2 * j, &kh, 2);
          std::memcpy(vd + 2 * j, &vh, 2);
        }
        break;
      case KvStorageType::kF32:
        std::memcpy(kd, ki, sizeof(float) * d);
        std::memcpy(vd, vi, sizeof(float) * d);
        break;
      case KvStorageType::kQ8_0:
        // ggml's block_q8_0, the same bits on every kernel set (kernels/quant.h).
        quantize_row_for_dot(TensorType::Q8_0, ki, kd, d);
        quantize_row_for_dot(TensorType::Q8_0, vi, vd, d);
        break;
    }
    if (pool.metric != nullptr) pool.metric[slot] = 0.0f;
    if (pool.mass != nullptr) pool.mass[slot] = 0.0f;
    pool.positions[slot] = positions[i];
  }
}

}  // namespace kvc
