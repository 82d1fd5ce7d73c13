#include "compress/baseline_planners.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "util/error.h"

namespace kvc {
namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// One KV of a row with its keep rank: higher (tier, value) is kept first.
struct Ranked {
  int32_t tier;
  double value;
  int32_t slot;
};

bool keep_before(const Ranked& a, const Ranked& b) {
  if (a.tier != b.tier) return a.tier > b.tier;
  if (a.value != b.value) return a.value > b.value;
  return a.slot < b.slot;
}

enum class Tier0 { kMetric, kPosition, kRandom };

// splitmix64: a seeded, order-free hash so that random keeps the same KVs for a given seed
// whatever slots they sit in.
uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Ranked KVs of every row of `seq` ([L*H] rows, layer-major; each [row length], slot order).
std::vector<std::vector<Ranked>> rank_rows(const PagedKvCache& cache, SequenceId seq, Tier0 tier0,
                                           const BaselineOptions& o) {
  const KvCacheConfig& cfg = cache.config();
  const int32_t bs = cfg.block_size;
  const int32_t n_rows = cfg.n_layer * cfg.n_head_kv;
  const float* metric = cache.pool().metric();          // [num_blocks * bs]
  const int32_t* positions = cache.pool().positions();  // [num_blocks * bs]
  auto physical = [&](const HeadRow& row, int32_t s) {
    return static_cast<int64_t>(row.blocks[static_cast<size_t>(s / bs)]) * bs + s % bs;
  };
  int32_t max_position = std::numeric_limits<int32_t>::min();
  for (int32_t r = 0; r < n_rows; ++r) {
    const HeadRow& row = cache.row(seq, r / cfg.n_head_kv, r % cfg.n_head_kv);
    for (int32_t s = 0; s < row.length; ++s)
      max_position = std::max(max_position, positions[physical(row, s)]);
  }
  const bool streaming = tier0 == Tier0::kPosition;
  const int64_t protect_from = streaming ? std::numeric_limits<int64_t>::max()
                                         : int64_t{max_position} - o.protected_window + 1;

  std::vector<std::vector<Ranked>> ranked(static_cast<size_t>(n_rows));
  for (int32_t r = 0; r < n_rows; ++r) {
    const int32_t layer = r / cfg.n_head_kv;
    const int32_t head = r % cfg.n_head_kv;
    const HeadRow& row = cache.row(seq, layer, head);
    std::vector<Ranked>& out = ranked[static_cast<size_t>(r)];
    out.resize(static_cast<size_t>(row.length));
    for (int32_t s = 0; s < row.length; ++s) {
      const int64_t p = physical(row, s);
      const int32_t pos = positions[p];
      Ranked k{0, 0.0, s};
      if (pos >= protect_from) {
        k = {3, static_cast<double>(pos), s};
      } else if (pos < o.sink_tokens) {
        k = {2, -static_cast<double>(pos), s};
      } else if (tier0 == Tier0::kPosition) {
        k.value = pos;
      } else if (tier0 == Tier0::kRandom) {
        const uint64_t h = mix(o.seed ^ mix((uint64_t(uint32_t(layer)) << 40) ^
                                            (uint64_t(uint32_t(head)) << 32) ^ uint32_t(pos)));
        k.value = static_cast<double>(h >> 11);  // 53 bits: exact in a double
      } else if (!std::isfinite(metric[p])) {
        k.tier = 1;
      } else {
        k.value = metric[p];
      }
      out[static_cast<size_t>(s)] = k;
    }
  }
  return ranked;
}

// Plan that keeps the `keep[r]` highest-ranked KVs of every row r (rows already within keep
// lose nothing). Consumes `ranked`.
EvictionPlan plan_from_keeps(const PagedKvCache& cache, SequenceId seq,
                             std::vector<std::vector<Ranked>>& ranked,
                             const std::vector<int64_t>& keep) {
  const KvCacheConfig& cfg = cache.config();
  EvictionPlan plan;
  plan.seq = seq;
  for (size_t r = 0; r < ranked.size(); ++r) {
    std::vector<Ranked>& row = ranked[r];
    const auto n = static_cast<int64_t>(row.size());
    const int64_t k = std::clamp<int64_t>(keep[r], 0, n);
    if (k == n) continue;
    std::nth_element(row.begin(), row.begin() + k, row.end(), keep_before);
    RowEviction& ev = plan.rows.emplace_back();
    ev.layer = static_cast<int32_t>(r) / cfg.n_head_kv;
    ev.kv_head = static_cast<int32_t>(r) % cfg.n_head_kv;
    ev.slots.reserve(static_cast<size_t>(n - k));
    for (int64_t i = k; i < n; ++i) ev.slots.push_back(row[static_cast<size_t>(i)].slot);
    std::sort(ev.slots.begin(), ev.slots.end());
    plan.kvs_evicted += n - k;
    plan.blocks_to_free += ceil_div(n, cfg.block_size) - ceil_div(k, cfg.block_size);
  }
  return plan;
}

int64_t blocks_of(const std::vector<int64_t>& keep, int32_t bs) {
  int64_t total = 0;
  for (int64_t k : keep) total += ceil_div(k, bs);
  return total;
}

EvictionPlan plan_uniform(const PagedKvCache& cache, SequenceId seq, int64_t target_blocks,
                          const BaselineOptions& o, Tier0 tier0) {
  validate_baseline_options(o);
  const KvCacheConfig& cfg = cache.config();
  const int64_t c_row = uniform_row_budget(cfg, target_blocks, o);
  const int64_t n_rows = int64_t{cfg.n_layer} * cfg.n_head_kv;
  EvictionPlan empty;
  empty.seq = seq;
  if (cache.owned_blocks(seq) <= n_rows * (c_row / cfg.block_size)) return empty;
  auto ranked = rank_rows(cache, seq, tier0, o);
  return plan_from_keeps(cache, seq, ranked, std::vector<int64_t>(ranked.size(), c_row));
}

}  // namespace

void validate_baseline_options(const BaselineOptions& o) {
  if (o.protected_window < 0) fail("protected window must be >= 0, got {}", o.protected_window);
  if (o.sink_tokens < 0) fail("sink tokens must be >= 0, got {}", o.sink_tokens);
  if (o.budget_multiplier < 1) fail("budget multiplier must be >= 1, got {}", o.budget_multiplier);
  if (o.max_blocks < 0) fail("max blocks must be >= 0, got {}", o.max_blocks);
  if (!(o.ada_safeguard >= 0.0 && o.ada_safeguard <= 1.0)) {
    fail("ada safeguard must be in [0, 1], got {}", o.ada_safeguard);
  }
}

int64_t baseline_total_blocks(int64_t target_blocks, const BaselineOptions& o) {
  const int64_t t = std::max<int64_t>(0, target_blocks);
  const int64_t m = o.budget_multiplier;
  const int64_t charged = t > INT64_MAX / m ? INT64_MAX : t * m;
  return std::min(charged, o.max_blocks);
}

int64_t uniform_row_budget(const KvCacheConfig& cfg, int64_t target_blocks,
                           const BaselineOptions& o) {
  const int64_t n_rows = int64_t{cfg.n_layer} * cfg.n_head_kv;
  const int64_t per_row = std::max<int64_t>(0, target_blocks) / n_rows;
  const int64_t charged = per_row > INT64_MAX / o.budget_multiplier / cfg.block_size
                              ? INT64_MAX / cfg.block_size
                              : per_row * o.budget_multiplier;
  return std::min(charged, o.max_blocks / n_rows) * cfg.block_size;
}

std::vector<int64_t> pyramid_row_budgets(const KvCacheConfig& cfg, int64_t target_blocks,
                                         const BaselineOptions& o) {
  constexpr double kBeta = 20.0;  // PyramidKV's default: the deepest layer keeps ~s/20
  const int32_t L = cfg.n_layer;
  const int32_t H = cfg.n_head_kv;
  const int32_t bs = cfg.block_size;
  const int64_t total = baseline_total_blocks(target_blocks, o);
  const double mu = static_cast<double>(total) * bs / (static_cast<double>(L) * H);
  const double w = static_cast<double>(o.protected_window) + o.sink_tokens;
  const auto window_blocks = static_cast<int64_t>(std::ceil(w / bs));
  std::vector<int64_t> budgets(static_cast<size_t>(L));
  for (int32_t l = 0; l < L; ++l) {
    double c = mu;
    if (L > 1 && mu > w) {
      const double s = mu - w;
      const double lo = s / kBeta;
      const double hi = 2.0 * s - lo;
      c = w + hi - l * (hi - lo) / (L - 1);
    }
    // Clamp: totals near INT64_MAX (no real budget) must not overflow the conversion.
    const double blocks = std::min(std::floor(c / bs), 1e15);
    budgets[static_cast<size_t>(l)] = std::max(static_cast<int64_t>(blocks), window_blocks) * bs;
  }
  // The window floor (and floating-point rounding) may overshoot: take blocks back from the
  // largest layer budget (the shallowest on ties) until the total fits; order is preserved.
  int64_t used = 0;
  for (int64_t k : budgets) used += H * (k / bs);
  while (used > total) {
    auto largest = std::max_element(budgets.rbegin(), budgets.rend());  // last of the largest
    if (*largest == 0) break;
    *largest -= bs;
    used -= H;
  }
  return budgets;
}

namespace {

// KVs kept per row given ranked rows (Ada-KV's rule, see the header).
std::vector<int64_t> ada_keeps(const KvCacheConfig& cfg, int64_t target_blocks,
                               const BaselineOptions& o,
                               const std::vector<std::vector<Ranked>>& ranked) {
  const int32_t L = cfg.n_layer;
  const int32_t H = cfg.n_head_kv;
  const int32_t bs = cfg.block_size;
  const int64_t t = std::max<int64_t>(0, target_blocks) / L;
  const int64_t charged = t > INT64_MAX / o.budget_multiplier ? INT64_MAX : t * o.budget_multiplier;
  const int64_t layer_blocks = std::min(charged, o.max_blocks / L);
  std::vector<int64_t> keeps(static_cast<size_t>(L) * H, 0);
  struct Entry {
    Ranked rank;
    int32_t head;
  };
  std::vector<Entry> layer_kvs;
  std::vector<Ranked> head_kvs;
  for (int32_t l = 0; l < L; ++l) {
    const int64_t budget_kvs = layer_blocks > INT64_MAX / bs ? INT64_MAX : layer_blocks * bs;
    // Safeguard: each head first keeps its own top floor(alpha * budget / H) KVs.
    const double reserve = std::floor(o.ada_safeguard * static_cast<double>(budget_kvs) / H);
    std::vector<int64_t> selected(static_cast<size_t>(H), 0);
    layer_kvs.clear();
    int64_t left_kvs = budget_kvs;
    for (int32_t h = 0; h < H; ++h) {
      head_kvs = ranked[static_cast<size_t>(l) * H + h];
      const auto n_h = static_cast<int64_t>(head_kvs.size());
      const int64_t r = static_cast<int64_t>(std::min(reserve, static_cast<double>(n_h)));
      std::nth_element(head_kvs.begin(), head_kvs.begin() + r, head_kvs.end(), keep_before);
      selected[static_cast<size_t>(h)] = r;
      left_kvs -= r;
      for (int64_t i = r; i < n_h; ++i) layer_kvs.push_back({head_kvs[static_cast<size_t>(i)], h});
    }
    const int64_t take = std::clamp<int64_t>(left_kvs, 0, static_cast<int64_t>(layer_kvs.size()));
    std::nth_element(layer_kvs.begin(), layer_kvs.begin() + take, layer_kvs.end(),
                     [](const Entry& a, const Entry& b) {
                       if (a.rank.tier != b.rank.tier) return a.rank.tier > b.rank.tier;
                       if (a.rank.value != b.rank.value) return a.rank.value > b.rank.value;
                       if (a.head != b.head) return a.head < b.head;
                       return a.rank.slot < b.rank.slot;
                     });
    for (int64_t i = 0; i < take; ++i) ++selected[static_cast<size_t>(layer_kvs[i].head)];
    // Largest remainder: floor blocks first, the blocks left to the largest remainders.
    std::vector<int64_t> blocks(static_cast<size_t>(H));
    int64_t left = layer_blocks;
    for (int32_t h = 0; h < H; ++h) {
      blocks[h] = selected[h] / bs;
      left -= blocks[h];
    }
    std::vector<int32_t> order;
    for (int32_t h = 0; h < H; ++h) {
      if (selected[h] % bs != 0) order.push_back(h);
    }
    std::stable_sort(order.begin(), order.end(),
                     [&](int32_t a, int32_t b) { return selected[a] % bs > selected[b] % bs; });
    for (size_t i = 0; i < order.size() && left > 0; ++i, --left) ++blocks[order[i]];
    for (int32_t h = 0; h < H; ++h) {
      const auto length = static_cast<int64_t>(ranked[static_cast<size_t>(l) * H + h].size());
      keeps[static_cast<size_t>(l) * H + h] = std::min(length, blocks[h] * bs);
    }
  }
  return keeps;
}

}  // namespace

std::vector<int64_t> ada_row_budgets(const PagedKvCache& cache, SequenceId seq,
                                     int64_t target_blocks, const BaselineOptions& o) {
  validate_baseline_options(o);
  const auto ranked = rank_rows(cache, seq, Tier0::kMetric, o);
  return ada_keeps(cache.config(), target_blocks, o, ranked);
}

EvictionPlan plan_streamingllm_eviction(const PagedKvCache& cache, SequenceId seq,
                                        int64_t target_blocks, const BaselineOptions& o) {
  return plan_uniform(cache, seq, target_blocks, o, Tier0::kPosition);
}

EvictionPlan plan_h2o_eviction(const PagedKvCache& cache, SequenceId seq, int64_t target_blocks,
                               const BaselineOptions& o) {
  return plan_uniform(cache, seq, target_blocks, o, Tier0::kMetric);
}

EvictionPlan plan_snapkv_eviction(const PagedKvCache& cache, SequenceId seq, int64_t target_blocks,
                                  const BaselineOptions& o) {
  return plan_uniform(cache, seq, target_blocks, o, Tier0::kMetric);
}

EvictionPlan plan_random_eviction(const PagedKvCache& cache, SequenceId seq, int64_t target_blocks,
                                  const BaselineOptions& o) {
  return plan_uniform(cache, seq, target_blocks, o, Tier0::kRandom);
}

EvictionPlan plan_pyramidkv_eviction(const PagedKvCache& cache, SequenceId seq,
                                     int64_t target_blocks, const BaselineOptions& o) {
  validate_baseline_options(o);
  const KvCacheConfig& cfg = cache.config();
  const std::vector<int64_t> layer = pyramid_row_budgets(cfg, target_blocks, o);
  std::vector<int64_t> keep(static_cast<size_t>(cfg.n_layer) * cfg.n_head_kv);
  for (size_t r = 0; r < keep.size(); ++r) keep[r] = layer[r / cfg.n_head_kv];
  EvictionPlan empty;
  empty.seq = seq;
  if (cache.owned_blocks(seq) <= blocks_of(keep, cfg.block_size)) return empty;
  auto ranked = rank_rows(cache, seq, Tier0::kMetric, o);
  return plan_from_keeps(cache, seq, ranked, keep);
}

EvictionPlan plan_ada_snapkv_eviction(const PagedKvCache& cache, SequenceId seq,
                                      int64_t target_blocks, const BaselineOptions& o) {
  validate_baseline_options(o);
  const KvCacheConfig& cfg = cache.config();
  const int64_t t = std::max<int64_t>(0, target_blocks) / cfg.n_layer;
  const int64_t layer_blocks =
      std::min(t > INT64_MAX / o.budget_multiplier ? INT64_MAX : t * o.budget_multiplier,
               o.max_blocks / cfg.n_layer);
  EvictionPlan empty;
  empty.seq = seq;
  if (layer_blocks <= INT64_MAX / cfg.n_layer &&
      cache.owned_blocks(seq) <= layer_blocks * cfg.n_layer) {
    return empty;
  }
  auto ranked = rank_rows(cache, seq, Tier0::kMetric, o);
  const std::vector<int64_t> keep = ada_keeps(cfg, target_blocks, o, ranked);
  return plan_from_keeps(cache, seq, ranked, keep);
}

}  // namespace kvc
