// Scalar paged attention: the specification for the SIMD kernel.
#include <algorithm>
#include <cstring>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/paged_attention.h"
#include "util/fp16.h"

namespace kvc::reference {
namespace {

// Value i of the K (or V) row of physical slot `slot`.
float load(const PagedKvPool& pool, const void* base, int64_t slot, int32_t i) {
  const uint8_t* row = static_cast<const uint8_t*>(base) + slot * pool.row_bytes;
  switch (pool.storage) {
    case KvStorageType::kF16: {
      uint16_t h;
      std::memcpy(&h, row + 2 * static_cast<int64_t>(i), sizeof(h));
      return fp16_to_float(h);
    }
    case KvStorageType::kF32: {
      float f;
      std::memcpy(&f, row + 4 * static_cast<int64_t>(i), sizeof(f));
      return f;
    }
    case KvStorageType::kQ8_0: {
      const uint8_t* block = row + static_cast<int64_t>(i / 32) * 34;
      uint16_t h;
      std::memcpy(&h, block, sizeof(h));
      return fp16_to_float(h) * static_cast<float>(static_cast<int8_t>(block[2 + i % 32]));
    }
  }
  return 0.0f;
}

int64_t slot_of(const PagedKvPool& pool, const PagedHeadRow& row, int32_t s) {
  return static_cast<int64_t>(row.block_table[s / pool.block_size]) * pool.block_size +
         s % pool.block_size;
}

// p[j] = scale * q . k for row slots [begin, begin + n) visible from qpos, -inf for the others;
// returns the largest visible score (-inf when none is).
float scores(const PagedKvPool& pool, const PagedHeadRow& row, const float* q, int32_t qpos,
             float scale, int32_t begin, int32_t n, float* p) {
  const int32_t d = pool.head_dim;
  float max = -std::numeric_limits<float>::infinity();
  for (int32_t s = 0; s < n; ++s) {
    const int64_t slot = slot_of(pool, row, begin + s);
    if (pool.positions[slot] > qpos) {
      p[s] = -std::numeric_limits<float>::infinity();
      continue;
    }
    float dot = 0.0f;
    for (int32_t i = 0; i < d; ++i) dot += q[i] * load(pool, pool.k, slot, i);
    p[s] = dot * scale;
    max = std::max(max, p[s]);
  }
  return max;
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
      const float max = scores(pool, row, q, qpos, scale, 0, n, p);
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
        const int64_t slot = slot_of(pool, row, s);
        for (int32_t i = 0; i < d; ++i) o[i] += p[s] * load(pool, pool.v, slot, i);
      }
    }
    if (accumulation != MetricAccumulation::kNone && pool.metric != nullptr) {
      for (int32_t s = 0; s < n; ++s) {
        const int64_t slot = slot_of(pool, row, s);
        float add = 0.0f, add_mass = 0.0f;
        for (int32_t g = 0; g < queries.group; ++g) {
          const float p = scratch[static_cast<int64_t>(g) * n + s];
          add += accumulation == MetricAccumulation::kSquared ? p * p : p;
          add_mass += p;
        }
        pool.metric[slot] += add;
        if (pool.mass != nullptr) pool.mass[slot] += add_mass;
      }
    }
  }
}

void paged_attention_part(const PagedKvPool& pool, const PagedHeadRow& row,
                          const GroupQueries& queries, float scale, int32_t begin, int32_t end,
                          float* acc, float* max, float* sum, float* scratch) {
  const int32_t d = pool.head_dim;
  const int32_t n = end - begin;
  const int32_t qpos = queries.positions[0];
  for (int32_t g = 0; g < queries.group; ++g) {
    const float* q = queries.q + static_cast<int64_t>(g) * d;
    float* p = scratch + static_cast<int64_t>(g) * n;
    const float m = scores(pool, row, q, qpos, scale, begin, n, p);
    float* a = acc + static_cast<int64_t>(g) * d;
    for (int32_t i = 0; i < d; ++i) a[i] = 0.0f;
    max[g] = m;
    double total = 0.0;
    for (int32_t s = 0; s < n; ++s) {
      if (std::isinf(p[s])) continue;
      const float e = std::exp(p[s] - m);
      total += e;
      const int64_t slot = slot_of(pool, row, begin + s);
      for (int32_t i = 0; i < d; ++i) a[i] += e * load(pool, pool.v, slot, i);
    }
    sum[g] = static_cast<float>(total);
  }
}

// Chunked online softmax, per query row m = t * group + g: after each chunk of slots,
// out_m = sum_s exp(score_s - max_m) v_s and sum_m = sum_s exp(score_s - max_m) over the slots
// seen so far; a larger max rescales both by exp(old_max - new_max). out_m / sum_m at the end.
void paged_attention_tiled(const PagedKvPool& pool, const PagedHeadRow& row,
                           const GroupQueries& queries, float scale, float* out,
                           int64_t out_stride) {
  constexpr int32_t kChunk = 32;  // slots per step (as the SIMD kernels), independent of the block size
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  const int32_t d = pool.head_dim;
  const int32_t group = queries.group;
  const int32_t n_rows = queries.n_query * group;
  const auto out_row = [&](int32_t m) {
    return out + (m / group) * out_stride + static_cast<int64_t>(m % group) * d;
  };
  std::vector<float> row_max(static_cast<size_t>(n_rows), kNegInf);  // [n_rows]
  std::vector<float> row_sum(static_cast<size_t>(n_rows), 0.0f);      // [n_rows]
  std::vector<float> k(static_cast<size_t>(kChunk) * d), v(k.size());  // [kChunk, d] as f32
  for (int32_t m = 0; m < n_rows; ++m) std::fill_n(out_row(m), d, 0.0f);
  const int32_t max_qpos =
      *std::max_element(queries.positions, queries.positions + queries.n_query);

  for (int32_t c0 = 0; c0 < row.length; c0 += kChunk) {
    const int32_t nc = std::min(kChunk, row.length - c0);
    int32_t kpos[kChunk];
    int64_t slots[kChunk];
    for (int32_t j = 0; j < nc; ++j) {
      slots[j] = slot_of(pool, row, c0 + j);
      kpos[j] = pool.positions[slots[j]];
    }
    if (*std::min_element(kpos, kpos + nc) > max_qpos) continue;  // all in the tile's future
    for (int32_t j = 0; j < nc; ++j) {
      const int64_t slot = slots[j];
      for (int32_t i = 0; i < d; ++i) {
        k[static_cast<size_t>(j) * d + i] = load(pool, pool.k, slot, i);
        v[static_cast<size_t>(j) * d + i] = load(pool, pool.v, slot, i);
      }
    }
    for (int32_t m = 0; m < n_rows; ++m) {
      const int32_t t = m / group;
      const float* q = queries.q + t * queries.q_stride + static_cast<int64_t>(m % group) * d;
      float score[kChunk];
      float chunk_max = kNegInf;
      for (int32_t j = 0; j < nc; ++j) {
        score[j] = kNegInf;
        if (kpos[j] > queries.positions[t]) continue;
        float dot = 0.0f;
        for (int32_t i = 0; i < d; ++i) dot += q[i] * k[static_cast<size_t>(j) * d + i];
        score[j] = dot * scale;
        chunk_max = std::max(chunk_max, score[j]);
      }
      if (chunk_max == kNegInf) continue;  // nothing visible to this query in the chunk
      const float new_max = std::max(row_max[m], chunk_max);
      const float alpha = std::exp(row_max[m] - new_max);  // 0 on the first visible chunk
      row_max[m] = new_max;
      float* o = out_row(m);
      for (int32_t i = 0; i < d; ++i) o[i] *= alpha;
      row_sum[m] *= alpha;
      for (int32_t j = 0; j < nc; ++j) {
        if (score[j] == kNegInf) continue;
        const float p = std::exp(score[j] - new_max);
        row_sum[m] += p;
        for (int32_t i = 0; i < d; ++i) o[i] += p * v[static_cast<size_t>(j) * d + i];
      }
    }
  }
  for (int32_t m = 0; m < n_rows; ++m) {
    const float inv = row_sum[m] > 0.0f ? 1.0f / row_sum[m] : 0.0f;
    float* o = out_row(m);
    for (int32_t i = 0; i < d; ++i) o[i] *= inv;
  }
}

}  // namespace kvc::reference
