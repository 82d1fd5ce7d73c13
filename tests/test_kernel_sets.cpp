// Every x86 kernel set against the scalar reference, not only the one the dispatcher picks:
// AVX2, the AVX-512 builds (native where the CPU has AVX-512, emulated through SIMDe
// everywhere), their four-token kernels, and the matmul built on them.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/quant_avx2.h"
#include "kernels/cpu/quant_avx512.h"
#include "kernels/cpu_features.h"
#include "kernels/matmul.h"
#include "kernels/quant.h"
#include "kernel_set_cases.h"
#include "quant_test_data.h"

namespace kvc {
namespace {

using namespace kvc::test_support;

using KernelSetTest = KernelSetFixture;

TEST_P(KernelSetTest, HasKernelsForEveryWeightAndDotType) {
  for (TensorType type : kWeightTypes) {
    SCOPED_TRACE(type_traits(type).name);
    EXPECT_NE(set().vec_dot(type), nullptr);
    if (type != TensorType::F32) EXPECT_NE(set().dequantize(type), nullptr);  // F32: a copy
  }
  for (const DotTypeCase& dt : kDotTypes) EXPECT_NE(set().quantize(dt.type), nullptr);
}

TEST_P(KernelSetTest, DequantizeMatchesReferenceBitExact) {
  std::mt19937 rng(11);
  for (TensorType type : kWeightTypes) {
    const auto kernel = set().dequantize(type);
    if (!kernel) continue;
    for (int64_t n : row_lengths(type)) {
      SCOPED_TRACE(std::string(type_traits(type).name) + " n=" + std::to_string(n));
      const Bytes row = random_row(type, n, rng);
      const std::vector<float> expected = dequantized(type, row, n);
      std::vector<float> got(n, NAN);
      kernel(row.data(), got.data(), n);
      ASSERT_EQ(std::memcmp(got.data(), expected.data(), n * sizeof(float)), 0);
    }
  }
}

TEST_P(KernelSetTest, QuantizeForDotMatchesReferenceBitExact) {
  std::mt19937 rng(12);
  for (const DotTypeCase& dt : kDotTypes) {
    const auto kernel = set().quantize(dt.type);
    ASSERT_NE(kernel, nullptr);
    for (int64_t n : {256, 512, 4096}) {
      for (const std::vector<float>& x : activation_cases(n, rng)) {
        SCOPED_TRACE(std::string(type_traits(dt.type).name) + " n=" + std::to_string(n));
        Bytes ref(row_bytes(dt.type, n)), got(row_bytes(dt.type, n), 0xAB);
        reference::quantize_row_for_dot(dt.type, x.data(), ref.data(), n);
        kernel(x.data(), got.data(), n);
        ASSERT_EQ(std::memcmp(ref.data(), got.data(), ref.size()), 0);
      }
    }
  }
}

TEST_P(KernelSetTest, VecDotMatchesReference) {
  std::mt19937 rng(13);
  for (TensorType type : kWeightTypes) {
    const auto kernel = set().vec_dot(type);
    ASSERT_NE(kernel, nullptr);
    for (int64_t n : row_lengths(type)) {
      SCOPED_TRACE(std::string(type_traits(type).name) + " n=" + std::to_string(n));
      const DotCase c = make_dot_case(type, n, rng);
      const float expected = reference::vec_dot(type, n, c.weights.data(), c.activations.data());
      // Only the float accumulation order differs (blocks and lanes summed in float).
      EXPECT_NEAR(kernel(n, c.weights.data(), c.activations.data()), expected,
                  1e-5 * c.magnitude + 1e-30);
    }
  }
}

TEST_P(KernelSetTest, VecDot4IsFourVecDotsBitForBit) {
  std::mt19937 rng(14);
  int with_four = 0;
  for (TensorType type : kWeightTypes) {
    const auto four = set().vec_dot_4(type);
    if (!four) continue;
    ++with_four;
    const auto one = set().vec_dot(type);
    const TensorType dot_type = type_traits(type).dot_type;
    for (int64_t n : row_lengths(type)) {
      SCOPED_TRACE(std::string(type_traits(type).name) + " n=" + std::to_string(n));
      const Bytes w = random_row(type, n, rng);
      const size_t stride = row_bytes(dot_type, n) + 8;  // rows need not be adjacent
      Bytes a(4 * stride);
      for (int t = 0; t < 4; ++t) {
        const std::vector<float> x = random_activations(n, rng);
        reference::quantize_row_for_dot(dot_type, x.data(), a.data() + t * stride, n);
      }
      float out[4];
      four(n, w.data(), a.data(), stride, out);
      for (int t = 0; t < 4; ++t) {
        const float expected = one(n, w.data(), a.data() + t * stride);
        EXPECT_EQ(std::bit_cast<uint32_t>(out[t]), std::bit_cast<uint32_t>(expected))
            << "token " << t << ": " << out[t] << " vs " << expected;
      }
    }
  }
  EXPECT_EQ(with_four, 11) << "every weight type has a four-token kernel";
}

// Extreme quants: weights at both ends of their range against activations of +-127, where
// an int16 saturation or a lost sign in the integer path would show.
TEST_P(KernelSetTest, VecDotExtremeQuantsExact) {
  for (TensorType type : kWeightTypes) {
    const TypeTraits& traits = type_traits(type);
    if (traits.block_elems == 1) continue;
    const int64_t n = 4 * traits.block_elems * (traits.block_elems == 32 ? 3 : 1);
    for (uint8_t fill : {0x00, 0xFF, 0x80, 0x7F, 0x0F, 0xF0}) {
      SCOPED_TRACE(std::string(traits.name) + " fill=" + std::to_string(fill));
      std::mt19937 rng(fill);
      Bytes w = random_row(type, n, rng);  // realistic scales ...
      const size_t bb = traits.block_bytes;
      for (size_t b = 0; b < w.size() / bb; ++b) {  // ... then every quant byte = fill
        Bytes scales(w.begin() + b * bb, w.begin() + (b + 1) * bb);
        std::fill(w.begin() + b * bb, w.begin() + (b + 1) * bb, fill);
        for (const ScaleField& f : scale_fields(type))
          std::memcpy(w.data() + b * bb + f.offset, scales.data() + f.offset, 2);
      }
      std::vector<float> x(n);
      for (int64_t i = 0; i < n; ++i) x[i] = (i % 3 == 0) ? -1.0f : 1.0f;
      Bytes a(row_bytes(traits.dot_type, n));
      reference::quantize_row_for_dot(traits.dot_type, x.data(), a.data(), n);
      const std::vector<float> wf = dequantized(type, w, n), af = dequantized(traits.dot_type, a, n);
      double magnitude = 0.0;
      for (int64_t i = 0; i < n; ++i) magnitude += std::fabs(static_cast<double>(wf[i]) * af[i]);
      const float expected = reference::vec_dot(type, n, w.data(), a.data());
      const float got = set().vec_dot(type)(n, w.data(), a.data());
      EXPECT_NEAR(got, expected, 1e-5 * magnitude + 1e-6);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(X86, KernelSetTest, ::testing::ValuesIn(kKernelSets),
                         kernel_set_test_name);

// The AVX2 and AVX-512 legacy-block kernels add the same products in the same order (even
// blocks in one chain, odd in another; see vec_dot_avx2.cpp), so they agree to the bit, and a
// model gives the same logits on either CPU. Checked against the emulated AVX-512 builds.
TEST(KernelSets, Avx2AndAvx512LegacyDotsAgreeBitForBit) {
  if (cpu_best_kernel_isa() < KernelIsa::kAvx2) GTEST_SKIP() << "needs AVX2";
  std::mt19937 rng(16);
  for (TensorType type : {TensorType::Q4_0, TensorType::Q4_1, TensorType::Q5_0, TensorType::Q5_1,
                          TensorType::Q8_0}) {
    for (int64_t n : row_lengths(type)) {
      SCOPED_TRACE(std::string(type_traits(type).name) + " n=" + std::to_string(n));
      const DotCase c = make_dot_case(type, n, rng);
      const float avx2 = avx2::kRowKernels.vec_dot(type)(n, c.weights.data(), c.activations.data());
      for (const cpu::RowKernelSet* set :
           {&avx512_emulated::kRowKernels, &avx512_vnni_emulated::kRowKernels}) {
        const float avx512 = set->vec_dot(type)(n, c.weights.data(), c.activations.data());
        EXPECT_EQ(std::bit_cast<uint32_t>(avx2), std::bit_cast<uint32_t>(avx512))
            << set->name << ": " << avx512 << " vs avx2 " << avx2;
      }
    }
  }
}

// ---- matmul ---------------------------------------------------------------------------------

// Against the double-precision reference, and batching-invariant: a token's outputs are the
// same bits whether it comes alone or among others (prefill chunks vs decode steps).
TEST(Matmul, MatchesReferenceAndDoesNotDependOnBatching) {
  std::mt19937 rng(15);
  for (TensorType type : kWeightTypes) {
    const int64_t rows = 37, cols = type_traits(type).block_elems == 256 ? 512 : 96;
    const int64_t n_tokens = 11;  // two groups of four and three single tokens
    SCOPED_TRACE(type_traits(type).name);
    Bytes weights;
    for (int64_t r = 0; r < rows; ++r) {
      const Bytes row = random_row(type, cols, rng);
      weights.insert(weights.end(), row.begin(), row.end());
    }
    const WeightMatrix w{type, rows, cols, weights.data()};
    std::vector<float> x;
    for (int64_t t = 0; t < n_tokens; ++t) {
      const std::vector<float> xt = random_activations(cols, rng);
      x.insert(x.end(), xt.begin(), xt.end());
    }
    std::vector<float> batched(n_tokens * rows), alone(n_tokens * rows), expected(n_tokens * rows);
    MatmulScratch scratch;
    matmul(w, x.data(), cols, n_tokens, batched.data(), rows, scratch);
    for (int64_t t = 0; t < n_tokens; ++t) {
      matmul(w, x.data() + t * cols, cols, 1, alone.data() + t * rows, rows, scratch);
    }
    EXPECT_EQ(std::memcmp(batched.data(), alone.data(), batched.size() * sizeof(float)), 0);
    matmul_reference(w, x.data(), cols, n_tokens, expected.data(), rows);
    // Activations are quantized to 8 bits: each element is off by at most half a quantum
    // (block amax / 127 / 2, plus the fp16 rounding of the scale), weighted by |w|.
    const int64_t qblock = type_traits(type_traits(type).dot_type).block_elems;
    for (int64_t r = 0; r < rows; ++r) {
      const std::vector<float> wr =
          dequantized(type, Bytes(weights.begin() + r * w.row_stride(),
                                  weights.begin() + (r + 1) * w.row_stride()),
                      cols);
      for (int64_t t = 0; t < n_tokens; ++t) {
        const float* xt = x.data() + t * cols;
        double bound = 1e-5;
        for (int64_t c0 = 0; c0 < cols; c0 += qblock) {
          float amax = 0.0f;
          for (int64_t c = c0; c < c0 + qblock; ++c) amax = std::max(amax, std::fabs(xt[c]));
          for (int64_t c = c0; c < c0 + qblock; ++c)
            bound += std::fabs(wr[c]) * (0.5 + 127.0 * 0x1p-11) * amax / 127.0 +
                     1e-5 * std::fabs(wr[c] * xt[c]);
        }
        EXPECT_NEAR(batched[t * rows + r], expected[t * rows + r], bound)
            << "row " << r << " token " << t;
      }
    }
  }
}

TEST(KernelIsa, NamesRoundTripAndCapsApply) {
  for (KernelIsa isa :
       {KernelIsa::kScalar, KernelIsa::kAvx2, KernelIsa::kAvx512, KernelIsa::kAvx512Vnni,
        KernelIsa::kAmx}) {
    EXPECT_EQ(parse_kernel_isa(kernel_isa_name(isa)), isa);
  }
  EXPECT_EQ(parse_kernel_isa("avx1024"), std::nullopt);
  EXPECT_STREQ(cpu_kernel_isa(), kernel_isa_name(cpu_best_kernel_isa()));
  limit_kernel_isa(KernelIsa::kAvx2);
  EXPECT_LE(active_kernel_isa(), KernelIsa::kAvx2);
  EXPECT_EQ(active_kernel_isa(), std::min(KernelIsa::kAvx2, cpu_best_kernel_isa()));
  force_scalar_kernels(false);
  EXPECT_EQ(active_kernel_isa(), cpu_best_kernel_isa());
}

}  // namespace
}  // namespace kvc
