#include "cli/bench_serving.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "kernels/quant.h"
#include "util/error.h"
#include "util/timing.h"

namespace kvc::cli {
namespace {

struct RateResult {
  int32_t input_len = 0;
  double rate = 1;
  double seconds = 0;
  EngineMetrics metrics;
  int64_t completed = 0;
  int64_t output_tokens = 0;
  size_t budget_bytes = 0;
  size_t block_bytes = 0;
};

}  // namespace

std::vector<int32_t> synthetic_prompt(int32_t n, int32_t vocab, uint64_t seed) {
  std::vector<int32_t> ids(static_cast<size_t>(n));
  uint64_t state = 42 + seed * 0x9E3779B97F4A7C15ull;
  for (int32_t& id : ids) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    id = 100 + static_cast<int32_t>((state >> 33) % static_cast<uint64_t>(vocab - 100));
  }
  return ids;
}

void run_serving_bench(const ModelOptions& model_options, const CacheOptions& cache_in,
                       const CompressionOptions& compression_in, const ServingBenchOptions& o,
                       bool json) {
  if (o.num_prompts < 1) fail("--num-prompts must be >= 1");
  if (o.output_len < 1) fail("--output-len must be >= 1");
  if (o.input_lens.empty() || o.compression_rates.empty()) {
    fail("--input-lens and --compression-rates need at least one value");
  }
  for (double r : o.compression_rates) {
    if (!(r >= 1.0)) fail("compression rates must be >= 1, got {}", r);
  }
  const std::unique_ptr<Model> model = load_model(model_options);
  const ModelConfig& mc = model->config();
  int32_t longest = 0;
  for (int32_t l : o.input_lens) {
    if (l < 1) fail("input lengths must be >= 1, got {}", l);
    longest = std::max(longest, l);
  }
  if (static_cast<int64_t>(longest) + o.output_len + 1 > mc.n_ctx_train) {
    fail("--input-lens {} + --output-len {} exceed the model's context of {} tokens", longest,
         o.output_len, mc.n_ctx_train);
  }
  CacheOptions cache = cache_in;
  if (cache.max_context == 0) cache.max_context = longest + o.output_len + 1;
  if (cache.kv_budget_mib <= 0 && cache.kv_blocks <= 0) {
    fail("--serving needs a fixed KV budget: --kv-budget MiB or --kv-blocks");
  }
  const bool tty = isatty(STDERR_FILENO) != 0;
  std::vector<RateResult> results;
  for (int32_t input_len : o.input_lens) {
    for (double rate : o.compression_rates) {
      CompressionOptions co = compression_in;
      if (rate > 1.0) {
        if (co.policy == "full") co.policy = "kvcompress";
        co.compression_rate = rate;
        co.max_cache_tokens = 0;
        co.fraction_kept = 0;
      } else {
        co.policy = "full";
        co.policy_given = false;
        co.compression_rate = co.max_cache_tokens = co.fraction_kept = 0;
      }
      const CompressionConfig compression = compression_config(co);
      Engine engine(*model, engine_config(cache, mc));
      RateResult r;
      r.input_len = input_len;
      r.rate = rate;
      r.block_bytes = engine.cache().pool().block_bytes();
      r.budget_bytes = static_cast<size_t>(engine.config().num_blocks) * r.block_bytes;
      const auto start = std::chrono::steady_clock::now();
      for (int32_t i = 0; i < o.num_prompts; ++i) {
        Request request;
        request.prompt = synthetic_prompt(input_len, mc.n_vocab, static_cast<uint64_t>(i) + 1);
        request.max_tokens = o.output_len;
        request.compression = compression;
        request.on_finish = [&](const RequestResult& result) {
          ++r.completed;
          r.output_tokens += result.stats.generated_tokens;
          if (tty || r.completed == o.num_prompts) {
            std::fprintf(stderr, "%s[bench] L=%d rate %g: %lld/%d requests, %.1f s%s",
                         tty ? "\r" : "", input_len, rate, static_cast<long long>(r.completed),
                         o.num_prompts, seconds_since(start),
                         r.completed == o.num_prompts ? "\n" : "");
            std::fflush(stderr);
          }
        };
        engine.submit(std::move(request));
      }
      engine.run_until_idle();
      r.seconds = seconds_since(start);
      r.metrics = engine.metrics();
      results.push_back(r);
    }
  }

  nlohmann::json rows = nlohmann::json::array();
  for (const RateResult& r : results) {
    const RateResult* base = nullptr;
    for (const RateResult& b : results) {
      if (b.input_len == r.input_len && b.rate == 1.0) base = &b;
    }
    const EngineMetrics& m = r.metrics;
    const double total_tokens = static_cast<double>(r.completed) * r.input_len + r.output_tokens;
    const double output_tps = r.output_tokens / r.seconds;
    const double base_output_tps = base ? base->output_tokens / base->seconds : 0.0;
    const double base_total_tps =
        base ? (static_cast<double>(base->completed) * base->input_len + base->output_tokens) /
                   base->seconds
             : 0.0;
    nlohmann::json j;
    j["input_len"] = r.input_len;
    j["output_len"] = o.output_len;
    j["num_prompts"] = o.num_prompts;
    j["compression_rate"] = r.rate;
    j["seconds"] = r.seconds;
    j["total_tokens_per_second"] = total_tokens / r.seconds;
    j["output_tokens_per_second"] = output_tps;
    j["requests_per_second"] = r.completed / r.seconds;
    j["peak_batch"] = m.peak_batch;
    j["mean_batch"] = m.decode_steps > 0 ? static_cast<double>(m.decode_tokens) / m.decode_steps : 0;
    j["decode_only_tokens_per_second"] =
        m.decode_only_seconds > 0 ? m.decode_only_tokens / m.decode_only_seconds : 0;
    j["compressions"] = m.compressions;
    j["pressure_compressions"] = m.pressure_compressions;
    j["preemptions"] = m.preemptions;
    j["kvs_evicted"] = m.kvs_evicted;
    j["attention_share"] = m.step_seconds > 0 ? m.attention_seconds / m.step_seconds : 0;
    j["compression_share"] = m.step_seconds > 0 ? m.compress_seconds / m.step_seconds : 0;
    j["outside_forward_share"] =
        m.step_seconds > 0 ? (m.step_seconds - m.forward_seconds) / m.step_seconds : 0;
    j["peak_kv_bytes"] = static_cast<size_t>(m.peak_blocks_used) * r.block_bytes;
    j["kv_budget_bytes"] = r.budget_bytes;
    j["ratio_to_rate_1"] = base_output_tps > 0 ? nlohmann::json(output_tps / base_output_tps) : nlohmann::json();
    j["total_ratio_to_rate_1"] =
        base_total_tps > 0 ? nlohmann::json((total_tokens / r.seconds) / base_total_tps) : nlohmann::json();
    j["threads"] = model_options.threads;
    j["kernels"] = cpu_kernel_isa();
    rows.push_back(j);
  }
  if (json) {
    for (const auto& j : rows) std::cout << j.dump() << "\n";
  } else {
    std::printf("serving: %d prompts x (L input + %d output tokens), KV budget %.1f MiB, %s kernels\n",
                o.num_prompts, o.output_len,
                results.empty() ? 0.0 : results[0].budget_bytes / 1048576.0, cpu_kernel_isa());
    std::printf("%6s %6s %9s %9s %7s %6s %6s %6s %6s %7s %6s %6s %7s\n", "L", "rate", "total/s",
                "output/s", "req/s", "peak", "mean", "compr", "preem", "attn%", "other%",
                "x r=1", "peakMiB");
    for (const auto& j : rows) {
      std::printf("%6d %6g %9.1f %9.1f %7.3f %6lld %6.1f %6lld %6lld %6.1f%% %5.1f%% %6s %7.1f\n",
                  j["input_len"].get<int32_t>(), j["compression_rate"].get<double>(),
                  j["total_tokens_per_second"].get<double>(),
                  j["output_tokens_per_second"].get<double>(),
                  j["requests_per_second"].get<double>(), j["peak_batch"].get<long long>(),
                  j["mean_batch"].get<double>(), j["compressions"].get<long long>(),
                  j["preemptions"].get<long long>(), 100 * j["attention_share"].get<double>(),
                  100 * j["outside_forward_share"].get<double>(),
                  j["ratio_to_rate_1"].is_null()
                      ? "-"
                      : fmt::format("{:.2f}", j["ratio_to_rate_1"].get<double>()).c_str(),
                  j["peak_kv_bytes"].get<double>() / 1048576.0);
    }
    std::printf("(attn%%: paged attention's share of step time; other%%: scheduling, compression "
                "and sampling outside the forward pass)\n");
  }
  if (!o.plot.empty()) {
    const std::string data = o.plot + ".jsonl";
    std::ofstream out(data);
    for (const auto& j : rows) out << j.dump() << "\n";
    out.close();
    std::error_code ec;
    const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
    const auto repo = exe.parent_path() / "../..";
    const auto script = repo / "scripts/plot_serving.py";
    const auto python = repo / ".venv-test/bin/python";
    const std::string command = fmt::format("'{}' '{}' '{}' '{}'", python.string(),
                                            script.string(), data, o.plot);
    if (std::system(command.c_str()) != 0) {
      fail("plotting failed; the figures are in {} (run: {})", data, command);
    }
    std::fprintf(stderr, "[bench] plot: %s (data: %s)\n", o.plot.c_str(), data.c_str());
  }
}

}  // namespace kvc::cli
