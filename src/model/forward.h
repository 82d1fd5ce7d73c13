// The forward pass of a Llama-family decoder over the per-head paged KV cache, for one step of
// several sequences at once (a ForwardBatch: decode tokens and prefill chunks side by side).
//
// One ForwardPass owns all activation buffers, sized once for `max_batch_tokens` tokens and
// `max_context` KVs per head row, so a step allocates nothing. Every matmul runs all T tokens
// of the step at once, so batched decode reads each weight once per step, not once per
// sequence.
//
// Per layer (shapes for a step of T tokens over all sequences):
//   x [T, n_embd] -> rms_norm -> q [T, n_head*hd], k,v [T, n_head_kv*hd] (+bias) -> RoPE(q, k)
//   -> store k, v into each sequence's head rows (paged_kv_store through the planned views)
//   -> paged attention per planned work unit (kernels/paged_attention.h): query tiles of up to
//      32 tokens per KV head (paged_attention_tiled) for every prompt token, and per query
//      for decode tokens (paged_attention, which also accumulates the decode metric) and,
//      again and only for the probabilities, for observing prompt queries (so a prompt's
//      outputs never depend on who observes it);
//      a decode token that accumulates no metric and whose row is longer than
//      kDecodeSplitSlots is split into parts of that many slots run on any thread and merged
//      in order (paged_attention_part, merge_attention_parts), so one long row keeps every
//      core busy. The split depends on the row's length only, never on the batch or the
//      thread count, so a sequence's bits do not depend on what it is batched with.
//   -> attn [T, n_head*hd] -> wo -> x += ; rms_norm -> gate, up [T, n_ff] -> silu(gate)*up
//   -> w_down -> x +=
// then rms_norm and the output matrix for the tokens whose logits are wanted.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "kernels/matmul.h"
#include "kernels/paged_attention.h"
#include "model/forward_batch.h"
#include "model/model.h"
#include "util/unbacked_vector.h"

namespace kvc {

// Slots per flash-decoding part: a part's fixed cost (one merge of group x head_dim floats)
// is small against 512 K and V reads, and a 2K-token row already gives two threads 4 parts.
inline constexpr int32_t kDecodeSplitSlots = 512;
// Steps of at least this many tokens run their per-token work (norms, RoPE, KV stores,
// activations) on every worker thread; smaller steps (decode) keep it on one, where a parallel
// region would cost more than the work.
inline constexpr int32_t kParallelTokens = 8;

class ForwardPass {
 public:
  ForwardPass(const Model& model, int32_t max_batch_tokens, int32_t max_context);

  // Runs one step. The caller grew every row of every sequence by its n_tokens (blocks
  // allocated, lengths raised) and filled batch.rows with the grown views; no row may exceed
  // max_context and T <= max_batch_tokens (asserted). Observation buffers named by the batch
  // must be zeroed before a sequence's first observing chunk. Returns the logits of the tokens
  // with want_logits, [n_logits, n_vocab] in token order, valid until the next run.
  std::span<const float> run(const PagedKvPool& pool, const ForwardBatch& batch);

  // Attention of queries captured earlier (BatchSequence::captured) over one sequence's rows as
  // they are now, recorded as an observer records: for every layer and query head,
  //   sums[(layer * n_head + query_head) * stride + slot] += p (kAbsolute) or p^2 (kSquared)
  // for each query's probability p of the row's slot. rows: [n_layer * n_head_kv] views (index
  // layer * n_head_kv + kv_head), each no longer than `stride` or max_context; queries:
  // [n_layer, n_query, n_head * head_dim] after RoPE; positions: [n_query] (causality).
  void observe(const PagedKvPool& pool, std::span<const PagedHeadRow> rows, const float* queries,
               const int32_t* positions, int32_t n_query, MetricAccumulation kind, float* sums,
               int64_t stride);

  int32_t max_batch_tokens() const { return max_batch_tokens_; }
  int32_t max_context() const { return max_context_; }
  // Wall time spent in attention (KV stores included) since construction.
  double attention_seconds() const { return attention_seconds_; }

 private:
  void attention(const PagedKvPool& pool, const ForwardBatch& batch, int32_t layer);

  const Model& model_;
  const ModelConfig& config_;
  int32_t max_batch_tokens_;
  int32_t max_context_;
  std::vector<float> inv_freq_;  // [rope_dims / 2]
  // The step buffers, sized for max_batch_tokens; a step writes (and backs) the rows it uses.
  UnbackedVector<float> x_;             // [T, n_embd] residual stream
  UnbackedVector<float> xn_;            // [T, n_embd] normalized
  UnbackedVector<float> q_;             // [T, n_head * head_dim]
  UnbackedVector<float> k_;             // [T, n_head_kv * head_dim]
  UnbackedVector<float> v_;             // [T, n_head_kv * head_dim]
  UnbackedVector<float> attn_;          // [T, n_head * head_dim]
  UnbackedVector<float> proj_;          // [T, n_embd]
  UnbackedVector<float> gate_;          // [T, n_ff]
  UnbackedVector<float> up_;            // [T, n_ff]
  UnbackedVector<float> rope_;          // [T, rope_dims] this step's rotations (rope_angles)
  UnbackedVector<float> attn_scratch_;  // [threads, group * max_context]
  std::vector<float> observed_out_;     // [threads, group * head_dim] observe-only outputs, unread
  UnbackedVector<float> logits_;        // [n_logits, n_vocab]
  std::vector<AttentionWork> work_;     // this step's attention plan, shared by every layer
  // Flash-decoding parts of this layer's long decode rows (attention()): per part the
  // unnormalized [group, head_dim] output, and per head its max and sum.
  struct AttentionItem {
    int32_t unit;   // index into work_
    int32_t head;   // KV head
    int32_t part;   // -1: the whole unit; else the part of a split row
    int32_t split;  // index into splits_ (parts only)
  };
  struct DecodeSplit {
    int32_t unit;
    int32_t head;
    int32_t n_parts;
    int32_t first_part;  // offset in part_acc_ / part_max_ / part_sum_, in parts
  };
  std::vector<AttentionItem> items_;  // this layer's parallel attention loop
  std::vector<DecodeSplit> splits_;
  std::vector<float> part_acc_, part_max_, part_sum_;
  MatmulScratch matmul_scratch_;
  double attention_seconds_ = 0.0;
};

}  // namespace kvc
