// Turns what the prompt's observing queries saw (ObservationScores, per query head) into the
// KV-Compress eviction metric of every KV (docs/design.md §2):
//
//   metric(l, h_kv, s) = sum over query heads h in the group of h_kv of pool_k(scores[l][h])[s]
//
// pool_k is a max-pool along the key axis (the row's logical slot order, which is position
// order right after prefill), kernel k, stride 1, same padding (padding never wins the max);
// k = 1 means no pooling (full observation). Pooling per query head BEFORE summing over the
// group is what the method specifies (SnapKV pools per head too).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "kv/observation_scores.h"
#include "kv/paged_kv_cache.h"

namespace kvc {

// Overwrites the metric of every KV of `seq` (its rows must not have moved since observation).
// With span_start (one entry per prompt position: the first position of its span), each query
// head's pooled scores are then raised to their span's maximum, before the group sum.
void write_prefill_metrics(PagedKvCache& cache, SequenceId seq, const ObservationScores& scores,
                           int32_t group_size, int32_t pool_kernel,
                           std::span<const int32_t> span_start = {});

// v[s] = max of v over the span of s, spans given by span_start (non-decreasing, span_start[s]
// <= s, and span_start[s] == s or span_start[s - 1] for every s).
void span_max(float* v, int32_t n, const int32_t* span_start);

// Maximum tokens of one word span: a whitespace-free run longer than this (a long URL, a base64
// blob) is split into spans of this many tokens, so no span can hold the whole prompt.
inline constexpr int32_t kMaxWordSpan = 32;
// Span starts from `begins_word[i]` (token i cannot continue the previous token's word),
// splitting runs at kMaxWordSpan tokens.
std::vector<int32_t> word_span_starts(std::span<const uint8_t> begins_word);

// out[n] = max over in[max(0, s - k/2) .. min(n-1, s + k/2)]. k odd (asserted).
void max_pool_1d(const float* in, float* out, int32_t n, int32_t kernel);

}  // namespace kvc
