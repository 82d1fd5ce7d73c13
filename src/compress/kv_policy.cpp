#include "compress/kv_policy.h"

#include <array>

#include "util/error.h"

namespace kvc {
namespace {

constexpr std::array<PolicyInfo, 8> kPolicies = {{
    {KvPolicy::kFull, "full", "Full cache, no eviction", MetricAccumulation::kNone, false},
    {KvPolicy::kKvCompress, "kvcompress",
     "KV-Compress (Rehg 2024): squared attention, variable rate per head and layer",
     MetricAccumulation::kSquared, true},
    {KvPolicy::kStreamingLlm, "streamingllm",
     "StreamingLLM (Xiao et al. 2023): attention sinks + most recent tokens",
     MetricAccumulation::kNone, false},
    {KvPolicy::kH2O, "h2o",
     "H2O (Zhang et al. 2023): heavy hitters by accumulated attention + recent window",
     MetricAccumulation::kAbsolute, false},
    {KvPolicy::kSnapKv, "snapkv",
     "SnapKV (Li et al. 2024): pooled window-query attention, same budget per head",
     MetricAccumulation::kAbsolute, true},
    {KvPolicy::kPyramidKv, "pyramidkv",
     "PyramidKV (Cai et al. 2024): SnapKV with layer budgets decreasing with depth",
     MetricAccumulation::kAbsolute, true},
    {KvPolicy::kAdaSnapKv, "ada-snapkv",
     "Ada-KV (Feng et al. 2024): SnapKV with adaptive per-head budgets in each layer",
     MetricAccumulation::kAbsolute, true},
    {KvPolicy::kRandom, "random", "Random eviction (seeded) + sinks + recent window, a sanity floor",
     MetricAccumulation::kNone, false},
}};

}  // namespace

std::span<const PolicyInfo> policy_infos() { return kPolicies; }

const PolicyInfo& policy_info(KvPolicy policy) {
  for (const PolicyInfo& p : kPolicies) {
    if (p.policy == policy) return p;
  }
  KVC_ASSERT(false && "unknown KvPolicy");
  return kPolicies[0];
}

std::string policy_names() {
  std::string names;
  for (const PolicyInfo& p : kPolicies) {
    if (!names.empty()) names += ", ";
    names += p.name;
  }
  return names;
}

KvPolicy parse_policy(std::string_view name) {
  for (const PolicyInfo& p : kPolicies) {
    if (p.name == name) return p.policy;
  }
  fail("unknown KV policy '{}' (valid: {})", name, policy_names());
}

}  // namespace kvc
