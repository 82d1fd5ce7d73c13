#include "kernels/paged_attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/paged_attention_avx2.h"
#include "kernels/cpu/paged_attention_avx512.h"
#include "kernels/cpu_features.h"
#include "kernels/quant.h"
#include "util/error.h"

namespace kvc {

int64_t kv_row_bytes(KvStorageType storage, int32_t head_dim) {
  switch (storage) {
    case KvStorageType::kF16: return int64_t{2} * head_dim;
    case KvStorageType::kF32: return int64_t{4} * head_dim;
    case KvStorageType::kQ8_0: return head_dim % 32 == 0 ? int64_t{34} * (head_dim / 32) : 0;
  }
  return 0;
}

namespace {

using DecodeKernel = void (*)(const PagedKvPool& pool, const PagedHeadRow& row,
                              const GroupQueries& queries, float scale, int32_t begin,
                              int32_t end, float* acc, float* max, float* sum, float* scratch);

// The x86 decode kernel for this shape (every build gives the same bits), or null: then the
// reference loops.
DecodeKernel decode_kernel(const PagedKvPool& pool, int32_t group) {
  if (active_kernel_isa() >= KernelIsa::kAvx512Vnni &&
      avx512_vnni::paged_attention_decode_supported(pool, group)) {
    return avx512_vnni::paged_attention_decode;  // vpdpbusd for q8_0 scores
  }
  if (active_kernel_isa() >= KernelIsa::kAvx512 &&
      avx512::paged_attention_decode_supported(pool, group)) {
    return avx512::paged_attention_decode;
  }
  if (cpu_has_avx2() && avx2::paged_attention_decode_supported(pool, group)) {
    return avx2::paged_attention_decode;
  }
  return nullptr;
}

// On a q8_0 cache every query is quantized as K is (q8_0 per 32 values, the reference
// quantizer) before it meets K, as llama.cpp quantizes Q for a q8_0 cache: the decode kernels
// do it inside their int8 dot products, and this gives the tiled kernels and the reference
// loops the same quantized query, back as floats (buf holds them).
GroupQueries quantized_queries(const PagedKvPool& pool, const GroupQueries& queries,
                               std::vector<float>& buf) {
  if (pool.storage != KvStorageType::kQ8_0) return queries;
  const int32_t d = pool.head_dim;
  const int64_t per_token = static_cast<int64_t>(queries.group) * d;
  buf.resize(static_cast<size_t>(queries.n_query * per_token));
  thread_local std::vector<uint8_t> blocks;  // one head's query as q8_0 blocks
  blocks.resize(static_cast<size_t>(kv_row_bytes(KvStorageType::kQ8_0, d)));
  for (int32_t t = 0; t < queries.n_query; ++t) {
    for (int32_t g = 0; g < queries.group; ++g) {
      const float* src = queries.q + t * queries.q_stride + static_cast<int64_t>(g) * d;
      float* dst = buf.data() + t * per_token + static_cast<int64_t>(g) * d;
      reference::quantize_row_for_dot(TensorType::Q8_0, src, blocks.data(), d);
      reference::dequantize_row(TensorType::Q8_0, blocks.data(), dst, d);
    }
  }
  GroupQueries out = queries;
  out.q = buf.data();
  out.q_stride = per_token;
  return out;
}

}  // namespace

void paged_attention(const PagedKvPool& pool, const PagedHeadRow& row, const GroupQueries& queries,
                     float scale, MetricAccumulation accumulation, float* out, int64_t out_stride,
                     float* scratch) {
  const DecodeKernel kernel = decode_kernel(pool, queries.group);
  if (kernel == nullptr) {
    std::vector<float> buf;
    reference::paged_attention(pool, row, quantized_queries(pool, queries, buf), scale,
                               accumulation, out, out_stride, scratch);
    return;
  }
  const int32_t n = row.length, group = queries.group, d = pool.head_dim;
  constexpr int32_t kMaxKernelGroup = 16;  // the decode kernels take groups up to 8
  KVC_ASSERT(group <= kMaxKernelGroup);
  float max[kMaxKernelGroup], sum[kMaxKernelGroup];
  for (int32_t t = 0; t < queries.n_query; ++t) {
    GroupQueries one = queries;
    one.q = queries.q + t * queries.q_stride;
    one.positions = queries.positions + t;
    one.n_query = 1;
    float* o = out + t * out_stride;  // [group, d]: the kernel's unnormalized acc, in place
    kernel(pool, row, one, scale, 0, n, o, max, sum, scratch);
    for (int32_t g = 0; g < group; ++g) {
      const float inv = sum[g] > 0.0f ? 1.0f / sum[g] : 0.0f;
      for (int32_t i = 0; i < d; ++i) o[static_cast<int64_t>(g) * d + i] *= inv;
      float* p = scratch + static_cast<int64_t>(g) * n;  // e^(s - max) -> probabilities
      for (int32_t j = 0; j < n; ++j) p[j] *= inv;
    }
    if (accumulation == MetricAccumulation::kNone || pool.metric == nullptr) continue;
    for (int32_t j0 = 0; j0 < n; j0 += pool.block_size) {  // one block at a time
      const int64_t first =
          static_cast<int64_t>(row.block_table[j0 / pool.block_size]) * pool.block_size;
      float* metric = pool.metric + first;
      float* mass = pool.mass != nullptr ? pool.mass + first : nullptr;
      const int32_t count = std::min(pool.block_size, n - j0);
      for (int32_t i = 0; i < count; ++i) {
        float add = 0.0f, add_mass = 0.0f;
        for (int32_t g = 0; g < group; ++g) {
          const float p = scratch[static_cast<int64_t>(g) * n + j0 + i];
          add += accumulation == MetricAccumulation::kSquared ? p * p : p;
          add_mass += p;
        }
        metric[i] += add;
        if (mass != nullptr) mass[i] += add_mass;
      }
    }
  }
}

void paged_attention_part(const PagedKvPool& pool, const PagedHeadRow& row,
                          const GroupQueries& queries, float scale, int32_t begin, int32_t end,
                          float* acc, float* max, float* sum, float* scratch) {
  KVC_ASSERT(queries.n_query == 1 && 0 <= begin && begin <= end && end <= row.length);
  const DecodeKernel kernel = decode_kernel(pool, queries.group);
  if (kernel != nullptr) {
    kernel(pool, row, queries, scale, begin, end, acc, max, sum, scratch);
  } else {
    std::vector<float> buf;
    reference::paged_attention_part(pool, row, quantized_queries(pool, queries, buf), scale,
                                    begin, end, acc, max, sum, scratch);
  }
}

void merge_attention_parts(int32_t n_parts, int32_t group, int32_t head_dim, const float* acc,
                           const float* max, const float* sum, float* out) {
  for (int32_t g = 0; g < group; ++g) {
    float m = -std::numeric_limits<float>::infinity();
    for (int32_t p = 0; p < n_parts; ++p) m = std::max(m, max[p * group + g]);
    float* o = out + static_cast<int64_t>(g) * head_dim;
    std::fill(o, o + head_dim, 0.0f);
    if (m == -std::numeric_limits<float>::infinity()) continue;
    float total = 0.0f;
    for (int32_t p = 0; p < n_parts; ++p) {
      const float mp = max[p * group + g];
      if (mp == -std::numeric_limits<float>::infinity()) continue;
      const float w = std::exp(mp - m);
      total += w * sum[p * group + g];
      const float* a = acc + (static_cast<int64_t>(p) * group + g) * head_dim;
      for (int32_t i = 0; i < head_dim; ++i) o[i] += w * a[i];
    }
    const float inv = 1.0f / total;
    for (int32_t i = 0; i < head_dim; ++i) o[i] *= inv;
  }
}

void paged_attention_tiled(const PagedKvPool& pool, const PagedHeadRow& row,
                           const GroupQueries& queries, float scale, float* out,
                           int64_t out_stride) {
  KVC_ASSERT(queries.n_query >= 1);
  KVC_ASSERT(queries.group >= 1);
  thread_local std::vector<float> buf;
  const GroupQueries q = quantized_queries(pool, queries, buf);
  if (active_kernel_isa() >= KernelIsa::kAvx512 &&
      avx512::paged_attention_tiled_supported(pool, q.group)) {
    avx512::paged_attention_tiled(pool, row, q, scale, out, out_stride);
  } else if (cpu_has_avx2() && avx2::paged_attention_tiled_supported(pool, q.group)) {
    avx2::paged_attention_tiled(pool, row, q, scale, out, out_stride);
  } else {
    reference::paged_attention_tiled(pool, row, q, scale, out, out_stride);
  }
}

}  // namespace kvc
