// Single-sequence generation: prefill the prompt, then decode token by token, streaming each
// token to a callback. Owns its KV cache and forward-pass buffers; everything is allocated in the
// constructor, so a decode step allocates nothing.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "compress/compressor.h"
#include "engine/sampler.h"
#include "kv/paged_kv_cache.h"
#include "model/forward.h"
#include "model/model.h"

namespace kvc {

struct EngineConfig {
  int32_t max_context = 0;        // KVs per head row and prompt+output tokens; 0: model's
  int32_t max_batch_tokens = 256; // prefill chunk
  int32_t block_size = 16;
  int32_t num_blocks = 0;         // 0: enough for max_context on every head row
  KvStorageType kv_storage = KvStorageType::kF16;
  bool poison_freed = false;      // NaN-fill free/dead KV slots (debugging, tests)
};

struct GenerationRequest {
  std::vector<int32_t> prompt;
  int32_t max_tokens = 128;
  SamplingParams sampling;
  std::vector<int32_t> stop_tokens;  // generation ends after producing one of these
  CompressionConfig compression;     // policy: full cache or KV-Compress with a budget
  std::function<void(int64_t, int64_t)> prefill_progress;  // (done, total) after each chunk
};

struct GenerationStats {
  int32_t prompt_tokens = 0;
  int32_t generated_tokens = 0;
  double prefill_seconds = 0.0;
  double decode_seconds = 0.0;   // all decode steps (the first token comes from prefill logits)
  int64_t kv_retained = 0;       // KVs held by the sequence at the end (all rows)
  size_t kv_bytes = 0;           // physical bytes of the blocks the sequence owned at the end
  size_t kv_bytes_peak = 0;      // most bytes owned at any point (before compressing the prompt)
  size_t full_cache_bytes = 0;   // bytes a full cache would own for the same tokens
  int32_t compressions = 0;      // compression passes run (after prefill, forced, interval)
  double compress_seconds = 0.0; // time in planning + compaction
  CompressionResult prefill_compression;  // the pass right after prefill (zeros if none)
  std::vector<int32_t> retained_per_row;  // [n_layer * n_head_kv] KVs per head row at the end
  std::string stop_reason;       // "stop_token", "max_tokens", "context_full"
  std::vector<int32_t> tokens;   // generated ids

  double prefill_tokens_per_second() const;
  double decode_tokens_per_second() const;
};

class Generator {
 public:
  Generator(const Model& model, const EngineConfig& config);

  const EngineConfig& config() const { return config_; }
  const PagedKvCache& cache() const { return cache_; }

  // Throws kvc::Error when the prompt is empty or does not fit the context / KV budget.
  // on_token is called with each generated token as soon as it is sampled; returning false
  // stops generation (stop_reason "cancelled").
  GenerationStats generate(const GenerationRequest& request,
                           const std::function<bool(int32_t)>& on_token);

 private:
  // Compresses `seq` to the request's budget (and to max_blocks), accounting the pass.
  void compress(SequenceId seq, int32_t prompt_len, const CompressionConfig& config,
                GenerationStats& stats, int64_t max_blocks = INT64_MAX);

  const Model& model_;
  EngineConfig config_;
  PagedKvCache cache_;
  ForwardPass forward_;
};

// Resolves zeros in `config` against the model (context length, blocks for a full context).
EngineConfig resolve_engine_config(const ModelConfig& model, EngineConfig config);

}  // namespace kvc
