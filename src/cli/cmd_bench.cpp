// `kvc bench`: prefill and decode throughput on synthetic prompts (like llama-bench: token ids
// from a fixed pseudo-random sequence, so content does not matter and runs are repeatable).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/common_options.h"
#include "engine/sampler.h"
#include "model/forward.h"

namespace kvc::cli {
namespace {

struct BenchOptions {
  ModelOptions model;
  CacheOptions cache;
  int32_t prompt_tokens = 512;
  int32_t gen_tokens = 128;
  int32_t repeat = 3;
  bool json = false;
};

std::vector<int32_t> synthetic_prompt(int32_t n, int32_t vocab) {
  std::vector<int32_t> ids(static_cast<size_t>(n));
  uint64_t state = 42;
  for (int32_t& id : ids) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    id = 100 + static_cast<int32_t>((state >> 33) % static_cast<uint64_t>(vocab - 100));
  }
  return ids;
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

void run_bench(const BenchOptions& o) {
  const std::unique_ptr<Model> model = load_model(o.model);
  const ModelConfig& mc = model->config();
  CacheOptions cache_options = o.cache;
  if (cache_options.max_context == 0) cache_options.max_context = o.prompt_tokens + o.gen_tokens + 1;
  const EngineConfig ec = resolve_engine_config(mc, engine_config(cache_options, mc));
  PagedKvCache cache(KvCacheConfig{mc.n_layer, mc.n_head_kv, mc.head_dim, ec.block_size,
                                   ec.num_blocks, ec.kv_storage});
  ForwardPass forward(*model, ec.max_batch_tokens, ec.max_context);
  const std::vector<int32_t> prompt = synthetic_prompt(o.prompt_tokens, mc.n_vocab);

  std::vector<double> prefill_tps, decode_tps;
  for (int32_t r = 0; r < o.repeat + 1; ++r) {  // run 0 warms caches and page-ins
    const SequenceId seq = cache.add_sequence();
    double t0 = now_seconds();
    std::span<const float> logits = forward.run(cache, seq, prompt, 0);
    const double prefill = now_seconds() - t0;
    t0 = now_seconds();
    for (int32_t i = 0; i < o.gen_tokens; ++i) {
      const int32_t next[1] = {argmax(logits)};
      logits = forward.run(cache, seq, next, o.prompt_tokens + i);
    }
    const double decode = now_seconds() - t0;
    cache.remove_sequence(seq);
    if (r == 0) continue;
    prefill_tps.push_back(o.prompt_tokens / prefill);
    decode_tps.push_back(o.gen_tokens / decode);
    if (!o.json) {
      std::fprintf(stderr, "run %d: prefill %.1f tok/s, decode %.1f tok/s\n", r,
                   prefill_tps.back(), decode_tps.back());
    }
  }
  std::sort(prefill_tps.begin(), prefill_tps.end());
  std::sort(decode_tps.begin(), decode_tps.end());
  const double prefill_median = prefill_tps[prefill_tps.size() / 2];
  const double decode_median = decode_tps[decode_tps.size() / 2];
  if (o.json) {
    nlohmann::json j;
    j["engine"] = "kvc";
    j["model"] = o.model.model_path;
    j["threads"] = o.model.threads;
    j["prompt_tokens"] = o.prompt_tokens;
    j["gen_tokens"] = o.gen_tokens;
    j["prefill_tokens_per_second"] = prefill_median;
    j["decode_tokens_per_second"] = decode_median;
    j["prefill_runs"] = prefill_tps;
    j["decode_runs"] = decode_tps;
    std::cout << j.dump() << "\n";
  } else {
    std::printf("prefill (%d tokens): %.1f tok/s   decode (%d tokens): %.1f tok/s   (median of %d)\n",
                o.prompt_tokens, prefill_median, o.gen_tokens, decode_median, o.repeat);
  }
}

}  // namespace

void register_bench(CLI::App& app) {
  auto o = std::make_shared<BenchOptions>();
  CLI::App* cmd = app.add_subcommand("bench", "Measure prefill and decode throughput");
  add_model_options(*cmd, o->model);
  add_cache_options(*cmd, o->cache);
  cmd->add_option("--prompt-tokens", o->prompt_tokens, "Prompt length for the prefill measurement")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  cmd->add_option("--gen-tokens", o->gen_tokens, "Tokens decoded after the prompt")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  cmd->add_option("--repeat", o->repeat, "Measured runs (after one warm-up); the median is reported")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  cmd->add_flag("--json", o->json, "Print one JSON line");
  cmd->callback([o] { run_bench(*o); });
}

}  // namespace kvc::cli
