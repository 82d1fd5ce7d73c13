// `kvc bench`: prefill and decode throughput on synthetic prompts (like llama-bench: token ids
// from a fixed pseudo-random sequence, so content does not matter and runs are repeatable).
#include <algorithm>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/bench_http.h"
#include "cli/bench_serving.h"
#include "cli/commands.h"
#include "kernels/quant.h"
#include "cli/common_options.h"
#include "cli/memory_bound.h"
#include "engine/engine.h"
#include "util/error.h"

namespace kvc::cli {
namespace {

struct BenchOptions {
  ModelOptions model;
  CacheOptions cache;
  CompressionOptions compression;
  int32_t prompt_tokens = 512;
  int32_t gen_tokens = 128;
  int32_t repeat = 3;
  bool json = false;
  bool no_bandwidth = false;
  bool serving = false;
  ServingBenchOptions serve;
  HttpBenchOptions http;
};

void run_bench(const BenchOptions& o) {
  const CompressionConfig compression = compression_config(o.compression);
  const std::unique_ptr<Model> model = load_model(o.model);
  const ModelConfig& mc = model->config();
  if (static_cast<int64_t>(o.prompt_tokens) + o.gen_tokens + 1 > mc.n_ctx_train) {
    fail("--prompt-tokens {} + --gen-tokens {} exceed the model's context of {} tokens",
         o.prompt_tokens, o.gen_tokens, mc.n_ctx_train);
  }
  CacheOptions cache_options = o.cache;
  if (cache_options.max_context == 0) cache_options.max_context = o.prompt_tokens + o.gen_tokens + 1;
  Engine engine(*model, engine_config(cache_options, mc));
  Request request;
  request.prompt = synthetic_prompt(o.prompt_tokens, mc.n_vocab, 0);
  request.max_tokens = o.gen_tokens + 1;  // the first token comes from the prefill logits
  request.compression = compression;

  std::vector<double> prefill_tps, decode_tps, compress_ms;
  double kv_mib = 0, full_mib = 0;
  int64_t kv_retained = 0;
  for (int32_t r = 0; r < o.repeat + 1; ++r) {  // run 0 warms caches and page-ins
    RequestStats stats;
    Request run = request;
    run.on_finish = [&](const RequestResult& result) { stats = result.stats; };
    engine.submit(std::move(run));
    engine.run_until_idle();
    if (r == 0) continue;
    prefill_tps.push_back(stats.prefill_tokens_per_second());
    decode_tps.push_back(stats.decode_tokens_per_second());
    compress_ms.push_back(stats.compress_seconds * 1e3);
    kv_mib = stats.kv_bytes / 1048576.0;
    kv_retained = stats.kv_retained;
    full_mib = stats.full_cache_bytes / 1048576.0;
    if (!o.json) {
      std::fprintf(stderr, "run %d: prefill %.1f tok/s, decode %.1f tok/s, compression %.1f ms\n",
                   r, prefill_tps.back(), decode_tps.back(), compress_ms.back());
    }
  }
  std::sort(prefill_tps.begin(), prefill_tps.end());
  std::sort(decode_tps.begin(), decode_tps.end());
  const double prefill_median = prefill_tps[prefill_tps.size() / 2];
  const double decode_median = decode_tps[decode_tps.size() / 2];
  // The decode's memory-bandwidth bound at its mean row length (the rows end with
  // kv_retained / rows KVs and grew by one per generated token).
  const double rows = static_cast<double>(mc.n_layer) * mc.n_head_kv;
  const double mean_context =
      std::max(1.0, static_cast<double>(kv_retained) / rows - o.gen_tokens / 2.0);
  const size_t kv_bytes = engine.cache().pool().block_bytes() / engine.config().block_size;
  const double bytes_per_token = decode_bytes_per_token(*model, mean_context, kv_bytes);
  const double bandwidth = o.no_bandwidth ? 0.0 : copy_bandwidth_bytes_per_second();
  const double bound = bandwidth / bytes_per_token;
  if (o.json) {
    nlohmann::json j;
    j["engine"] = "kvc";
    j["model"] = o.model.model_path;
    j["threads"] = o.model.threads;
    j["kernels"] = cpu_kernel_isa();
    j["prompt_tokens"] = o.prompt_tokens;
    j["gen_tokens"] = o.gen_tokens;
    j["prefill_tokens_per_second"] = prefill_median;
    j["decode_tokens_per_second"] = decode_median;
    j["prefill_runs"] = prefill_tps;
    j["decode_runs"] = decode_tps;
    j["kv_policy"] = describe(compression);
    j["compress_ms"] = compress_ms;
    j["kv_mib_at_end"] = kv_mib;
    j["full_cache_mib_at_end"] = full_mib;
    j["decode_bytes_per_token"] = bytes_per_token;
    if (!o.no_bandwidth) {
      j["copy_bandwidth_gb_per_s"] = bandwidth / 1e9;
      j["decode_bound_tokens_per_second"] = bound;
    }
    std::cout << j.dump() << "\n";
  } else {
    std::printf("prefill (%d tokens): %.1f tok/s   decode (%d tokens): %.1f tok/s   (median of %d, "
                "%s kernels)\n"
                "KV cache at the end: %.2f MiB (full cache: %.2f MiB) with %s\n",
                o.prompt_tokens, prefill_median, o.gen_tokens, decode_median, o.repeat,
                cpu_kernel_isa(), kv_mib, full_mib, describe(compression).c_str());
    if (!o.no_bandwidth) {
      std::printf("memory-bandwidth bound of this decode: %.1f tok/s (%.1f MB per token at a "
                  "copy bandwidth of %.1f GB/s); measured: %.0f%% of it\n",
                  bound, bytes_per_token / 1e6, bandwidth / 1e9, 100.0 * decode_median / bound);
    }
  }
}

}  // namespace

void register_bench(CLI::App& app) {
  auto o = std::make_shared<BenchOptions>();
  CLI::App* cmd = app.add_subcommand("bench", "Measure prefill and decode throughput");
  add_model_options(*cmd, o->model);
  add_cache_options(*cmd, o->cache);
  add_compression_options(*cmd, o->compression);
  cmd->add_option("--prompt-tokens", o->prompt_tokens, "Prompt length for the prefill measurement")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  cmd->add_option("--gen-tokens", o->gen_tokens, "Tokens decoded after the prompt")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  cmd->add_option("--repeat", o->repeat, "Measured runs (after one warm-up); the median is reported")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  cmd->add_flag("--json", o->json, "Print JSON lines (one per measurement)");
  cmd->add_flag("--no-bandwidth", o->no_bandwidth,
                "Skip measuring the copy bandwidth for the decode's memory-bandwidth bound (it "
                "copies 256 MiB, which adds 512 MiB to the process's peak resident memory)");
  const char* group = "Serving throughput (--serving)";
  cmd->add_flag("--serving", o->serving,
                "Submit --num-prompts requests at once under a fixed --kv-budget and measure "
                "throughput at every --compression-rates value (the paper's experiment)")
      ->group(group);
  cmd->add_option("--num-prompts", o->serve.num_prompts, "Requests per measurement")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str()
      ->group(group);
  cmd->add_option("--input-lens", o->serve.input_lens, "Prompt lengths (comma-separated)")
      ->delimiter(',')
      ->check(CLI::Range(1, 1 << 24))
      ->group(group);
  cmd->add_option("--output-len", o->serve.output_len, "Tokens generated per request (EOS ignored)")
      ->check(CLI::Range(1, 1 << 24))
      ->capture_default_str()
      ->group(group);
  cmd->add_option("--compression-rates", o->serve.compression_rates,
                  "Rates to sweep (1: no compression; others: --kv-policy, kvcompress by default, "
                  "with the paper's rate -> budget mapping)")
      ->delimiter(',')
      ->check(CLI::Range(1.0, 1e6))
      ->group(group);
  cmd->add_option("--plot", o->serve.plot,
                  "Also write a PNG of output tokens/s against the rate (scripts/plot_serving.py)")
      ->group(group);
  const char* http_group = "Serving over HTTP (--url): the same workload against any server";
  cmd->add_option("--url", o->http.url,
                  "Send the --serving workload to this OpenAI-compatible server (streamed, EOS "
                  "ignored) and print TTFT/TPOT/ITL percentiles, e.g. http://127.0.0.1:8080")
      ->group(http_group);
  cmd->add_option("--request-rate", o->http.request_rate,
                  "Poisson arrivals per second (0: all requests at once)")
      ->check(CLI::Range(0.0, 1e6))
      ->capture_default_str()
      ->group(http_group);
  cmd->add_option("--api-key", o->http.api_key, "Bearer key for --url")->group(http_group);
  cmd->add_option("--served-model", o->http.model,
                  "Model id to send (default: the server's first /v1/models entry)")
      ->group(http_group);
  cmd->add_flag("!--no-compression-fields", o->http.send_compression,
                "Do not send kv_policy/compression_rate (servers other than kvc ignore them)")
      ->group(http_group);
  cmd->callback([o] {
    if (!o->http.url.empty()) {
      run_http_bench(o->http, o->serve, o->compression.policy, o->json);
    } else if (o->serving) {
      run_serving_bench(o->model, o->cache, o->compression, o->serve, o->json);
    } else {
      run_bench(*o);
    }
  });
}

}  // namespace kvc::cli
