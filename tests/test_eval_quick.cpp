// `kvc eval` in quick mode on SmolLM2 (about a minute on 2 cores): the assertions the
// evaluation must satisfy before any of its figures mean anything.
//   - the full cache answers the easiest needle task at 1K;
//   - KV-Compress with a budget that keeps everything reproduces the full cache exactly
//     (tokens, and zero KL with 100% top-1 on the fidelity text);
//   - for every policy, KL against the full cache at C=64 exceeds KL at C=512;
//   - a fork of the shared prefill decodes exactly what the engine serves a request with the
//     same policy and budget (the evaluation measures what the engine serves);
//   - every compressed fork really holds fewer KVs, within one block per row of C.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <map>

#include "engine/engine.h"
#include "engine/sampler.h"
#include "eval/evaluator.h"
#include "eval/texts.h"
#include "model/tokenizer/chat_template.h"
#include "util/error.h"

namespace kvc::eval {
namespace {

const std::vector<std::string> kPolicies = {"kvcompress",  "streamingllm", "h2o",
                                            "snapkv",      "pyramidkv",    "ada-snapkv",
                                            "random",      "kvcompress-l1"};

class EvalQuick : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string path = KVC_MODEL_DIR "/SmolLM2-135M-Instruct.Q4_1.gguf";
    if (!std::ifstream(path)) return;
    try {
      texts_.austen = load_austen_novels();
    } catch (const Error&) {
      return;
    }
    model_ = Model::load(path).release();
  }
  static void TearDownTestSuite() { delete model_; }
  void SetUp() override {
    if (model_ == nullptr) {
      GTEST_SKIP() << "model or Austen texts missing: run scripts/setup.sh";
    }
  }

  static EvalSettings quick_settings(std::vector<int32_t> budgets) {
    EvalSettings s;
    for (const std::string& p : kPolicies) {
      s.variants.push_back(make_policy_variant(p, CompressionConfig{}));
    }
    s.budgets = std::move(budgets);
    s.poison_kv = true;
    return s;
  }

  static Model* model_;
  static TextSources texts_;
};

Model* EvalQuick::model_ = nullptr;
TextSources EvalQuick::texts_;

TEST_F(EvalQuick, NeedleAt1KIsAnsweredByTheFullCacheAndKeepAllMatchesItExactly) {
  EvalSettings s = quick_settings({64, 4096});
  s.tasks = {"niah_single_1"};
  s.lengths = {1024};
  s.samples = 1;
  s.fidelity_samples = 0;
  std::map<std::pair<std::string, int32_t>, TaskRecord> got;
  EvalCallbacks cb;
  cb.on_task = [&](const TaskRecord& r) { got[{r.policy, r.budget}] = r; };
  run_eval(*model_, texts_, s, cb);
  ASSERT_EQ(got.size(), 1 + kPolicies.size() * 2);

  const TaskRecord& full = got.at({"full", 0});
  EXPECT_EQ(full.score, 1.0) << "prediction: " << full.prediction << " answer: "
                             << full.answers.at(0);
  EXPECT_GT(full.prompt_tokens, 900);
  EXPECT_LE(full.prompt_tokens, 1024 + 96);
  EXPECT_EQ(full.fork.kvs_kept, full.fork.kvs_full);

  for (const std::string& p : kPolicies) {
    const TaskRecord& keep_all = got.at({p, 4096});
    EXPECT_EQ(keep_all.prediction, full.prediction) << p;
    EXPECT_EQ(keep_all.fork.kvs_kept, full.fork.kvs_full) << p;
    // C=64 on ~1K tokens: real eviction, within one block (16) per row of C on average.
    const TaskRecord& tight = got.at({p, 64});
    const int64_t rows = model_->config().n_layer * model_->config().n_head_kv;
    EXPECT_LE(tight.fork.kvs_kept, (64 + 16) * rows) << p;
    EXPECT_LT(tight.fork.bytes_kept, full.fork.bytes_full / 8) << p;
  }
}

TEST_F(EvalQuick, FidelityLossGrowsAsTheBudgetShrinksForEveryPolicy) {
  EvalSettings s = quick_settings({64, 512, 4096});
  s.fidelity_lengths = {1024};
  s.fidelity_samples = 1;
  s.continuation = 128;
  std::map<std::pair<std::string, int32_t>, FidelityRecord> got;
  EvalCallbacks cb;
  cb.on_fidelity = [&](const FidelityRecord& r) { got[{r.policy, r.budget}] = r; };
  run_eval(*model_, texts_, s, cb);

  const FidelityRecord& full = got.at({"full", 0});
  EXPECT_EQ(full.kl, 0.0);
  EXPECT_EQ(full.top1, 1.0);
  EXPECT_GT(std::exp(full.nll), 1.0);
  EXPECT_LT(std::exp(full.nll), 100.0) << "the model should predict Austen far better than chance";
  for (const std::string& p : kPolicies) {
    EXPECT_EQ(got.at({p, 4096}).kl, 0.0) << p;
    EXPECT_EQ(got.at({p, 4096}).top1, 1.0) << p;
    EXPECT_EQ(got.at({p, 4096}).nll, full.nll) << p;
    EXPECT_GT(got.at({p, 64}).kl, got.at({p, 512}).kl) << p;
    EXPECT_GT(got.at({p, 512}).kl, 0.0) << p;
  }
}

// With a q8_0 cache every setting stores 8-bit KVs and fidelity is measured against the f16
// full cache: 'full' now shows what the storage alone costs (small but not 0), and a keep-all
// budget equals q8_0's full cache exactly.
TEST_F(EvalQuick, Q8_0SettingsAreJudgedAgainstTheF16FullCache) {
  EvalSettings s = quick_settings({512, 4096});
  s.variants = {make_policy_variant("kvcompress", CompressionConfig{})};
  s.fidelity_lengths = {1024};
  s.fidelity_samples = 1;
  s.continuation = 64;
  s.kv_storage = KvStorageType::kQ8_0;
  std::map<std::pair<std::string, int32_t>, FidelityRecord> got;
  EvalCallbacks cb;
  cb.on_fidelity = [&](const FidelityRecord& r) { got[{r.policy, r.budget}] = r; };
  run_eval(*model_, texts_, s, cb);
  const FidelityRecord& full = got.at({"full", 0});
  EXPECT_GT(full.kl, 0.0);
  EXPECT_LT(full.kl, 0.02);
  EXPECT_EQ(got.at({"kvcompress", 4096}).kl, full.kl);
  EXPECT_GT(got.at({"kvcompress", 512}).kl, full.kl);
  // 144 bytes per KV (K and V rows of 68 bytes, metric, position) against f16's 264.
  EXPECT_LT(full.fork.bytes_full, 150 * static_cast<size_t>(full.fork.kvs_full));
}

// ':chunkN' settings prefill on their own, compressing every N tokens: keep-all equals the full
// cache bit for bit (a prompt's outputs never depend on where its chunks end or who observes
// it), a tight budget loses far more and never holds more than its budget plus one chunk.
TEST_F(EvalQuick, ChunkedSettingsPrefillOnTheirOwnWithinTheirBudgetPlusAChunk) {
  EvalSettings s;
  for (const char* p : {"auto", "auto:chunk256"}) {
    s.variants.push_back(make_policy_variant(p, CompressionConfig{}));
  }
  EXPECT_EQ(s.variants[1].config.compress_chunk, 256);
  EXPECT_TRUE(s.variants[1].config.word_spans);
  s.budgets = {64, 4096};
  s.poison_kv = true;
  s.fidelity_lengths = {1024};
  s.fidelity_samples = 1;
  s.continuation = 64;
  std::map<std::pair<std::string, int32_t>, FidelityRecord> got;
  EvalCallbacks cb;
  cb.on_fidelity = [&](const FidelityRecord& r) { got[{r.policy, r.budget}] = r; };
  run_eval(*model_, texts_, s, cb);
  const FidelityRecord& full = got.at({"full", 0});
  const FidelityRecord& keep_all = got.at({"auto:chunk256", 4096});
  const FidelityRecord& tight = got.at({"auto:chunk256", 64});
  EXPECT_EQ(keep_all.kl, 0.0);
  EXPECT_EQ(keep_all.top1, 1.0);
  EXPECT_EQ(keep_all.nll, full.nll);
  EXPECT_GT(tight.kl, 0.05);
  EXPECT_EQ(keep_all.fork.kvs_kept, full.fork.kvs_full);
  const int64_t rows = model_->config().n_layer * model_->config().n_head_kv;
  const size_t block_bytes = full.fork.bytes_full / (rows * ((1024 + 15) / 16));
  EXPECT_LE(tight.fork.bytes_peak, static_cast<size_t>(rows * (64 + 256) / 16) * block_bytes);
  EXPECT_GE(got.at({"auto", 64}).fork.bytes_peak, full.fork.bytes_full);
  EXPECT_LE(tight.fork.kvs_kept, (64 + 16) * rows);
}

TEST_F(EvalQuick, AForkDecodesExactlyWhatTheEngineServes) {
  const std::vector<int32_t> tokens = fidelity_tokens(*model_, texts_, 700, 8, 3, 0);
  const std::vector<int32_t> prompt(tokens.begin(), tokens.begin() + 700);
  // L2 window; L1 full observation; L2 window plus the L1 mass of the marginal-error rule.
  std::map<std::string, std::vector<int32_t>> retained;
  for (const std::string& p : {"kvcompress", "h2o", "kvcompress-err"}) {
    const PolicyVariant v = make_policy_variant(p, CompressionConfig{});
    EngineConfig config;
    config.max_context = 1024;
    config.poison_freed = true;
    config.num_blocks = 3 * 64 * model_->config().n_layer * model_->config().n_head_kv;
    Engine engine(*model_, config);

    // What a client gets: the request served directly.
    Request direct;
    direct.prompt = prompt;
    direct.max_tokens = 16;
    direct.compression = with_budget(v, 32);
    RequestResult served;
    direct.on_finish = [&](const RequestResult& r) { served = r; };
    engine.submit(std::move(direct));
    engine.run_until_idle();

    // What the evaluation measures: a held prefill recording the policy's observation (as
    // `kvc eval --policies <p>` does), then a fork.
    Request base;
    base.prompt = prompt;
    base.max_tokens = 0;
    base.hold = true;
    base.extra_observers = observations_read(v.config);
    const RequestId held = engine.submit(std::move(base));
    engine.run_until_idle();
    Request fork;
    fork.max_tokens = 16;
    fork.compression = with_budget(v, 32);
    RequestResult forked;
    fork.on_finish = [&](const RequestResult& r) { forked = r; };
    engine.fork(held, std::move(fork));
    engine.run_until_idle();
    engine.release(held);
    engine.run_until_idle();

    EXPECT_EQ(forked.tokens, served.tokens) << p;
    EXPECT_EQ(served.tokens.size(), 16u) << p;
    EXPECT_EQ(served.stats.compressions, 1) << p;
    EXPECT_EQ(forked.stats.compressions, 1) << p;
    EXPECT_EQ(forked.stats.retained_after_prompt, served.stats.retained_after_prompt) << p;
    EXPECT_EQ(engine.cache().pool().free_blocks(), engine.cache().pool().num_blocks()) << p;
    retained[p] = served.stats.retained_after_prompt;
  }
  // The marginal-error rule shares the rows differently from the key rule it replaces.
  EXPECT_NE(retained["kvcompress-err"], retained["kvcompress"]);
}

TEST_F(EvalQuick, CompareLogitsMatchesHandComputedValues) {
  // p = softmax(0, ln 3) = (1/4, 3/4); q = (1/2, 1/2): KL = 1/4 ln(1/2) + 3/4 ln(3/2).
  const float ref[2] = {0.0f, std::log(3.0f)};
  const float cand[2] = {1.0f, 1.0f};
  const LogitComparison c = compare_logits(ref, cand, 0);
  EXPECT_NEAR(c.kl, 0.25 * std::log(0.5) + 0.75 * std::log(1.5), 1e-6);
  EXPECT_FALSE(c.same_top1);  // argmax 1 vs 0 (ties go to the first index)
  EXPECT_NEAR(c.nll, std::log(2.0), 1e-6);
  EXPECT_EQ(compare_logits(ref, ref, 1).kl, 0.0);
  EXPECT_TRUE(compare_logits(ref, ref, 1).same_top1);
}

TEST(PolicyVariants, MarginalErrorFromTheBaseReachesKvCompressVariantsOnly) {
  // `kvc eval --marginal-error --policies auto,snapkv`: the rule is KV-Compress's.
  CompressionConfig marginal;
  marginal.planner.marginal_error = true;
  EXPECT_TRUE(make_policy_variant("auto", marginal).config.planner.marginal_error);
  EXPECT_TRUE(make_policy_variant("kvcompress-l1", marginal).config.planner.marginal_error);
  EXPECT_FALSE(make_policy_variant("snapkv", marginal).config.planner.marginal_error);
  const CompressionConfig paper = make_policy_variant("kvcompress", CompressionConfig{}).config;
  EXPECT_FALSE(paper.planner.marginal_error);
}

TEST(PolicyVariants, ChunkSuffixesSetChunkFactorAndProbe) {
  const CompressionConfig both = make_policy_variant("auto:chunk256:x2:probe", {}).config;
  EXPECT_EQ(both.compress_chunk, 256);
  EXPECT_EQ(both.chunk_budget_factor, 2.0);
  EXPECT_TRUE(both.tail_probe);
  const CompressionConfig probe = make_policy_variant("snapkv:chunk512:probe", {}).config;
  EXPECT_EQ(probe.compress_chunk, 512);
  EXPECT_EQ(probe.chunk_budget_factor, 1.0);
  EXPECT_TRUE(probe.tail_probe);
  // auto probes by default (docs/quality.md); kvcompress-words does not.
  EXPECT_TRUE(make_policy_variant("auto:chunk512:x4", {}).config.tail_probe);
  EXPECT_FALSE(make_policy_variant("kvcompress-words:chunk512", {}).config.tail_probe);
  EXPECT_FALSE(make_policy_variant("kvcompress:chunk512", {}).config.tail_probe);
  for (const char* bad : {"auto:chunk512:probe:x2", "auto:chunk512:probe:probe", "auto:probe",
                          "auto:chunk512:x2:x2", "h2o:chunk512:probe", "streamingllm:chunk64:probe",
                          "auto:chunk512:prob"}) {
    EXPECT_THROW(make_policy_variant(bad, CompressionConfig{}), Error) << bad;
  }
}

TEST(PolicyVariants, AutoObservesWithThirtyTwoQueriesUnlessToldOtherwise) {
  EXPECT_EQ(make_policy_variant("auto", {}).config.observation_window, kAutoObservationWindow);
  EXPECT_EQ(make_policy_variant("auto:chunk512", {}).config.observation_window, 32);
  for (const char* named : {"kvcompress", "kvcompress-words", "snapkv", "ada-snapkv"}) {
    EXPECT_EQ(make_policy_variant(named, {}).config.observation_window, 8) << named;
  }
  EXPECT_EQ(make_policy_variant("kvcompress-w32", {}).config.observation_window, 32);
  // `kvc eval --observation-window W` replaces every setting's own window, auto's too.
  EXPECT_EQ(make_policy_variant("auto", {}, 8).config.observation_window, 8);
  EXPECT_EQ(make_policy_variant("snapkv", {}, 32).config.observation_window, 32);
  // The window's queries must lie in one prefill chunk.
  EXPECT_THROW(make_policy_variant("auto:chunk16", {}), Error);
  EXPECT_NO_THROW(make_policy_variant("auto:chunk16", {}, 8));
}

TEST_F(EvalQuick, BadSettingsAreRejectedWithAMessage) {
  EvalSettings s = quick_settings({64});
  s.tasks = {"no_such_task"};
  s.lengths = {1024};
  EXPECT_THROW(run_eval(*model_, texts_, s, {}), Error);
  s.tasks = {"niah_single_1"};
  s.lengths = {100000};
  EXPECT_THROW(run_eval(*model_, texts_, s, {}), Error);
  s.lengths = {1024};
  s.budgets = {0};
  EXPECT_THROW(run_eval(*model_, texts_, s, {}), Error);
  EXPECT_THROW(make_policy_variant("kvcompress-bogus", CompressionConfig{}), Error);
  EXPECT_THROW(make_policy_variant("nope", CompressionConfig{}), Error);
  for (const char* bad : {"auto:chunk", "auto:chunk0", "auto:chunk12x", "auto:window5",
                          "full:chunk256", "nope:chunk256", "auto:chunk4"}) {
    EXPECT_THROW(make_policy_variant(bad, CompressionConfig{}), Error) << bad;
  }
}

}  // namespace
}  // namespace kvc::eval
