// The engine's per-request state (private to src/engine/): where a request is in its life,
// its tokens, its sampler, its observations and its statistics. Plain data; the engine
// (engine.cpp) and the scheduler (scheduler.cpp) are its only writers, on the stepping thread.
//
// Token bookkeeping: `tokens` = prompt, then forced tokens (once the prompt is compressed),
// then generated tokens. Positions [0, n_computed) have KVs in the cache (before compression
// every row holds n_computed KVs; after, fewer, but positions keep counting). Tokens
// [n_computed, chunk_end()) may run as one multi-token chunk (the prompt up to its next
// compression: its end, or with compression during prefill the end of a chunk; teacher
// forcing); later
// tokens run one per step through the per-query kernel (decoding, and replay after preemption).
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <utility>
#include <vector>

#include "engine/engine.h"

namespace kvc {

struct Engine::Sequence {
  enum class Phase { kWaiting, kRunning, kFinished };

  RequestId id = -1;
  Request request;
  CompressionConfig compression;  // request.compression with the model's group size
  RequestId parent = -1;          // fork: copy this held request's sequence at admission
  int64_t arrival = 0;            // submission order (preemption takes the newest first)
  Phase phase = Phase::kWaiting;

  SequenceId cache_seq = -1;      // -1 unless running (or held)
  std::vector<int32_t> tokens;
  int32_t prompt_len = 0;
  int32_t n_computed = 0;
  bool prompt_done = false;       // prompt prefilled and compressed (post_prefill ran)
  int32_t forced_done = 0;        // forced tokens whose logits went out
  int32_t n_generated = 0;
  Sampler sampler{SamplingParams{}};
  std::vector<float> logits;      // [n_vocab] of the newest computed token, when wanted
  int32_t compress_at = 0;        // the prompt's next compression: its end, or a chunk's
  int64_t prefill_blocks = 0;     // most blocks the prompt may own (Engine::prefill_blocks)
  int64_t reserved_blocks = 0;    // blocks kept free for the rest of the prompt

  // Observers of the prompt: the policy's own first (when it reads a metric), then extras.
  std::vector<ObservationOptions> observers;
  int32_t policy_observer = -1;
  int32_t mass_observer = -1;     // the observer whose L1 sums become the KVs' mass, or -1
  std::vector<float> observation;  // [observers, n_layer, n_head, prompt_len]
  std::vector<int32_t> word_spans;  // [prompt_len] span starts, once a word-span policy asked

  // The tail probe (CompressionConfig::tail_probe, docs/design.md §5): while probe_tokens is
  // not empty these prompt indices run first, at their own positions, with probe_done of them
  // computed (n_computed stays 0); their last queries are captured into probe_queries, then
  // their KVs are dropped and the prompt runs from its start.
  std::vector<int32_t> probe_tokens;
  int32_t probe_done = 0;
  std::vector<float> probe_queries;     // [n_layer, probe_positions, n_head * head_dim]
  std::vector<int32_t> probe_positions;  // the captured queries' positions

  bool cancel_requested = false;
  FinishReason finish = FinishReason::kMaxTokens;
  RequestStats stats;
  std::chrono::steady_clock::time_point submitted, scheduled, first_token;
  bool was_scheduled = false;

  int32_t forced_end() const {
    return prompt_len + static_cast<int32_t>(request.forced_tokens.size());
  }
  bool probing() const { return !probe_tokens.empty(); }
  // Tokens up to here may run as one chunk.
  int32_t chunk_end() const { return prompt_done ? forced_end() : compress_at; }
  // Tokens of the current chunk not yet computed (the probe's, while it runs).
  int32_t chunk_left() const {
    return probing() ? static_cast<int32_t>(probe_tokens.size()) - probe_done
                     : chunk_end() - n_computed;
  }
  bool decoding() const { return n_computed >= chunk_end() && prompt_done; }
  // Prefill tokens computed and to compute in all, the tail probe's included (probe_done keeps
  // the probe's length once it has ended).
  std::pair<int64_t, int64_t> prefill_progress() const {
    const int32_t probe = probing() ? static_cast<int32_t>(probe_tokens.size()) : probe_done;
    return {n_computed + probe_done, prompt_len + probe};
  }
};

// Requests, forks, cancellations and releases from other threads, taken at each step.
struct Engine::Inbox {
  std::mutex mutex;
  std::condition_variable wake;
  std::vector<std::unique_ptr<Sequence>> submitted;
  std::vector<RequestId> cancelled;
  std::vector<RequestId> released;
  RequestId next_id = 1;
  bool stopping = false;
  bool cancel_on_stop = false;
};

}  // namespace kvc
