// Forward-pass ops against their definitions, and the sampler's filters.
#include <gtest/gtest.h>

#include <algorithm>

#include <cmath>
#include <complex>
#include <map>

#include <cstring>
#include <random>

#include "engine/sampler.h"
#include "kernels/cpu/ops_avx2.h"
#include "kernels/cpu_features.h"
#include "kernels/ops.h"
#include "util/fp16.h"

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

// The AVX2 silu against the definition in double over silu's whole working range (and where
// exp over- or underflows), for lengths that end inside a vector; and the dispatched op.
TEST(Ops, Avx2SiluMulIsCloseToTheDefinitionEverywhere) {
  if (!cpu_has_avx2()) GTEST_SKIP() << "needs AVX2";
  std::mt19937 rng(41);
  std::uniform_real_distribution<float> wide(-120.0f, 120.0f), narrow(-12.0f, 12.0f);
  for (int64_t n : {1, 7, 8, 13, 1536, 1541}) {
    std::vector<float> g(n), u(n);
    for (int64_t i = 0; i < n; ++i) {
      g[i] = i % 3 == 0 ? wide(rng) : narrow(rng);
      u[i] = narrow(rng);
    }
    std::vector<float> out = g, dispatched = g;
    avx2::silu_mul(out.data(), u.data(), n);
    silu_mul(dispatched.data(), u.data(), n);
    ASSERT_EQ(std::memcmp(out.data(), dispatched.data(), n * sizeof(float)), 0);
    for (int64_t i = 0; i < n; ++i) {
      const double x = g[i], want = x / (1.0 + std::exp(-x)) * u[i];
      // Below 1e-30 (g < -70) both are zero to the network; exp_ps clamps where std::exp overflows.
      ASSERT_NEAR(out[i], want, 4e-7 * std::fabs(want) + 1e-30) << "n=" << n << " g=" << g[i];
    }
  }
}

// F16C rounding gives float_to_fp16's bits for every number (normal, subnormal, ties, overflow).
TEST(Ops, Avx2Fp16RowGivesTheScalarBits) {
  if (!cpu_has_avx2()) GTEST_SKIP() << "needs AVX2";
  std::mt19937 rng(43);
  std::vector<float> x;
  for (float v : {0.0f, -0.0f, 65504.0f, 65520.0f, 1e9f, -1e9f, 6e-8f, 3e-8f, 1e-10f,
                  std::numeric_limits<float>::infinity(), 1.0009765625f, 1.00048828125f}) {
    x.push_back(v);
  }
  std::uniform_int_distribution<uint32_t> bits(0, 0x7f7fffffu);
  while (x.size() < 4099) {
    const float v = std::bit_cast<float>(bits(rng));
    x.push_back(x.size() % 2 ? v : -v);
  }
  std::vector<uint16_t> out(x.size());
  avx2::float_to_fp16_row(x.data(), out.data(), static_cast<int64_t>(x.size()));
  for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(out[i], float_to_fp16(x[i])) << x[i];
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

// The penalties re-derived naively: every distinct token of the window once, counted by a scan.
std::vector<float> naive_penalized(std::vector<float> logits, const std::vector<int32_t>& history,
                                   const SamplingParams& p) {
  const size_t n = p.repeat_last_n < 0 ? history.size()
                                       : std::min(history.size(), size_t(p.repeat_last_n));
  const std::vector<int32_t> window(history.end() - static_cast<std::ptrdiff_t>(n), history.end());
  for (size_t t = 0; t < logits.size(); ++t) {
    const auto c = std::count(window.begin(), window.end(), static_cast<int32_t>(t));
    if (c == 0) continue;
    logits[t] = logits[t] > 0.0f ? logits[t] / p.repeat_penalty : logits[t] * p.repeat_penalty;
    logits[t] -= static_cast<float>(c) * p.frequency_penalty + p.presence_penalty;
  }
  return logits;
}

TEST(Sampler, PenaltiesAreLlamaCppsRuleOverTheWindow) {
  // Greedy decisions a penalty must flip: positive logits divided, negative multiplied, counts
  // and presence subtracted, tokens outside the window untouched.
  SamplingParams rep;
  rep.repeat_penalty = 1.1f;
  Sampler r(rep);
  EXPECT_EQ(r.sample(std::vector<float>{3.0f, 2.9f}, std::vector<int32_t>{0}), 1);  // 2.73 < 2.9
  EXPECT_EQ(r.sample(std::vector<float>{3.0f, 2.5f}, std::vector<int32_t>{0}), 0);  // 2.73 > 2.5
  EXPECT_EQ(r.sample(std::vector<float>{-1.0f, -1.05f}, std::vector<int32_t>{0}), 1);  // -1.1
  SamplingParams freq;
  freq.frequency_penalty = 0.2f;
  Sampler f(freq);
  EXPECT_EQ(f.sample(std::vector<float>{1.0f, 0.5f}, std::vector<int32_t>{0, 0, 0}), 1);  // 0.4
  EXPECT_EQ(f.sample(std::vector<float>{1.0f, 0.5f}, std::vector<int32_t>{0, 0}), 0);     // 0.6
  SamplingParams pres;
  pres.presence_penalty = 0.6f;
  pres.repeat_last_n = 2;
  Sampler w(pres);
  // Token 0 outside the last 2, then inside them.
  EXPECT_EQ(w.sample(std::vector<float>{1.0f, 0.9f}, std::vector<int32_t>{0, 1, 1}), 0);
  EXPECT_EQ(w.sample(std::vector<float>{1.0f, 0.9f}, std::vector<int32_t>{1, 0, 0}), 1);  // once
  pres.repeat_last_n = 0;  // off
  Sampler off(pres);
  EXPECT_EQ(off.sample(std::vector<float>{1.0f, 0.9f}, std::vector<int32_t>{0}), 0);

  // Sampled, against the naive re-derivation: the same seed drawing from the penalized logits
  // gives the same tokens, for every window length and mixed penalties.
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  std::uniform_int_distribution<int32_t> token(0, 63);
  for (int32_t last_n : {-1, 1, 7, 64, 1000}) {
    SamplingParams p{0.9f, 20, 0.9f, 11};
    p.repeat_penalty = 1.3f;
    p.frequency_penalty = 0.15f;
    p.presence_penalty = -0.4f;
    p.repeat_last_n = last_n;
    SamplingParams plain = p;
    plain.repeat_penalty = 1.0f;
    plain.frequency_penalty = plain.presence_penalty = 0.0f;
    Sampler penalized(p), reference(plain);
    std::vector<int32_t> history;
    for (int step = 0; step < 200; ++step) {
      std::vector<float> logits(64);
      for (float& l : logits) l = normal(rng);
      const int32_t got = penalized.sample(logits, history);
      ASSERT_EQ(got, reference.sample(naive_penalized(logits, history, p)))
          << "last_n " << last_n << " step " << step;
      history.push_back(step % 3 == 0 ? token(rng) : got);
    }
  }
}

TEST(Sampler, WithoutPenaltiesTheHistoryChangesNothing) {
  std::vector<float> logits(50);
  for (int i = 0; i < 50; ++i) logits[i] = std::cos(i * 0.9f);
  Sampler a(SamplingParams{0.8f, 0, 0.95f, 4}), b(SamplingParams{0.8f, 0, 0.95f, 4});
  const std::vector<int32_t> history = {1, 2, 3, 3, 3, 7};
  for (int i = 0; i < 100; ++i) EXPECT_EQ(a.sample(logits, history), b.sample(logits));
}

}  // namespace
}  // namespace kvc
