// Scalar paged attention: the specification for the SIMD kernel.
#include <cmath>
#include <limits>

#include "kernels/paged_attention.h"
#include "util/fp16.h"

namespace kvc::reference {
namespace {

float load(const PagedKvPool& pool, const void* base, int64_t index) {
  return pool.storage == KvStorageType::kF16 ? fp16_to_float(static_cast<const uint16_t*>(base)[index])
                                             : static_cast<const float*>(base)[index];
}

}  // namespace

void paged_attention(const PagedKvPool& pool, const PagedHeadRow& row, const GroupQueries& queries,
                     float scale, MetricAccumulation accumulation, float* out, int64_t out_stride,
                     float* scratch) {
  const int32_t d = pool.head_dim;
  const int32_t n = row.length;
  for (int32_t t = 0; t < queries.n_query; ++t) {
    const int32_t qpos = queries.positions[t];
    for (int32_t g = 0; g < queries.group; ++g) {
      const float* q = queries.q + t * queries.q_stride + static_cast<int64_t>(g) * d;
      float* p = scratch + static_cast<int64_t>(g) * n;
      float max = -std::numeric_limits<float>::infinity();
      for (int32_t s = 0; s < n; ++s) {
        const int64_t slot = static_cast<int64_t>(row.block_table[s / pool.block_size]) *
                                 pool.block_size + s % pool.block_size;
        if (pool.positions[slot] > qpos) {
          p[s] = -std::numeric_limits<float>::infinity();
          continue;
        }
        float dot = 0.0f;
        for (int32_t i = 0; i < d; ++i) dot += q[i] * load(pool, pool.k, slot * d + i);
        p[s] = dot * scale;
        max = std::max(max, p[s]);
      }
      double sum = 0.0;
      for (int32_t s = 0; s < n; ++s) {
        p[s] = std::isinf(p[s]) ? 0.0f : std::exp(p[s] - max);
        sum += p[s];
      }
      float* o = out + t * out_stride + static_cast<int64_t>(g) * d;
      for (int32_t i = 0; i < d; ++i) o[i] = 0.0f;
      for (int32_t s = 0; s < n; ++s) {
        p[s] = static_cast<float>(p[s] / sum);
        if (p[s] == 0.0f) continue;
        const int64_t slot = static_cast<int64_t>(row.block_table[s / pool.block_size]) *
                                 pool.block_size + s % pool.block_size;
        for (int32_t i = 0; i < d; ++i) o[i] += p[s] * load(pool, pool.v, slot * d + i);
      }
    }
    if (accumulation != MetricAccumulation::kNone && pool.metric != nullptr) {
      for (int32_t s = 0; s < n; ++s) {
        const int64_t slot = static_cast<int64_t>(row.block_table[s / pool.block_size]) *
                                 pool.block_size + s % pool.block_size;
        float add = 0.0f;
        for (int32_t g = 0; g < queries.group; ++g) {
          const float p = scratch[static_cast<int64_t>(g) * n + s];
          add += accumulation == MetricAccumulation::kSquared ? p * p : p;
        }
        pool.metric[slot] += add;
      }
    }
  }
}

}  // namespace kvc::reference
