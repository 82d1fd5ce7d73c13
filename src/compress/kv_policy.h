// The KV eviction policies the engine can run, and the table the CLI prints (`--kv-policy`).
// Each policy is a planner that turns the cache's per-slot metric + positions into an
// EvictionPlan (kv/eviction_plan.h); compaction (kv/compaction.h) is the same for all of them.
//
// Metric each policy reads (PolicyInfo::metric; enforced by validate_compression_config,
// filled in by apply_policy_metric):
//   kvcompress                          L2 by default (L1 is the paper's ablation), global rate
//   h2o, snapkv, pyramidkv, ada-snapkv  L1 (attention probabilities, as in their papers)
//   streamingllm, random, full          none (position / seed only)
#pragma once

#include <span>
#include <string>
#include <string_view>

#include "kernels/paged_attention.h"

namespace kvc {

enum class KvPolicy {
  kFull,          // no eviction: the paged cache as a plain (per-head) paged cache
  kKvCompress,    // KV-Compress: squared-attention metric, global block eviction across heads
  kStreamingLlm,  // first sinks + most recent tokens, same count per row
  kH2O,           // accumulated L1 attention + recent window, same count per row
  kSnapKv,        // window-query L1 attention, max-pooled, same count per row
  kPyramidKv,     // SnapKV with per-layer budgets decreasing with depth
  kAdaSnapKv,     // SnapKV with per-head budgets inside each layer (Ada-KV)
  kRandom,        // seeded random subset + recent window, same count per row
};

struct PolicyInfo {
  KvPolicy policy;
  std::string_view name;         // CLI value of --kv-policy
  std::string_view description;  // one line, names the paper
  MetricAccumulation metric;     // metric read: kNone, kAbsolute (L1), kSquared (L2 default)
  bool uses_observation_window;  // reads the prefill window metric (last w queries, pooled)
};

// Every policy, in a fixed order (full first). Static storage.
std::span<const PolicyInfo> policy_infos();
const PolicyInfo& policy_info(KvPolicy policy);

// "kvcompress" -> KvPolicy::kKvCompress, ...; throws kvc::Error listing the valid names.
KvPolicy parse_policy(std::string_view name);

// "full, kvcompress, streamingllm, ..." (for help texts and errors).
std::string policy_names();

}  // namespace kvc
