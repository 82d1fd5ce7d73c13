// The forward pass of a Llama-family decoder over the paged per-head KV cache.
//
// One ForwardPass owns all activation buffers, sized once for `max_batch_tokens` tokens and
// `max_context` KVs per head row, so a step allocates nothing. Prompts longer than
// max_batch_tokens are run in chunks; each chunk attends to everything already cached.
//
// Per layer (shapes for a chunk of T tokens):
//   x [T, n_embd] -> rms_norm -> q [T, n_head*hd], k,v [T, n_head_kv*hd] (+bias) -> RoPE(q, k)
//   -> append k, v to the cache rows (seq, layer, h) -> paged attention: query tiles of up to
//      32 tokens per KV head (paged_attention_tiled), or per (token, KV head) for observing
//      queries and single-token decode steps (paged_attention, which also accumulates metrics)
//   -> attn [T, n_head*hd] -> wo -> x += ; rms_norm -> gate, up [T, n_ff] -> silu(gate)*up
//   -> w_down -> x +=
// then rms_norm and the output matrix for the tokens whose logits are wanted.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "kernels/matmul.h"
#include "kernels/paged_attention.h"
#include "kv/observation_scores.h"
#include "kv/paged_kv_cache.h"
#include "model/model.h"

namespace kvc {

enum class LogitsFor { kLastToken, kAllTokens };

// Which prompt queries "observe" the KVs during prefill (KV-Compress §2), and how their
// attention is recorded. The forward pass only records raw per-query-head sums; turning them
// into eviction metrics (pooling, summing over the group) is policy, in src/compress/.
struct ObservationOptions {
  MetricAccumulation kind = MetricAccumulation::kNone;  // kNone: observe nothing
  // Limited observation: queries at positions > last_position - window observe every KV.
  int32_t window = 8;
  int32_t last_position = -1;  // position of the final prompt token
  // Full observation: every query observes the KVs at least `buffer` positions older.
  bool full = false;
  int32_t buffer = 10;
};

struct ForwardOptions {
  LogitsFor logits = LogitsFor::kLastToken;
  // Decode-time metric accumulation into the cache (KV-Compress continual compression).
  // Only for single-token steps (assertion): parallel queries of one row would race.
  MetricAccumulation metric = MetricAccumulation::kNone;
  // Observers of this prefill; observer i records into observation(i). Several observers let
  // one prefill serve several policies (`kvc eval`): each query's probabilities are computed
  // once and added to every observer that wants them.
  std::vector<ObservationOptions> observers;
  // Called after each prefill chunk with (tokens done, tokens total); for progress bars.
  std::function<void(int64_t, int64_t)> progress;
};

class ForwardPass {
 public:
  ForwardPass(const Model& model, int32_t max_batch_tokens, int32_t max_context);

  // Runs `tokens` at positions start_pos.. through the model, appending their KVs to `seq`.
  // The caller has checked cache.can_append(seq, tokens.size()) (asserted) and that no head
  // row will exceed max_context. Returns the logits: [1, n_vocab] for kLastToken, else
  // [tokens.size(), n_vocab] (kAllTokens; tokens.size() <= max_batch_tokens then).
  std::span<const float> run(PagedKvCache& cache, SequenceId seq, std::span<const int32_t> tokens,
                             int32_t start_pos, const ForwardOptions& options = {});

  // Zeroes the sums of `n_observers` observers (call before a prefill that observes, with
  // options.observers.size()); buffers are sized on first use and reused.
  void clear_observation(int32_t n_observers = 1);
  ObservationScores observation(int32_t observer = 0) const;

  int32_t max_batch_tokens() const { return max_batch_tokens_; }
  int32_t max_context() const { return max_context_; }

 private:
  void run_chunk(PagedKvCache& cache, SequenceId seq, std::span<const int32_t> tokens,
                 int32_t start_pos, const ForwardOptions& options, bool want_logits);
  void attention(PagedKvCache& cache, SequenceId seq, int32_t layer, int32_t n_tokens,
                 const ForwardOptions& options);
  static bool observes(const ObservationOptions& o, int32_t position);

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
  std::vector<int32_t> positions_;  // [T]
  std::vector<float> attn_scratch_;  // [threads, group * max_context]
  std::vector<float> logits_;     // [T or 1, n_vocab]
  std::vector<float> observation_;  // [observers, n_layer, n_head, max_context], on first use
  int32_t n_observers_ = 0;
  MatmulScratch matmul_scratch_;
};

}  // namespace kvc
