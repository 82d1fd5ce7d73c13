// Attention over a per-head paged KV cache (KV-Compress layout, docs/design.md §1).
//
// One physical block holds `block_size` token slots of ONE (layer, KV head): K and V are
// [num_blocks, block_size] arrays of slot rows, each row the head_dim values of one token in
// the pool's storage type (kv_row_bytes); slot metadata (original position, eviction metric)
// is [num_blocks, block_size]. A head row is a block table plus a length; slot s of the row
// lives in block table[s / block_size] at offset s % block_size. Only the first `length` slots
// of a row are read. Keys are stored after RoPE, so slot order does not matter; causality is
// enforced from the stored positions (a query at position p sees slots with position <= p).
//
// The kernel knows nothing about sequences, layers or models: raw pointers plus descriptors.
#pragma once

#include <cstdint>

namespace kvc {

// How a slot row of head_dim K (or V) values is stored:
//   kF16   head_dim fp16 values
//   kF32   head_dim floats
//   kQ8_0  head_dim / 32 blocks of 34 bytes: an fp16 scale d, then 32 int8 quants q, value
//          d * q (ggml's block_q8_0, d = max|x| / 127); needs head_dim % 32 == 0. The scales
//          live inside the slot row, so a block of the pool stays self-contained and
//          compaction moves a slot's scales with its quants. Every kernel quantizes the
//          queries the same way before they meet K (as llama.cpp does for a q8_0 cache): the
//          decode kernels score with exact int8 dot products, the tiled kernels and the
//          reference get the quantized query back as floats. The decode kernels also sum
//          the values in integers, with each weight rounded to 2^-14 of the largest in its
//          32-slot chunk (kernels/cpu/x86_tile_helpers.h: far below q8_0's own rounding).
enum class KvStorageType : uint8_t { kF16, kF32, kQ8_0 };

// Bytes of one slot row; 0 for a head_dim kQ8_0 cannot store (not a multiple of 32).
int64_t kv_row_bytes(KvStorageType storage, int32_t head_dim);

// The shared physical pool (one per cache). Attention reads K/V/positions and may add to the
// metric; paged_kv_store (kernels/paged_kv_store.h) writes new KVs through the same view.
struct PagedKvPool {
  void* k = nullptr;                  // [num_blocks * block_size] slot rows of row_bytes
  void* v = nullptr;                  // [num_blocks * block_size] slot rows of row_bytes
  int32_t* positions = nullptr;       // [num_blocks, block_size]
  float* metric = nullptr;            // [num_blocks, block_size], may be null
  // Attention mass seen by each slot (the sum of p, whatever the metric sums): the second sum
  // of the marginal-error eviction rule (compress/kvcompress_planner.h). May be null.
  float* mass = nullptr;              // [num_blocks, block_size]
  int32_t block_size = 16;
  int32_t head_dim = 0;
  KvStorageType storage = KvStorageType::kF16;
  int64_t row_bytes = 0;              // kv_row_bytes(storage, head_dim)
};

// One head row: which blocks, how many slots.
struct PagedHeadRow {
  const int32_t* block_table = nullptr;  // [ceil(length / block_size)]
  int32_t length = 0;
};

enum class MetricAccumulation : uint8_t {
  kNone,
  kSquared,   // metric[slot] += sum over the query group of p^2 (KV-Compress L2, default)
  kAbsolute,  // metric[slot] += sum over the query group of p   (L1 / H2O)
};

// Queries of one KV head's group for `n_query` tokens.
struct GroupQueries {
  const float* q = nullptr;         // [n_query] rows of stride q_stride, each [group, head_dim]
  int64_t q_stride = 0;             // floats between consecutive tokens
  const int32_t* positions = nullptr;  // [n_query] query positions (for causality)
  int32_t n_query = 0;
  int32_t group = 1;                // query heads sharing this KV head
};

// out: [n_query] rows of stride out_stride, each [group, head_dim].
// scratch: [group * row.length] floats; on return it holds the attention probabilities of the
// last query, [group, row.length] (0 for masked slots): prefill metrics are read from there.
// scale: usually 1/sqrt(head_dim).
// With accumulation != kNone, each query's probabilities (summed over the group) are added
// to pool.metric of the slots it attends (decode-time metric of KV-Compress; squared for
// kSquared), and their plain sum to pool.mass when it is set.
// Each query runs the decode kernel (scores, exact softmax, values: three passes over the row
// with the rows ahead prefetched), whose AVX2 and AVX-512 builds give the same bits
// (kernels/cpu/x86_tile_helpers.h); shapes they do not take run the reference.
void paged_attention(const PagedKvPool& pool, const PagedHeadRow& row, const GroupQueries& queries,
                     float scale, MetricAccumulation accumulation, float* out, int64_t out_stride,
                     float* scratch);

// Query-tiled attention for prefill: the same outputs as paged_attention without metric
// accumulation (equal up to float rounding) for n_query >= 1 tokens at once. The row is read in
// chunks of slots with an online (flash-style) softmax, so each K and V slot is loaded and
// converted from f16 once per tile of kMaxQueryTile tokens instead of once per query token.
// Causality is per slot from the stored positions (rows need not be in position order). A
// query that sees no slot gets a zero output. No scratch and no probabilities: observers use
// paged_attention. out: [n_query] rows of stride out_stride, each [group, head_dim], used as
// the running accumulator, so it must not alias the queries.
constexpr int32_t kMaxQueryTile = 32;
void paged_attention_tiled(const PagedKvPool& pool, const PagedHeadRow& row,
                           const GroupQueries& queries, float scale, float* out,
                           int64_t out_stride);

// Flash-decoding: ONE query's attention over a slot range [begin, end) of a row, left
// unnormalized, so one long row can be split over threads and the parts merged after. Per head
// g of the group: max[g] = the largest visible score m_g (-inf when no slot of the range is
// visible), sum[g] = sum_j e^(s_gj - m_g), acc[g * head_dim + i] = sum_j e^(s_gj - m_g) v_j[i].
// queries.n_query must be 1. scratch: [group * (end - begin)] floats. No metric accumulation:
// a metric needs the probabilities of the whole row (split only rows that accumulate none).
void paged_attention_part(const PagedKvPool& pool, const PagedHeadRow& row,
                          const GroupQueries& queries, float scale, int32_t begin, int32_t end,
                          float* acc, float* max, float* sum, float* scratch);
// out[g * head_dim + i] = sum_p e^(max_p[g] - M) acc_p[g][i] / sum_p e^(max_p[g] - M) sum_p[g]
// with M = max_p max_p[g], parts in order p = 0 .. n_parts - 1 (a fixed order: the result does
// not depend on which thread ran which part). Part p's values sit at acc + p * group * head_dim,
// max + p * group and sum + p * group. A head no part sees gets a zero output.
void merge_attention_parts(int32_t n_parts, int32_t group, int32_t head_dim, const float* acc,
                           const float* max, const float* sum, float* out);

namespace reference {
// Plain scalar loops, same contract: the specification the optimized path is tested against.
void paged_attention(const PagedKvPool& pool, const PagedHeadRow& row, const GroupQueries& queries,
                     float scale, MetricAccumulation accumulation, float* out, int64_t out_stride,
                     float* scratch);
// Scalar version of the tiled kernel (same chunked online softmax as the AVX2 one).
void paged_attention_tiled(const PagedKvPool& pool, const PagedHeadRow& row,
                           const GroupQueries& queries, float scale, float* out,
                           int64_t out_stride);
void paged_attention_part(const PagedKvPool& pool, const PagedHeadRow& row,
                          const GroupQueries& queries, float scale, int32_t begin, int32_t end,
                          float* acc, float* max, float* sum, float* scratch);
}  // namespace reference

}  // namespace kvc
