// Server pieces that need no model: the text a client is sent (UTF-8 never split, stop strings
// cut exactly, never partly sent), the API-key compare, the Prometheus histograms, and the
// forward pass's attention plan.
#include <gtest/gtest.h>

#include "gguf/gguf.h"
#include "model/forward_batch.h"
#include "model/tokenizer/tokenizer.h"
#include "server/prometheus.h"
#include "server/server.h"
#include "server/text_assembler.h"

namespace kvc::server {
namespace {

class TextAssemblerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    GgufFile file = GgufFile::open(KVC_SOURCE_DIR "/tests/data/ggml-vocab-gpt-2.gguf");
    tokenizer_ = new Tokenizer(Tokenizer::from_gguf(file));
  }
  static void TearDownTestSuite() { delete tokenizer_; }

  // Feeds `text`'s tokens one at a time; returns what was sent after each.
  static std::vector<std::string> feed(TextAssembler& a, const std::string& text) {
    std::vector<std::string> sent;
    for (int32_t t : tokenizer_->encode(text, false)) sent.push_back(a.add(t));
    return sent;
  }
  static Tokenizer* tokenizer_;
};
Tokenizer* TextAssemblerTest::tokenizer_ = nullptr;

TEST_F(TextAssemblerTest, NeverSendsHalfAUtf8Character) {
  const std::string text = "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80!";  // café € 😀!
  TextAssembler a(*tokenizer_, {});
  std::string joined;
  for (const std::string& piece : feed(a, text)) {
    // Every piece is whole UTF-8: no piece starts with a continuation byte.
    if (!piece.empty()) EXPECT_NE(static_cast<unsigned char>(piece[0]) & 0xC0, 0x80) << piece;
    joined += piece;
  }
  joined += a.flush();
  EXPECT_EQ(joined, text);
  EXPECT_GT(tokenizer_->encode(text, false).size(), 6u);  // multi-byte characters were split
}

TEST_F(TextAssemblerTest, CutsAtTheFirstStopStringAndNeverSendsPartOfOne) {
  TextAssembler a(*tokenizer_, {"<END>", "\n\n"});
  std::string sent;
  for (const std::string& piece : feed(a, "one two <EN")) sent += piece;
  EXPECT_EQ(sent.find("<"), std::string::npos) << "a possible stop prefix was sent: " << sent;
  for (const std::string& piece : feed(a, "D> three")) sent += piece;
  EXPECT_TRUE(a.stopped());
  sent += a.flush();
  EXPECT_EQ(sent, "one two ");
  EXPECT_EQ(a.text(), "one two ");
  EXPECT_EQ(a.add(tokenizer_->encode("more", false)[0]), "");  // nothing after a stop
}

TEST_F(TextAssemblerTest, AHeldBackPrefixThatDoesNotCompleteIsSent) {
  TextAssembler a(*tokenizer_, {"<END>"});
  std::string sent;
  for (const std::string& piece : feed(a, "a <EX b")) sent += piece;
  EXPECT_FALSE(a.stopped());
  sent += a.flush();
  EXPECT_EQ(sent, "a <EX b");
}

TEST(ConstantTimeEqual, ComparesWholeStrings) {
  EXPECT_TRUE(constant_time_equal("secret", "secret"));
  EXPECT_FALSE(constant_time_equal("secret", "secreT"));
  EXPECT_FALSE(constant_time_equal("secret", "secret2"));
  EXPECT_FALSE(constant_time_equal("", "x"));
  EXPECT_TRUE(constant_time_equal("", ""));
}

TEST(Prometheus, HistogramBucketsAreCumulative) {
  Histogram h({0.1, 1.0});
  h.observe(0.05);
  h.observe(0.5);
  h.observe(0.7);
  h.observe(5.0);
  const std::string text = h.render("x_seconds", "help");
  EXPECT_NE(text.find("# TYPE x_seconds histogram"), std::string::npos);
  EXPECT_NE(text.find("x_seconds_bucket{le=\"0.1\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("x_seconds_bucket{le=\"1\"} 3\n"), std::string::npos) << text;
  EXPECT_NE(text.find("x_seconds_bucket{le=\"+Inf\"} 4\n"), std::string::npos) << text;
  EXPECT_NE(text.find("x_seconds_count 4\n"), std::string::npos) << text;
  EngineMetrics m;
  m.blocks_total = 10;
  m.blocks_used = 4;
  m.kv_retained = 50;
  m.kv_full = 200;
  const std::string all = render_metrics(m, ServerHistograms{}, "model-x");
  EXPECT_NE(all.find("kvc_kv_blocks_used 4\n"), std::string::npos);
  EXPECT_NE(all.find("kvc_kv_compression_ratio 4\n"), std::string::npos);
  EXPECT_NE(all.find("kvc_model_info{model=\"model-x\"} 1"), std::string::npos);
  EXPECT_NE(all.find("kvc_time_to_first_token_seconds_bucket"), std::string::npos);
}

}  // namespace
}  // namespace kvc::server

namespace kvc {
namespace {

// Two sequences: a decode token (per query) and a 70-token prompt chunk whose last 8 queries
// observe. Every token's output is written by exactly one unit per KV head (the prompt's by its
// tiles), the observers' queries run again per query in one observe-only unit, tiles hold at
// most kMaxQueryTile queries, and units come largest first.
TEST(AttentionPlan, CoversEveryTokenOnceAndKeepsObserversInOneUnit) {
  ForwardBatch batch;
  const int32_t rows = 2;  // n_layer * n_head_kv
  batch.tokens.assign(71, 1);
  batch.want_logits.assign(71, 0);
  batch.positions.push_back(500);
  for (int32_t i = 0; i < 70; ++i) batch.positions.push_back(i);
  const ObservationOptions window{MetricAccumulation::kSquared, 8, 69, false, 10};
  BatchSequence decode;
  decode.first_token = 0;
  decode.n_tokens = 1;
  decode.per_query = true;
  decode.row_offset = 0;
  BatchSequence prompt;
  prompt.first_token = 1;
  prompt.n_tokens = 70;
  prompt.row_offset = rows;
  prompt.observers = &window;
  prompt.n_observers = 1;
  batch.sequences = {decode, prompt};
  batch.rows.assign(2 * rows, PagedHeadRow{nullptr, 501});
  batch.rows[2] = batch.rows[3] = PagedHeadRow{nullptr, 70};

  const std::vector<AttentionWork> work = plan_attention_work(batch, rows, 1, 2);
  std::vector<int32_t> outputs(71, 0);  // units that write each token's output
  int32_t observer_units = 0;
  for (size_t i = 0; i < work.size(); ++i) {
    const AttentionWork& u = work[i];
    if (!u.observe_only) {
      for (int32_t t = u.first; t < u.first + u.count; ++t) ++outputs[t];
    }
    if (u.tiled) EXPECT_LE(u.count, kMaxQueryTile);
    if (u.sequence == 1 && !u.tiled) {
      // The observers' pass: the last 8 prompt tokens, whose outputs the tiles write.
      ++observer_units;
      EXPECT_TRUE(u.observe_only);
      EXPECT_EQ(u.first, 1 + 62);
      EXPECT_EQ(u.count, 8);
    }
    if (u.sequence == 0) EXPECT_FALSE(u.tiled || u.observe_only);
    if (i > 0) EXPECT_GE(work[i - 1].cost, u.cost);
  }
  EXPECT_EQ(observer_units, 1);
  for (int32_t t = 0; t < 71; ++t) EXPECT_EQ(outputs[t], 1) << "token " << t;
}

}  // namespace
}  // namespace kvc
