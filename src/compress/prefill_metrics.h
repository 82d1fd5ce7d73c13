// Turns what the prompt's observing queries saw (ObservationScores, per query head) into the
// KV-Compress eviction metric of every KV (docs/design.md §2):
//
//   metric(l, h_kv, s) = sum over query heads h in the group of h_kv of pool_k(scores[l][h])[s]
//
// pool_k is a max-pool along the position axis, kernel k: a KV's pooled score is the best
// score of the KVs the row holds within k/2 positions of it (same padding, padding never
// wins). Right after an uncompressed prefill the row holds every position in order, so this
// is the plain 1-D max-pool, stride 1; after compression between prefill chunks (§5) the row
// holds a subset in any slot order and the pool still looks at position neighbours.
// k = 1 means no pooling (full observation). Pooling per query head BEFORE summing over the
// group is what the method specifies (SnapKV pools per head too).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "kv/observation_scores.h"
#include "kv/paged_kv_cache.h"

namespace kvc {

// How the new metric meets the one a KV already has. Right after an uncompressed prefill every
// metric is 0 and both mean "write". Between prefill chunks (docs/design.md §5):
//   kMax  a window is one look at the sequence from its newest queries; a KV keeps the
//         strongest evidence any window gave it (each chunk's KVs are judged by at least the
//         window right after them, so no chunk is favoured by being seen more often);
//   kAdd  full observation: the metric is a sum over every observing query, and each chunk
//         delivers the sums of its own queries;
//   kReplace  the window at the prompt's end, after chunks: it alone ranks the KVs for the
//         final cut, as it does without chunks (the earlier windows only chose which KVs
//         survived until it could look; their scores, mostly local attention of text long
//         past, would otherwise outrank what the question points at).
enum class MetricMerge : uint8_t { kMax, kAdd, kReplace };

// Which neighbours the pool reaches. kBothSides: the k/2 positions on each side (the paper's
// and SnapKV's max-pool). kSuccessors: only the k/2 positions before a KV, so a strongly
// attended KV lends its score to the tokens right after it, which copying and induction heads
// read next (the observing queries attend to where a value begins), and never to the tokens
// before it.
enum class PoolReach : uint8_t { kBothSides, kSuccessors };

// Sets the metric of every KV of `seq` from `scores` (slot-indexed: the rows must not have
// moved since observation). With span_start (one entry per prompt position: the first
// position of its span), each query head's pooled scores are then raised to their span's
// maximum over the KVs the row holds, before the group sum.
void write_prefill_metrics(PagedKvCache& cache, SequenceId seq, const ObservationScores& scores,
                           int32_t group_size, int32_t pool_kernel,
                           std::span<const int32_t> span_start = {},
                           MetricMerge merge = MetricMerge::kMax,
                           PoolReach reach = PoolReach::kBothSides);

// Sets the attention mass of every KV of `seq` (PagedKvPool::mass) from `scores`, which must
// be L1 sums (sum of p): mass(l, h_kv, s) = sum over the group's query heads of the raw score,
// no pooling, no spans (it measures what evicting the KV takes away from the observing
// queries, not how important its neighbourhood is). Merged as write_prefill_metrics merges.
void write_prefill_mass(PagedKvCache& cache, SequenceId seq, const ObservationScores& scores,
                        int32_t group_size, MetricMerge merge = MetricMerge::kMax);

// Maximum tokens of one word span: a whitespace-free run longer than this (a long URL, a base64
// blob) is split into spans of this many tokens, so no span can hold the whole prompt.
inline constexpr int32_t kMaxWordSpan = 32;
// Span starts from `begins_word[i]` (token i cannot continue the previous token's word),
// splitting runs at kMaxWordSpan tokens.
std::vector<int32_t> word_span_starts(std::span<const uint8_t> begins_word);

}  // namespace kvc
