#include "compress/compressor.h"

#include <algorithm>
#include <chrono>

#include <fmt/format.h>

#include "kv/compaction.h"
#include "util/error.h"

namespace kvc {
namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

void validate_compression_config(const CompressionConfig& c) {
  if (!c.compresses()) return;
  validate_budget(c.budget);
  validate_planner_options(c.planner);
  if (c.metric == MetricAccumulation::kNone) fail("compression needs a metric (l1 or l2)");
  if (c.observation_window < 1) fail("--observation-window must be >= 1");
  if (c.observation_buffer < 0) fail("--observation-buffer must be >= 0");
  if (c.pool_kernel < 1 || c.pool_kernel % 2 == 0) fail("--pool-kernel must be odd and >= 1");
  if (c.interval < 0) fail("--compress-interval must be >= 0");
}

std::string describe(const CompressionConfig& c) {
  if (!c.compresses()) return "full (no eviction)";
  return fmt::format("kvcompress {} {}, {}, protected window {}, sinks {}",
                     c.metric == MetricAccumulation::kSquared ? "L2" : "L1",
                     c.full_observation ? "full observation"
                                        : fmt::format("window {} pool {}", c.observation_window,
                                                      c.pool_kernel),
                     describe(c.budget), c.planner.protected_window, c.planner.sink_tokens);
}

CompressionResult compress_sequence(PagedKvCache& cache, SequenceId seq, int64_t prompt_len,
                                    const CompressionConfig& config, int64_t max_blocks) {
  CompressionResult r;
  r.blocks_before = cache.owned_blocks(seq);
  r.kvs_before = cache.retained_kvs(seq);
  auto start = std::chrono::steady_clock::now();
  const int64_t target =
      std::min(target_blocks(config.budget, prompt_len, cache, seq), max_blocks);
  const EvictionPlan plan = plan_kvcompress_eviction(cache, seq, target, config.planner);
  r.plan_seconds = seconds_since(start);
  start = std::chrono::steady_clock::now();
  if (!plan.rows.empty()) apply_compaction(cache, plan_compaction(cache, seq, plan));
  r.compact_seconds = seconds_since(start);
  r.blocks_after = cache.owned_blocks(seq);
  r.kvs_after = cache.retained_kvs(seq);
  return r;
}

}  // namespace kvc
