// Prefill attention of one 2K-token head row on SmolLM2-135M's shape (head_dim 64, GQA group 3,
// block size 16, f16 or q8_0 KVs, positions 0..2047 in slot order): the causal triangle of 2,048
// queries, run as ForwardPass::attention runs it for one (layer, KV head).
//
//   prefill_2K/per_query   paged_attention once per query token (the decode kernel; every
//                          K/V slot is converted once per query)
//   prefill_2K/tiled       paged_attention_tiled over tiles of kMaxQueryTile tokens (each K/V
//                          slot converted once per tile, online softmax)
//   decode_2K/per_query|tiled
//                          one query at position 2047 (a decode step without metric
//                          accumulation): paged_attention (the decode kernel every decode
//                          token runs) against the tiled kernel on one query
//
//   decode_8K_model/threads:T
//                          one decode step's attention of a whole model out of cache: 90 head
//                          rows (30 layers x 3 KV heads) of 8,192 slots each, filled as a
//                          512-token chunked prefill fills them (every row's blocks interleaved
//                          with the others'), one query per row, rows spread over T threads
//                          (paged_attention; what bandwidth the kernel reaches from DRAM)
//   read_stream/threads:T  512 MiB read on T threads (copied 32 KiB at a time into a buffer
//                          that stays in L1): the DRAM read bandwidth to set the
//                          decode_8K_model rows against
//   decode_8K_model/.../parts
//                          the same step as the engine runs it: layer by layer, each row in
//                          parts of 512 slots on any thread (paged_attention_part), merged
//
// Each runs on f16 and q8_0 KVs and every kernel set the CPU has (suffix /f16|q8_0/scalar|avx2|
// avx512|avx512-vnni, the last differing on q8_0 decode only: the dispatcher capped at that
// set), so one run compares them on one machine.
//
// Counters: items_per_second = query tokens per second; GFLOPS counts 4 * head_dim * group
// flops per visible (query, KV) pair (QK and PV). Single thread. Timings are printed, never
// checked.
#include <benchmark/benchmark.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu_features.h"
#include "kernels/paged_attention.h"
#include "kv/paged_kv_cache.h"

namespace kvc {
namespace {

constexpr int32_t kHeadDim = 64, kGroup = 3, kBlockSize = 16, kTokens = 2048;
constexpr int64_t kStride = int64_t{kGroup} * kHeadDim;

// n standard normal floats.
std::vector<float> normals(int64_t n, std::mt19937& rng) {
  std::normal_distribution<float> g;
  std::vector<float> out(static_cast<size_t>(n));
  for (float& x : out) x = g(rng);
  return out;
}

// 0, 1, .., n - 1.
std::vector<int32_t> iota_positions(int32_t n) {
  std::vector<int32_t> out(static_cast<size_t>(n));
  for (int32_t i = 0; i < n; ++i) out[static_cast<size_t>(i)] = i;
  return out;
}

struct Fixture {
  std::unique_ptr<PagedKvCache> cache;
  SequenceId seq = 0;
  std::vector<float> q;              // [kTokens, kGroup * kHeadDim]
  std::vector<int32_t> positions;    // [kTokens] 0..kTokens-1
  std::vector<float> out;            // [kTokens, kGroup * kHeadDim]
  std::vector<float> scratch;        // [kGroup * kTokens]
};

Fixture make_fixture(KvStorageType storage) {
  Fixture out;
  out.cache = std::make_unique<PagedKvCache>(KvCacheConfig{
      1, 1, kHeadDim, kBlockSize, kTokens / kBlockSize, storage});
  out.seq = out.cache->add_sequence();
  std::mt19937 rng(7);
  const std::vector<float> k = normals(kTokens * kHeadDim, rng);
  const std::vector<float> v = normals(kTokens * kHeadDim, rng);
  out.positions = iota_positions(kTokens);
  out.cache->append(out.seq, 0, 0, k.data(), kHeadDim, v.data(), kHeadDim,
                    out.positions.data(), kTokens);
  out.q = normals(kTokens * kStride, rng);
  out.out.resize(out.q.size());
  out.scratch.resize(static_cast<size_t>(kGroup) * kTokens);
  return out;
}

Fixture& fixture(KvStorageType storage) {
  static Fixture f16 = make_fixture(KvStorageType::kF16);
  static Fixture q8_0 = make_fixture(KvStorageType::kQ8_0);
  return storage == KvStorageType::kQ8_0 ? q8_0 : f16;
}

const float kScale = 1.0f / std::sqrt(static_cast<float>(kHeadDim));

// Queries [first, first + n) with the per-query kernel or the tiled one.
void run(Fixture& f, int32_t first, int32_t n, bool tiled) {
  const PagedKvPool pool = f.cache->pool().view();
  const PagedHeadRow row = f.cache->row_view(f.seq, 0, 0);
  const int32_t step = tiled ? kMaxQueryTile : 1;
  for (int32_t t = first; t < first + n; t += step) {
    const int32_t count = std::min(step, first + n - t);
    const GroupQueries queries{f.q.data() + t * kStride, kStride, f.positions.data() + t, count,
                               kGroup};
    float* out = f.out.data() + t * kStride;
    if (tiled) {
      paged_attention_tiled(pool, row, queries, kScale, out, kStride);
    } else {
      paged_attention(pool, row, queries, kScale, MetricAccumulation::kNone, out, kStride,
                      f.scratch.data());
    }
  }
}

void BM_Attention(benchmark::State& state, bool prefill, bool tiled, KernelIsa isa,
                  KvStorageType storage) {
  Fixture& f = fixture(storage);
  limit_kernel_isa(isa);
  const int32_t first = prefill ? 0 : kTokens - 1;
  const int32_t n = prefill ? kTokens : 1;
  for (auto _ : state) {
    run(f, first, n, tiled);
    benchmark::ClobberMemory();
  }
  limit_kernel_isa(kBestKernelIsa);
  double pairs = 0;  // visible (query, KV) pairs per iteration
  for (int32_t t = first; t < first + n; ++t) pairs += t + 1;
  state.SetItemsProcessed(state.iterations() * n);
  state.counters["GFLOPS"] = benchmark::Counter(
      static_cast<double>(state.iterations()) * pairs * 4.0 * kHeadDim * kGroup * 1e-9,
      benchmark::Counter::kIsRate);
}

// The model-sized cache of decode_8K_model.
constexpr int32_t kModelRows = 90, kModelTokens = 8192, kPrefillChunk = 512;

struct ModelFixture {
  std::unique_ptr<PagedKvCache> cache;
  SequenceId seq = 0;
  std::vector<float> q;        // [kModelRows, kGroup * kHeadDim]
  std::vector<float> out;      // [kModelRows, kGroup * kHeadDim]
  std::vector<float> scratch;  // [threads, kGroup * kModelTokens]
  int64_t kv_bytes = 0;        // K and V bytes of every row
};

ModelFixture make_model_fixture(KvStorageType storage) {
  ModelFixture out;
  const int32_t row_blocks = kModelTokens / kBlockSize;
  out.cache = std::make_unique<PagedKvCache>(
      KvCacheConfig{kModelRows, 1, kHeadDim, kBlockSize, kModelRows * row_blocks, storage});
  out.seq = out.cache->add_sequence();
  std::mt19937 rng(11);
  const std::vector<float> k = normals(kModelTokens * kHeadDim, rng);
  const std::vector<float> v = normals(kModelTokens * kHeadDim, rng);
  const std::vector<int32_t> positions = iota_positions(kModelTokens);
  for (int32_t c0 = 0; c0 < kModelTokens; c0 += kPrefillChunk) {
    for (int32_t r = 0; r < kModelRows; ++r) {
      out.cache->append(out.seq, r, 0, &k[static_cast<size_t>(c0) * kHeadDim], kHeadDim,
                        &v[static_cast<size_t>(c0) * kHeadDim], kHeadDim, &positions[c0],
                        kPrefillChunk);
    }
  }
  out.q = normals(kModelRows * kStride, rng);
  out.out.resize(out.q.size());
  out.kv_bytes = 2 * out.cache->pool().view().row_bytes * kModelRows * kModelTokens;
  return out;
}

ModelFixture& model_fixture(KvStorageType storage) {
  static ModelFixture f16 = make_model_fixture(KvStorageType::kF16);
  static ModelFixture q8_0 = make_model_fixture(KvStorageType::kQ8_0);
  return storage == KvStorageType::kQ8_0 ? q8_0 : f16;
}

// As the engine runs a full-cache decode step: layer by layer (3 rows each), every row split
// into parts of kPartSlots run on any thread, then merged in order.
constexpr int32_t kPartSlots = 512, kRowsPerLayer = 3;

void BM_ModelDecodeParts(benchmark::State& state, KernelIsa isa, KvStorageType storage) {
  ModelFixture& f = model_fixture(storage);
  const auto threads = static_cast<int32_t>(state.range(0));
  const int32_t n_parts = kModelTokens / kPartSlots;
  f.scratch.resize(static_cast<size_t>(threads) * kGroup * kPartSlots);
  std::vector<float> acc(static_cast<size_t>(kRowsPerLayer) * n_parts * kStride);
  std::vector<float> max(static_cast<size_t>(kRowsPerLayer) * n_parts * kGroup), sum(max.size());
  limit_kernel_isa(isa);
  const PagedKvPool pool = f.cache->pool().view();
  const int32_t qpos = kModelTokens - 1;
  for (auto _ : state) {
    for (int32_t layer = 0; layer < kModelRows / kRowsPerLayer; ++layer) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
      for (int32_t item = 0; item < kRowsPerLayer * n_parts; ++item) {
        const int32_t r = layer * kRowsPerLayer + item / n_parts, p = item % n_parts;
        const GroupQueries queries{f.q.data() + r * kStride, kStride, &qpos, 1, kGroup};
        paged_attention_part(pool, f.cache->row_view(f.seq, r, 0), queries, kScale,
                             p * kPartSlots, (p + 1) * kPartSlots, acc.data() + item * kStride,
                             max.data() + item * kGroup, sum.data() + item * kGroup,
                             f.scratch.data() + static_cast<size_t>(omp_get_thread_num()) *
                                                    kGroup * kPartSlots);
      }
      for (int32_t h = 0; h < kRowsPerLayer; ++h) {
        const size_t first = static_cast<size_t>(h) * n_parts;
        merge_attention_parts(n_parts, kGroup, kHeadDim, acc.data() + first * kStride,
                              max.data() + first * kGroup, sum.data() + first * kGroup,
                              f.out.data() + (layer * kRowsPerLayer + h) * kStride);
      }
    }
    benchmark::ClobberMemory();
  }
  limit_kernel_isa(kBestKernelIsa);
  state.SetBytesProcessed(state.iterations() * f.kv_bytes);
}

void BM_ModelDecode(benchmark::State& state, KernelIsa isa, KvStorageType storage) {
  ModelFixture& f = model_fixture(storage);
  const auto threads = static_cast<int32_t>(state.range(0));
  f.scratch.resize(static_cast<size_t>(threads) * kGroup * kModelTokens);
  limit_kernel_isa(isa);
  const PagedKvPool pool = f.cache->pool().view();
  const int32_t qpos = kModelTokens - 1;
  for (auto _ : state) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (int32_t r = 0; r < kModelRows; ++r) {
      const GroupQueries queries{f.q.data() + r * kStride, kStride, &qpos, 1, kGroup};
      paged_attention(pool, f.cache->row_view(f.seq, r, 0), queries, kScale,
                      MetricAccumulation::kNone, f.out.data() + r * kStride, kStride,
                      f.scratch.data() + static_cast<size_t>(omp_get_thread_num()) * kGroup *
                                             kModelTokens);
    }
    benchmark::ClobberMemory();
  }
  limit_kernel_isa(kBestKernelIsa);
  state.SetBytesProcessed(state.iterations() * f.kv_bytes);
}

void BM_ReadStream(benchmark::State& state) {
  const auto threads = static_cast<int32_t>(state.range(0));
  constexpr size_t kChunkBytes = size_t{32} << 10;  // stays in L1: only the reads go to DRAM
  static const std::vector<uint8_t> data(size_t{512} << 20, 1);
  const auto n_chunks = static_cast<int64_t>(data.size() / kChunkBytes);
  for (auto _ : state) {
#pragma omp parallel num_threads(threads)
    {
      alignas(64) static thread_local uint8_t sink[kChunkBytes];
#pragma omp for
      for (int64_t c = 0; c < n_chunks; ++c) {  // libc's memcpy: the widest loads the CPU has
        std::memcpy(sink, data.data() + static_cast<size_t>(c) * kChunkBytes, kChunkBytes);
      }
      benchmark::DoNotOptimize(sink);
    }
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(data.size()));
}
BENCHMARK(BM_ReadStream)
    ->Name("read_stream")
    ->ArgName("threads")
    ->Arg(1)
    ->Arg(2)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// Every case on every kernel set up to the CPU's best.
const bool kRegistered = [] {
  struct Shape {
    const char* name;
    bool prefill, tiled;
  };
  for (const Shape& shape : {Shape{"prefill_2K/per_query", true, false},
                             Shape{"prefill_2K/tiled", true, true},
                             Shape{"decode_2K/per_query", false, false},
                             Shape{"decode_2K/tiled", false, true}}) {
    for (KvStorageType storage : {KvStorageType::kF16, KvStorageType::kQ8_0}) {
      for (KernelIsa isa : {KernelIsa::kScalar, KernelIsa::kAvx2, KernelIsa::kAvx512,
                             KernelIsa::kAvx512Vnni}) {
        if (isa > cpu_best_kernel_isa()) continue;
        const std::string name = std::string(shape.name) +
                                 (storage == KvStorageType::kQ8_0 ? "/q8_0/" : "/f16/") +
                                 kernel_isa_name(isa);
        benchmark::RegisterBenchmark(name.c_str(), BM_Attention, shape.prefill, shape.tiled,
                                     isa, storage)
            ->Unit(shape.prefill ? benchmark::kMillisecond : benchmark::kMicrosecond);
      }
    }
  }
  for (KvStorageType storage : {KvStorageType::kF16, KvStorageType::kQ8_0}) {
    for (KernelIsa isa : {KernelIsa::kAvx2, KernelIsa::kAvx512, KernelIsa::kAvx512Vnni}) {
      if (isa > cpu_best_kernel_isa()) continue;
      const std::string name = std::string("decode_8K_model") +
                               (storage == KvStorageType::kQ8_0 ? "/q8_0/" : "/f16/") +
                               kernel_isa_name(isa);
      benchmark::RegisterBenchmark(name.c_str(), BM_ModelDecode, isa, storage)
          ->ArgName("threads")
          ->Arg(1)
          ->Arg(2)
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime();
      benchmark::RegisterBenchmark((name + "/parts").c_str(), BM_ModelDecodeParts, isa, storage)
          ->ArgName("threads")
          ->Arg(2)
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime();
    }
  }
  return true;
}();

}  // namespace
}  // namespace kvc

BENCHMARK_MAIN();
