#include "compress/kvcompress_planner.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <memory>
#include <queue>
#include <vector>

#include "util/error.h"

namespace kvc {
namespace {

// A float metric mapped to an unsigned key with the same order (negative values flipped);
// every non-finite metric maps to the key of +inf, i.e. "never evict".
constexpr uint32_t kNeverEvict = 0xff800000u;  // ordered_bits(+inf)

uint32_t ordered_bits(float m) {
  if (!std::isfinite(m)) return kNeverEvict;
  const uint32_t u = std::bit_cast<uint32_t>(m);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// One candidate block of a row: its key (ordered bits of its largest metric), the row
// (layer * n_head_kv + kv_head) and its index along the row's sorted order.
struct Candidate {
  uint32_t key;
  int32_t row;
  int32_t index;
};

bool candidate_less(const Candidate& a, const Candidate& b) {
  if (a.key != b.key) return a.key < b.key;
  if (a.row != b.row) return a.row < b.row;  // row order == (layer, kv_head) order
  return a.index < b.index;
}

// Stable LSD radix sort of `a` ([n] entries of (metric key << 32 | slot)) by the upper 32
// bits: three passes of 11 bits, histograms built in one read; a pass whose digit is the same
// for every entry is skipped. The input is in slot order, so the output is ordered by
// (metric, slot). tmp: [n] scratch.
void radix_sort_by_key(uint64_t* a, uint64_t* tmp, size_t n) {
  constexpr int kBits = 11;
  constexpr uint32_t kMask = (1u << kBits) - 1;
  uint32_t count[3][kMask + 1] = {};
  for (size_t i = 0; i < n; ++i) {
    const auto key = static_cast<uint32_t>(a[i] >> 32);
    ++count[0][key & kMask];
    ++count[1][(key >> kBits) & kMask];
    ++count[2][key >> (2 * kBits)];
  }
  uint64_t* src = a;
  uint64_t* dst = tmp;
  for (int pass = 0; pass < 3; ++pass) {
    const int shift = 32 + pass * kBits;
    uint32_t* c = count[pass];
    if (c[(src[0] >> shift) & kMask] == n) continue;  // all equal: order already right
    uint32_t sum = 0;
    for (uint32_t d = 0; d <= kMask; ++d) {
      const uint32_t here = c[d];
      c[d] = sum;
      sum += here;
    }
    for (size_t i = 0; i < n; ++i) dst[c[(src[i] >> shift) & kMask]++] = src[i];
    std::swap(src, dst);
  }
  if (src != a) std::copy(src, src + n, a);
}

// KVs in the first candidate of a row of length n: its partly filled last block, or bs.
int32_t hanging_kvs(int32_t n, int32_t bs) { return n % bs == 0 ? bs : n % bs; }

// Below this many KVs in a sequence the planner stays on the calling thread.
constexpr int64_t kParallelMinKvs = 16384;

// Calls fn(logical slot, physical slot) for every live slot of a row, block by block.
template <typename Fn>
void for_each_slot(const HeadRow& row, int32_t bs, Fn&& fn) {
  int32_t s = 0;
  for (const int32_t block : row.blocks) {
    const int64_t base = static_cast<int64_t>(block) * bs;
    const int32_t end = std::min(row.length, s + bs);
    for (int64_t p = base; s < end; ++s, ++p) fn(s, p);
  }
}

// Step 4 by key: all finite candidates, the lowest `to_free` selected; counts what each row
// gives up into freed_per_row. Returns the number selected.
int64_t select_by_key(const Candidate* by_row, const std::vector<int64_t>& block_offset,
                      const std::vector<int32_t>& n_candidates, int64_t to_free,
                      std::vector<int32_t>& freed_per_row) {
  std::vector<Candidate> candidates;
  candidates.reserve(static_cast<size_t>(block_offset.back()));
  for (size_t r = 0; r < n_candidates.size(); ++r) {
    candidates.insert(candidates.end(), by_row + block_offset[r],
                      by_row + block_offset[r] + n_candidates[r]);
  }
  const size_t n_free = static_cast<size_t>(std::min<int64_t>(to_free, candidates.size()));
  if (n_free < candidates.size()) {
    std::nth_element(candidates.begin(), candidates.begin() + static_cast<ptrdiff_t>(n_free),
                     candidates.end(), candidate_less);
  }
  for (size_t i = 0; i < n_free; ++i) ++freed_per_row[static_cast<size_t>(candidates[i].row)];
  return static_cast<int64_t>(n_free);
}

// Step 4 by marginal error (PlannerOptions::marginal_error). sorted: each row's (key, slot)
// entries in eviction order at kv_offset[r]. Returns the number of candidates taken.
int64_t select_by_marginal_error(const PagedKvCache& cache, const std::vector<const HeadRow*>& rows,
                                 const uint64_t* sorted, const std::vector<int64_t>& kv_offset,
                                 const std::vector<int64_t>& block_offset,
                                 const std::vector<int32_t>& n_candidates, int64_t to_free,
                                 bool parallel, std::vector<int32_t>& freed_per_row) {
  const int32_t bs = cache.config().block_size;
  const float* metric = cache.pool().metric();
  const float* mass = cache.pool().mass();
  const auto n_rows = static_cast<int32_t>(rows.size());
  const auto finite_or_zero = [](float x) { return std::isfinite(x) ? double{x} : 0.0; };
  // cost[block_offset[r] + e]: the row's cost after giving up its first e + 1 candidates.
  std::vector<double> cost(static_cast<size_t>(block_offset.back()));
#pragma omp parallel for schedule(dynamic, 1) if (parallel)
  for (int32_t r = 0; r < n_rows; ++r) {
    const HeadRow& row = *rows[r];
    const auto physical = [&](int32_t s) {
      return static_cast<int64_t>(row.blocks[s / bs]) * bs + s % bs;
    };
    double m_row = 0.0, a_row = 0.0;
    for_each_slot(row, bs, [&](int32_t, int64_t p) {
      m_row += finite_or_zero(metric[p]);
      a_row += finite_or_zero(mass[p]);
    });
    const uint64_t* keys = sorted + kv_offset[r];
    double m_e = 0.0, a_e = 0.0;
    int32_t taken = 0;
    for (int32_t c = 0; c < n_candidates[r]; ++c) {
      const int32_t end = hanging_kvs(row.length, bs) + c * bs;
      for (; taken < end; ++taken) {
        const int64_t p = physical(static_cast<int32_t>(static_cast<uint32_t>(keys[taken])));
        m_e += finite_or_zero(metric[p]);
        a_e += finite_or_zero(mass[p]);
      }
      const double f = a_row > 0.0 ? std::min(1.0, a_e / a_row) : 0.0;
      const double m_k = std::max(0.0, m_row - m_e);
      double renormalization = 0.0;
      if (m_k > 0.0 && f > 0.0) {
        renormalization = f < 1.0 ? (f / (1.0 - f)) * (f / (1.0 - f)) * m_k
                                  : std::numeric_limits<double>::infinity();
      }
      cost[static_cast<size_t>(block_offset[r] + c)] = m_e + renormalization;
    }
  }
  // Greedy: the cheapest next candidate of any row, ties by (row, index) as the key order.
  struct Next {
    double marginal;
    int32_t row;
    int32_t index;
    bool operator>(const Next& o) const {
      if (marginal != o.marginal) return marginal > o.marginal;
      return row != o.row ? row > o.row : index > o.index;
    }
  };
  const auto next_of = [&](int32_t r, int32_t e) {
    const double before = e == 0 ? 0.0 : cost[static_cast<size_t>(block_offset[r] + e - 1)];
    return Next{cost[static_cast<size_t>(block_offset[r] + e)] - before, r, e};
  };
  std::priority_queue<Next, std::vector<Next>, std::greater<>> heap;
  for (int32_t r = 0; r < n_rows; ++r) {
    if (n_candidates[r] > 0) heap.push(next_of(r, 0));
  }
  int64_t n_free = 0;
  while (n_free < to_free && !heap.empty()) {
    const Next best = heap.top();
    heap.pop();
    ++freed_per_row[static_cast<size_t>(best.row)];
    ++n_free;
    if (best.index + 1 < n_candidates[best.row]) heap.push(next_of(best.row, best.index + 1));
  }
  return n_free;
}

}  // namespace

void validate_planner_options(const PlannerOptions& o) {
  if (o.protected_window < 0) fail("protected window must be >= 0, got {}", o.protected_window);
  if (o.sink_tokens < 0) fail("sink tokens must be >= 0, got {}", o.sink_tokens);
  if (!(o.head_floor >= 0.0 && o.head_floor <= 1.0)) {
    fail("head floor must be in [0, 1], got {}", o.head_floor);
  }
}

EvictionPlan plan_kvcompress_eviction(const PagedKvCache& cache, SequenceId seq,
                                      int64_t target_blocks, const PlannerOptions& options) {
  validate_planner_options(options);
  EvictionPlan plan;
  plan.seq = seq;
  const int64_t to_free = std::max<int64_t>(0, cache.owned_blocks(seq) - target_blocks);
  if (to_free == 0) return plan;

  const KvCacheConfig& cfg = cache.config();
  const int32_t bs = cfg.block_size;
  const int32_t n_rows = cfg.n_layer * cfg.n_head_kv;
  const float* metric = cache.pool().metric();                    // [num_blocks * bs]
  const int32_t* positions = cache.pool().positions();            // [num_blocks * bs]
  std::vector<const HeadRow*> rows(static_cast<size_t>(n_rows));  // [n_rows], layer-major
  for (int32_t r = 0; r < n_rows; ++r) {
    rows[r] = &cache.row(seq, r / cfg.n_head_kv, r % cfg.n_head_kv);
  }

  // Offsets of each row's KVs in `sorted` and of its candidates in `by_row` (one per block).
  std::vector<int64_t> kv_offset(static_cast<size_t>(n_rows) + 1, 0);     // [n_rows + 1]
  std::vector<int64_t> block_offset(static_cast<size_t>(n_rows) + 1, 0);  // [n_rows + 1]
  int32_t max_length = 0;
  for (int32_t r = 0; r < n_rows; ++r) {
    kv_offset[r + 1] = kv_offset[r] + rows[r]->length;
    block_offset[r + 1] = block_offset[r] + static_cast<int64_t>(rows[r]->blocks.size());
    max_length = std::max(max_length, rows[r]->length);
  }
  // Rows are independent until the selection: spread them over threads when big enough.
  const bool parallel = kv_offset.back() >= kParallelMinKvs;

  // The newest position held by any row of the sequence (rows hold >= 1 KV since owned > 0).
  int32_t max_position = std::numeric_limits<int32_t>::min();
#pragma omp parallel for schedule(dynamic, 1) reduction(max : max_position) if (parallel)
  for (int32_t r = 0; r < n_rows; ++r) {
    for_each_slot(*rows[r], bs,
                  [&](int32_t, int64_t p) { max_position = std::max(max_position, positions[p]); });
  }
  const int64_t protect_from = int64_t{max_position} - options.protected_window + 1;
  // The floor: each row's top floor_kvs sorted entries are never part of a candidate.
  const auto floor_kvs = static_cast<int32_t>(std::min<double>(
      std::floor(options.head_floor * static_cast<double>(std::max<int64_t>(0, target_blocks)) *
                 bs / n_rows),
      max_length));

  // Per row: sort (metric, slot), then emit its finite-key candidates into its region.
  auto sorted = std::make_unique_for_overwrite<uint64_t[]>(static_cast<size_t>(kv_offset.back()));
  auto by_row =
      std::make_unique_for_overwrite<Candidate[]>(static_cast<size_t>(block_offset.back()));
  std::vector<int32_t> n_candidates(static_cast<size_t>(n_rows), 0);  // [n_rows]
#pragma omp parallel if (parallel)
  {
    std::vector<uint64_t> tmp(static_cast<size_t>(max_length));  // [max_length] radix scratch
#pragma omp for schedule(dynamic, 1)
    for (int32_t r = 0; r < n_rows; ++r) {
      const int32_t n = rows[r]->length;
      if (n == 0) continue;
      uint64_t* keys = sorted.get() + kv_offset[r];
      for_each_slot(*rows[r], bs, [&](int32_t s, int64_t p) {
        const int64_t pos = positions[p];
        const bool is_protected = pos >= protect_from || pos < options.sink_tokens;
        const uint32_t key = is_protected ? kNeverEvict : ordered_bits(metric[p]);
        keys[s] = static_cast<uint64_t>(key) << 32 | static_cast<uint32_t>(s);
      });
      radix_sort_by_key(keys, tmp.data(), static_cast<size_t>(n));
      Candidate* out = by_row.get() + block_offset[r];
      int32_t c = 0;
      for (int32_t end = hanging_kvs(n, bs); end <= n - floor_kvs; ++c, end += bs) {
        const auto key = static_cast<uint32_t>(keys[end - 1] >> 32);
        if (key == kNeverEvict) break;  // keys rise along the row: the rest are +inf too
        out[c] = Candidate{key, r, c};
      }
      n_candidates[r] = c;
    }
  }

  std::vector<int32_t> freed_per_row(static_cast<size_t>(n_rows), 0);  // [n_rows]
  int64_t n_free = 0;
  if (options.marginal_error) {
    n_free = select_by_marginal_error(cache, rows, sorted.get(), kv_offset, block_offset,
                                      n_candidates, to_free, parallel, freed_per_row);
  } else {
    n_free = select_by_key(by_row.get(), block_offset, n_candidates, to_free, freed_per_row);
  }

  // Each row evicts the first hanging + (e-1)*bs entries of its sorted order, listed in slot
  // order via a mark per slot.
  std::vector<int32_t> plan_row_of;  // [rows in plan] -> row index
  std::vector<int32_t> plan_row_k;   // [rows in plan] KVs evicted
  for (int32_t r = 0; r < n_rows; ++r) {
    const int32_t e = freed_per_row[r];
    if (e == 0) continue;
    plan_row_of.push_back(r);
    RowEviction& ev = plan.rows.emplace_back();
    ev.layer = r / cfg.n_head_kv;
    ev.kv_head = r % cfg.n_head_kv;
    const int32_t k = hanging_kvs(rows[r]->length, bs) + (e - 1) * bs;
    plan_row_k.push_back(k);
    plan.kvs_evicted += k;
  }
  const auto n_plan_rows = static_cast<int32_t>(plan.rows.size());
#pragma omp parallel if (parallel)
  {
    std::vector<uint8_t> evict(static_cast<size_t>(max_length));  // [max_length] marks
#pragma omp for schedule(dynamic, 1)
    for (int32_t i = 0; i < n_plan_rows; ++i) {
      const int32_t r = plan_row_of[i];
      const int32_t n = rows[r]->length;
      RowEviction& ev = plan.rows[i];
      const int32_t k = plan_row_k[i];
      ev.slots.reserve(static_cast<size_t>(k));
      const uint64_t* keys = sorted.get() + kv_offset[r];
      std::fill(evict.begin(), evict.begin() + n, 0);
      for (int32_t j = 0; j < k; ++j) evict[static_cast<uint32_t>(keys[j])] = 1;
      for (int32_t s = 0; s < n; ++s) {
        if (evict[s]) ev.slots.push_back(s);
      }
    }
  }
  plan.blocks_to_free = n_free;
  return plan;
}

}  // namespace kvc
