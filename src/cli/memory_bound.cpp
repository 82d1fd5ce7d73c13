#include "cli/memory_bound.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <vector>

namespace kvc::cli {
namespace {

double matrix_bytes(const WeightMatrix& w) {
  return static_cast<double>(w.rows) * static_cast<double>(w.row_stride());
}

}  // namespace

double copy_bandwidth_bytes_per_second() {
  constexpr size_t kBytes = size_t{256} << 20;  // far beyond any last-level cache here
  constexpr int kPasses = 5;
  std::vector<uint8_t> src(kBytes, 1), dst(kBytes, 0);  // touched: no page faults timed
  double best = 0.0;
  for (int pass = 0; pass < kPasses; ++pass) {
    const auto start = std::chrono::steady_clock::now();
#pragma omp parallel
    {
      const auto n = static_cast<size_t>(omp_get_num_threads());
      const auto t = static_cast<size_t>(omp_get_thread_num());
      const size_t chunk = (kBytes / n + 63) / 64 * 64;
      const size_t begin = std::min(kBytes, t * chunk);
      const size_t end = std::min(kBytes, begin + chunk);
      std::memcpy(dst.data() + begin, src.data() + begin, end - begin);
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    best = std::max(best, 2.0 * static_cast<double>(kBytes) / s);
  }
  return best;
}

double decode_bytes_per_token(const Model& model, double context, size_t kv_bytes_per_kv) {
  const ModelWeights& w = model.weights();
  const ModelConfig& c = model.config();
  double bytes = matrix_bytes(w.output) + static_cast<double>(w.output_norm.size()) * sizeof(float);
  for (const LayerWeights& l : w.layers) {
    for (const WeightMatrix* m : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down}) {
      bytes += matrix_bytes(*m);
    }
    bytes += static_cast<double>(l.attn_norm.size() + l.ffn_norm.size() + l.bq.size() +
                                 l.bk.size() + l.bv.size()) * sizeof(float);
  }
  return bytes + context * c.n_layer * c.n_head_kv * static_cast<double>(kv_bytes_per_kv);
}

}  // namespace kvc::cli
