// End-to-end golden test against llama.cpp (scripts/golden/make_model_golden.py) on the real
// SmolLM2 model: identical token ids, identical top-1 at every checked position, logits within a
// stated tolerance, identical greedy continuation up to the first reference near-tie.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/generator.h"
#include "engine/sampler.h"
#include "model/forward.h"
#include "model/model.h"

namespace kvc {
namespace {

// Both engines quantize activations to 8 bits per block before every matmul, so a value that
// lands on a rounding boundary in one summation order and not in the other changes that sample
// of quantization noise; 30 layers amplify it. Our own scalar and AVX2 kernels (same math,
// different summation order) differ from each other by up to 0.33 on these prompts, f16 vs f32
// KV storage by up to 0.55: that is this model's noise floor, and the bounds below sit just
// above it (figures: docs/correctness.md).
constexpr float kMaxLogitDiff = 0.75f;   // max |ours - llama.cpp| over the reference's top 64
constexpr float kNearTieMargin = 0.50f;  // top-1 and greedy tokens must agree wherever the
                                         // reference's top-2 margin is at least this

const std::string kModelPath = KVC_MODEL_DIR "/SmolLM2-135M-Instruct.Q4_1.gguf";

class GoldenTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!std::ifstream(kModelPath)) return;
    model_ = Model::load(kModelPath).release();
    std::ifstream in(KVC_SOURCE_DIR "/tests/golden/smollm2_llamacpp.json");
    golden_ = new nlohmann::json(nlohmann::json::parse(in));
  }
  static void TearDownTestSuite() {
    delete model_;
    delete golden_;
  }
  void SetUp() override {
    if (model_ == nullptr) GTEST_SKIP() << "model not downloaded: run scripts/setup.sh";
  }

  static Model* model_;
  static nlohmann::json* golden_;
};

Model* GoldenTest::model_ = nullptr;
nlohmann::json* GoldenTest::golden_ = nullptr;

TEST_F(GoldenTest, TokenIdsMatchLlamaCpp) {
  for (const auto& c : (*golden_)["cases"]) {
    const std::vector<int32_t> expected = c["ids"].get<std::vector<int32_t>>();
    const std::vector<int32_t> ids =
        model_->tokenizer().encode(c["text"].get<std::string>(), c["parse_special"].get<bool>());
    EXPECT_EQ(ids, expected) << "case " << c["name"];
  }
}

TEST_F(GoldenTest, LogitsAndGreedyTokensMatchLlamaCpp) {
  const ModelConfig& config = model_->config();
  EngineConfig engine;
  engine.max_context = 4096;
  engine = resolve_engine_config(config, engine);
  PagedKvCache cache(KvCacheConfig{config.n_layer, config.n_head_kv, config.head_dim,
                                   engine.block_size, engine.num_blocks, engine.kv_storage, true});
  ForwardPass forward(*model_, 256, engine.max_context);

  int32_t total_compared = 0;
  for (const auto& c : (*golden_)["cases"]) {
    SCOPED_TRACE(c["name"].get<std::string>());
    const std::vector<int32_t> ids = c["ids"].get<std::vector<int32_t>>();
    const SequenceId seq = cache.add_sequence();

    // Prefill in chunks that end exactly at the checked positions.
    int32_t done = 0;
    int32_t checked_positions = 0;
    std::span<const float> logits;
    for (const auto& p : c["positions"]) {
      const int32_t pos = p["position"].get<int32_t>();
      logits = forward.run(cache, seq, std::span(ids).subspan(done, pos + 1 - done), done);
      done = pos + 1;
      if (p["margin"].get<float>() < kNearTieMargin) continue;
      ++checked_positions;
      EXPECT_EQ(argmax(logits), p["top1"].get<int32_t>())
          << "top-1 differs at position " << pos << " (reference margin " << p["margin"] << ")";
    }
    ASSERT_EQ(done, static_cast<int32_t>(ids.size()));

    float max_diff = 0.0f;
    for (const auto& t : c["final_top"]) {
      const float diff = std::fabs(logits[t["id"].get<size_t>()] - t["logit"].get<float>());
      max_diff = std::max(max_diff, diff);
    }
    EXPECT_LE(max_diff, kMaxLogitDiff);
    std::printf("[golden] %-16s %5zu tokens  max|dlogit| over top-64: %.4f  top-1 identical at "
                "%d of %zu checked positions (others are near-ties)\n",
                c["name"].get<std::string>().c_str(), ids.size(), max_diff, checked_positions,
                c["positions"].size());

    // Greedy continuation. The reference's token is fed back at every step, so up to its first
    // near-tie this is exactly free-running greedy decoding; after a near-tie, teacher forcing
    // keeps both engines on the same prefix and every later decisive step is still compared.
    int32_t position = static_cast<int32_t>(ids.size());
    int32_t compared = 0;
    int32_t identical_prefix = -1;
    for (const auto& g : c["greedy"]) {
      const int32_t expected = g["token"].get<int32_t>();
      if (g["margin"].get<float>() >= kNearTieMargin) {
        EXPECT_EQ(argmax(logits), expected) << "greedy step " << position - ids.size();
        ++compared;
      } else if (identical_prefix < 0) {
        identical_prefix = position - static_cast<int32_t>(ids.size());
      }
      const int32_t next[1] = {expected};
      logits = forward.run(cache, seq, next, position++);
    }
    total_compared += compared;
    std::printf("[golden] %-16s greedy: %d of %zu steps decisive and identical; first near-tie at "
                "step %d\n",
                c["name"].get<std::string>().c_str(), compared, c["greedy"].size(),
                identical_prefix < 0 ? static_cast<int32_t>(c["greedy"].size()) : identical_prefix);
    cache.remove_sequence(seq);
    cache.check_invariants();
  }
  // Most steps must be decisive, or the comparison above would mean little.
  EXPECT_GE(total_compared, 100);
}

}  // namespace
}  // namespace kvc
