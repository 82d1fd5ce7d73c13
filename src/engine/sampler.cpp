#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "util/error.h"

namespace kvc {

Sampler::Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) {}

int32_t argmax(std::span<const float> logits) {
  KVC_ASSERT(!logits.empty());
  return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

int32_t Sampler::sample(std::span<const float> logits, std::span<const int32_t> history) {
  if (params_.penalized() && !history.empty()) {
    const size_t last_n = static_cast<size_t>(params_.repeat_last_n);
    const size_t n_window =
        params_.repeat_last_n < 0 ? history.size() : std::min(history.size(), last_n);
    const std::span<const int32_t> window = history.last(n_window);
    penalized_.assign(logits.begin(), logits.end());
    counts_.resize(logits.size(), 0);
    for (int32_t t : window) {
      KVC_ASSERT(t >= 0 && static_cast<size_t>(t) < logits.size());
      ++counts_[static_cast<size_t>(t)];
    }
    for (int32_t t : window) {
      const auto i = static_cast<size_t>(t);
      const int32_t c = counts_[i];
      if (c == 0) continue;  // a repeat of a token already penalized
      float& l = penalized_[i];
      l = l > 0.0f ? l / params_.repeat_penalty : l * params_.repeat_penalty;
      l -= static_cast<float>(c) * params_.frequency_penalty + params_.presence_penalty;
      counts_[i] = 0;
    }
    logits = penalized_;
  }
  if (params_.temperature <= 0.0f) return argmax(logits);
  const auto n = static_cast<int32_t>(logits.size());
  order_.resize(static_cast<size_t>(n));
  std::iota(order_.begin(), order_.end(), 0);
  const auto by_logit = [&](int32_t a, int32_t b) { return logits[a] > logits[b]; };
  int32_t k = n;
  if (params_.top_k > 0 && params_.top_k < n) {
    k = params_.top_k;
    std::partial_sort(order_.begin(), order_.begin() + k, order_.end(), by_logit);
  } else {
    std::sort(order_.begin(), order_.end(), by_logit);
  }
  probs_.resize(static_cast<size_t>(k));
  const float max = logits[order_[0]];
  double sum = 0.0;
  for (int32_t i = 0; i < k; ++i) {
    probs_[i] = std::exp((logits[order_[i]] - max) / params_.temperature);
    sum += probs_[i];
  }
  // Nucleus: the smallest prefix (candidates are sorted) whose mass reaches top_p.
  int32_t keep = k;
  if (params_.top_p < 1.0f) {
    double mass = 0.0;
    for (int32_t i = 0; i < k; ++i) {
      mass += probs_[i] / sum;
      if (mass >= params_.top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  double kept = 0.0;
  for (int32_t i = 0; i < keep; ++i) kept += probs_[i];
  std::uniform_real_distribution<double> uniform(0.0, kept);
  double r = uniform(rng_);
  for (int32_t i = 0; i < keep; ++i) {
    r -= probs_[i];
    if (r <= 0.0) return order_[i];
  }
  return order_[keep - 1];
}

}  // namespace kvc
