// Token sampling: greedy, or temperature with optional top-k and top-p (nucleus) filtering,
// from a seeded generator so that runs are reproducible.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <vector>

namespace kvc {

struct SamplingParams {
  float temperature = 0.0f;  // 0: greedy (argmax)
  int32_t top_k = 0;         // 0: no top-k filter
  float top_p = 1.0f;        // 1: no nucleus filter
  uint64_t seed = 0;
};

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);
  // logits: [n_vocab]. Order of filters: top-k, then temperature softmax, then top-p.
  int32_t sample(std::span<const float> logits);

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<int32_t> order_;  // candidate ids, reused between calls
  std::vector<float> probs_;
};

// Index of the largest logit (lowest index on ties, as llama.cpp's greedy sampler).
int32_t argmax(std::span<const float> logits);

}  // namespace kvc
