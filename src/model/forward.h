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
//      32 tokens per KV head (paged_attention_tiled), or per query for decode tokens and
//      observing prompt queries (paged_attention, which also accumulates the decode metric)
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

namespace kvc {

class ForwardPass {
 public:
  ForwardPass(const Model& model, int32_t max_batch_tokens, int32_t max_context);

  // Runs one step. The caller grew every row of every sequence by its n_tokens (blocks
  // allocated, lengths raised) and filled batch.rows with the grown views; no row may exceed
  // max_context and T <= max_batch_tokens (asserted). Observation buffers named by the batch
  // must be zeroed before a sequence's first observing chunk. Returns the logits of the tokens
  // with want_logits, [n_logits, n_vocab] in token order, valid until the next run.
  std::span<const float> run(const PagedKvPool& pool, const ForwardBatch& batch);

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
  std::vector<float> inv_freq_;   // [rope_dims / 2]
  std::vector<float> x_;          // [T, n_embd] residual stream
  std::vector<float> xn_;         // [T, n_embd] normalized
  std::vector<float> q_;          // [T, n_head * head_dim]
  std::vector<float> k_;          // [T, n_head_kv * head_dim]
  std::vector<float> v_;          // [T, n_head_kv * head_dim]
  std::vector<float> attn_;       // [T, n_head * head_dim]
  std::vector<float> proj_;       // [T, n_embd]
  std::vector<float> gate_;       // [T, n_ff]
  std::vector<float> up_;         // [T, n_ff]
  std::vector<float> attn_scratch_;  // [threads, group * max_context]
  std::vector<float> logits_;     // [n_logits, n_vocab]
  std::vector<AttentionWork> work_;  // this step's attention plan, shared by every layer
  MatmulScratch matmul_scratch_;
  double attention_seconds_ = 0.0;
};

}  // namespace kvc
