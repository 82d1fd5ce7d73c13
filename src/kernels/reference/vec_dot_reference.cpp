// Scalar reference dot products (see quant_reference.cpp for the conventions).
//
// Each weight block is reduced to an exact integer sum against the activation quants; the
// sum is scaled by (weight scale * activation scale) rounded to float, and the per-block
// terms are accumulated in double. Only the accumulation order is free for optimized paths.
#include "kernels/reference/vec_dot_reference.h"

#include <cstring>

#include "kernels/block_layouts.h"
#include "kernels/reference/block_elements.h"
#include "util/error.h"
#include "util/fp16.h"

namespace kvc::reference {
namespace {

using namespace kvc::blocks;

// w[n] F32/F16/BF16 (decoded by `load`) . a[n] F32.
template <typename Load>
double dot_float(int64_t n, Load load, const float* a) {
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(load(i)) * static_cast<double>(a[i]);
  return sum;
}

// Legacy weights (32-element blocks) against Q8_0 or Q8_1. `quant(block, j)` gives the
// integer value of element j *without* the weight min; `has_min` adds m * s per block.
template <typename WBlock, typename ABlock, typename Quant>
double dot_legacy(int64_t n, const WBlock* w, const ABlock* a, Quant quant) {
  double sum = 0.0;
  for (int64_t i = 0; i < n / kQK; ++i) {
    int sumi = 0;
    for (int j = 0; j < kQK; ++j) sumi += quant(w[i], j) * a[i].qs[j];
    const float d = fp16_to_float(w[i].d) * fp16_to_float(a[i].d);
    sum += static_cast<double>(d) * sumi;
    if constexpr (requires { w[i].m; }) {
      // sum_j (q_j dw + m)(y_j da) = dw da sum q_j y_j + m * (da sum y_j), the latter is s.
      sum += static_cast<double>(fp16_to_float(w[i].m) * fp16_to_float(a[i].s));
    }
  }
  return sum;
}

// Q4_K/Q5_K against Q8_K: sum_sub (d sc q - dmin m) . (da y)
//   = d da sum_sub sc sum(q y) - dmin da sum_sub m sum(y), sum(y) from the bsums.
template <typename WBlock, typename Quant>
double dot_k_with_mins(int64_t n, const WBlock* w, const BlockQ8_K* a, Quant quant) {
  double sum = 0.0;
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    uint8_t sc[8], m[8];
    unpack_scales_mins_k4(w[i].scales, sc, m);
    int sumi = 0, sum_mins = 0;
    for (int sub = 0; sub < 8; ++sub) {
      int sub_sum = 0;
      for (int l = 32 * sub; l < 32 * sub + 32; ++l) sub_sum += quant(w[i], l) * a[i].qs[l];
      sumi += sc[sub] * sub_sum;
      sum_mins += m[sub] * (a[i].bsums[2 * sub] + a[i].bsums[2 * sub + 1]);
    }
    sum += static_cast<double>(fp16_to_float(w[i].d) * a[i].d) * sumi;
    sum -= static_cast<double>(fp16_to_float(w[i].dmin) * a[i].d) * sum_mins;
  }
  return sum;
}

double dot_q6_k(int64_t n, const BlockQ6_K* w, const BlockQ8_K* a) {
  double sum = 0.0;
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    int sumi = 0;
    for (int sub = 0; sub < 16; ++sub) {
      int sub_sum = 0;
      for (int l = 16 * sub; l < 16 * sub + 16; ++l)
        sub_sum += (q6_k_quant(w[i], l) - 32) * a[i].qs[l];
      sumi += w[i].scales[sub] * sub_sum;
    }
    sum += static_cast<double>(fp16_to_float(w[i].d) * a[i].d) * sumi;
  }
  return sum;
}

}  // namespace

float vec_dot_blocks(TensorType weight_type, int64_t n, const void* weight_row,
                     const void* activations) {
  const auto* f32 = static_cast<const float*>(activations);
  const auto* u16 = static_cast<const uint16_t*>(weight_row);
  const auto* q8_0 = static_cast<const BlockQ8_0*>(activations);
  const auto* q8_1 = static_cast<const BlockQ8_1*>(activations);
  const auto* q8_k = static_cast<const BlockQ8_K*>(activations);
  double sum = 0.0;
  switch (weight_type) {
    case TensorType::F32: {
      const auto* w = static_cast<const float*>(weight_row);
      sum = dot_float(
          n, [w](int64_t i) { return w[i]; }, f32);
      break;
    }
    case TensorType::F16:
      sum = dot_float(
          n, [u16](int64_t i) { return fp16_to_float(u16[i]); }, f32);
      break;
    case TensorType::BF16:
      sum = dot_float(
          n, [u16](int64_t i) { return bf16_to_float(u16[i]); }, f32);
      break;
    case TensorType::Q4_0:
      sum = dot_legacy(n, static_cast<const BlockQ4_0*>(weight_row), q8_0,
                       [](const BlockQ4_0& b, int j) { return nibble(b.qs, j) - 8; });
      break;
    case TensorType::Q4_1:
      sum = dot_legacy(n, static_cast<const BlockQ4_1*>(weight_row), q8_1,
                       [](const BlockQ4_1& b, int j) { return nibble(b.qs, j); });
      break;
    case TensorType::Q5_0:
      sum = dot_legacy(
          n, static_cast<const BlockQ5_0*>(weight_row), q8_0,
          [](const BlockQ5_0& b, int j) { return five_bits(b.qs, load_qh(b.qh), j) - 16; });
      break;
    case TensorType::Q5_1:
      sum = dot_legacy(n, static_cast<const BlockQ5_1*>(weight_row), q8_1,
                       [](const BlockQ5_1& b, int j) { return five_bits(b.qs, load_qh(b.qh), j); });
      break;
    case TensorType::Q8_0:
      sum = dot_legacy(n, static_cast<const BlockQ8_0*>(weight_row), q8_0,
                       [](const BlockQ8_0& b, int j) { return static_cast<int>(b.qs[j]); });
      break;
    case TensorType::Q4_K:
      sum = dot_k_with_mins(n, static_cast<const BlockQ4_K*>(weight_row), q8_k, q4_k_quant);
      break;
    case TensorType::Q5_K:
      sum = dot_k_with_mins(n, static_cast<const BlockQ5_K*>(weight_row), q8_k, q5_k_quant);
      break;
    case TensorType::Q6_K:
      sum = dot_q6_k(n, static_cast<const BlockQ6_K*>(weight_row), q8_k);
      break;
    default:
      KVC_ASSERT(false && "vec_dot: unsupported weight type");
  }
  return static_cast<float>(sum);
}

}  // namespace kvc::reference
