// One compression pass over one sequence: policy (plan which KVs go) then mechanism (compact
// the rows and free their trailing blocks). Runs between model steps only.
//
// When compression runs (../docs/METHOD.md §5) is the engine's decision; this file only says how.
#pragma once

#include <cstdint>
#include <string>

#include "compress/budget.h"
#include "compress/kvcompress_planner.h"
#include "kernels/paged_attention.h"
#include "kv/paged_kv_cache.h"

namespace kvc {

enum class KvPolicy {
  kFull,        // no eviction: the paged cache as a plain (per-head) paged cache
  kKvCompress,  // KV-Compress: squared-attention metric, global block eviction across heads
};

struct CompressionConfig {
  KvPolicy policy = KvPolicy::kFull;
  CacheBudget budget{CacheBudget::kMaxCacheTokens, 128.0, 128};
  PlannerOptions planner;
  MetricAccumulation metric = MetricAccumulation::kSquared;  // L2 (default) or L1 (kAbsolute)
  int32_t observation_window = 8;  // KVC-w: the last w prompt queries observe
  bool full_observation = false;   // KVC-full: every query observes KVs >= buffer older
  int32_t observation_buffer = 10;
  int32_t pool_kernel = 7;         // max-pool of the window metric (1: none); full: none
  bool continual = true;           // compress when a decode step would run out of blocks
  int32_t interval = 0;            // also compress every `interval` decode steps (0: never)

  bool compresses() const { return policy != KvPolicy::kFull; }
};

// Throws kvc::Error naming the bad option (values come from the CLI or requests).
void validate_compression_config(const CompressionConfig& config);
std::string describe(const CompressionConfig& config);

struct CompressionResult {
  int64_t blocks_before = 0;
  int64_t blocks_after = 0;
  int64_t kvs_before = 0;
  int64_t kvs_after = 0;
  double plan_seconds = 0.0;
  double compact_seconds = 0.0;
};

// Brings `seq` down to the budget (no-op when it already fits), and to at most `max_blocks`
// blocks when that is lower (a forced pass that must free room for the next step). prompt_len
// feeds the compression-rate form of the budget. The metrics must be current (prefill metrics
// written, decode metrics accumulated by the attention kernel).
CompressionResult compress_sequence(PagedKvCache& cache, SequenceId seq, int64_t prompt_len,
                                    const CompressionConfig& config,
                                    int64_t max_blocks = INT64_MAX);

}  // namespace kvc
