// What a client hands the engine (Request) and what it gets back (RequestResult). Plain data
// plus callbacks; the engine calls every callback on its own thread, between model steps, so a
// callback must be quick (copy the token into a stream, set a flag) and must not call back
// into the engine except through its thread-safe entry points (submit, cancel).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "compress/compressor.h"
#include "engine/sampler.h"
#include "model/forward_batch.h"

namespace kvc {

using RequestId = int64_t;

// Why a request ended. openai_finish_reason() gives the OpenAI value.
enum class FinishReason : uint8_t {
  kStopToken,    // produced an end-of-generation token
  kMaxTokens,    // produced max_tokens tokens
  kContextFull,  // the next token would pass the context, or the KV pool could not hold it
  kCancelled,    // the client cancelled (on_token returned false, cancel(), disconnect)
  kShutdown,     // the engine stopped before the request finished
};
const char* finish_reason_name(FinishReason reason);    // "stop_token", "max_tokens", ...
const char* openai_finish_reason(FinishReason reason);  // "stop", "length", ...

struct RequestStats {
  int32_t prompt_tokens = 0;
  int32_t generated_tokens = 0;
  double queue_seconds = 0.0;    // submit -> first scheduled step
  double prefill_seconds = 0.0;  // first scheduled step -> prompt done (other work included)
  double first_token_seconds = 0.0;  // submit -> first token (time to first token)
  double decode_seconds = 0.0;   // first token -> finish
  int64_t kv_retained = 0;       // KVs held at the end (all rows)
  size_t kv_bytes = 0;           // physical bytes of the blocks owned at the end
  size_t kv_bytes_peak = 0;      // most bytes owned after any step
  size_t full_cache_bytes = 0;   // bytes a full cache would own for the same tokens
  int32_t compressions = 0;      // passes run (after prefill, under memory pressure, interval)
  double compress_seconds = 0.0; // planning + compaction
  CompressionResult prefill_compression;  // the pass right after prefill (zeros if none)
  int32_t preemptions = 0;       // times the request was preempted and recomputed
  std::vector<int32_t> retained_per_row;  // [n_layer * n_head_kv] KVs per head row at the end
  std::vector<int32_t> retained_after_prompt;  // [n_layer * n_head_kv] after its compression

  double prefill_tokens_per_second() const;
  double decode_tokens_per_second() const;  // decode steps only (the first token is prefill's)
};

struct RequestResult {
  RequestId id = -1;
  FinishReason finish = FinishReason::kMaxTokens;
  std::vector<int32_t> tokens;  // generated ids
  RequestStats stats;
};

struct Request {
  std::vector<int32_t> prompt;
  int32_t max_tokens = 128;      // tokens to sample; 0: prefill (and teacher forcing) only
  SamplingParams sampling;
  std::vector<int32_t> stop_tokens;  // generation ends after producing one of these
  CompressionConfig compression;     // full cache, or a policy with a budget

  // Teacher forcing (`kvc eval` fidelity): tokens run after the prompt and its compression,
  // in chunks, with the logits of every one handed to on_forced_logits.
  std::vector<int32_t> forced_tokens;
  // Observations recorded during the prompt besides the policy's own, for forks that read them.
  std::vector<ObservationOptions> extra_observers;
  // Keep the finished sequence (KVs, last logits, observations) for Engine::fork until
  // Engine::release.
  bool hold = false;

  // Each sampled token as soon as it exists; returning false cancels the request.
  std::function<bool(int32_t token)> on_token;
  // Logits of forced tokens [first, first + rows): [rows, n_vocab].
  std::function<void(std::span<const float> logits, int32_t first)> on_forced_logits;
  std::function<void(const RequestResult&)> on_finish;
  // After each prefill chunk: tokens computed and to compute, counting the tail probe's.
  std::function<void(int64_t done, int64_t total)> on_prefill_progress;
};

}  // namespace kvc
