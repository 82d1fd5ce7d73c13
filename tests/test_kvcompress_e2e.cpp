// KV-Compress end to end on SmolLM2: a budget that keeps everything changes nothing; a tight
// budget on a ~2,000-token prompt frees real memory down to the promised bound, with every head
// row keeping a different number of KVs and the model still producing sane text.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/engine.h"

namespace kvc {
namespace {

class KvCompressEndToEnd : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string path = KVC_MODEL_DIR "/SmolLM2-135M-Instruct.Q4_1.gguf";
    if (!std::ifstream(path)) return;
    model_ = Model::load(path).release();
    std::ifstream in(KVC_SOURCE_DIR "/tests/golden/smollm2_llamacpp.json");
    const nlohmann::json golden = nlohmann::json::parse(in);
    for (const auto& c : golden["cases"]) {
      if (c["name"] == "austen_pride_2k") long_prompt_ = c["ids"].get<std::vector<int32_t>>();
      if (c["name"] == "jargon_1k") medium_prompt_ = c["ids"].get<std::vector<int32_t>>();
    }
  }
  static void TearDownTestSuite() { delete model_; }
  void SetUp() override {
    if (model_ == nullptr) GTEST_SKIP() << "model not downloaded: run scripts/setup.sh";
  }

  // One request through an engine of its own; returns its result.
  static RequestResult run(Engine& engine, Request request) {
    RequestResult result;
    request.on_finish = [&](const RequestResult& r) { result = r; };
    engine.submit(std::move(request));
    engine.run_until_idle();
    EXPECT_EQ(engine.cache().pool().free_blocks(), engine.cache().pool().num_blocks());
    return result;
  }
  static RequestResult run(const std::vector<int32_t>& prompt, int32_t max_tokens,
                           const CompressionConfig& compression,
                           std::vector<ObservationOptions> extra_observers = {}) {
    EngineConfig config;
    config.max_context = 2560;
    config.poison_freed = true;
    Engine engine(*model_, config);
    Request request;
    request.prompt = prompt;
    request.max_tokens = max_tokens;
    request.compression = compression;
    request.extra_observers = std::move(extra_observers);
    return run(engine, std::move(request));
  }

  static Model* model_;
  static std::vector<int32_t> long_prompt_;
  static std::vector<int32_t> medium_prompt_;
};

Model* KvCompressEndToEnd::model_ = nullptr;
std::vector<int32_t> KvCompressEndToEnd::long_prompt_;
std::vector<int32_t> KvCompressEndToEnd::medium_prompt_;

TEST_F(KvCompressEndToEnd, BudgetThatKeepsEverythingMatchesTheFullCacheExactly) {
  ASSERT_FALSE(medium_prompt_.empty());
  CompressionConfig keep_all;
  keep_all.policy = KvPolicy::kKvCompress;
  keep_all.budget = CacheBudget{CacheBudget::kMaxCacheTokens, 4096.0, 128};
  // The full cache observes the same window, so its observed prompt tokens take the same
  // (per-query) attention kernel as the compressed run's: the two then differ only by what
  // compression did, which must be nothing. (Unobserved tokens take the tiled kernel, whose
  // rounding differs; on this prompt that alone flips a near-tied first token.)
  const ObservationOptions same_window{keep_all.metric, keep_all.observation_window, -1, false,
                                       keep_all.observation_buffer};
  const RequestResult full = run(medium_prompt_, 24, CompressionConfig{}, {same_window});
  const RequestResult compressed = run(medium_prompt_, 24, keep_all);
  EXPECT_EQ(compressed.tokens, full.tokens);
  EXPECT_EQ(compressed.stats.kv_retained, full.stats.kv_retained);
  EXPECT_EQ(compressed.stats.prefill_compression.kvs_after,
            compressed.stats.prefill_compression.kvs_before);
  EXPECT_GE(compressed.stats.compressions, 1);  // the pass ran and found nothing to evict
}

TEST_F(KvCompressEndToEnd, TightBudgetFreesRealMemoryWithVariableRatesPerHead) {
  ASSERT_FALSE(long_prompt_.empty());
  const ModelConfig& mc = model_->config();
  const int64_t rows = static_cast<int64_t>(mc.n_layer) * mc.n_head_kv;
  const int32_t bs = 16;
  const double C = 128;
  CompressionConfig config;
  config.policy = KvPolicy::kKvCompress;
  config.budget = CacheBudget{CacheBudget::kMaxCacheTokens, C, 128};
  const RequestResult result = run(long_prompt_, 1, config);  // one token: state right after
  const RequestStats& stats = result.stats;
  const CompressionResult& r = stats.prefill_compression;
  ASSERT_EQ(stats.compressions, 1);
  EXPECT_EQ(r.kvs_before, rows * static_cast<int64_t>(long_prompt_.size()));
  // Physical blocks after compression hold at most C*L*H + L*H*bs KVs.
  EXPECT_LE(r.blocks_after * bs, static_cast<int64_t>(C) * rows + rows * bs);
  EXPECT_LE(r.kvs_after, static_cast<int64_t>(C * rows));
  EXPECT_GE(r.kvs_after, static_cast<int64_t>(C * rows) - rows * (bs - 1));
  // And those are real bytes: the sequence's blocks, not a count.
  EXPECT_LE(stats.kv_bytes, static_cast<size_t>(r.blocks_after + rows) * 16 *
                                (2 * mc.head_dim * 2 + 8));
  EXPECT_GT(static_cast<double>(stats.full_cache_bytes) / stats.kv_bytes, 10.0);
  // Rates vary per head and per layer: rows keep different numbers of KVs.
  const auto [lo, hi] = std::minmax_element(stats.retained_per_row.begin(), stats.retained_per_row.end());
  EXPECT_GE(*hi, 2 * *lo);
  int32_t layers_that_differ = 0;
  for (int32_t l = 0; l < mc.n_layer; ++l) {
    layers_that_differ += stats.retained_per_row[l * mc.n_head_kv] != stats.retained_per_row[l * mc.n_head_kv + 1];
  }
  EXPECT_GT(layers_that_differ, mc.n_layer / 3);
}

TEST_F(KvCompressEndToEnd, ContinualCompressionKeepsDecodingWithinAFixedPool) {
  ASSERT_FALSE(medium_prompt_.empty());
  const ModelConfig& mc = model_->config();
  const int32_t rows = mc.n_layer * mc.n_head_kv;
  // A pool that holds the prompt plus one block per row, no more.
  const int32_t prompt_blocks = rows * ((static_cast<int32_t>(medium_prompt_.size()) + 15) / 16);
  EngineConfig config;
  config.max_context = 2048;
  config.poison_freed = true;
  config.num_blocks = prompt_blocks + rows;
  Engine engine(*model_, config);
  Request request;
  request.prompt = medium_prompt_;
  request.max_tokens = 64;
  request.compression.policy = KvPolicy::kKvCompress;
  // The budget keeps the whole prompt, so only the forced passes evict.
  request.compression.budget = CacheBudget{CacheBudget::kMaxCacheTokens, 4096.0, 128};
  const RequestResult result = run(engine, request);
  const RequestStats& stats = result.stats;
  EXPECT_EQ(stats.generated_tokens, 64);
  EXPECT_EQ(result.finish, FinishReason::kMaxTokens);
  EXPECT_GE(stats.compressions, 2);  // after prefill, then forced at least once
  EXPECT_LE(stats.kv_bytes_peak,
            static_cast<size_t>(config.num_blocks) * engine.cache().pool().block_bytes());
  EXPECT_LT(stats.kv_retained, rows * static_cast<int64_t>(medium_prompt_.size() + 63));
  EXPECT_GE(engine.metrics().pressure_compressions, 1);

  // Without continual compression the same pool runs out of blocks.
  request.compression.continual = false;
  const RequestResult stuck = run(engine, request);
  EXPECT_EQ(stuck.finish, FinishReason::kContextFull);
  EXPECT_LT(stuck.stats.generated_tokens, 64);
}

}  // namespace
}  // namespace kvc
