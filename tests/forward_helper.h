// Runs tokens of ONE sequence through ForwardPass, for model-level tests (golden comparisons,
// observation sums) that check the forward pass without the engine's scheduler: grows the rows,
// builds the step's ForwardBatch and runs it, in chunks of at most max_batch_tokens. A single
// token runs through the per-query kernel, as a decode step does in the engine.
#pragma once

#include <algorithm>
#include <span>
#include <vector>

#include "kv/paged_kv_cache.h"
#include "model/forward.h"

namespace kvc::test_support {

struct Observing {
  std::vector<ObservationOptions> observers;
  std::vector<float> sums;  // [observers, n_layer, n_head, stride]
  int64_t stride = 0;
  // Queries captured at positions [capture_from, capture_from + n_capture) (BatchSequence).
  std::vector<float> captured;  // [n_layer, n_capture, n_head * head_dim] when n_capture > 0
  int32_t capture_from = 0;
  int32_t n_capture = 0;
};

// Returns the last token's logits [n_vocab] (all_logits: every token's, [n, n_vocab], only when
// tokens fit one chunk).
inline std::span<const float> run_tokens(ForwardPass& forward, PagedKvCache& cache,
                                         SequenceId seq, std::span<const int32_t> tokens,
                                         int32_t start_pos, Observing* observing = nullptr,
                                         bool all_logits = false) {
  const KvCacheConfig& kc = cache.config();
  ForwardBatch batch;
  std::span<const float> logits;
  const auto chunk = static_cast<size_t>(forward.max_batch_tokens());
  for (size_t begin = 0; begin < tokens.size(); begin += chunk) {
    const size_t n = std::min(chunk, tokens.size() - begin);
    const bool last = begin + n == tokens.size();
    cache.grow(seq, static_cast<int32_t>(n));
    batch.clear();
    for (size_t i = 0; i < n; ++i) {
      batch.tokens.push_back(tokens[begin + i]);
      batch.positions.push_back(start_pos + static_cast<int32_t>(begin + i));
      batch.want_logits.push_back(all_logits || (last && i + 1 == n) ? 1 : 0);
    }
    BatchSequence s;
    s.n_tokens = static_cast<int32_t>(n);
    s.per_query = tokens.size() == 1;
    if (observing != nullptr) {
      s.observers = observing->observers.data();
      s.n_observers = static_cast<int32_t>(observing->observers.size());
      s.observation = observing->sums.data();
      s.observation_stride = observing->stride;
      if (observing->n_capture > 0) {
        s.captured = observing->captured.data();
        s.capture_from = observing->capture_from;
        s.n_capture = observing->n_capture;
      }
    }
    batch.sequences.push_back(s);
    for (int32_t l = 0; l < kc.n_layer; ++l) {
      for (int32_t h = 0; h < kc.n_head_kv; ++h) batch.rows.push_back(cache.row_view(seq, l, h));
    }
    logits = forward.run(cache.pool().view(), batch);
  }
  return logits;
}

}  // namespace kvc::test_support
