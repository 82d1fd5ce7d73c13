#include "eval/shared_prefill.h"

#include <algorithm>
#include <chrono>

#include "compress/prefill_metrics.h"
#include "engine/sampler.h"
#include "util/error.h"
#include "util/timing.h"

namespace kvc::eval {
namespace {

constexpr int32_t kChunk = 256;  // prefill chunk; also the longest teacher-forced span
constexpr int32_t kBlockSize = 16;

struct VariantName {
  std::string_view name;
  std::string_view description;
};

constexpr VariantName kAblations[] = {
    {"kvcompress-l1", "KV-Compress with the L1 metric (sum of attention) instead of L2"},
    {"kvcompress-w32", "KV-Compress observing with the last 32 prompt queries instead of 8"},
    {"kvcompress-full", "KV-Compress with full observation (every query, KVs >= 10 older)"},
};

bool same_observer(const ObservationOptions& a, const ObservationOptions& b) {
  return a.kind == b.kind && a.full == b.full && (a.full ? a.buffer == b.buffer
                                                         : a.window == b.window);
}

ObservationOptions observer_of(const CompressionConfig& c) {
  return ObservationOptions{c.metric, c.observation_window, -1, c.full_observation,
                            c.observation_buffer};
}

bool reads_metric(const CompressionConfig& c) {
  return c.compresses() && policy_info(c.policy).metric != MetricAccumulation::kNone;
}

}  // namespace

PolicyVariant make_policy_variant(std::string_view name, const CompressionConfig& base) {
  PolicyVariant v{std::string(name), base};
  std::string_view policy = name;
  if (name.starts_with("kvcompress-")) policy = "kvcompress";
  const bool ablation = std::any_of(std::begin(kAblations), std::end(kAblations),
                                    [&](const VariantName& a) { return a.name == name; });
  if (policy != name && !ablation) {
    fail("unknown policy '{}'; valid: {}", name, policy_variant_names());
  }
  try {
    v.config.policy = parse_policy(policy);
  } catch (const Error&) {
    fail("unknown policy '{}'; valid: {}", name, policy_variant_names());
  }
  v.config.metric = MetricAccumulation::kSquared;
  v.config.full_observation = false;
  if (name == "kvcompress-l1") v.config.metric = MetricAccumulation::kAbsolute;
  if (name == "kvcompress-w32") v.config.observation_window = 32;
  if (name == "kvcompress-full") v.config.full_observation = true;
  apply_policy_defaults(v.config);
  validate_compression_config(v.config);
  return v;
}

std::string policy_variant_names() {
  std::string names = policy_names();
  for (const VariantName& a : kAblations) names += fmt::format(", {}", a.name);
  return names;
}

SharedPrefill::SharedPrefill(const Model& model, int32_t max_context,
                             std::span<const PolicyVariant> variants, bool poison_kv)
    : model_(model),
      max_context_(max_context),
      cache_([&] {
        const ModelConfig& mc = model.config();
        const int64_t per_row = (max_context + kBlockSize - 1) / kBlockSize;
        const int64_t blocks = 2 * per_row * mc.n_layer * mc.n_head_kv;
        if (blocks > INT32_MAX) fail("context {} is too long for one KV pool", max_context);
        return KvCacheConfig{mc.n_layer, mc.n_head_kv, mc.head_dim, kBlockSize,
                             static_cast<int32_t>(blocks), KvStorageType::kF16, poison_kv};
      }()),
      forward_(model, kChunk, max_context) {
  for (const PolicyVariant& v : variants) {
    if (!reads_metric(v.config)) continue;
    const ObservationOptions o = observer_of(v.config);
    if (std::none_of(observers_.begin(), observers_.end(),
                     [&](const ObservationOptions& x) { return same_observer(x, o); })) {
      observers_.push_back(o);
    }
  }
}

SharedPrefill::~SharedPrefill() = default;

int32_t SharedPrefill::observer_index(const CompressionConfig& config) const {
  const ObservationOptions o = observer_of(config);
  for (size_t i = 0; i < observers_.size(); ++i) {
    if (same_observer(observers_[i], o)) return static_cast<int32_t>(i);
  }
  fail("policy {} was not declared to SharedPrefill", policy_info(config.policy).name);
}

std::span<const float> SharedPrefill::prefill(std::span<const int32_t> prompt,
                                              const std::function<void(int64_t, int64_t)>& progress) {
  const auto n = static_cast<int32_t>(prompt.size());
  if (n == 0) fail("the prompt is empty");
  if (n >= max_context_) {
    fail("the prompt has {} tokens; the evaluation context holds {}", n, max_context_);
  }
  if (base_ >= 0) cache_.remove_sequence(base_);
  base_ = cache_.add_sequence();
  prompt_len_ = n;
  ForwardOptions options;
  options.progress = progress;
  options.observers = observers_;
  for (ObservationOptions& o : options.observers) o.last_position = n - 1;
  if (!observers_.empty()) forward_.clear_observation(static_cast<int32_t>(observers_.size()));
  return forward_.run(cache_, base_, prompt, 0, options);
}

SequenceId SharedPrefill::fork(const PolicyVariant& variant, int32_t budget, ForkStats* stats) {
  KVC_ASSERT(base_ >= 0);
  const auto start = std::chrono::steady_clock::now();
  const SequenceId seq = cache_.copy_sequence(base_);
  KVC_ASSERT(seq >= 0);  // the pool holds two full contexts
  fork_len_ = 0;
  CompressionConfig config = variant.config;
  fork_metric_ = config.compresses() ? config.metric : MetricAccumulation::kNone;
  config.group_size = model_.config().group_size();
  if (config.compresses()) {
    config.budget = CacheBudget{CacheBudget::kMaxCacheTokens, static_cast<double>(budget), 0};
    validate_compression_config(config);
    if (reads_metric(config)) {
      write_prefill_metrics(cache_, seq, forward_.observation(observer_index(config)),
                            config.group_size, config.full_observation ? 1 : config.pool_kernel);
    }
    compress_sequence(cache_, seq, prompt_len_, config);
  }
  if (stats != nullptr) {
    const ModelConfig& mc = model_.config();
    stats->kvs_kept = cache_.retained_kvs(seq);
    stats->kvs_full = cache_.retained_kvs(base_);
    stats->bytes_kept = cache_.bytes_owned(seq);
    stats->bytes_full = cache_.bytes_owned(base_);
    stats->retained_per_row.clear();
    for (int32_t l = 0; l < mc.n_layer; ++l) {
      for (int32_t h = 0; h < mc.n_head_kv; ++h) {
        stats->retained_per_row.push_back(cache_.row(seq, l, h).length);
      }
    }
    stats->compress_seconds = seconds_since(start);
  }
  return seq;
}

void SharedPrefill::release(SequenceId fork) {
  KVC_ASSERT(fork != base_);
  cache_.remove_sequence(fork);
}

std::vector<int32_t> SharedPrefill::greedy(SequenceId fork, int32_t first, int32_t max_new,
                                           std::span<const int32_t> stop_tokens) {
  std::vector<int32_t> out{first};
  const auto stops = [&](int32_t t) {
    return std::find(stop_tokens.begin(), stop_tokens.end(), t) != stop_tokens.end();
  };
  while (static_cast<int32_t>(out.size()) < max_new && !stops(out.back())) {
    const int32_t position = prompt_len_ + fork_len_;
    if (position + 1 >= max_context_) break;
    const int32_t token[1] = {out.back()};
    ForwardOptions options;
    options.metric = fork_metric_;
    const std::span<const float> logits = forward_.run(cache_, fork, token, position, options);
    ++fork_len_;
    out.push_back(argmax(logits));
  }
  return out;
}

std::span<const float> SharedPrefill::score(SequenceId fork, std::span<const int32_t> tokens) {
  const auto n = static_cast<int32_t>(tokens.size());
  if (n > kChunk) fail("teacher forcing takes at most {} tokens at once, got {}", kChunk, n);
  if (prompt_len_ + fork_len_ + n > max_context_) {
    fail("{} continuation tokens do not fit the evaluation context {}", n, max_context_);
  }
  ForwardOptions options;
  options.logits = LogitsFor::kAllTokens;
  const std::span<const float> logits =
      forward_.run(cache_, fork, tokens, prompt_len_ + fork_len_, options);
  fork_len_ += n;
  return logits;
}

}  // namespace kvc::eval
