#include "eval/policy_variants.h"

#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#include "util/error.h"

namespace kvc::eval {
namespace {

struct VariantName {
  std::string_view name;
  std::string_view description;
};

constexpr VariantName kAblations[] = {
    {"kvcompress-l1", "KV-Compress with the L1 metric (sum of attention) instead of L2"},
    {"kvcompress-w32", "KV-Compress observing with the last 32 prompt queries instead of 8"},
    {"kvcompress-full", "KV-Compress with full observation (every query, KVs >= 10 older)"},
    {"kvcompress-words",
     "KV-Compress scoring each whitespace-delimited word by its best token (auto with the "
     "paper's window of 8 and no tail probe)"},
    {"kvcompress-words-floor",
     "kvcompress-words where every head first keeps its top 0.2 x C KVs (Ada-KV's safeguard)"},
    {"kvcompress-err",
     "KV-Compress giving up blocks by marginal error (metric + renormalization of lost mass)"},
    {"kvcompress-words-err", "kvcompress-words giving up blocks by marginal error"},
    {"kvcompress-words-succ",
     "kvcompress-words whose max-pool reaches only the tokens after an attended KV"},
};

}  // namespace

PolicyVariant make_policy_variant(std::string_view full_name, const CompressionConfig& base,
                                  int32_t observation_window) {
  // NAME:chunkN: NAME compressing during prefill every N prompt tokens, then optionally ':xF'
  // keeping F times the budget between chunks (CompressionConfig::chunk_budget_factor) and
  // ':probe' previewing the prompt's end (CompressionConfig::tail_probe), in that order.
  std::string_view name = full_name;
  int32_t chunk = 0;
  double factor = 1.0;
  bool probe = false;
  if (const size_t colon = full_name.find(':'); colon != std::string_view::npos) {
    name = full_name.substr(0, colon);
    std::vector<std::string> parts;
    for (std::string_view rest = full_name.substr(colon + 1);;) {
      const size_t next = rest.find(':');
      parts.emplace_back(rest.substr(0, next));
      if (next == std::string_view::npos) break;
      rest = rest.substr(next + 1);
    }
    const std::string digits(parts[0].starts_with("chunk") ? parts[0].substr(5) : "");
    char* end = nullptr;
    const long n = digits.empty() ? 0 : std::strtol(digits.c_str(), &end, 10);
    bool bad = digits.empty() || *end != '\0' || n < 1 || n > (1 << 24) || name == "full" ||
               parts.size() > 3;
    size_t next = 1;
    if (!bad && next < parts.size() && parts[next].starts_with("x")) {
      const std::string f = parts[next++].substr(1);
      char* f_end = nullptr;
      factor = f.empty() ? 0.0 : std::strtod(f.c_str(), &f_end);
      bad = f.empty() || *f_end != '\0' || !(factor >= 1.0 && factor <= 1e6);
    }
    if (!bad && next < parts.size() && parts[next] == "probe") {
      probe = true;
      ++next;
    }
    if (bad || next != parts.size()) {
      fail("policy '{}': the only suffixes are ':chunkN' (compress every N prompt tokens, "
           "N >= 1), then ':xF' (keep F >= 1 times the budget between chunks) and ':probe' "
           "(the tail probe), on a compressing policy",
           full_name);
    }
    chunk = static_cast<int32_t>(n);
  }
  PolicyVariant v{std::string(full_name), base};
  std::string_view policy = name;
  if (name.starts_with("kvcompress-")) policy = "kvcompress";
  const bool ablation = std::any_of(std::begin(kAblations), std::end(kAblations),
                                    [&](const VariantName& a) { return a.name == name; });
  if (policy != name && !ablation) {
    fail("unknown policy '{}'; valid: {}", name, policy_variant_names());
  }
  try {
    set_policy(v.config, policy);
  } catch (const Error&) {
    fail("unknown policy '{}'; valid: {}", name, policy_variant_names());
  }
  v.config.metric = MetricAccumulation::kSquared;
  v.config.full_observation = false;
  if (name == "kvcompress-l1") v.config.metric = MetricAccumulation::kAbsolute;
  if (name == "kvcompress-w32") v.config.observation_window = 32;
  if (name == "kvcompress-full") v.config.full_observation = true;
  if (name.starts_with("kvcompress-words")) v.config.word_spans = true;
  if (name == "kvcompress-words-floor") v.config.planner.head_floor = 0.2;
  if (name.ends_with("-err")) v.config.planner.marginal_error = true;
  if (name.ends_with("-succ")) v.config.pool_successors = true;
  // `kvc eval --marginal-error` sets the rule for every KV-Compress variant; the baselines
  // have their own rules and ignore it.
  if (v.config.policy != KvPolicy::kKvCompress) v.config.planner.marginal_error = false;
  apply_policy_defaults(v.config);
  v.config.compress_chunk = chunk;
  v.config.chunk_budget_factor = factor;
  if (probe) v.config.tail_probe = true;  // auto has it on already
  if (observation_window > 0) v.config.observation_window = observation_window;
  validate_compression_config(v.config);
  return v;
}

std::string policy_variant_names() {
  std::string names = policy_names_with_auto();
  for (const VariantName& a : kAblations) names += fmt::format(", {}", a.name);
  return names + " (a compressing one with ':chunkN' compresses during prefill every N tokens; "
                 "':chunkN:xF' keeps F times the budget between chunks; ':chunkN:probe' and "
                 "':chunkN:xF:probe' run the tail probe)";
}

CompressionConfig with_budget(const PolicyVariant& variant, int32_t budget) {
  CompressionConfig c = variant.config;
  if (c.compresses()) {
    c.budget = CacheBudget{CacheBudget::kMaxCacheTokens, static_cast<double>(budget), 0};
  }
  return c;
}

}  // namespace kvc::eval
