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

TEST(PrefillMetrics, MaxPoolIsSamePaddedStrideOne) {
  const std::vector<float> in = {0, 5, 1, 0, 0, 0, 0, 9, 0, 2};
  std::vector<float> out(in.size());
  max_pool_1d(in.data(), out.data(), 10, 3);
  EXPECT_EQ(out, (std::vector<float>{5, 5, 5, 1, 0, 0, 9, 9, 9, 2}));
  max_pool_1d(in.data(), out.data(), 10, 7);
  EXPECT_EQ(out, (std::vector<float>{5, 5, 5, 5, 9, 9, 9, 9, 9, 9}));
  max_pool_1d(in.data(), out.data(), 10, 1);
  EXPECT_EQ(out, in);
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
}

TEST(PrefillMetrics, WordSpansSplitAtWordStartsAndAtTheCap) {
  const std::vector<uint8_t> begins = {1, 0, 0, 1, 0, 1};
  EXPECT_EQ(word_span_starts(begins), (std::vector<int32_t>{0, 0, 0, 3, 3, 5}));
  std::vector<uint8_t> run(kMaxWordSpan + 5, 0);  // one whitespace-free run
  const std::vector<int32_t> starts = word_span_starts(run);
  EXPECT_EQ(starts[kMaxWordSpan - 1], 0);
  EXPECT_EQ(starts[kMaxWordSpan], kMaxWordSpan);
  EXPECT_EQ(starts.back(), kMaxWordSpan);
  std::vector<float> v = {1, 5, 2, 0, 3, 7};
  span_max(v.data(), 6, word_span_starts(begins).data());
  EXPECT_EQ(v, (std::vector<float>{5, 5, 5, 3, 3, 7}));
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

}  // namespace
}  // namespace kvc
