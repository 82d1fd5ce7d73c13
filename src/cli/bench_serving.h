// `kvc bench --serving`: the paper's throughput experiment on this machine. N prompts of L
// synthetic tokens, O output tokens each (end-of-sequence ignored), all submitted at once to
// one engine under a fixed KV budget, for every compression rate in one run; per rate: total
// and output tokens/s, requests/s, peak and mean decode batch, compressions, preemptions, the
// share of step time in attention and outside the forward pass, and the ratio to rate 1.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "cli/common_options.h"

namespace kvc::cli {

struct ServingBenchOptions {
  int32_t num_prompts = 16;
  std::vector<int32_t> input_lens{1024};
  int32_t output_len = 128;
  std::vector<double> compression_rates{1, 2, 4, 8, 16, 32, 64};
  std::string plot;  // PNG written by scripts/plot_serving.py
};

// Pseudo-random token ids in [100, vocab), like llama-bench's: content does not matter and
// runs are repeatable. Seed 0 is `kvc bench`'s prompt; the serving benchmarks use one seed per
// request.
std::vector<int32_t> synthetic_prompt(int32_t n, int32_t vocab, uint64_t seed);

void run_serving_bench(const ModelOptions& model_options, const CacheOptions& cache,
                       const CompressionOptions& compression, const ServingBenchOptions& o,
                       bool json);

}  // namespace kvc::cli
