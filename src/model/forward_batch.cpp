#include "model/forward_batch.h"

#include <algorithm>

namespace kvc {

bool observes(const ObservationOptions& o, int32_t position) {
  if (o.kind == MetricAccumulation::kNone) return false;
  return o.full || position > o.last_position - o.window;
}

void ForwardBatch::clear() {
  tokens.clear();
  positions.clear();
  want_logits.clear();
  sequences.clear();
  rows.clear();
}

int32_t ForwardBatch::n_logits() const {
  return static_cast<int32_t>(std::count(want_logits.begin(), want_logits.end(), uint8_t{1}));
}

std::vector<AttentionWork> plan_attention_work(const ForwardBatch& batch,
                                               int32_t rows_per_sequence, int32_t n_head_kv,
                                               int32_t n_threads) {
  std::vector<AttentionWork> work;
  // Tokens that go in tiles, over all sequences: tiles shrink when there would be under two
  // units per thread (short prompts on many cores).
  int64_t tiled_tokens = 0;
  std::vector<int32_t> first_observed(batch.sequences.size());  // [first_observed, end)
  for (size_t i = 0; i < batch.sequences.size(); ++i) {
    const BatchSequence& s = batch.sequences[i];
    int32_t split = s.first_token + s.n_tokens;
    if (!s.per_query) {
      // Positions rise within a sequence's tokens and every observer's set is a suffix of the
      // positions, so the union of what is observed is a suffix too.
      const auto observed = [&](int32_t t) {
        return std::any_of(s.observers, s.observers + s.n_observers,
                           [&](const ObservationOptions& o) { return observes(o, batch.positions[t]); });
      };
      while (split > s.first_token && observed(split - 1)) --split;
      tiled_tokens += s.n_tokens;
    }
    first_observed[i] = split;
  }
  const int64_t units_wanted = 2LL * n_threads;
  const auto tile = static_cast<int32_t>(std::clamp<int64_t>(
      (tiled_tokens * n_head_kv + units_wanted - 1) / units_wanted, 1, kMaxQueryTile));

  for (size_t i = 0; i < batch.sequences.size(); ++i) {
    const BatchSequence& s = batch.sequences[i];
    int64_t kvs = 0;
    for (int32_t r = 0; r < rows_per_sequence; ++r) kvs += batch.rows[s.row_offset + r].length;
    const int64_t mean_length = kvs / std::max(1, rows_per_sequence);
    const auto seq = static_cast<int32_t>(i);
    const int32_t end = s.first_token + s.n_tokens;
    if (!s.per_query) {
      for (int32_t t = s.first_token; t < end; t += tile) {
        const int32_t count = std::min(tile, end - t);
        // A tile's queries see at most its last position + 1 KVs (fewer after compression).
        const int64_t seen = std::min<int64_t>(mean_length, batch.positions[t + count - 1] + 1);
        work.push_back({seq, t, count, true, false, count * seen});
      }
    }
    const int32_t first = s.per_query ? s.first_token : first_observed[i];
    if (first < end) {
      const int32_t count = end - first;
      // Per-query kernels convert every K/V once per query: ~2x the cost per query of a tile.
      work.push_back({seq, first, count, false, !s.per_query, 2 * count * mean_length});
    }
  }
  std::stable_sort(work.begin(), work.end(),
                   [](const AttentionWork& a, const AttentionWork& b) { return a.cost > b.cost; });
  return work;
}

}  // namespace kvc
