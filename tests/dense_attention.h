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

// The rows' largest |v|: max_i |v[j * d + i]| for each row j of v [n, d].
inline std::vector<float> row_abs_max(const std::vector<float>& v, int32_t d) {
  std::vector<float> out(v.size() / static_cast<size_t>(d), 0.0f);
  for (size_t i = 0; i < v.size(); ++i) {
    float& m = out[i / static_cast<size_t>(d)];
    m = std::max(m, std::fabs(v[i]));
  }
  return out;
}

// How far a q8_0 cache's decode kernels may put an output from the exact value sums
// (kernels/cpu/x86_tile_helpers.h): each weight e_j * dv_jb is rounded to 2^-14 of the largest
// in its 32-slot chunk, and |qv_j| * dv_jb <= max|v_j|, so output i is within 2^-14 times the
// sum over chunks of nc * max_j (w_j * vmax_j). w: the weights (probabilities for a normalized
// output), vmax: row_abs_max, both for n row slots in the kernel's order from the range's start.
inline double q8_0_value_bound(const double* w, const float* vmax, int32_t n) {
  double bound = 0.0;
  for (int32_t c0 = 0; c0 < n; c0 += 32) {
    const int32_t nc = std::min(32, n - c0);
    double largest = 0.0;
    for (int32_t j = c0; j < c0 + nc; ++j) largest = std::max(largest, w[j] * vmax[j]);
    bound += nc * largest;
  }
  return std::ldexp(bound, -14);
}

}  // namespace kvc::test_support
