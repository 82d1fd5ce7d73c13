// One prefill, many compression settings (`kvc eval`): the prompt runs through the model once,
// recording in the same pass every observation any setting will read (window L2, window L1,
// full L1, ...); each setting then works on its own copy of the prefilled sequence (a fork),
// compresses it exactly as the engine does after prefill, decodes or scores continuation tokens
// on it, and gives its blocks back. A sweep of 8 policies x 5 budgets costs one prefill plus
// 40 short decodes per sample.
//
// A fork starts from the prefill's last logits (the first generated token, as in
// Generator::generate, comes from the uncompressed prefill), then every later token is
// computed over the fork's compressed rows.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "compress/compressor.h"
#include "kv/paged_kv_cache.h"
#include "model/forward.h"
#include "model/model.h"

namespace kvc::eval {

// A named compression setting under evaluation; the budget C is set per fork.
struct PolicyVariant {
  std::string name;          // "full", "kvcompress", "kvcompress-l1", "snapkv", ...
  CompressionConfig config;  // the policy's defaults (apply_policy_defaults) + base options
};

// Every KvPolicy by its CLI name, plus the KV-Compress ablations of the paper:
//   kvcompress-l1    L1 metric instead of L2 (squared attention)
//   kvcompress-w32   observation window of 32 queries instead of 8
//   kvcompress-full  full observation (every query observes KVs >= observation_buffer older)
// `base` carries the shared options (protected window, sinks, seeds, ...). Throws kvc::Error
// listing the valid names.
PolicyVariant make_policy_variant(std::string_view name, const CompressionConfig& base);
std::string policy_variant_names();

struct ForkStats {
  int64_t kvs_kept = 0;           // KVs the fork holds after compression (all rows)
  int64_t kvs_full = 0;           // KVs of the uncompressed prefill
  size_t bytes_kept = 0;          // physical bytes of the fork's blocks after compression
  size_t bytes_full = 0;          // physical bytes of the uncompressed prefill's blocks
  double compress_seconds = 0.0;  // metric write + plan + compaction
  std::vector<int32_t> retained_per_row;  // [n_layer * n_head_kv] after compression
};

class SharedPrefill {
 public:
  // max_context: longest prompt + continuation that will run; the pool holds the prefilled
  // sequence plus one fork of the same size that can grow to max_context.
  SharedPrefill(const Model& model, int32_t max_context, std::span<const PolicyVariant> variants,
                bool poison_kv);
  ~SharedPrefill();
  SharedPrefill(const SharedPrefill&) = delete;
  SharedPrefill& operator=(const SharedPrefill&) = delete;

  // Runs `prompt` (replacing the previous one), recording the observations of every variant.
  // Returns the last position's logits, valid until the next prefill. Throws kvc::Error when
  // the prompt is empty or longer than max_context allows.
  std::span<const float> prefill(std::span<const int32_t> prompt,
                                 const std::function<void(int64_t, int64_t)>& progress = {});
  int32_t prompt_length() const { return prompt_len_; }

  // A copy of the prefilled sequence compressed by `variant` to C = budget KVs per head row
  // (the full policy: an untouched copy). Release it before the next fork.
  SequenceId fork(const PolicyVariant& variant, int32_t budget, ForkStats* stats = nullptr);
  void release(SequenceId fork);

  // Greedy decoding on a fork: `first` is the token chosen from the prefill logits; decodes until
  // max_new tokens (first included) or a stop token. Returns the tokens (first included).
  std::vector<int32_t> greedy(SequenceId fork, int32_t first, int32_t max_new,
                              std::span<const int32_t> stop_tokens);

  // Teacher forcing on a fork: runs `tokens` at positions prompt_length().. and returns their
  // logits, [tokens.size(), n_vocab] (tokens.size() <= the prefill chunk, 256).
  std::span<const float> score(SequenceId fork, std::span<const int32_t> tokens);

  const PagedKvCache& cache() const { return cache_; }

 private:
  int32_t observer_index(const CompressionConfig& config) const;

  const Model& model_;
  int32_t max_context_;
  PagedKvCache cache_;
  ForwardPass forward_;
  std::vector<ObservationOptions> observers_;  // last_position filled per prefill
  SequenceId base_ = -1;
  int32_t prompt_len_ = 0;
  int32_t fork_len_ = 0;  // tokens appended to the live fork after the prompt
  // Decode steps accumulate the fork's metric as Generator's do (no effect on the tokens; it
  // keeps the fork's cache state identical to the engine's).
  MetricAccumulation fork_metric_ = MetricAccumulation::kNone;
};

}  // namespace kvc::eval
