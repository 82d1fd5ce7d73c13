// Test reference: naive dense softmax attention in double over explicit KVs, for comparing the
// paged kernels against (before and after compaction).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace kvc::test_support {

// One query head: softmax(q . K^T * scale) V over the KVs with position <= qpos.
// q: [d]; k, v: [n, d]; pos: [n]. Returns [d]; `probs` (optional) receives the [n] probabilities.
inline std::vector<float> dense_attention(const float* q, const std::vector<float>& k,
                                          const std::vector<float>& v,
                                          const std::vector<int32_t>& pos, int32_t qpos, int32_t d,
                                          float scale, std::vector<double>* probs = nullptr) {
  const size_t n = pos.size();
  std::vector<double> s(n, -INFINITY);
  double max = -INFINITY;
  for (size_t j = 0; j < n; ++j) {
    if (pos[j] > qpos) continue;
    double dot = 0;
    for (int32_t i = 0; i < d; ++i) dot += static_cast<double>(q[i]) * k[j * d + i];
    s[j] = dot * scale;
    max = std::max(max, s[j]);
  }
  double sum = 0;
  for (size_t j = 0; j < n; ++j) sum += (s[j] = std::isinf(s[j]) ? 0.0 : std::exp(s[j] - max));
  std::vector<double> out(static_cast<size_t>(d), 0.0);
  for (size_t j = 0; j < n; ++j) {
    s[j] /= sum;
    for (int32_t i = 0; i < d; ++i) out[static_cast<size_t>(i)] += s[j] * v[j * d + i];
  }
  if (probs != nullptr) *probs = s;
  return std::vector<float>(out.begin(), out.end());
}

}  // namespace kvc::test_support
