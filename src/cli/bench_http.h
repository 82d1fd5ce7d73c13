// `kvc bench --url URL`: the serving workload sent over HTTP to any OpenAI-compatible server
// (kvc serve, llama.cpp's llama-server, vLLM): synthetic token-id prompts on
// /v1/completions, streamed, EOS ignored, arriving all at once or as a Poisson process. Prints
// what `vllm bench serve` prints: request and token throughput, and TTFT, TPOT and ITL
// percentiles.
#pragma once

#include <cstdint>
#include <string>

#include "cli/bench_serving.h"

namespace kvc::cli {

struct HttpBenchOptions {
  std::string url;           // e.g. http://127.0.0.1:8080
  std::string api_key;
  std::string model;         // "" : the server's first /v1/models entry
  double request_rate = 0;   // requests per second; 0: all at once
  uint64_t seed = 0;
  bool send_compression = true;  // send kv_policy/compression_rate (kvc serve's extension)
};

// policy: what rates > 1 ask for (kvc serve's kv_policy extension; other servers ignore it).
void run_http_bench(const HttpBenchOptions& http, const ServingBenchOptions& o,
                    const std::string& policy, bool json);

}  // namespace kvc::cli
