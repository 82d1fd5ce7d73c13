// Cost of KV-Compress eviction against the decode step it speeds up, on SmolLM2-135M's cache
// shape: 30 layers x 3 KV heads, head_dim 64, block size 16, f16 KVs, one 8K-token sequence
// (90 head rows x 8192 KVs = 46,080 blocks) with random metrics (uniform [0, 1)).
//
//   plan            plan_kvcompress_eviction to C = 256 (per-row radix sort + selection)
//   plan_compact    plan + plan_compaction + apply_compaction to C = 256 (cache restored
//                   outside the timed region)
//   compact_only    plan_compaction + apply_compaction with the plan made beforehand
//   decode_attention/full|compressed
//                   one decode step's attention over all 90 rows (1 token, group 3, squared
//                   metric accumulation as in decode) at 8K context vs after compression to C=256
//
// Single thread. Timings are printed, never checked.
#include <benchmark/benchmark.h>

#include <cmath>
#include <memory>
#include <random>
#include <vector>

#include "compress/budget.h"
#include "compress/kvcompress_planner.h"
#include "kernels/paged_attention.h"
#include "kv/compaction.h"

namespace kvc {
namespace {

constexpr int32_t kLayers = 30, kHeads = 3, kHeadDim = 64, kBlockSize = 16, kGroup = 3;
constexpr int32_t kTokens = 8192;
constexpr double kCacheTokens = 256;

struct Fixture {
  std::unique_ptr<PagedKvCache> full;        // the 8K-token sequence, uncompressed
  std::unique_ptr<PagedKvCache> compressed;  // the same after compression to C = 256
  SequenceId seq = 0;
  int64_t target = 0;
};

const Fixture& fixture() {
  static const Fixture f = [] {
    Fixture out;
    const int32_t blocks = kLayers * kHeads * (kTokens / kBlockSize);
    out.full = std::make_unique<PagedKvCache>(
        KvCacheConfig{kLayers, kHeads, kHeadDim, kBlockSize, blocks, KvStorageType::kF16});
    PagedKvCache& cache = *out.full;
    out.seq = cache.add_sequence();
    std::mt19937 rng(42);
    std::normal_distribution<float> g;
    std::uniform_real_distribution<float> u(0.0f, 1.0f);
    std::vector<float> k(static_cast<size_t>(kTokens) * kHeadDim), v(k.size());
    std::vector<int32_t> pos(kTokens);
    for (int32_t i = 0; i < kTokens; ++i) pos[static_cast<size_t>(i)] = i;
    for (int32_t l = 0; l < kLayers; ++l) {
      for (int32_t h = 0; h < kHeads; ++h) {
        for (float& x : k) x = g(rng);
        for (float& x : v) x = g(rng);
        cache.append(out.seq, l, h, k.data(), kHeadDim, v.data(), kHeadDim, pos.data(), kTokens);
        const HeadRow& row = cache.row(out.seq, l, h);
        for (int32_t s = 0; s < kTokens; ++s) {
          cache.pool()
              .metric()[int64_t{row.blocks[static_cast<size_t>(s / kBlockSize)]} * kBlockSize +
                        s % kBlockSize] = u(rng);
        }
      }
    }
    out.target = target_blocks(CacheBudget{CacheBudget::kMaxCacheTokens, kCacheTokens}, kTokens,
                               cache, out.seq);
    out.compressed = std::make_unique<PagedKvCache>(cache);  // explicit copy for the bench
    const EvictionPlan plan =
        plan_kvcompress_eviction(*out.compressed, out.seq, out.target, PlannerOptions{});
    apply_compaction(*out.compressed, plan_compaction(*out.compressed, out.seq, plan));
    return out;
  }();
  return f;
}

void BM_Plan(benchmark::State& state) {
  const Fixture& f = fixture();
  EvictionPlan plan;
  for (auto _ : state) {
    plan = plan_kvcompress_eviction(*f.full, f.seq, f.target, PlannerOptions{});
    benchmark::DoNotOptimize(plan.blocks_to_free);
  }
  state.counters["blocks_freed"] = static_cast<double>(plan.blocks_to_free);
  state.counters["kvs_evicted"] = static_cast<double>(plan.kvs_evicted);
  state.counters["kvs_in"] = static_cast<double>(f.full->retained_kvs(f.seq));
}
BENCHMARK(BM_Plan)->Name("plan/8K_to_C256")->Unit(benchmark::kMillisecond);

void BM_PlanCompact(benchmark::State& state, bool include_plan) {
  const Fixture& f = fixture();
  PagedKvCache cache = *f.full;  // working copy, restored before every iteration
  int64_t moves = 0;
  for (auto _ : state) {
    state.PauseTiming();
    cache = *f.full;
    EvictionPlan plan;
    if (!include_plan) plan = plan_kvcompress_eviction(cache, f.seq, f.target, PlannerOptions{});
    state.ResumeTiming();
    if (include_plan) plan = plan_kvcompress_eviction(cache, f.seq, f.target, PlannerOptions{});
    const CompactionPlan cp = plan_compaction(cache, f.seq, plan);
    apply_compaction(cache, cp);
    benchmark::ClobberMemory();
    moves = 0;
    for (const RowCompaction& rc : cp.rows) moves += static_cast<int64_t>(rc.moves.size());
  }
  state.counters["moves"] = static_cast<double>(moves);
  state.counters["kvs_kept"] = static_cast<double>(cache.retained_kvs(f.seq));
  state.counters["MiB_before"] = static_cast<double>(f.full->bytes_owned(f.seq)) / (1 << 20);
  state.counters["MiB_after"] = static_cast<double>(cache.bytes_owned(f.seq)) / (1 << 20);
}
BENCHMARK_CAPTURE(BM_PlanCompact, plan_compact, true)
    ->Name("plan_compact/8K_to_C256")
    ->Unit(benchmark::kMillisecond)
    ->Iterations(20);
BENCHMARK_CAPTURE(BM_PlanCompact, compact_only, false)
    ->Name("compact_only/8K_to_C256")
    ->Unit(benchmark::kMillisecond)
    ->Iterations(20);

void BM_DecodeAttention(benchmark::State& state, bool compressed) {
  const Fixture& f = fixture();
  PagedKvCache& cache = compressed ? *f.compressed : *f.full;
  const PagedKvPool pool = cache.pool().view();
  std::mt19937 rng(7);
  std::normal_distribution<float> g;
  std::vector<float> q(static_cast<size_t>(kLayers) * kHeads * kGroup * kHeadDim);
  for (float& x : q) x = g(rng);
  std::vector<float> out(kGroup * kHeadDim), scratch(static_cast<size_t>(kGroup) * kTokens);
  const int32_t qpos = kTokens;
  const float scale = 1.0f / std::sqrt(static_cast<float>(kHeadDim));
  for (auto _ : state) {
    for (int32_t l = 0; l < kLayers; ++l) {
      for (int32_t h = 0; h < kHeads; ++h) {
        const float* qh = q.data() + static_cast<size_t>(l * kHeads + h) * kGroup * kHeadDim;
        GroupQueries queries{qh, kGroup * kHeadDim, &qpos, 1, kGroup};
        paged_attention(pool, cache.row_view(f.seq, l, h), queries, scale,
                        MetricAccumulation::kSquared, out.data(), kGroup * kHeadDim,
                        scratch.data());
      }
    }
    benchmark::DoNotOptimize(out.data());
  }
  state.counters["kvs"] = static_cast<double>(cache.retained_kvs(f.seq));
  state.counters["MiB_read"] = static_cast<double>(cache.bytes_owned(f.seq)) / (1 << 20);
}
BENCHMARK_CAPTURE(BM_DecodeAttention, full, false)
    ->Name("decode_attention/full_8K")
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_DecodeAttention, compressed, true)
    ->Name("decode_attention/C256")
    ->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace kvc

BENCHMARK_MAIN();
