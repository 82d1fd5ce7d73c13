// End-to-end golden test against llama.cpp (scripts/golden/make_model_golden.py) on the real
// SmolLM2 model: identical token ids, identical top-1 at every checked position, logits within a
// stated tolerance, identical greedy continuation up to the first reference near-tie.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/generator.h"
#include "golden_compare.h"
#include "model/forward.h"
#include "model/model.h"

namespace kvc {
namespace {

// Both engines quantize activations to 8 bits per block before every matmul, so a value that
// lands on a rounding boundary in one summation order and not in the other changes that sample
// of quantization noise; 30 layers amplify it. Our own scalar and AVX2 kernels (same math,
// different summation order) differ from each other by up to 0.33 on these prompts, f16 vs f32
// KV storage by up to 0.55: that is this model's noise floor, and the bounds below sit just
// above it (figures: README, "Correctness").
constexpr test_support::GoldenBounds kBounds{/*max_logit_diff=*/0.75f, /*near_tie_margin=*/0.50f};

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
  test_support::expect_token_ids_match(*golden_, model_->tokenizer());
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
    test_support::GoldenCaseResult result;
    test_support::run_golden_case(c, cache, forward, kBounds, "golden", &result);
    if (HasFatalFailure()) return;
    total_compared += result.greedy_compared;
  }
  // Most steps must be decisive, or the comparison above would mean little.
  EXPECT_GE(total_compared, 100);
}

}  // namespace
}  // namespace kvc
