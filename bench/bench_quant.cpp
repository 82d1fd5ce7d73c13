// Throughput of the row kernels: vec_dot per weight type, the scalar reference against every
// x86 kernel set this CPU runs (avx2, avx512, avx512-vnni), for row lengths of the models we target (576: SmolLM2-135M
// hidden size, 1536: its FFN, 4096: 7B-class hidden size). Also activation quantization.
// One row is dotted repeatedly, so data stays in L1: this measures compute, not memory.
//
//   bench_quant --benchmark_filter='vec_dot/q4_1'   (bytes_per_second counts weight bytes)
//
// Compare sets as ratios within one run (the machines are shared and noisy). Rows ending in /x4
// run the four-token kernels (weights unpacked once for four activation rows, as in prefill);
// their items_per_second counts row-token pairs like the others.
//
// Rows under matmul/ time whole packed matmuls (a 1536 x 576 weight matrix, SmolLM2's FFN, times
// 16 or 512 tokens, as matmul() runs them: activation quantization included) on each kernel set
// from avx512-vnni up, so amx's tiles are compared with the VNNI kernels in one run. Pin the
// thread count with OMP_NUM_THREADS; items_per_second counts multiply-adds. Float weights
// (f32, f16, bf16) have no packed copy: their matmul/ rows run the row kernels (four tokens per
// vec_dot_4) on this CPU's best set and on avx2.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/quant_avx2.h"
#include "kernels/cpu/quant_avx512.h"
#include "kernels/cpu_features.h"
#include "kernels/matmul.h"
#include "kernels/packed_weights.h"
#include "kernels/quant.h"
#include "kernels/types.h"
#include "util/fp16.h"

namespace kvc {
namespace {

using Bytes = std::vector<uint8_t>;

const TensorType kWeightTypes[] = {TensorType::F32,  TensorType::F16,  TensorType::BF16,
                                   TensorType::Q8_0, TensorType::Q4_0, TensorType::Q4_1,
                                   TensorType::Q5_0, TensorType::Q5_1, TensorType::Q4_K,
                                   TensorType::Q5_K, TensorType::Q6_K};

// Timing does not depend on the values, only on their being finite: random quant bytes with
// the fp16 scale fields (and fp16/bf16 elements) set to a small finite value.
Bytes random_weight_row(TensorType type, int64_t n, std::mt19937& rng) {
  Bytes row(row_bytes(type, n));
  if (type == TensorType::F32) {
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    for (int64_t i = 0; i < n; ++i) {
      const float v = u(rng);
      std::memcpy(row.data() + 4 * i, &v, 4);
    }
    return row;
  }
  for (auto& b : row) b = static_cast<uint8_t>(rng());
  // Overwrite the fp16 fields (and every fp16/bf16 element) so no NaN or inf slows the floats.
  const uint16_t small = type == TensorType::BF16 ? float_to_bf16(0.01f) : float_to_fp16(0.01f);
  const size_t bb = type_traits(type).block_bytes;
  const int64_t be = type_traits(type).block_elems;
  for (size_t b = 0; b < row.size() / bb; ++b) {
    uint8_t* block = row.data() + b * bb;
    if (be == 1) {
      std::memcpy(block, &small, 2);
    } else if (type == TensorType::Q6_K) {
      std::memcpy(block + 208, &small, 2);
    } else {
      std::memcpy(block, &small, 2);
      std::memcpy(block + 2, &small, 2);  // m / dmin where the type has one; else qs bytes
    }
  }
  return row;
}

struct DotData {
  Bytes weights;
  Bytes activations;
};

DotData make_data(TensorType type, int64_t n) {
  std::mt19937 rng(42);
  DotData data;
  data.weights = random_weight_row(type, n, rng);
  std::vector<float> x(n);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (auto& v : x) v = normal(rng);
  const TensorType dot_type = type_traits(type).dot_type;
  data.activations.resize(row_bytes(dot_type, n));
  quantize_row_for_dot(dot_type, x.data(), data.activations.data(), n);
  return data;
}

// The native kernel sets this CPU runs, with the reference first (set == nullptr).
std::vector<const cpu::RowKernelSet*> kernel_sets() {
  std::vector<const cpu::RowKernelSet*> sets = {nullptr};
  const KernelIsa best = cpu_best_kernel_isa();
  if (best >= KernelIsa::kAvx2) sets.push_back(&avx2::kRowKernels);
  if (best >= KernelIsa::kAvx512) sets.push_back(&avx512::kRowKernels);
  if (best >= KernelIsa::kAvx512Vnni) sets.push_back(&avx512_vnni::kRowKernels);
  return sets;
}

void bench_vec_dot(benchmark::State& state, const cpu::RowKernelSet* set, TensorType type,
                   int64_t n) {
  const DotData data = make_data(type, n);
  const cpu::VecDotFn kernel = set ? set->vec_dot(type) : nullptr;
  for (auto _ : state) {
    const float r = kernel ? kernel(n, data.weights.data(), data.activations.data())
                           : reference::vec_dot(type, n, data.weights.data(), data.activations.data());
    benchmark::DoNotOptimize(r);
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(data.weights.size()));
  state.SetItemsProcessed(state.iterations() * n);
}

// Four activation rows per call (prefill); items count row-token pairs, as for vec_dot.
void bench_vec_dot_4(benchmark::State& state, const cpu::RowKernelSet* set, TensorType type,
                     int64_t n) {
  const DotData data = make_data(type, n);
  const size_t stride = data.activations.size();
  Bytes four_rows;
  for (int t = 0; t < 4; ++t)
    four_rows.insert(four_rows.end(), data.activations.begin(), data.activations.end());
  const cpu::VecDot4Fn kernel = set->vec_dot_4(type);
  float out[4];
  for (auto _ : state) {
    kernel(n, data.weights.data(), four_rows.data(), stride, out);
    benchmark::DoNotOptimize(out);
  }
  state.SetBytesProcessed(state.iterations() * 4 * static_cast<int64_t>(data.weights.size()));
  state.SetItemsProcessed(state.iterations() * 4 * n);
}

void bench_quantize(benchmark::State& state, const cpu::RowKernelSet* set, TensorType dot_type,
                    int64_t n) {
  std::vector<float> x(n);
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (auto& v : x) v = normal(rng);
  Bytes out(row_bytes(dot_type, n));
  const cpu::QuantizeRowFn kernel = set ? set->quantize(dot_type) : nullptr;
  for (auto _ : state) {
    if (kernel) {
      kernel(x.data(), out.data(), n);
    } else {
      reference::quantize_row_for_dot(dot_type, x.data(), out.data(), n);
    }
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * n);
}

void bench_matmul(benchmark::State& state, KernelIsa isa, TensorType type, int64_t tokens) {
  constexpr int64_t kRows = 1536, kCols = 576;
  std::mt19937 rng(11);
  Bytes data;
  for (int64_t r = 0; r < kRows; ++r) {
    const Bytes row = random_weight_row(type, kCols, rng);
    data.insert(data.end(), row.begin(), row.end());
  }
  WeightMatrix w{type, kRows, kCols, data.data(), nullptr};
  w.packed = pack_weights(w);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(tokens * kCols)), y(static_cast<size_t>(tokens * kRows));
  for (auto& v : x) v = normal(rng);
  MatmulScratch scratch;
  limit_kernel_isa(isa);
  for (auto _ : state) {
    matmul(w, x.data(), kCols, tokens, y.data(), kRows, scratch);
    benchmark::ClobberMemory();
  }
  limit_kernel_isa(kBestKernelIsa);
  state.SetItemsProcessed(state.iterations() * tokens * kRows * kCols);
}

void register_all() {
  const std::vector<const cpu::RowKernelSet*> sets = kernel_sets();
  const auto set_name = [](const cpu::RowKernelSet* set) {
    return std::string(set ? set->name : "reference");
  };
  for (TensorType type : kWeightTypes) {
    for (int64_t n : {576, 1536, 4096}) {
      if (n % type_traits(type).block_elems != 0) continue;  // 576 is not a K-quant row length
      const std::string name =
          "vec_dot/" + std::string(type_traits(type).name) + "/" + std::to_string(n) + "/";
      for (const cpu::RowKernelSet* set : sets) {
        benchmark::RegisterBenchmark((name + set_name(set)).c_str(), bench_vec_dot, set, type, n);
        if (set && set->vec_dot_4(type)) {
          benchmark::RegisterBenchmark((name + set_name(set) + "/x4").c_str(), bench_vec_dot_4, set,
                                       type, n);
        }
      }
    }
  }
  for (TensorType type : {TensorType::Q4_0, TensorType::Q4_1, TensorType::Q8_0}) {
    for (int64_t tokens : {16, 512}) {
      for (KernelIsa isa : {KernelIsa::kAvx512Vnni, KernelIsa::kAmx}) {
        if (isa > cpu_best_kernel_isa()) continue;
        const std::string name = "matmul/" + std::string(type_traits(type).name) + "/1536x576/" +
                                 std::to_string(tokens) + "/" + kernel_isa_name(isa);
        benchmark::RegisterBenchmark(name.c_str(), bench_matmul, isa, type, tokens);
      }
    }
  }
  // Float weights: AVX2 and the best row kernel set (AMX has no float path).
  std::vector<KernelIsa> row_isas;
  for (KernelIsa isa : {KernelIsa::kAvx2, KernelIsa::kAvx512Vnni}) {
    const KernelIsa capped = std::min(isa, cpu_best_kernel_isa());
    if (capped >= KernelIsa::kAvx2 && (row_isas.empty() || row_isas.back() != capped)) {
      row_isas.push_back(capped);
    }
  }
  for (TensorType type : {TensorType::F32, TensorType::F16, TensorType::BF16}) {
    for (int64_t tokens : {1, 16, 512}) {
      for (KernelIsa isa : row_isas) {
        const std::string name = "matmul/" + std::string(type_traits(type).name) + "/1536x576/" +
                                 std::to_string(tokens) + "/" + kernel_isa_name(isa);
        benchmark::RegisterBenchmark(name.c_str(), bench_matmul, isa, type, tokens);
      }
    }
  }
  for (TensorType dot_type : {TensorType::Q8_0, TensorType::Q8_1, TensorType::Q8_K}) {
    const std::string name = "quantize/" + std::string(type_traits(dot_type).name) + "/4096/";
    for (const cpu::RowKernelSet* set : sets) {
      benchmark::RegisterBenchmark((name + set_name(set)).c_str(), bench_quantize, set, dot_type,
                                   4096);
    }
  }
}

}  // namespace
}  // namespace kvc

int main(int argc, char** argv) {
  kvc::register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
