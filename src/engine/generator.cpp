#include "engine/generator.h"

#include <algorithm>
#include <chrono>

#include "compress/prefill_metrics.h"
#include "util/error.h"
#include "util/timing.h"

namespace kvc {
double GenerationStats::prefill_tokens_per_second() const {
  return prefill_seconds > 0 ? prompt_tokens / prefill_seconds : 0.0;
}

double GenerationStats::decode_tokens_per_second() const {
  // The first generated token comes from the prefill logits; decode steps are the rest.
  const int32_t steps = generated_tokens > 0 ? generated_tokens - 1 : 0;
  return decode_seconds > 0 ? steps / decode_seconds : 0.0;
}

EngineConfig resolve_engine_config(const ModelConfig& model, EngineConfig config) {
  if (config.max_context <= 0) config.max_context = model.n_ctx_train;
  if (config.num_blocks <= 0) {
    const int64_t per_row = (config.max_context + config.block_size - 1) / config.block_size;
    config.num_blocks = static_cast<int32_t>(per_row * model.n_layer * model.n_head_kv);
  }
  return config;
}

Generator::Generator(const Model& model, const EngineConfig& config)
    : model_(model),
      config_(resolve_engine_config(model.config(), config)),
      cache_(KvCacheConfig{model.config().n_layer, model.config().n_head_kv,
                           model.config().head_dim, config_.block_size, config_.num_blocks,
                           config_.kv_storage, config_.poison_freed}),
      forward_(model, config_.max_batch_tokens, config_.max_context) {}

void Generator::compress(SequenceId seq, int32_t prompt_len, const CompressionConfig& config,
                         GenerationStats& stats, int64_t max_blocks) {
  const CompressionResult r = compress_sequence(cache_, seq, prompt_len, config, max_blocks);
  ++stats.compressions;
  stats.compress_seconds += r.plan_seconds + r.compact_seconds;
  if (stats.compressions == 1) stats.prefill_compression = r;
}

GenerationStats Generator::generate(const GenerationRequest& request,
                                    const std::function<bool(int32_t)>& on_token) {
  validate_compression_config(request.compression);
  CompressionConfig compression = request.compression;
  compression.group_size = model_.config().group_size();
  const auto n_prompt = static_cast<int32_t>(request.prompt.size());
  if (n_prompt == 0) fail("the prompt is empty");
  if (n_prompt >= config_.max_context) {
    fail("the prompt has {} tokens; the context holds {} (raise --ctx)", n_prompt,
         config_.max_context);
  }
  const SequenceId seq = cache_.add_sequence();
  GenerationStats stats;
  stats.prompt_tokens = n_prompt;
  // A freshly prefilled prompt must fit uncompressed first (compression runs after prefill).
  if (!cache_.can_append(seq, n_prompt)) {
    const int64_t needed = cache_.blocks_needed(seq, n_prompt);
    cache_.remove_sequence(seq);
    fail("the prompt needs {} KV blocks before compression; the budget has {} (raise --kv-budget)",
         needed, cache_.pool().num_blocks());
  }
  Sampler sampler(request.sampling);

  ForwardOptions prefill_options;
  prefill_options.progress = request.prefill_progress;
  if (compression.compresses()) {
    prefill_options.observers.push_back(ObservationOptions{
        compression.metric, compression.observation_window, n_prompt - 1,
        compression.full_observation, compression.observation_buffer});
    forward_.clear_observation();
  }
  auto start = std::chrono::steady_clock::now();
  std::span<const float> logits = forward_.run(cache_, seq, request.prompt, 0, prefill_options);
  stats.prefill_seconds = seconds_since(start);
  stats.kv_bytes_peak = cache_.bytes_owned(seq);
  if (compression.compresses()) {
    write_prefill_metrics(cache_, seq, forward_.observation(), model_.config().group_size(),
                          compression.full_observation ? 1 : compression.pool_kernel);
    compress(seq, n_prompt, compression, stats);
  }

  ForwardOptions decode_options;
  if (compression.compresses()) decode_options.metric = compression.metric;
  start = std::chrono::steady_clock::now();
  int32_t position = n_prompt;
  stats.stop_reason = "max_tokens";
  while (stats.generated_tokens < request.max_tokens) {
    const int32_t token = sampler.sample(logits);
    stats.tokens.push_back(token);
    ++stats.generated_tokens;
    if (!on_token(token)) {
      stats.stop_reason = "cancelled";
      break;
    }
    if (std::find(request.stop_tokens.begin(), request.stop_tokens.end(), token) !=
        request.stop_tokens.end()) {
      stats.stop_reason = "stop_token";
      break;
    }
    if (stats.generated_tokens == request.max_tokens) break;
    const int32_t steps = stats.generated_tokens - 1;
    if (compression.compresses() && compression.interval > 0 && steps > 0 &&
        steps % compression.interval == 0) {
      compress(seq, n_prompt, compression, stats);
    }
    if (!cache_.can_append(seq, 1) && compression.compresses() && compression.continual) {
      // Out of blocks: compress instead of stopping, freeing at least what the step needs.
      const int64_t shortfall = cache_.blocks_needed(seq, 1) - cache_.pool().free_blocks();
      compress(seq, n_prompt, compression, stats, cache_.owned_blocks(seq) - shortfall);
    }
    if (position + 1 > config_.max_context || !cache_.can_append(seq, 1)) {
      stats.stop_reason = "context_full";
      break;
    }
    const int32_t next[1] = {token};
    logits = forward_.run(cache_, seq, next, position, decode_options);
    ++position;
    stats.kv_bytes_peak = std::max(stats.kv_bytes_peak, cache_.bytes_owned(seq));
  }
  stats.decode_seconds = seconds_since(start);
  stats.kv_retained = cache_.retained_kvs(seq);
  stats.kv_bytes = cache_.bytes_owned(seq);
  const ModelConfig& mc = model_.config();
  const int64_t rows = static_cast<int64_t>(mc.n_layer) * mc.n_head_kv;
  const int64_t blocks_per_row = (position + config_.block_size - 1) / config_.block_size;
  stats.full_cache_bytes = static_cast<size_t>(rows * blocks_per_row) * cache_.pool().block_bytes();
  for (int32_t l = 0; l < mc.n_layer; ++l) {
    for (int32_t h = 0; h < mc.n_head_kv; ++h) {
      stats.retained_per_row.push_back(cache_.row(seq, l, h).length);
    }
  }
  cache_.remove_sequence(seq);
  return stats;
}

}  // namespace kvc
