#include "compress/compressor.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include <fmt/format.h>

#include "kv/compaction.h"
#include "util/error.h"
#include "util/timing.h"

namespace kvc {
EvictionPlan plan_eviction(const PagedKvCache& cache, SequenceId seq, int64_t budget_target,
                           const CompressionConfig& config, int64_t max_blocks) {
  BaselineOptions b;
  b.protected_window = config.planner.protected_window;
  b.sink_tokens = config.planner.sink_tokens;
  b.max_blocks = std::max<int64_t>(0, max_blocks);
  b.seed = config.random_seed;
  b.ada_safeguard = config.ada_safeguard;
  switch (config.policy) {
    case KvPolicy::kFull: {
      EvictionPlan none;
      none.seq = seq;
      return none;
    }
    case KvPolicy::kKvCompress:
      return plan_kvcompress_eviction(cache, seq, std::min(budget_target, max_blocks),
                                      config.planner);
    case KvPolicy::kStreamingLlm:
      b.protected_window = 0;
      b.sink_tokens = config.streaming_sinks;
      return plan_streamingllm_eviction(cache, seq, budget_target, b);
    case KvPolicy::kH2O:
      return plan_h2o_eviction(cache, seq, budget_target, b);
    case KvPolicy::kSnapKv:
      if (config.charge_repeated_kvs) b.budget_multiplier = config.group_size;
      return plan_snapkv_eviction(cache, seq, budget_target, b);
    case KvPolicy::kPyramidKv:
      if (config.charge_repeated_kvs) b.budget_multiplier = config.group_size;
      return plan_pyramidkv_eviction(cache, seq, budget_target, b);
    case KvPolicy::kAdaSnapKv:
      return plan_ada_snapkv_eviction(cache, seq, budget_target, b);
    case KvPolicy::kRandom:
      // Without the attention sinks random eviction breaks the model erratically: on SmolLM2,
      // 3 Austen contexts of 1K, KL grew from 1.10 at C=64 to 1.54 at C=512 (sinks lost in some
      // rows but not others); with one sink it fell from 0.31 to 0.10 (`kvc eval --no-tasks
      // --policies random --budgets 64,128,256,512 --fidelity-lengths 1024 --fidelity-samples 3
      // --streaming-sinks 0`, then `--streaming-sinks 1`). Sinks make it the floor that isolates
      // which middle tokens a policy picks.
      b.sink_tokens = std::max(config.planner.sink_tokens, config.streaming_sinks);
      return plan_random_eviction(cache, seq, budget_target, b);
  }
  KVC_ASSERT(false && "unknown KvPolicy");
  return {};
}

CacheBudget CompressionConfig::chunk_budget() const {
  CacheBudget b = budget;
  switch (b.kind) {
    case CacheBudget::kMaxCacheTokens: b.value = std::floor(b.value * chunk_budget_factor); break;
    case CacheBudget::kCompressionRate:
      b.value = std::max(1.0, b.value / chunk_budget_factor);
      b.min_cache = static_cast<int32_t>(
          std::min(1e9, std::floor(b.min_cache * chunk_budget_factor)));
      break;
    case CacheBudget::kFractionKept: break;  // rejected with compress_chunk
  }
  return b;
}

void validate_compression_config(const CompressionConfig& c) {
  if (!c.compresses()) return;
  validate_budget(c.budget);
  validate_planner_options(c.planner);
  if (c.metric == MetricAccumulation::kNone) fail("compression needs a metric (l1 or l2)");
  if (c.observation_window < 1) fail("--observation-window must be >= 1");
  if (c.observation_buffer < 0) fail("--observation-buffer must be >= 0");
  if (c.pool_kernel < 1 || c.pool_kernel % 2 == 0) fail("--pool-kernel must be odd and >= 1");
  if (c.interval < 0) fail("--compress-interval must be >= 0");
  if (c.compress_chunk < 0) fail("--compress-chunk must be >= 0, got {}", c.compress_chunk);
  if (c.compress_chunk > 0) {
    if (chunk_shorter_than_window(c)) {
      fail("--compress-chunk {} is shorter than the observation window {}: the window's queries "
           "must all lie in the chunk (--observation-window sets the window; auto's is {})",
           c.compress_chunk, c.observation_window, kAutoObservationWindow);
    }
    if (c.budget.kind == CacheBudget::kFractionKept) {
      fail("--compress-chunk needs a budget in KVs or a compression rate, not a fraction kept "
           "(each chunk would keep a fraction of the last)");
    }
  }
  if (!(c.chunk_budget_factor >= 1.0 && c.chunk_budget_factor <= 1e6)) {
    fail("--chunk-budget-factor must be in [1, 1e6], got {}", c.chunk_budget_factor);
  }
  if (c.chunk_budget_factor != 1.0 && c.compress_chunk == 0) {
    fail("--chunk-budget-factor applies between prefill chunks: set --compress-chunk too");
  }
  if (c.tail_probe && c.compress_chunk > 0 &&
      (c.full_observation || policy_info(c.policy).metric == MetricAccumulation::kNone)) {
    fail("the tail probe needs a policy that reads a window's attention; {}{} does not "
         "(--no-tail-probe, \"tail_probe\": false)",
         policy_info(c.policy).name, c.full_observation ? " with full observation" : "");
  }
  if (c.planner.marginal_error && !marginal_error_applies(c)) {
    fail("--marginal-error is a kvcompress (or auto) rule; policy {} has its own",
         policy_info(c.policy).name);
  }
  if (c.streaming_sinks < 0) fail("streamingllm sinks must be >= 0, got {}", c.streaming_sinks);
  if (c.group_size < 1) fail("group size must be >= 1, got {}", c.group_size);
  if (!(c.ada_safeguard >= 0.0 && c.ada_safeguard <= 1.0)) {
    fail("ada safeguard must be in [0, 1], got {}", c.ada_safeguard);
  }
  const PolicyInfo& info = policy_info(c.policy);
  if (info.metric == MetricAccumulation::kAbsolute && c.metric != MetricAccumulation::kAbsolute) {
    fail("policy {} reads L1 attention (sum of probabilities): use --metric l1", info.name);
  }
}

void apply_policy_defaults(CompressionConfig& c) {
  if (policy_info(c.policy).metric == MetricAccumulation::kAbsolute) {
    c.metric = MetricAccumulation::kAbsolute;
  }
  if (c.policy == KvPolicy::kH2O) c.full_observation = true;
}

namespace {

std::string describe_policy(const CompressionConfig& c) {
  const PolicyInfo& info = policy_info(c.policy);
  if (c.policy == KvPolicy::kStreamingLlm) {
    return fmt::format("streamingllm, {}, sinks {}", describe(c.budget), c.streaming_sinks);
  }
  if (c.policy == KvPolicy::kRandom) {
    return fmt::format("random seed {}, {}, protected window {}, sinks {}", c.random_seed,
                       describe(c.budget), c.planner.protected_window,
                       std::max(c.planner.sink_tokens, c.streaming_sinks));
  }
  const bool charged = c.charge_repeated_kvs &&
                       (c.policy == KvPolicy::kSnapKv || c.policy == KvPolicy::kPyramidKv);
  return fmt::format("{}{} {} {}{}{}{}, {}, protected window {}, sinks {}", info.name,
                     charged ? fmt::format(" (charged x{})", c.group_size) : "",
                     c.metric == MetricAccumulation::kSquared ? "L2" : "L1",
                     c.full_observation ? "full observation"
                                        : fmt::format("window {} pool {}", c.observation_window,
                                                      c.pool_kernel),
                     !c.full_observation && c.pool_successors ? " (successors)" : "",
                     c.word_spans ? " word spans" : "",
                     c.planner.marginal_error ? " marginal error" : "", describe(c.budget),
                     c.planner.protected_window, c.planner.sink_tokens);
}

}  // namespace

std::string describe(const CompressionConfig& c) {
  if (!c.compresses()) return "full (no eviction)";
  if (c.compress_chunk == 0) return describe_policy(c);
  return fmt::format("{}, compressed every {} prompt tokens{}{}", describe_policy(c),
                     c.compress_chunk,
                     c.chunk_budget_factor == 1.0
                         ? ""
                         : fmt::format(" to {:g}x the budget", c.chunk_budget_factor),
                     c.tail_probe ? ", tail probe" : "");
}

void set_policy(CompressionConfig& config, std::string_view name) {
  if (name == kAutoPolicy) {
    config.policy = KvPolicy::kKvCompress;
    config.word_spans = true;
    config.tail_probe = true;  // a no-op unless the prompt is compressed in chunks
    config.observation_window = kAutoObservationWindow;
    return;
  }
  try {
    config.policy = parse_policy(name);
  } catch (const Error&) {
    fail("unknown KV policy '{}' (valid: {})", name, policy_names_with_auto());
  }
}

std::string policy_names_with_auto() { return fmt::format("{}, {}", kAutoPolicy, policy_names()); }

CompressionResult compress_sequence(PagedKvCache& cache, SequenceId seq, int64_t prompt_len,
                                    const CompressionConfig& config, int64_t max_blocks) {
  CompressionResult r;
  r.blocks_before = cache.owned_blocks(seq);
  r.kvs_before = cache.retained_kvs(seq);
  auto start = std::chrono::steady_clock::now();
  const int64_t budget_target = target_blocks(config.budget, prompt_len, cache, seq);
  const EvictionPlan plan = plan_eviction(cache, seq, budget_target, config, max_blocks);
  r.plan_seconds = seconds_since(start);
  start = std::chrono::steady_clock::now();
  if (!plan.rows.empty()) apply_compaction(cache, plan_compaction(cache, seq, plan));
  r.compact_seconds = seconds_since(start);
  r.blocks_after = cache.owned_blocks(seq);
  r.kvs_after = cache.retained_kvs(seq);
  return r;
}

}  // namespace kvc
