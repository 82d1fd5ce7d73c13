// Prefill metrics: pooling and group sums against a naive computation, and the forward pass's
// observation plumbing on the real model (attention probabilities sum to 1 per query, so L1
// mass per query head equals the number of observing queries).
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <random>

#include "compress/prefill_metrics.h"
#include "engine/word_spans.h"
#include "forward_helper.h"
#include "model/forward.h"
#include "model/model.h"

namespace kvc {
namespace {

// One layer, one KV head, group 1: a row holding `positions` (in slot order) with raw scores
// `raw` (slot-indexed); returns the metric of every slot after write_prefill_metrics.
std::vector<float> row_metric(const std::vector<int32_t>& positions, const std::vector<float>& raw,
                              int32_t kernel, std::span<const int32_t> spans = {},
                              MetricMerge merge = MetricMerge::kMax,
                              const std::vector<float>& before = {},
                              PoolReach reach = PoolReach::kBothSides) {
  const auto n = static_cast<int32_t>(positions.size());
  const int32_t bs = 4;
  PagedKvCache cache(KvCacheConfig{1, 1, 8, bs, 16, KvStorageType::kF32, true});
  const SequenceId seq = cache.add_sequence();
  std::vector<float> kv(static_cast<size_t>(n) * 8, 0.5f);
  cache.append(seq, 0, 0, kv.data(), 8, kv.data(), 8, positions.data(), n);
  const HeadRow& row = cache.row(seq, 0, 0);
  const auto at = [&](int32_t s) -> float& {
    return cache.pool().metric()[row.blocks[s / bs] * bs + s % bs];
  };
  for (int32_t s = 0; s < static_cast<int32_t>(before.size()); ++s) at(s) = before[s];
  const ObservationScores scores{raw.data(), 1, 1, static_cast<int64_t>(raw.size())};
  write_prefill_metrics(cache, seq, scores, 1, kernel, spans, merge, reach);
  std::vector<float> out(static_cast<size_t>(n));
  for (int32_t s = 0; s < n; ++s) out[s] = at(s);
  return out;
}

TEST(PrefillMetrics, MaxPoolIsSamePaddedStrideOne) {
  const std::vector<float> in = {0, 5, 1, 0, 0, 0, 0, 9, 0, 2};
  std::vector<int32_t> pos(in.size());
  for (size_t i = 0; i < pos.size(); ++i) pos[i] = static_cast<int32_t>(i);
  EXPECT_EQ(row_metric(pos, in, 3), (std::vector<float>{5, 5, 5, 1, 0, 0, 9, 9, 9, 2}));
  EXPECT_EQ(row_metric(pos, in, 7), (std::vector<float>{5, 5, 5, 5, 9, 9, 9, 9, 9, 9}));
  EXPECT_EQ(row_metric(pos, in, 1), in);
}

// The successor pool: a KV takes the best of itself and the k/2 positions before it, so 5 and 9
// reach forward only (hand-computed), and in a scrambled row it follows positions (naive
// re-derivation over every pair, spans applied after it).
TEST(PrefillMetrics, SuccessorPoolLendsScoresForwardOnly) {
  const std::vector<float> in = {0, 5, 1, 0, 0, 0, 0, 9, 0, 2};
  std::vector<int32_t> pos(in.size());
  for (size_t i = 0; i < pos.size(); ++i) pos[i] = static_cast<int32_t>(i);
  const auto succ = [&](const std::vector<int32_t>& p, const std::vector<float>& raw, int32_t k,
                        std::span<const int32_t> spans = {}) {
    return row_metric(p, raw, k, spans, MetricMerge::kMax, {}, PoolReach::kSuccessors);
  };
  EXPECT_EQ(succ(pos, in, 3), (std::vector<float>{0, 5, 5, 1, 0, 0, 0, 9, 9, 2}));
  EXPECT_EQ(succ(pos, in, 7), (std::vector<float>{0, 5, 5, 5, 5, 1, 0, 9, 9, 9}));
  EXPECT_EQ(succ(pos, in, 1), in);

  const std::vector<int32_t> sp = {40, 3, 12, 5, 41, 0, 13, 44, 2, 30};
  const std::vector<float> raw = {0.1f, 0.9f, 0.2f, 0.0f, 0.0f, 0.3f, 0.0f, 0.6f, 0.05f, 0.4f};
  std::vector<int32_t> spans(50);
  for (int32_t p = 0; p < 50; ++p) spans[p] = p;
  for (int32_t p = 12; p < 20; ++p) spans[p] = 12;  // 12, 13: one word
  for (const int32_t kernel : {3, 7}) {
    std::vector<float> pooled(sp.size(), 0.0f), worded(sp.size(), 0.0f);
    for (size_t s = 0; s < sp.size(); ++s) {
      for (size_t t = 0; t < sp.size(); ++t) {
        const int32_t back = sp[s] - sp[t];  // t lies `back` positions before s
        if (back >= 0 && back <= kernel / 2) pooled[s] = std::max(pooled[s], raw[t]);
      }
    }
    for (size_t s = 0; s < sp.size(); ++s) {
      for (size_t t = 0; t < sp.size(); ++t) {
        if (spans[sp[t]] == spans[sp[s]]) worded[s] = std::max(worded[s], pooled[t]);
      }
    }
    EXPECT_EQ(succ(sp, raw, kernel), pooled) << kernel;
    EXPECT_EQ(succ(sp, raw, kernel, spans), worded) << kernel;
  }
  // Position 3 (slot 1) scores 0.9: with kernel 7 it reaches position 5 (slot 3), two after
  // it, but not position 2 (slot 8) before it, which takes position 0's 0.3 instead; position
  // 0 (slot 5) has nothing before it and keeps its own 0.3.
  EXPECT_EQ(succ(sp, raw, 7)[3], 0.9f);
  EXPECT_EQ(succ(sp, raw, 7)[8], 0.3f);
  EXPECT_EQ(succ(sp, raw, 7)[5], 0.3f);
}

// After compression between prefill chunks a row holds some positions in any slot order: the
// pool reaches position neighbours (not slot neighbours), spans group by position, and the new
// scores meet the old metric by max (window) or sum (full observation). Naive re-derivation.
TEST(PrefillMetrics, PoolAndSpansFollowPositionsInAScrambledRow) {
  const std::vector<int32_t> pos = {40, 3, 12, 5, 41, 0, 13, 44, 2, 30};
  const std::vector<float> raw = {0.1f, 0.9f, 0.2f, 0.0f, 0.0f, 0.3f, 0.0f, 0.6f, 0.05f, 0.4f};
  std::vector<int32_t> spans(50);
  for (int32_t p = 0; p < 50; ++p) spans[p] = p;
  for (int32_t p = 12; p < 20; ++p) spans[p] = 12;  // 12, 13: one word
  spans[41] = 40;                                   // 40, 41: one word
  const auto naive = [&](int32_t kernel, bool with_spans) {
    const int32_t half = kernel / 2;
    std::vector<float> pooled(pos.size());
    for (size_t s = 0; s < pos.size(); ++s) {
      pooled[s] = 0.0f;
      for (size_t t = 0; t < pos.size(); ++t) {
        if (std::abs(pos[t] - pos[s]) <= half) pooled[s] = std::max(pooled[s], raw[t]);
      }
    }
    if (!with_spans) return pooled;
    std::vector<float> out(pos.size());
    for (size_t s = 0; s < pos.size(); ++s) {
      out[s] = 0.0f;
      for (size_t t = 0; t < pos.size(); ++t) {
        if (spans[pos[t]] == spans[pos[s]]) out[s] = std::max(out[s], pooled[t]);
      }
    }
    return out;
  };
  EXPECT_EQ(row_metric(pos, raw, 7), naive(7, false));
  EXPECT_EQ(row_metric(pos, raw, 3), naive(3, false));
  EXPECT_EQ(row_metric(pos, raw, 1), raw);
  EXPECT_EQ(row_metric(pos, raw, 3, spans), naive(3, true));
  // Position 3 (slot 1) scores 0.9: kernel 7 reaches position 0 (slot 5) three positions away,
  // kernel 3 does not (position 0 has no held neighbour within one position).
  EXPECT_EQ(row_metric(pos, raw, 7)[5], 0.9f);
  EXPECT_EQ(row_metric(pos, raw, 3)[5], 0.3f);
  const std::vector<float> before = {0.5f, 0.1f, 0.1f, 0.7f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 1.0f};
  const std::vector<float> fresh = naive(1, false);
  const std::vector<float> maxed = row_metric(pos, raw, 1, {}, MetricMerge::kMax, before);
  const std::vector<float> added = row_metric(pos, raw, 1, {}, MetricMerge::kAdd, before);
  const std::vector<float> replaced = row_metric(pos, raw, 1, {}, MetricMerge::kReplace, before);
  for (size_t s = 0; s < pos.size(); ++s) {
    EXPECT_EQ(maxed[s], std::max(before[s], fresh[s])) << s;
    EXPECT_FLOAT_EQ(added[s], before[s] + fresh[s]) << s;
    EXPECT_EQ(replaced[s], fresh[s]) << s;
  }
}

TEST(PrefillMetrics, PoolPerQueryHeadThenSumOverTheGroup) {
  // 2 layers x 2 KV heads, group 3, rows of 21 KVs (block size 4: the last block is partial).
  const int32_t n_layer = 2, n_kv = 2, group = 3, n = 21, stride = 32, bs = 4;
  PagedKvCache cache(KvCacheConfig{n_layer, n_kv, 8, bs, 64, KvStorageType::kF32, true});
  const SequenceId other = cache.add_sequence();  // scatter the blocks
  const SequenceId seq = cache.add_sequence();
  std::vector<float> kv(static_cast<size_t>(n) * 8, 0.5f);
  std::vector<int32_t> pos(n);
  for (int32_t i = 0; i < n; ++i) pos[i] = i;
  for (int32_t l = 0; l < n_layer; ++l) {
    for (int32_t h = 0; h < n_kv; ++h) {
      cache.append(other, l, h, kv.data(), 8, kv.data(), 8, pos.data(), 3);
      cache.append(seq, l, h, kv.data(), 8, kv.data(), 8, pos.data(), n);
    }
  }
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  std::vector<float> raw(static_cast<size_t>(n_layer) * n_kv * group * stride);
  for (float& x : raw) x = u(rng);
  const ObservationScores scores{raw.data(), n_layer, n_kv * group, stride};
  write_prefill_metrics(cache, seq, scores, group, 7);
  for (int32_t l = 0; l < n_layer; ++l) {
    for (int32_t h = 0; h < n_kv; ++h) {
      const HeadRow& row = cache.row(seq, l, h);
      for (int32_t s = 0; s < n; ++s) {
        double expected = 0;
        for (int32_t g = 0; g < group; ++g) {
          const float* head = scores.head(l, h * group + g);
          float m = -1;
          for (int32_t j = std::max(0, s - 3); j <= std::min(n - 1, s + 3); ++j) m = std::max(m, head[j]);
          expected += m;
        }
        EXPECT_NEAR(cache.pool().metric()[row.blocks[s / bs] * bs + s % bs], expected, 1e-5);
      }
    }
  }
  // The mass is the raw group sum: no pooling. Merged by max, then replaced.
  write_prefill_mass(cache, seq, scores, group);
  std::vector<float> halves(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) halves[i] = 0.5f * raw[i];
  write_prefill_mass(cache, seq, ObservationScores{halves.data(), n_layer, n_kv * group, stride},
                     group, MetricMerge::kMax);
  for (const float factor : {1.0f, 0.5f}) {
    if (factor == 0.5f) {
      write_prefill_mass(cache, seq,
                         ObservationScores{halves.data(), n_layer, n_kv * group, stride}, group,
                         MetricMerge::kReplace);
    }
    for (int32_t l = 0; l < n_layer; ++l) {
      for (int32_t h = 0; h < n_kv; ++h) {
        const HeadRow& row = cache.row(seq, l, h);
        for (int32_t s = 0; s < n; ++s) {
          double expected = 0;
          for (int32_t g = 0; g < group; ++g) expected += factor * scores.head(l, h * group + g)[s];
          EXPECT_NEAR(cache.pool().mass()[row.blocks[s / bs] * bs + s % bs], expected, 1e-5);
        }
      }
    }
  }
}

TEST(PrefillMetrics, WordSpansSplitAtWordStartsAndAtTheCap) {
  const std::vector<uint8_t> begins = {1, 0, 0, 1, 0, 1};
  EXPECT_EQ(word_span_starts(begins), (std::vector<int32_t>{0, 0, 0, 3, 3, 5}));
  std::vector<uint8_t> run(kMaxWordSpan + 5, 0);  // one whitespace-free run
  const std::vector<int32_t> starts = word_span_starts(run);
  EXPECT_EQ(starts[kMaxWordSpan - 1], 0);
  EXPECT_EQ(starts[kMaxWordSpan], kMaxWordSpan);
  EXPECT_EQ(starts.back(), kMaxWordSpan);
}

TEST(PrefillMetrics, WordSpansRaiseEveryTokenToItsSpanBestBeforeTheGroupSum) {
  // One layer, one KV head, group 2, no pooling: each head's score becomes its span's max.
  const int32_t n = 6, stride = 8, bs = 4;
  PagedKvCache cache(KvCacheConfig{1, 1, 8, bs, 8, KvStorageType::kF32, true});
  const SequenceId seq = cache.add_sequence();
  std::vector<float> kv(static_cast<size_t>(n) * 8, 0.5f);
  std::vector<int32_t> pos = {0, 1, 2, 3, 4, 5};
  cache.append(seq, 0, 0, kv.data(), 8, kv.data(), 8, pos.data(), n);
  std::vector<float> raw(2 * stride, 0.0f);
  const float head0[] = {0.0f, 0.9f, 0.0f, 0.0f, 0.1f, 0.0f};
  const float head1[] = {0.2f, 0.0f, 0.0f, 0.0f, 0.0f, 0.3f};
  std::copy(head0, head0 + n, raw.begin());
  std::copy(head1, head1 + n, raw.begin() + stride);
  const ObservationScores scores{raw.data(), 1, 2, stride};
  const std::vector<int32_t> spans = {0, 0, 0, 3, 3, 5};
  write_prefill_metrics(cache, seq, scores, 2, 1, spans);
  const HeadRow& row = cache.row(seq, 0, 0);
  const float expected[] = {1.1f, 1.1f, 1.1f, 0.1f, 0.1f, 0.3f};
  for (int32_t s = 0; s < n; ++s) {
    EXPECT_NEAR(cache.pool().metric()[row.blocks[s / bs] * bs + s % bs], expected[s], 1e-6) << s;
  }
}

class ObservationOnRealModel : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string path = KVC_MODEL_DIR "/SmolLM2-135M-Instruct.Q4_1.gguf";
    if (!std::ifstream(path)) GTEST_SKIP() << "model not downloaded: run scripts/setup.sh";
    model_ = Model::load(path);
  }
  std::unique_ptr<Model> model_;
};

TEST_F(ObservationOnRealModel, WordSpansOfARealPromptKeepNumbersAndWordsWhole) {
  const Tokenizer& tok = model_->tokenizer();
  const std::string text = "The code is 3026027. Pass-word: copper-lantern\nEnd";
  const std::vector<int32_t> ids = tok.encode(text, false);
  const std::vector<int32_t> spans = prompt_word_spans(tok, ids);
  ASSERT_EQ(spans.size(), ids.size());
  // Rebuild each span's text: the words of the sentence, whitespace attached to the next word
  // (SmolLM2 gives the space before a number a token of its own: a span of its own too).
  std::vector<std::string> words;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (spans[i] == static_cast<int32_t>(i)) words.emplace_back();
    words.back() += tok.token_to_piece(ids[i]);
  }
  EXPECT_EQ(words, (std::vector<std::string>{"The", " code", " is", " ", "3026027.", " Pass-word:",
                                             " copper-lantern", "\n", "End"}));
}

TEST_F(ObservationOnRealModel, L1MassEqualsObservingQueriesAndFullObservationRespectsBuffer) {
  const ModelConfig& c = model_->config();
  const int32_t n = 150;  // > the chunk size below: the window spans two chunks
  std::vector<int32_t> ids(n);
  for (int32_t i = 0; i < n; ++i) ids[i] = 200 + (i * 37) % 5000;
  PagedKvCache cache(KvCacheConfig{c.n_layer, c.n_head_kv, c.head_dim, 16,
                                   c.n_layer * c.n_head_kv * 10, KvStorageType::kF16, true});
  ForwardPass forward(*model_, 145, 160);  // window straddles the chunk boundary at 145

  for (MetricAccumulation kind : {MetricAccumulation::kAbsolute, MetricAccumulation::kSquared}) {
    for (bool full : {false, true}) {
      const SequenceId seq = cache.add_sequence();
      test_support::Observing observing;
      observing.observers = {{kind, 8, n - 1, full, 10}};
      observing.stride = 160;
      observing.sums.assign(static_cast<size_t>(c.n_layer) * c.n_head * 160, 0.0f);
      test_support::run_tokens(forward, cache, seq, ids, 0, &observing);
      const ObservationScores scores{observing.sums.data(), c.n_layer, c.n_head, 160};
      for (int32_t l = 0; l < c.n_layer; l += 7) {
        for (int32_t h = 0; h < c.n_head; ++h) {
          const float* s = scores.head(l, h);
          double total = 0;
          for (int32_t j = 0; j < n; ++j) {
            ASSERT_GE(s[j], 0.0f);
            total += s[j];
          }
          for (int32_t j = n; j < scores.stride; ++j) ASSERT_EQ(s[j], 0.0f);
          if (!full) {
            // Only the last 8 queries observed; nothing else may have been recorded.
            if (kind == MetricAccumulation::kAbsolute) {
              EXPECT_NEAR(total, 8.0, 1e-3);
            } else {
              EXPECT_GT(total, 0.0);
              EXPECT_LE(total, 8.0 + 1e-3);
            }
          } else {
            // Query i records only keys <= i - 10: the newest 10 keys get nothing at all, and
            // the total is below the number of queries that can see any key (n - 10).
            for (int32_t j = n - 10; j < n; ++j) EXPECT_EQ(s[j], 0.0f) << "key " << j;
            EXPECT_GT(total, 0.0);
            EXPECT_LE(total, n - 10 + 1e-3);
          }
        }
      }
      cache.remove_sequence(seq);
    }
  }
}

// The tail probe's scoring (ForwardPass::observe, docs/design.md §5): queries captured during
// a prefill, observing the same rows afterwards, record exactly what the window's own
// observer recorded during that prefill (same kernel, same causality), for both metrics.
TEST_F(ObservationOnRealModel, CapturedQueriesObserveLaterAsTheWindowObservedThen) {
  const ModelConfig& c = model_->config();
  const int32_t n = 150, window = 8, stride = 160;
  std::vector<int32_t> ids(n);
  for (int32_t i = 0; i < n; ++i) ids[i] = 300 + (i * 53) % 6000;
  PagedKvCache cache(KvCacheConfig{c.n_layer, c.n_head_kv, c.head_dim, 16,
                                   c.n_layer * c.n_head_kv * 10, KvStorageType::kF16, true});
  ForwardPass forward(*model_, 145, 160);  // the window straddles two chunks
  const size_t q_dim = static_cast<size_t>(c.n_head) * c.head_dim;
  const size_t per_observer = static_cast<size_t>(c.n_layer) * c.n_head * stride;
  for (MetricAccumulation kind : {MetricAccumulation::kAbsolute, MetricAccumulation::kSquared}) {
    const SequenceId seq = cache.add_sequence();
    test_support::Observing observing;
    observing.observers = {{kind, window, n - 1, false, 10}};
    observing.stride = stride;
    observing.sums.assign(per_observer, 0.0f);
    observing.captured.assign(c.n_layer * window * q_dim, std::nanf(""));
    observing.capture_from = n - window;
    observing.n_capture = window;
    test_support::run_tokens(forward, cache, seq, ids, 0, &observing);
    for (float q : observing.captured) ASSERT_FALSE(std::isnan(q));  // every query captured

    std::vector<PagedHeadRow> rows;
    for (int32_t l = 0; l < c.n_layer; ++l) {
      for (int32_t h = 0; h < c.n_head_kv; ++h) rows.push_back(cache.row_view(seq, l, h));
    }
    std::vector<int32_t> positions(window);
    for (int32_t i = 0; i < window; ++i) positions[i] = n - window + i;
    std::vector<float> later(per_observer, 0.0f);
    forward.observe(cache.pool().view(), rows, observing.captured.data(), positions.data(),
                    window, kind, later.data(), stride);
    double total = 0.0;
    for (size_t i = 0; i < per_observer; ++i) {
      ASSERT_EQ(later[i], observing.sums[i]) << "index " << i;
      total += later[i];
    }
    EXPECT_GT(total, 0.0);
    // Sums add up: observing twice records twice the first.
    forward.observe(cache.pool().view(), rows, observing.captured.data(), positions.data(),
                    window, kind, later.data(), stride);
    for (size_t i = 0; i < per_observer; i += 97) {
      EXPECT_FLOAT_EQ(later[i], 2.0f * observing.sums[i]);
    }
    cache.remove_sequence(seq);
  }
}

}  // namespace
}  // namespace kvc
