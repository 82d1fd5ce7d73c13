// Parsing and validating the bodies of POST /v1/completions and /v1/chat/completions into a
// plain CompletionJob. Every field is checked for type and range here, at the edge; a bad one
// throws ApiError(400) naming it. Compression is chosen per request with JSON extensions
// (defaults: the server's --kv-policy and budget flags):
//   "kv_policy"          "auto", "full", "kvcompress", "snapkv", ... (kvc serve --help lists
//                        them; a named policy runs as named, word spans only with "auto")
//   "max_cache_tokens"   budget C: mean KVs kept per (layer, KV head); without kv_policy
//                        (and a server default of full) it means auto
//   "compression_rate"   budget as a rate (the paper's mapping to C)
//   "protected_window"   most recent tokens never evicted
//   "compress_once"      compress after prefill only (never under memory pressure or on an
//                        interval: such a request is preempted instead)
//   "compress_chunk"     compress during prefill every N prompt tokens (0: once, after it)
//   "tail_probe"         with compress_chunk: the prompt's last chunk runs first, and its
//                        last queries also observe every pass between chunks (auto: on)
//   "kv_details"         also return the KVs kept per (layer, KV head)
// and, as llama-server: "top_k", "ignore_eos" (generate past end-of-turn tokens: benchmarks).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "compress/compressor.h"
#include "engine/sampler.h"
#include "model/model.h"

namespace kvc::server {

struct CompletionJob {
  bool chat = false;
  std::vector<int32_t> prompt;
  int32_t max_tokens = 16;
  SamplingParams sampling;
  std::vector<std::string> stop;  // stop strings (the model's end-of-turn tokens always stop)
  bool stream = false;
  bool include_usage = false;     // stream_options.include_usage
  CompressionConfig compression;
  bool kv_details = false;
  bool ignore_eos = false;
};

struct ParseLimits {
  std::string model_name;         // the one model this server serves
  int32_t max_context = 0;        // per request: prompt + output tokens
  CompressionConfig default_compression;
};

// Throws ApiError (400, or 404 for an unknown model) for anything malformed or out of range.
CompletionJob parse_completion_request(const nlohmann::json& body, bool chat, const Model& model,
                                       const ParseLimits& limits);

}  // namespace kvc::server
