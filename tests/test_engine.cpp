// The engine on SmolLM2: one step loop for every client, checked against what the code before
// it produced and against itself run one request at a time.
//   - every case of tests/golden/generate_before_engine.json (greedy, seeded sampling, four
//     policies, continual and interval compression) gives the same tokens as before;
//   - the same prompt in chunks of 256, 37 or 1 token gives bit-identical logits (what makes
//     batching and recomputation exact);
//   - requests decoded side by side, with prefill chunks mixed into decode steps, give the
//     tokens each gives alone;
//   - under a pool too small for all of them, compression comes before preemption, preempted
//     requests complete with the greedy tokens of an unpressured run, and every block is free
//     afterwards;
//   - cancellation, the engine's own thread, and requests that can never run.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "engine/engine.h"
#include "eval/evaluator.h"
#include "forward_helper.h"
#include "model/tokenizer/chat_template.h"
#include "util/error.h"

namespace kvc {
namespace {

class EngineTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string path = KVC_MODEL_DIR "/SmolLM2-135M-Instruct.Q4_1.gguf";
    if (!std::ifstream(path)) return;
    model_ = Model::load(path).release();
    std::ifstream in(KVC_SOURCE_DIR "/tests/golden/smollm2_llamacpp.json");
    const nlohmann::json golden = nlohmann::json::parse(in);
    for (const auto& c : golden["cases"]) {
      prompts_[c["name"].get<std::string>()] = c["ids"].get<std::vector<int32_t>>();
    }
  }
  static void TearDownTestSuite() { delete model_; }
  void SetUp() override {
    if (model_ == nullptr) GTEST_SKIP() << "model not downloaded: run scripts/setup.sh";
  }

  static int32_t rows() { return model_->config().n_layer * model_->config().n_head_kv; }

  static EngineConfig config(int32_t num_blocks = 0) {
    EngineConfig c;
    c.max_context = 2560;
    c.poison_freed = true;
    c.num_blocks = num_blocks;
    return c;
  }

  // Submits every request, steps until idle, returns the results by submission order.
  static std::vector<RequestResult> serve(Engine& engine, std::vector<Request> requests) {
    std::vector<RequestResult> results(requests.size());
    for (size_t i = 0; i < requests.size(); ++i) {
      requests[i].on_finish = [&results, i](const RequestResult& r) { results[i] = r; };
      engine.submit(std::move(requests[i]));
    }
    engine.run_until_idle();
    return results;
  }

  static Request greedy(std::vector<int32_t> prompt, int32_t max_tokens) {
    Request r;
    r.prompt = std::move(prompt);
    r.max_tokens = max_tokens;
    return r;
  }
  // A greedy KV-Compress request keeping C KVs per row, compressed every `chunk` prompt tokens
  // (0: once, after the prompt), with word spans when asked.
  static Request kvcompress(std::vector<int32_t> prompt, int32_t max_tokens, double c,
                            int32_t chunk = 0, bool word_spans = false) {
    Request r = greedy(std::move(prompt), max_tokens);
    r.compression.policy = KvPolicy::kKvCompress;
    r.compression.word_spans = word_spans;
    r.compression.budget = CacheBudget{CacheBudget::kMaxCacheTokens, c, 0};
    r.compression.compress_chunk = chunk;
    return r;
  }

  // A prompt of n tokens from one of the golden texts, different per `variant`.
  static std::vector<int32_t> prompt_of(int32_t n, int32_t variant) {
    const std::vector<int32_t>& text = prompts_.at(variant % 2 == 0 ? "austen_pride_2k" : "jargon_1k");
    const size_t start = static_cast<size_t>(variant / 2) * 53;
    std::vector<int32_t> p{text[0]};
    p.insert(p.end(), text.begin() + 1 + start, text.begin() + start + n);
    return p;
  }

  static Model* model_;
  static std::map<std::string, std::vector<int32_t>> prompts_;
};

Model* EngineTest::model_ = nullptr;
std::map<std::string, std::vector<int32_t>> EngineTest::prompts_;

// The settings under which tests/golden/engine_pinned_outputs.json was produced.
Request golden_request(const nlohmann::json& c, const Tokenizer& tok, int32_t* num_blocks,
                       int32_t rows) {
  const std::string name = c["name"].get<std::string>();
  Request r;
  r.prompt = c["prompt"].get<std::vector<int32_t>>();
  r.max_tokens = c["max_tokens"].get<int32_t>();
  *num_blocks = 0;
  if (name.starts_with("chat_")) r.stop_tokens = tok.end_of_generation_ids();
  if (name == "chat_sampled") r.sampling = SamplingParams{0.7f, 0, 0.9f, 1};
  if (name == "chat_topk") r.sampling = SamplingParams{1.0f, 40, 1.0f, 7};
  CompressionConfig& cc = r.compression;
  if (name == "jargon_kvcompress_c64") {
    cc.policy = KvPolicy::kKvCompress;
    cc.budget = CacheBudget{CacheBudget::kMaxCacheTokens, 64.0, 128};
  } else if (name == "austen_snapkv_c128") {
    cc.policy = KvPolicy::kSnapKv;
    cc.metric = MetricAccumulation::kAbsolute;
    cc.budget = CacheBudget{CacheBudget::kMaxCacheTokens, 128.0, 128};
  } else if (name == "jargon_h2o_c64") {
    cc.policy = KvPolicy::kH2O;
    cc.metric = MetricAccumulation::kAbsolute;
    cc.full_observation = true;
    cc.budget = CacheBudget{CacheBudget::kMaxCacheTokens, 64.0, 128};
  } else if (name == "jargon_kvcompress_continual") {
    cc.policy = KvPolicy::kKvCompress;
    cc.budget = CacheBudget{CacheBudget::kMaxCacheTokens, 4096.0, 128};
    const auto n = static_cast<int32_t>(r.prompt.size());
    *num_blocks = rows * ((n + 15) / 16) + rows;
  } else if (name == "austen_kvcompress_rate8_interval8") {
    cc.policy = KvPolicy::kKvCompress;
    cc.budget = CacheBudget{CacheBudget::kCompressionRate, 8.0, 64};
    cc.interval = 8;
  }
  return r;
}

// Pinned end-to-end outputs: first those of the CLI generator the engine replaced (commit
// 1174b9b, so the redesign changed no token), regenerated since when the packed matmul
// kernels and the register-blocked per-query attention kernel changed the arithmetic's
// rounding, and when the tiled prefill kernels went from 16- to 32-slot chunks (the AVX-512
// kernel; AVX2 follows it bit for bit, so these outputs hold on both), and when observing
// prompt queries took their outputs from the tiles (the per-query pass only feeds the
// observers), and when silu's exp became the AVX2 polynomial (two cases change after 16 and
// 17 greedy tokens), and when decode attention became one three-pass kernel with the same bits
// on AVX2 and AVX-512 (x86_tile_helpers.h; greedy cases change after 16 tokens), all checked
// against llama.cpp by GoldenTest and against their references. Any other change of a token,
// a stop reason or a compression count is a behaviour change.
// KVC_REPIN=1 rewrites the file from this build; do so only for a deliberate numeric change.
TEST_F(EngineTest, GivesThePinnedTokensAndCompressionStats) {
  const std::string path = KVC_SOURCE_DIR "/tests/golden/engine_pinned_outputs.json";
  nlohmann::json golden = nlohmann::json::parse(std::ifstream(path));
  ASSERT_GE(golden["cases"].size(), 8u);
  const bool repin = std::getenv("KVC_REPIN") != nullptr;
  for (auto& c : golden["cases"]) {
    SCOPED_TRACE(c["name"].get<std::string>());
    int32_t num_blocks = 0;
    Request r = golden_request(c, model_->tokenizer(), &num_blocks, rows());
    Engine engine(*model_, config(num_blocks));
    const std::vector<RequestResult> out = serve(engine, {std::move(r)});
    if (repin) {
      c["tokens"] = out[0].tokens;
      c["stop_reason"] = finish_reason_name(out[0].finish);
      c["compressions"] = out[0].stats.compressions;
      c["kv_retained"] = out[0].stats.kv_retained;
      continue;
    }
    EXPECT_EQ(out[0].tokens, c["tokens"].get<std::vector<int32_t>>());
    EXPECT_STREQ(finish_reason_name(out[0].finish), c["stop_reason"].get<std::string>().c_str());
    EXPECT_EQ(out[0].stats.compressions, c["compressions"].get<int32_t>());
    EXPECT_EQ(out[0].stats.kv_retained, c["kv_retained"].get<int64_t>());
  }
  if (repin) std::ofstream(path) << golden.dump(1) << "\n";
}

TEST_F(EngineTest, TiledChunkSizeDoesNotChangeALogitBit) {
  const std::vector<int32_t> prompt = prompt_of(300, 0);
  const ModelConfig& mc = model_->config();
  std::vector<std::vector<float>> logits;
  for (int32_t chunk : {256, 37, 1}) {
    PagedKvCache cache(KvCacheConfig{mc.n_layer, mc.n_head_kv, mc.head_dim, 16, rows() * 20,
                                     KvStorageType::kF16, true});
    ForwardPass forward(*model_, chunk, 320);
    const SequenceId seq = cache.add_sequence();
    std::span<const float> l;
    for (size_t begin = 0; begin < prompt.size(); begin += chunk) {
      const size_t n = std::min<size_t>(chunk, prompt.size() - begin);
      l = test_support::run_tokens(forward, cache, seq, std::span(prompt).subspan(begin, n),
                                   static_cast<int32_t>(begin));
    }
    logits.emplace_back(l.begin(), l.end());
  }
  // 256 and 37 both run query tiles; 1 runs the decode kernel, whose exact softmax rounds
  // differently from the tiles' online one over 300 positions and 30 layers: only the tiled
  // chunkings must agree bit for bit; the per-query one must still pick the same next token.
  EXPECT_EQ(logits[0], logits[1]);
  EXPECT_EQ(argmax(logits[0]), argmax(logits[2]));
}

TEST_F(EngineTest, SideBySideRequestsGiveTheTokensEachGivesAlone) {
  std::vector<Request> requests;
  for (int32_t i = 0; i < 5; ++i) {
    Request r = greedy(prompt_of(60 + 70 * i, i), 24 + 4 * i);
    if (i == 3) {
      r.compression.policy = KvPolicy::kKvCompress;
      r.compression.budget = CacheBudget{CacheBudget::kMaxCacheTokens, 32.0, 0};
    }
    if (i == 4) r.sampling = SamplingParams{0.8f, 40, 0.95f, 3};
    requests.push_back(std::move(r));
  }
  std::vector<RequestResult> alone;
  for (const Request& r : requests) {
    Engine engine(*model_, config());
    alone.push_back(serve(engine, {r})[0]);
  }
  EngineConfig c = config(rows() * 160 * 2);
  c.max_batch_tokens = 64;  // prompts span several steps, mixed with the others' decode tokens
  Engine engine(*model_, c);
  const std::vector<RequestResult> together = serve(engine, requests);
  for (size_t i = 0; i < requests.size(); ++i) {
    EXPECT_EQ(together[i].tokens, alone[i].tokens) << "request " << i;
    EXPECT_EQ(together[i].finish, FinishReason::kMaxTokens);
  }
  EXPECT_GE(engine.metrics().peak_batch, 3);
  EXPECT_EQ(engine.metrics().preemptions, 0);
  EXPECT_EQ(engine.cache().pool().free_blocks(), engine.cache().pool().num_blocks());
}

TEST_F(EngineTest, PreemptedRequestsCompleteWithTheGreedyTokensOfAnUnpressuredRun) {
  std::vector<Request> requests;
  for (int32_t i = 0; i < 6; ++i) requests.push_back(greedy(prompt_of(90 + 11 * i, i), 48));
  Engine roomy(*model_, config(rows() * 12 * 6));
  const std::vector<RequestResult> expected = serve(roomy, requests);
  EXPECT_EQ(roomy.metrics().preemptions, 0);

  // Room for about two and a half of the six at full length (9-10 blocks per row each).
  Engine tight(*model_, config(rows() * 24));
  const std::vector<RequestResult> got = serve(tight, requests);
  const EngineMetrics m = tight.metrics();
  EXPECT_GT(m.preemptions, 0);
  int32_t preempted = 0;
  for (size_t i = 0; i < requests.size(); ++i) {
    EXPECT_EQ(got[i].finish, FinishReason::kMaxTokens) << "request " << i;
    EXPECT_EQ(got[i].tokens, expected[i].tokens) << "request " << i;
    preempted += got[i].stats.preemptions > 0;
  }
  EXPECT_GT(preempted, 0);
  EXPECT_EQ(got[0].stats.preemptions, 0) << "the oldest request is never the one preempted";
  EXPECT_EQ(tight.cache().pool().free_blocks(), tight.cache().pool().num_blocks());
  tight.cache().check_invariants();
}

TEST_F(EngineTest, UnderPressureCompressionComesBeforePreemption) {
  // Three KV-Compress requests whose budget keeps their whole prompt: only the pool is tight.
  std::vector<Request> requests;
  for (int32_t i = 0; i < 3; ++i) {
    Request r = greedy(prompt_of(200, i), 64);
    r.compression.policy = KvPolicy::kKvCompress;
    r.compression.budget = CacheBudget{CacheBudget::kMaxCacheTokens, 4096.0, 0};
    requests.push_back(std::move(r));
  }
  // Three prompts of 13 blocks per row fit; 64 more tokens each (4 blocks per row) do not.
  Engine engine(*model_, config(rows() * 42));
  const std::vector<RequestResult> got = serve(engine, requests);
  const EngineMetrics m = engine.metrics();
  EXPECT_GT(m.pressure_compressions, 0);
  EXPECT_EQ(m.preemptions, 0);
  EXPECT_GT(m.kvs_evicted, 0);
  for (const RequestResult& r : got) {
    EXPECT_EQ(r.finish, FinishReason::kMaxTokens);
    EXPECT_EQ(r.tokens.size(), 64u);
    EXPECT_LE(r.stats.kv_bytes_peak, static_cast<size_t>(rows()) * 42 * engine.cache().pool().block_bytes());
  }
  EXPECT_EQ(engine.cache().pool().free_blocks(), engine.cache().pool().num_blocks());
}

// Compression during prefill (docs/design.md §5): a prompt longer than the whole pool runs
// when its budget plus one chunk fits, and never owns more than that.
TEST_F(EngineTest, CompressionDuringPrefillRunsPromptsLongerThanThePool) {
  const int32_t n = 1850, chunk = 256, bs = 16;
  // Uncompressed the prompt needs 116 blocks per row; the pool has 40.
  Engine engine(*model_, config(rows() * 40));
  Request once = kvcompress(prompt_of(n, 0), 16, 128.0, 0, /*word_spans=*/true);
  EXPECT_THROW(engine.submit(once), Error);

  Request by_tokens = once;
  by_tokens.compression.compress_chunk = chunk;
  // A compression rate applies to the tokens so far: C ends at floor((1850/8 - 1)/16)*16 = 224.
  Request by_rate = greedy(prompt_of(n, 2), 16);
  by_rate.compression.policy = KvPolicy::kSnapKv;
  by_rate.compression.metric = MetricAccumulation::kAbsolute;
  by_rate.compression.budget = CacheBudget{CacheBudget::kCompressionRate, 8.0, 64};
  by_rate.compression.compress_chunk = chunk;
  // Peaks: (128/16 + 256/16) = 24 and (224/16 + 16) = 30 blocks per row: one at a time.
  const std::vector<RequestResult> got = serve(engine, {by_tokens, by_rate});
  const size_t block_bytes = engine.cache().pool().block_bytes();
  const int64_t peaks[] = {24, 30};
  for (size_t i = 0; i < got.size(); ++i) {
    const RequestResult& r = got[i];
    EXPECT_EQ(r.finish, FinishReason::kMaxTokens) << i;
    EXPECT_EQ(r.tokens.size(), 16u) << i;
    EXPECT_EQ(r.stats.compressions, (n + chunk - 1) / chunk) << i;  // one per chunk
    EXPECT_LE(r.stats.kv_bytes_peak, static_cast<size_t>(rows() * peaks[i]) * block_bytes) << i;
    EXPECT_EQ(r.stats.prefill_compression.kvs_before, static_cast<int64_t>(rows()) * n) << i;
  }
  // KV-Compress ends at its budget: within one block per row of C = 128 over all rows.
  EXPECT_LE(got[0].stats.kv_retained, static_cast<int64_t>(rows()) * (128 + 16 + bs));
  EXPECT_GE(got[0].stats.kv_retained, static_cast<int64_t>(rows()) * (128 - 16));
  const EngineMetrics m = engine.metrics();
  EXPECT_LE(m.peak_blocks_used, rows() * 40);
  EXPECT_EQ(m.preemptions, 0);
  EXPECT_EQ(engine.cache().pool().free_blocks(), engine.cache().pool().num_blocks());
  engine.cache().check_invariants();
}

// A chunk budget factor F keeps F x the budget between chunks: the peak is F x C + one chunk
// per row (admitted and reserved as such), the final pass still ends at C, and the KVs kept
// differ from factor 1's (the final pass chose among more candidates).
TEST_F(EngineTest, ChunkBudgetFactorKeepsMoreBetweenChunksAndEndsAtTheBudget) {
  const int32_t n = 1850, chunk = 256, bs = 16;
  Engine engine(*model_, config(rows() * 40));
  Request base = kvcompress(prompt_of(n, 0), 4, 128.0, chunk);
  Request wide = base;
  wide.compression.chunk_budget_factor = 2.0;  // 256 KVs per row between chunks
  Request too_wide = base;
  too_wide.compression.chunk_budget_factor = 4.0;  // 512/16 + 16 = 48 blocks per row > 40
  EXPECT_THROW(engine.submit(too_wide), Error);
  Request no_chunk = base;
  no_chunk.compression.compress_chunk = 0;
  no_chunk.compression.chunk_budget_factor = 2.0;
  EXPECT_THROW(engine.submit(no_chunk), Error);
  const std::vector<RequestResult> got = serve(engine, {base, wide});
  const size_t block_bytes = engine.cache().pool().block_bytes();
  EXPECT_LE(got[0].stats.kv_bytes_peak, static_cast<size_t>(rows() * (8 + 16)) * block_bytes);
  EXPECT_LE(got[1].stats.kv_bytes_peak, static_cast<size_t>(rows() * (16 + 16)) * block_bytes);
  EXPECT_GT(got[1].stats.kv_bytes_peak, got[0].stats.kv_bytes_peak);
  for (const RequestResult& r : got) {
    EXPECT_EQ(r.stats.compressions, (n + chunk - 1) / chunk);
    EXPECT_LE(r.stats.kv_retained, static_cast<int64_t>(rows()) * (128 + 16 + bs));
  }
  EXPECT_NE(got[1].stats.retained_after_prompt, got[0].stats.retained_after_prompt);
  EXPECT_EQ(engine.cache().pool().free_blocks(), engine.cache().pool().num_blocks());
}

// Chunk boundaries move the observing window and run compression passes between chunks; with a
// budget that keeps every KV no pass evicts anything, and the tokens are the same: the
// windows' queries run per query for the observers only, their outputs come from the tiles.
TEST_F(EngineTest, CompressionDuringPrefillThatEvictsNothingKeepsEveryKv) {
  Engine engine(*model_, config());
  Request once = kvcompress(prompt_of(700, 2), 8, 4096.0);
  Request chunked = once;
  chunked.compression.compress_chunk = 100;
  // The tail probe runs the last chunk first and drops its KVs: nothing of it may remain.
  Request probed = chunked;
  probed.compression.tail_probe = true;
  const std::vector<RequestResult> got = serve(engine, {once, chunked, probed});
  for (size_t i : {1u, 2u}) {
    EXPECT_EQ(got[i].tokens, got[0].tokens) << i;
    EXPECT_EQ(got[i].stats.compressions, 7) << i;
    EXPECT_EQ(got[i].stats.retained_after_prompt, got[0].stats.retained_after_prompt) << i;
    EXPECT_EQ(got[i].stats.retained_after_prompt.at(0), 700) << i;
    EXPECT_EQ(got[i].stats.kv_retained, got[0].stats.kv_retained) << i;
  }
  EXPECT_EQ(engine.metrics().prompt_tokens, 3 * 700);  // the probe's tokens are not the prompt's
}

// The tail probe under a tight budget: its chunk fits the prompt's peak (budget + one chunk per
// row), every pass between chunks still ends at the budget, and the probe's queries change what
// those passes keep. It needs chunks to preview for.
TEST_F(EngineTest, TailProbeFitsThePromptsPeakAndChangesWhatTheChunksKeep) {
  const int32_t n = 1850, chunk = 256, bs = 16;
  Engine engine(*model_, config(rows() * 40));
  Request base = kvcompress(prompt_of(n, 2), 4, 128.0, chunk, /*word_spans=*/true);
  Request probed = base;
  probed.compression.tail_probe = true;
  Request no_chunk = probed;
  no_chunk.compression.compress_chunk = 0;
  EXPECT_THROW(engine.submit(no_chunk), Error);
  Request h2o = probed;  // full observation: no window to preview
  h2o.compression.policy = KvPolicy::kH2O;
  apply_policy_defaults(h2o.compression);
  EXPECT_THROW(engine.submit(h2o), Error);
  std::vector<std::pair<int64_t, int64_t>> progress[2];
  base.on_prefill_progress = [&](int64_t d, int64_t t) { progress[0].emplace_back(d, t); };
  probed.on_prefill_progress = [&](int64_t d, int64_t t) { progress[1].emplace_back(d, t); };
  const std::vector<RequestResult> got = serve(engine, {base, probed});
  for (int i = 0; i < 2; ++i) {  // progress counts the probe's chunk (as long as one chunk)
    const int64_t total = n + (i == 1 ? chunk : 0);
    ASSERT_FALSE(progress[i].empty());
    EXPECT_GT(progress[i].front().first, 0);
    for (size_t k = 0; k < progress[i].size(); ++k) {
      EXPECT_EQ(progress[i][k].second, total);
      if (k > 0) EXPECT_GT(progress[i][k].first, progress[i][k - 1].first);
    }
    EXPECT_EQ(progress[i].back().first, total);
  }
  const size_t block_bytes = engine.cache().pool().block_bytes();
  for (const RequestResult& r : got) {
    EXPECT_EQ(r.finish, FinishReason::kMaxTokens);
    EXPECT_EQ(r.stats.compressions, (n + chunk - 1) / chunk);
    EXPECT_LE(r.stats.kv_bytes_peak, static_cast<size_t>(rows() * (8 + 16)) * block_bytes);
    EXPECT_LE(r.stats.kv_retained, static_cast<int64_t>(rows()) * (128 + 16 + bs));
  }
  EXPECT_NE(got[1].stats.retained_after_prompt, got[0].stats.retained_after_prompt);
  EXPECT_LE(engine.metrics().peak_blocks_used, rows() * 40);
  EXPECT_EQ(engine.cache().pool().free_blocks(), engine.cache().pool().num_blocks());
  engine.cache().check_invariants();
}

TEST_F(EngineTest, CompressionDuringPrefillRejectsWhatItCannotRun) {
  Engine engine(*model_, config(rows() * 20));
  Request r = greedy(prompt_of(900, 0), 4);
  r.compression.policy = KvPolicy::kKvCompress;
  r.compression.budget = CacheBudget{CacheBudget::kMaxCacheTokens, 64.0, 0};
  r.compression.compress_chunk = 4;  // shorter than the observation window (8)
  EXPECT_THROW(engine.submit(r), Error);
  r.compression.compress_chunk = 256;
  r.compression.budget = CacheBudget{CacheBudget::kFractionKept, 0.1, 0};
  EXPECT_THROW(engine.submit(r), Error);
  r.compression.budget = CacheBudget{CacheBudget::kMaxCacheTokens, 128.0, 0};
  EXPECT_THROW(engine.submit(r), Error);  // 8 + 16 blocks per row > the pool's 20
  r.compression.compress_chunk = 128;     // 8 + 8 fit
  Request held = r;
  held.hold = true;  // a held sequence is forked from; its prefill must not depend on a policy
  EXPECT_THROW(engine.submit(held), Error);
  const std::vector<RequestResult> out = serve(engine, {r});
  EXPECT_EQ(out[0].tokens.size(), 4u);
}

TEST_F(EngineTest, CancelledRequestsFreeTheirBlocks) {
  Engine engine(*model_, config());
  Request r = greedy(prompt_of(100, 1), 100);
  int32_t seen = 0;
  r.on_token = [&](int32_t) { return ++seen < 5; };
  Request other = greedy(prompt_of(80, 2), 10);
  const std::vector<RequestResult> out = serve(engine, {std::move(r), std::move(other)});
  EXPECT_EQ(out[0].finish, FinishReason::kCancelled);
  EXPECT_EQ(out[0].tokens.size(), 5u);
  EXPECT_EQ(out[1].finish, FinishReason::kMaxTokens);
  EXPECT_EQ(engine.cache().pool().free_blocks(), engine.cache().pool().num_blocks());
}

TEST_F(EngineTest, ItsOwnThreadServesClientsOnOtherThreads) {
  Engine engine(*model_, config());
  engine.start();
  std::atomic<int32_t> finished{0};
  std::atomic<int32_t> tokens{0};
  std::vector<std::thread> clients;
  RequestId to_cancel = -1;
  std::atomic<bool> cancel_finished{false};
  for (int32_t i = 0; i < 4; ++i) {
    clients.emplace_back([&, i] {
      Request r = greedy(prompt_of(40 + 10 * i, i), 12);
      r.on_token = [&](int32_t) { ++tokens; return true; };
      r.on_finish = [&](const RequestResult& res) {
        EXPECT_EQ(res.finish, FinishReason::kMaxTokens);
        ++finished;
      };
      engine.submit(std::move(r));
    });
  }
  for (std::thread& t : clients) t.join();
  {
    Request r = greedy(prompt_of(50, 5), 1000);
    r.on_finish = [&](const RequestResult& res) {
      EXPECT_EQ(res.finish, FinishReason::kCancelled);
      cancel_finished = true;
    };
    to_cancel = engine.submit(std::move(r));
    engine.cancel(to_cancel);
  }
  for (int32_t i = 0; i < 600 && (finished < 4 || !cancel_finished); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  engine.stop(/*cancel_in_flight=*/false);
  EXPECT_EQ(finished.load(), 4);
  EXPECT_TRUE(cancel_finished.load());
  EXPECT_EQ(tokens.load(), 48);
  const EngineMetrics m = engine.metrics();
  EXPECT_EQ(m.running, 0);
  EXPECT_EQ(m.blocks_used, 0);
}

TEST_F(EngineTest, RequestsThatCanNeverRunAreRejected) {
  Engine engine(*model_, config(rows() * 8));  // 128 tokens per row
  EXPECT_THROW(engine.submit(greedy({}, 4)), Error);
  EXPECT_THROW(engine.submit(greedy(prompt_of(200, 0), 4)), Error);  // more blocks than the pool
  EXPECT_THROW(engine.submit(greedy({1, -3, 5}, 4)), Error);
  EXPECT_THROW(engine.submit(greedy({1, model_->config().n_vocab}, 4)), Error);
  Engine small_ctx(*model_, [] {
    EngineConfig c;
    c.max_context = 64;
    return c;
  }());
  EXPECT_THROW(small_ctx.submit(greedy(prompt_of(64, 0), 4)), Error);
  Request bad = greedy(prompt_of(20, 0), 4);
  bad.compression.policy = KvPolicy::kSnapKv;  // reads L1, configured with L2
  EXPECT_THROW(engine.submit(std::move(bad)), Error);
  Request negative = greedy(prompt_of(20, 0), -1);
  EXPECT_THROW(engine.submit(std::move(negative)), Error);
  // The engine still serves after every rejection.
  const std::vector<RequestResult> out = serve(engine, {greedy(prompt_of(20, 0), 3)});
  EXPECT_EQ(out[0].tokens.size(), 3u);
}

// The q8_0 KV cache (8-bit values, an fp16 scale per 32 inside each slot row): 1.8x the KVs of
// f16 in the same blocks' memory, and teacher-forced distributions over it stay close to the
// f16 cache's (KL per token well under what compression to C=512 costs, docs/performance.md).
// max_batch_tokens 1 runs every token through the decode kernel (one query per step: int8
// scores and, on q8_0, int16-weighted integer value sums), 256 through the tiled prefill one.
class Q8_0CacheTest : public EngineTest, public ::testing::WithParamInterface<int32_t> {};

TEST_P(Q8_0CacheTest, HoldsMoreKvsPerByteAndStaysCloseToF16) {
  const int32_t step_tokens = GetParam();
  const int32_t context_tokens = step_tokens == 1 ? 400 : 1000;  // decode steps cost more
  const std::vector<int32_t> tokens = prompt_of(context_tokens + 100, 0);
  const std::vector<int32_t> context(tokens.begin(), tokens.begin() + context_tokens);
  const std::vector<int32_t> forced(tokens.begin() + context_tokens,
                                    tokens.begin() + context_tokens + 64);
  const int32_t n_vocab = model_->config().n_vocab;
  std::map<KvStorageType, std::vector<float>> logits;
  std::map<KvStorageType, size_t> block_bytes;
  for (KvStorageType storage : {KvStorageType::kF16, KvStorageType::kQ8_0}) {
    EngineConfig c = config();
    c.kv_storage = storage;
    c.max_batch_tokens = step_tokens;
    c.max_running = std::min(c.max_running, step_tokens);
    Engine engine(*model_, c);
    block_bytes[storage] = engine.cache().pool().block_bytes();
    std::vector<float>& out = logits[storage];
    out.assign(forced.size() * static_cast<size_t>(n_vocab), 0.0f);
    Request r = greedy(context, 0);
    r.forced_tokens = forced;
    r.on_forced_logits = [&](std::span<const float> l, int32_t first) {
      std::copy(l.begin(), l.end(), out.begin() + static_cast<int64_t>(first) * n_vocab);
    };
    serve(engine, {std::move(r)});
    engine.cache().check_invariants();
  }
  // d = 64: 2 * 68 + 12 bytes per slot against 2 * 128 + 12 (metric, mass, position).
  EXPECT_EQ(block_bytes[KvStorageType::kQ8_0] * 268, block_bytes[KvStorageType::kF16] * 148);
  double kl = 0.0;
  int same_top1 = 0;
  for (size_t t = 0; t + 1 < forced.size(); ++t) {
    const auto row = [&](KvStorageType s) {
      return std::span<const float>(logits[s]).subspan(t * n_vocab, static_cast<size_t>(n_vocab));
    };
    const eval::LogitComparison cmp =
        eval::compare_logits(row(KvStorageType::kF16), row(KvStorageType::kQ8_0), forced[t + 1]);
    kl += cmp.kl;
    same_top1 += cmp.same_top1 ? 1 : 0;
  }
  const auto n = static_cast<double>(forced.size() - 1);
  std::printf("q8_0 vs f16, %d token(s) per step: KL %.5f, top-1 %.3f\n", step_tokens, kl / n,
              same_top1 / n);
  EXPECT_GT(kl / n, 0.0);  // it is a different cache
  EXPECT_LT(kl / n, 0.02);
  EXPECT_GE(same_top1 / n, 0.9);
}

INSTANTIATE_TEST_SUITE_P(DecodeAndTiled, Q8_0CacheTest, ::testing::Values(1, 256));

}  // namespace
}  // namespace kvc
