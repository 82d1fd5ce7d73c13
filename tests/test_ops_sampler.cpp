// Forward-pass ops against their definitions, and the sampler's filters.
#include <gtest/gtest.h>

#include <cmath>
#include <complex>
#include <map>

#include "engine/sampler.h"
#include "kernels/ops.h"

namespace kvc {
namespace {

TEST(Ops, RmsNormMatchesDefinition) {
  std::vector<float> x = {1, -2, 3, -4, 5}, w = {1, 2, 3, 4, 5}, out(5);
  rms_norm(x.data(), w.data(), out.data(), 5, 1e-5f);
  const double ms = (1 + 4 + 9 + 16 + 25) / 5.0;
  for (int i = 0; i < 5; ++i) EXPECT_NEAR(out[i], x[i] / std::sqrt(ms + 1e-5) * w[i], 1e-6);
}

TEST(Ops, RopeRotatesPairsByPositionTimesFrequency) {
  const int32_t d = 8, pos = 7;
  const float theta = 10000.0f;
  std::vector<float> inv_freq(d / 2);
  for (int i = 0; i < d / 2; ++i) inv_freq[i] = std::pow(theta, -2.0f * i / d);
  std::vector<float> x(d);
  for (int i = 0; i < d; ++i) x[i] = 0.1f * (i + 1);
  const auto rotate = [&](std::vector<float>& y, int32_t rope_dims, int32_t p, RopeStyle style) {
    std::vector<float> cos_sin(static_cast<size_t>(rope_dims));
    rope_angles(p, inv_freq.data(), rope_dims, cos_sin.data());
    apply_rope(y.data(), 1, d, rope_dims, cos_sin.data(), style);
  };
  for (RopeStyle style : {RopeStyle::kAdjacentPairs, RopeStyle::kHalves}) {
    std::vector<float> y = x;
    rotate(y, d, pos, style);
    for (int i = 0; i < d / 2; ++i) {
      const int a = style == RopeStyle::kAdjacentPairs ? 2 * i : i;
      const int b = style == RopeStyle::kAdjacentPairs ? 2 * i + 1 : i + d / 2;
      const std::complex<double> z(x[a], x[b]);
      const std::complex<double> r = z * std::polar(1.0, static_cast<double>(pos) * inv_freq[i]);
      EXPECT_NEAR(y[a], r.real(), 1e-5);
      EXPECT_NEAR(y[b], r.imag(), 1e-5);
    }
  }
  // Position 0 is the identity; partial rotary dims leave the tail untouched.
  std::vector<float> y = x;
  rotate(y, d, 0, RopeStyle::kAdjacentPairs);
  for (int i = 0; i < d; ++i) EXPECT_FLOAT_EQ(y[i], x[i]);
  y = x;
  rotate(y, 4, 3, RopeStyle::kAdjacentPairs);
  for (int i = 4; i < d; ++i) EXPECT_FLOAT_EQ(y[i], x[i]);
}

TEST(Ops, SoftmaxAndSilu) {
  std::vector<float> x = {1000.0f, 1001.0f, 999.0f};  // large: must not overflow
  softmax_inplace(x.data(), 3);
  EXPECT_NEAR(x[0] + x[1] + x[2], 1.0f, 1e-6);
  EXPECT_NEAR(x[1] / x[0], std::exp(1.0f), 1e-4);
  std::vector<float> g = {-1.0f, 0.0f, 2.0f}, u = {2.0f, 3.0f, 0.5f};
  silu_mul(g.data(), u.data(), 3);
  EXPECT_NEAR(g[0], -1.0 / (1 + std::exp(1.0)) * 2.0, 1e-6);
  EXPECT_EQ(g[1], 0.0f);
  EXPECT_NEAR(g[2], 2.0 / (1 + std::exp(-2.0)) * 0.5, 1e-6);
}

TEST(Sampler, GreedyPicksArgmaxLowestIndexOnTies) {
  const std::vector<float> logits = {0.1f, 3.0f, -1.0f, 3.0f};
  Sampler s(SamplingParams{});
  EXPECT_EQ(s.sample(logits), 1);
  EXPECT_EQ(argmax(logits), 1);
}

TEST(Sampler, TopKOneIsGreedyAndSeedsAreReproducible) {
  std::vector<float> logits(100);
  for (int i = 0; i < 100; ++i) logits[i] = std::sin(i * 1.7f);
  Sampler k1(SamplingParams{1.0f, 1, 1.0f, 3});
  for (int i = 0; i < 20; ++i) EXPECT_EQ(k1.sample(logits), argmax(logits));
  Sampler a(SamplingParams{0.8f, 0, 1.0f, 42}), b(SamplingParams{0.8f, 0, 1.0f, 42});
  for (int i = 0; i < 50; ++i) EXPECT_EQ(a.sample(logits), b.sample(logits));
}

TEST(Sampler, FrequenciesFollowTheTemperedDistributionAndFilters) {
  const std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.15f), std::log(0.05f)};
  Sampler s(SamplingParams{1.0f, 0, 1.0f, 9});
  std::map<int, int> counts;
  const int n = 40000;
  for (int i = 0; i < n; ++i) ++counts[s.sample(logits)];
  EXPECT_NEAR(counts[0] / double(n), 0.5, 0.01);
  EXPECT_NEAR(counts[1] / double(n), 0.3, 0.01);
  EXPECT_NEAR(counts[3] / double(n), 0.05, 0.01);
  // top-p 0.75 keeps {0, 1} (0.5 < 0.75 <= 0.8); top-k 3 drops token 3.
  Sampler p(SamplingParams{1.0f, 0, 0.75f, 9});
  Sampler k(SamplingParams{1.0f, 3, 1.0f, 9});
  std::map<int, int> pc, kc;
  for (int i = 0; i < n; ++i) {
    ++pc[p.sample(logits)];
    ++kc[k.sample(logits)];
  }
  EXPECT_EQ(pc[2] + pc[3], 0);
  EXPECT_NEAR(pc[0] / double(n), 0.5 / 0.8, 0.01);
  EXPECT_EQ(kc[3], 0);
  EXPECT_NEAR(kc[2] / double(n), 0.15 / 0.95, 0.01);
}

}  // namespace
}  // namespace kvc
