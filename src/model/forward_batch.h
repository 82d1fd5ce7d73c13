// The plain record one model step runs on: planned once per step by the engine, read by every
// layer of the forward pass (FlashInfer's plan/run split). It names tokens, positions, which
// logits are wanted, and per sequence the head-row views its tokens append to and attend over,
// how its queries run (tiled or per query), the decode metric it accumulates and the observers
// that record what its prompt queries see. Only raw pointers and small descriptors: this is the
// seam a GPU backend takes, and nothing here knows about caches, requests or schedulers.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/paged_attention.h"

namespace kvc {

// Which prompt queries "observe" the KVs during prefill (KV-Compress, docs/design.md §2), and
// how their attention is recorded. The forward pass only records raw per-query-head sums;
// turning them into eviction metrics (pooling, summing over the group) is policy
// (src/compress/prefill_metrics.h).
struct ObservationOptions {
  MetricAccumulation kind = MetricAccumulation::kNone;  // kNone: observe nothing
  // Limited observation: queries at positions > last_position - window observe every KV.
  int32_t window = 8;
  int32_t last_position = -1;  // position of the final prompt token
  // Full observation: every query observes the KVs at least `buffer` positions older.
  bool full = false;
  int32_t buffer = 10;
};

// True when a query at `position` records into observer `o`.
bool observes(const ObservationOptions& o, int32_t position);

struct BatchSequence {
  int32_t first_token = 0;  // its tokens are batch tokens [first_token, first_token + n_tokens)
  int32_t n_tokens = 0;
  // Row views after this step's growth, [n_layer * n_head_kv] starting at ForwardBatch::rows
  // [row_offset] (index layer * n_head_kv + kv_head). The last n_tokens slots of every row are
  // the ones this step writes; the cache allocated them before the step.
  int32_t row_offset = 0;
  // Per-query kernel for every token (decode steps, replayed tokens): needed to accumulate a
  // metric, and one kernel for every decode token keeps a full cache and a compressed cache
  // that kept everything bit-identical. Otherwise query tiles (prefill, teacher forcing).
  bool per_query = false;
  MetricAccumulation metric = MetricAccumulation::kNone;  // decode-time accumulation (per_query)
  // With metric: also add p to PagedKvPool::mass (read by the marginal-error rule only;
  // otherwise the kernels leave the mass alone).
  bool accumulate_mass = false;
  // Observers of this sequence's prefill: observer o records into
  //   observation + ((o * n_layer + layer) * n_head + query_head) * observation_stride + slot.
  const ObservationOptions* observers = nullptr;  // [n_observers]
  int32_t n_observers = 0;
  float* observation = nullptr;  // [n_observers, n_layer, n_head, observation_stride]
  int64_t observation_stride = 0;  // >= every row length while observing
  // Query capture (the tail probe, docs/design.md §5): the tokens at positions in
  // [capture_from, capture_from + n_capture) copy their post-RoPE queries of every layer to
  //   captured + (layer * n_capture + position - capture_from) * n_head * head_dim.
  float* captured = nullptr;  // [n_layer, n_capture, n_head * head_dim]
  int32_t capture_from = 0;
  int32_t n_capture = 0;
};

struct ForwardBatch {
  std::vector<int32_t> tokens;       // [T]
  std::vector<int32_t> positions;    // [T]
  std::vector<uint8_t> want_logits;  // [T]; logits come out for these tokens, in token order
  std::vector<BatchSequence> sequences;
  std::vector<PagedHeadRow> rows;    // [sum over sequences of n_layer * n_head_kv]

  void clear();
  int32_t n_tokens() const { return static_cast<int32_t>(tokens.size()); }
  int32_t n_logits() const;
};

// One unit of attention work for one KV head of one sequence: tokens [first, first + count)
// of sequence `sequence`, either as one query tile or, per query, in order (metric
// accumulation and observation need one writer per row, so such a unit covers all of the
// sequence's per-query tokens). Planned once per step, reused by every layer.
struct AttentionWork {
  int32_t sequence = 0;
  int32_t first = 0;  // batch token index
  int32_t count = 0;
  bool tiled = false;
  // Per query for the observers only: the tokens' outputs come from tiles, so a prompt's bits
  // never depend on who observes it (kvc eval's shared prefill, a chunk's window).
  bool observe_only = false;
  int64_t cost = 0;   // ~ queries x KVs, for ordering (largest first)
};

// Splits every sequence's tokens into attention work: per-query tokens as one unit per
// sequence; a prompt chunk's tokens in query tiles of at most kMaxQueryTile, smaller when there
// would be under two units (x KV heads) per thread, plus, when some of them observe, one
// observe-only per-query unit over the observing suffix. Sorted by cost, largest first, so
// dynamic scheduling balances rows of different lengths.
// rows_per_sequence: n_layer * n_head_kv.
std::vector<AttentionWork> plan_attention_work(const ForwardBatch& batch,
                                               int32_t rows_per_sequence, int32_t n_head_kv,
                                               int32_t n_threads);

}  // namespace kvc
