// Test data shared by the row-kernel tests (test_quant.cpp, test_kernel_sets.cpp): random
// rows of every weight type with realistic scales, activation rows with outliers and rounding
// edge cases, and dot-product cases with their exact value and error scale.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/quant.h"
#include "kernels/types.h"
#include "util/fp16.h"

namespace kvc::test_support {

using Bytes = std::vector<uint8_t>;


struct ScaleField {
  size_t offset;  // byte offset of an fp16 field inside the block
  float lo, hi;   // its magnitude is drawn from [lo, hi], with a random sign if `signed_`
  bool signed_;
};

// fp16 fields per block (ggml-common.h): d, and the min (m / dmin) where the type has one.
inline std::vector<ScaleField> scale_fields(TensorType type) {
  switch (type) {
    case TensorType::Q4_0:
    case TensorType::Q5_0:
    case TensorType::Q8_0:
      return {{0, 1e-3f, 0.1f, true}};
    case TensorType::Q4_1:
    case TensorType::Q5_1:
      return {{0, 1e-3f, 0.1f, true}, {2, 0.0f, 1.0f, true}};
    case TensorType::Q4_K:
    case TensorType::Q5_K:
      return {{0, 1e-4f, 0.01f, false}, {2, 1e-4f, 0.01f, false}};
    case TensorType::Q6_K:
      return {{208, 1e-4f, 0.01f, true}};
    default:
      return {};
  }
}

inline float uniform(std::mt19937& rng, float lo, float hi) {
  return std::uniform_real_distribution<float>(lo, hi)(rng);
}

// A row of `n` elements of `type`: random quant bytes with finite, realistic fp16 scales.
inline Bytes random_row(TensorType type, int64_t n, std::mt19937& rng) {
  Bytes row(row_bytes(type, n));
  auto put16 = [&](size_t at, uint16_t v) { std::memcpy(row.data() + at, &v, 2); };
  if (type == TensorType::F32) {
    for (int64_t i = 0; i < n; ++i) {
      const float v = uniform(rng, -2.0f, 2.0f);
      std::memcpy(row.data() + 4 * i, &v, 4);
    }
    return row;
  }
  if (type == TensorType::F16 || type == TensorType::BF16) {
    for (int64_t i = 0; i < n; ++i) {
      const float v = uniform(rng, -2.0f, 2.0f);
      put16(2 * i, type == TensorType::F16 ? float_to_fp16(v) : float_to_bf16(v));
    }
    return row;
  }
  for (auto& b : row) b = static_cast<uint8_t>(rng());
  const size_t block_bytes = type_traits(type).block_bytes;
  for (size_t block = 0; block < row.size() / block_bytes; ++block) {
    for (const ScaleField& f : scale_fields(type)) {
      float v = uniform(rng, f.lo, f.hi);
      if (f.signed_ && (rng() & 1)) v = -v;
      put16(block * block_bytes + f.offset, float_to_fp16(v));
    }
  }
  return row;
}

inline std::vector<float> random_activations(int64_t n, std::mt19937& rng) {
  std::vector<float> x(n);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (auto& v : x) v = normal(rng);
  for (int64_t i = 0; i < n; i += 97) x[i] *= 8.0f;  // outliers, as real activations have
  return x;
}

inline std::vector<float> dequantized(TensorType type, const Bytes& row, int64_t n) {
  std::vector<float> out(n);
  reference::dequantize_row(type, row.data(), out.data(), n);
  return out;
}

inline constexpr TensorType kWeightTypes[] = {TensorType::F32,  TensorType::F16,  TensorType::BF16,
                                   TensorType::Q8_0, TensorType::Q4_0, TensorType::Q4_1,
                                   TensorType::Q5_0, TensorType::Q5_1, TensorType::Q4_K,
                                   TensorType::Q5_K, TensorType::Q6_K};

inline std::vector<int64_t> row_lengths(TensorType type) {
  if (type_traits(type).block_elems == 256) return {256, 512, 4096};
  // Odd block counts (1, 3, 5) reach the AVX-512 kernels' half-filled last vector.
  if (type_traits(type).block_elems == 32) return {32, 64, 96, 160, 256, 512, 4096};
  return {1, 7, 32, 33, 47, 61, 79, 256, 512, 4096};  // float types: any length, tails included
}

struct DotTypeCase {
  TensorType type;
  size_t d_offset;  // where the scale is; fp16 except Q8_K (float)
  size_t qs_offset;
};

inline constexpr DotTypeCase kDotTypes[] = {
    {TensorType::Q8_0, 0, 2}, {TensorType::Q8_1, 0, 4}, {TensorType::Q8_K, 0, 4}};

inline float block_scale(TensorType type, const uint8_t* block) {
  if (type == TensorType::Q8_K) {
    float d;
    std::memcpy(&d, block, 4);
    return d;
  }
  uint16_t h;
  std::memcpy(&h, block, 2);
  return fp16_to_float(h);
}

inline std::vector<std::vector<float>> activation_cases(int64_t n, std::mt19937& rng) {
  std::vector<std::vector<float>> cases = {random_activations(n, rng), std::vector<float>(n, 0.0f)};
  // Exact halves with scale 1 (amax 127): roundf (Q8_0/Q8_1) and round-half-even (Q8_K)
  // differ here, so any SIMD rounding shortcut shows up.
  std::vector<float> halves(n);
  for (int64_t i = 0; i < n; ++i)
    halves[i] = (i % 32 == 0) ? 127.0f : static_cast<float>(i % 13) - 6.5f;
  cases.push_back(halves);
  // +a and -a in one block: Q8_K takes the sign of the first.
  std::vector<float> ties = random_activations(n, rng);
  for (int64_t i = 0; i < n; i += 256) {
    ties[i + 3] = -50.0f;
    ties[i + 200] = 50.0f;
  }
  cases.push_back(ties);
  return cases;
}

struct DotCase {
  Bytes weights;
  Bytes activations;
  double expected;   // float dot of dequantized weights and dequantized activations
  double magnitude;  // sum over elements of |terms| before any cancellation (see below)
  double stored_sum_error = 0.0;  // bound on the error of Q8_1's fp16 block sums (see below)
};

// Offsets of the min field whose zeroing leaves only the d * q part of the weights.
inline int min_field_offset(TensorType type) {
  switch (type) {
    case TensorType::Q4_1:
    case TensorType::Q5_1:
    case TensorType::Q4_K:
    case TensorType::Q5_K:
      return 2;
    default:
      return -1;
  }
}

inline DotCase make_dot_case(TensorType type, int64_t n, std::mt19937& rng) {
  DotCase c;
  c.weights = random_row(type, n, rng);
  const TensorType dot_type = type_traits(type).dot_type;
  const std::vector<float> x = random_activations(n, rng);
  c.activations.resize(row_bytes(dot_type, n));
  reference::quantize_row_for_dot(dot_type, x.data(), c.activations.data(), n);
  const std::vector<float> w = dequantized(type, c.weights, n);
  const std::vector<float> a = dequantized(dot_type, c.activations, n);
  // Weights with a min are d*q - m: a term can cancel, so its rounding is relative to
  // |d*q| + |m|, measured by dequantizing the row with the min zeroed.
  std::vector<float> scaled_part = w;
  if (const int off = min_field_offset(type); off >= 0) {
    Bytes no_min = c.weights;
    const size_t bb = type_traits(type).block_bytes;
    for (size_t b = 0; b < no_min.size() / bb; ++b)
      no_min[b * bb + off] = no_min[b * bb + off + 1] = 0;
    scaled_part = dequantized(type, no_min, n);
  }
  c.expected = 0.0;
  c.magnitude = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    c.expected += static_cast<double>(w[i]) * a[i];
    const double min_part = std::fabs(static_cast<double>(w[i]) - scaled_part[i]);
    c.magnitude += (std::fabs(static_cast<double>(scaled_part[i])) + min_part) * std::fabs(a[i]);
  }
  // Q8_1 stores s = fp16(d * sum(q)) with the float d, and the dot adds m * s, while the
  // dequantized activations use fp16(d): s and their sum differ by up to ~2^-10 relative.
  if (dot_type == TensorType::Q8_1) {
    for (int64_t b = 0; b < n / 32; ++b) {
      uint16_t m, s;
      std::memcpy(&m, c.weights.data() + b * type_traits(type).block_bytes + 2, 2);
      std::memcpy(&s, c.activations.data() + b * 36 + 2, 2);
      c.stored_sum_error += 0x1p-10 * std::fabs(fp16_to_float(m) * fp16_to_float(s));
    }
  }
  return c;
}

}  // namespace kvc::test_support
