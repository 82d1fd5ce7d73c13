// Token sampling: greedy, or temperature with optional top-k and top-p (nucleus) filtering,
// from a seeded generator so that runs are reproducible; optional penalties on the tokens the
// sequence already holds, as llama.cpp's sampler applies them.
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
  // Penalties over the last repeat_last_n tokens of the sequence (prompt included; -1: all of
  // it, 0: none), applied to the logits before any filter (greedy included), per distinct token
  // t seen c > 0 times there, in llama.cpp's order: a logit > 0 divided by repeat_penalty, one
  // <= 0 multiplied by it; then minus c * frequency_penalty + presence_penalty (OpenAI's terms).
  float repeat_penalty = 1.0f;  // 1: off
  int32_t repeat_last_n = 64;
  float frequency_penalty = 0.0f;
  float presence_penalty = 0.0f;

  bool penalized() const {
    return repeat_last_n != 0 &&
           (repeat_penalty != 1.0f || frequency_penalty != 0.0f || presence_penalty != 0.0f);
  }
};

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);
  // logits: [n_vocab]; history: the sequence's tokens so far (read only when penalized).
  // Order: penalties, then top-k, temperature softmax, top-p.
  int32_t sample(std::span<const float> logits, std::span<const int32_t> history = {});

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<int32_t> order_;  // candidate ids, reused between calls
  std::vector<float> probs_;
  std::vector<float> penalized_;  // the logits after the penalties
  std::vector<int32_t> counts_;   // [n_vocab] occurrences in the window, zero between calls
};

// Index of the largest logit (lowest index on ties, as llama.cpp's greedy sampler).
int32_t argmax(std::span<const float> logits);

}  // namespace kvc
