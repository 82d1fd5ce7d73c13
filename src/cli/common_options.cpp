#include "cli/common_options.h"

#include <omp.h>
#include <unistd.h>

#include <cmath>
#include <fmt/format.h>
#include <filesystem>

#include "kernels/cpu_features.h"
#include "util/error.h"

namespace kvc::cli {

void add_model_options(CLI::App& app, ModelOptions& o) {
  app.add_option("-m,--model", o.model_path, "GGUF model file")->capture_default_str();
  app.add_option("-t,--threads", o.threads, "Worker threads (0: all cores)")
      ->check(CLI::Range(0, 1024))
      ->capture_default_str();
  app.add_option("--kernels", o.kernels,
                 "CPU kernels: auto (the fastest this CPU runs), or at most amx (AVX-512 VNNI with AMX "
                 "tiles for the prefill and batched matmuls), avx512-vnni, avx512, "
                 "avx2 or scalar (the reference loops); this CPU runs up to " +
                     std::string(kernel_isa_name(cpu_best_kernel_isa())))
      ->check(CLI::IsMember({"auto", "amx", "avx512-vnni", "avx512", "avx2", "scalar"}))
      ->capture_default_str();
}

void add_cache_options(CLI::App& app, CacheOptions& o) {
  app.add_option("-c,--ctx", o.max_context,
                 "Context length in tokens, prompt + output (0: the model's trained length)")
      ->check(CLI::Range(0, 1 << 24))
      ->capture_default_str();
  app.add_option("-b,--batch", o.batch,
                 "Token budget of one engine step: decode tokens plus prefill chunks")
      ->check(CLI::Range(1, 1 << 16))
      ->capture_default_str();
  app.add_option("--max-running", o.max_running,
                 "Requests decoded side by side at most (capped at --batch)")
      ->check(CLI::Range(1, 1 << 16))
      ->capture_default_str();
  app.add_option("--block-size", o.block_size, "KV slots per cache block (one layer, one KV head)")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  add_kv_dtype_option(app, o.kv_dtype);
  auto* mib = app.add_option("--kv-budget", o.kv_budget_mib,
                             "KV-cache memory in MiB (0: enough for one full context)")
                  ->check(CLI::Range(0.0, 1e7))
                  ->capture_default_str();
  app.add_option("--kv-blocks", o.kv_blocks,
                 "KV-cache memory in blocks of --block-size slots of one (layer, KV head)")
      ->check(CLI::Range(0, 1 << 30))
      ->excludes(mib);
  app.add_flag("--poison-kv", o.poison_kv,
               "Fill freed and unused KV slots with NaN so any stray read shows (debugging)");
}

void add_compression_options(CLI::App& app, CompressionOptions& o) {
  const char* group = "KV compression";
  std::vector<std::string> names = {std::string(kAutoPolicy)};
  std::string policy_help = fmt::format(
      "KV-cache policy (every one frees real blocks):\n  {:<13} {}", kAutoPolicy,
      "the recommended setting: kvcompress with --word-spans and --observation-window 32 "
      "(docs/quality.md)");
  for (const PolicyInfo& p : policy_infos()) {
    names.emplace_back(p.name);
    policy_help += fmt::format("\n  {:<13} {}", p.name, p.description);
  }
  app.add_option("--kv-policy", o.policy, policy_help + "\n(a budget flag alone means auto)")
      ->check(CLI::IsMember(names))
      ->capture_default_str()
      ->group(group)
      ->each([&o](const std::string&) { o.policy_given = true; });
  auto* c = app.add_option("--max-cache-tokens", o.max_cache_tokens,
                           "Budget C: mean KVs kept per (layer, KV head) (default 128)")
                ->check(CLI::Range(1.0, 1e9))
                ->group(group);
  auto* r = app.add_option("--compression-rate", o.compression_rate,
                           "Budget as a rate cr: C = max(min-cache, floor((prompt/cr - 1)/bs)*bs)")
                ->check(CLI::Range(1.0, 1e6))
                ->group(group);
  auto* f = app.add_option("--kv-fraction", o.fraction_kept,
                           "Budget as the fraction of KVs kept, in (0, 1]")
                ->check(CLI::Range(1e-9, 1.0))
                ->group(group);
  c->excludes(r)->excludes(f);
  r->excludes(f);
  app.add_option("--min-cache", o.min_cache, "Lower bound on C for --compression-rate")
      ->check(CLI::Range(0, 1 << 24))
      ->capture_default_str()
      ->group(group);
  app.add_option("--metric", o.metric,
                 "Eviction metric: l2 (sum of squared attention) or l1 (sum of attention); "
                 "default: l2 for kvcompress, l1 for h2o/snapkv/pyramidkv/ada-snapkv")
      ->check(CLI::IsMember({"l1", "l2"}))
      ->group(group);
  app.add_flag("--full-observation", o.full_observation,
               "Prefill metric from every query at least --observation-buffer positions later "
               "(KVC-full, O(L^2)); no pooling")
      ->group(group);
  app.add_flag("--no-continual", o.no_continual,
               "Do not compress during decode when blocks run out (stop instead)")
      ->group(group);
  app.add_option("--compress-interval", o.interval, "Also compress every N decode steps (0: never)")
      ->check(CLI::Range(0, 1 << 24))
      ->capture_default_str()
      ->group(group);
  app.add_option("--compress-chunk", o.compress_chunk,
                 "Compress during prefill: every N prompt tokens the chunk's last queries observe "
                 "and the sequence is compressed back to its budget, so a prompt needs KV memory "
                 "for its budget plus one chunk instead of its whole length (0: compress once, "
                 "after the prompt)")
      ->check(CLI::Range(0, 1 << 24))
      ->capture_default_str()
      ->group(group);
  app.add_option("--chunk-budget-factor", o.chunk_budget_factor,
                 "With --compress-chunk: between chunks keep this many times the budget, and cut "
                 "to the budget only after the last chunk, whose observing queries see the "
                 "prompt's end (the question); KV memory: factor x budget + one chunk")
      ->check(CLI::Range(1.0, 1e6))
      ->capture_default_str()
      ->group(group);
  CLI::Option* probe =
      app.add_flag("--tail-probe", o.tail_probe,
                   "With --compress-chunk: run the prompt's last chunk first (its KVs are then "
                   "dropped) and let its last --observation-window queries also observe every "
                   "pass between chunks, so what the prompt's end asks about survives until it "
                   "runs; costs one more chunk of prefill, no memory (on with auto)")
          ->group(group);
  app.add_flag("--no-tail-probe", o.no_tail_probe, "Turn the tail probe off (auto turns it on)")
      ->excludes(probe)
      ->group(group);
  add_policy_tuning_options(app, o);
}

void add_policy_tuning_options(CLI::App& app, CompressionOptions& o) {
  const char* group = "KV compression";
  app.add_option("--protected-window", o.protected_window,
                 "Most recent tokens never evicted")
      ->check(CLI::Range(0, 1 << 24))
      ->capture_default_str()
      ->group(group);
  app.add_option("--sink-tokens", o.sink_tokens, "First tokens never evicted (attention sinks)")
      ->check(CLI::Range(0, 1 << 24))
      ->capture_default_str()
      ->group(group);
  app.add_option("--observation-window", o.observation_window,
                 "Prefill metric: the last w prompt queries observe the KVs (0: the policy's "
                 "own: 8, auto 32)")
      ->check(CLI::Range(0, 1 << 20))
      ->capture_default_str()
      ->group(group);
  app.add_option("--observation-buffer", o.observation_buffer,
                 "Full observation: a query observes only KVs this many positions older")
      ->check(CLI::Range(0, 1 << 20))
      ->capture_default_str()
      ->group(group);
  app.add_option("--pool-kernel", o.pool_kernel, "Max-pool kernel of the window metric (odd; 1: none)")
      ->check(CLI::Range(1, 1001))
      ->capture_default_str()
      ->group(group);
  app.add_flag("--word-spans", o.word_spans,
               "Score each whitespace-delimited word of the prompt by its best token, so a number "
               "or identifier the observing queries point at is kept or evicted whole")
      ->group(group);
  app.add_flag("--pool-successors", o.pool_successors,
               "The window metric's max-pool reaches only the k/2 tokens after a strongly "
               "attended KV, not those before it (the tokens copying heads read next)")
      ->group(group);
  app.add_flag("--marginal-error", o.marginal_error,
               "kvcompress: give up blocks by the error they add (metric plus the cost of "
               "renormalizing the attention a head loses) instead of by metric alone "
               "(docs/design.md §3)")
      ->group(group);
  app.add_option("--streaming-sinks", o.streaming_sinks, "streamingllm and random: first tokens kept (attention sinks)")
      ->check(CLI::Range(0, 1 << 24))
      ->capture_default_str()
      ->group(group);
  app.add_option("--policy-seed", o.policy_seed, "random policy: seed of the kept subset")
      ->capture_default_str()
      ->group(group);
  app.add_option("--ada-safeguard", o.ada_safeguard,
                 "ada-snapkv: share of the mean head budget every head keeps first")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str()
      ->group(group);
  app.add_flag("--charge-repeated-kvs", o.charge_repeated_kvs,
               "snapkv/pyramidkv keep group_size x C KVs per KV head, as their reference code "
               "repeats KVs under GQA (the paper's equal-C tables); default: equal physical KVs")
      ->group(group);
}

CompressionConfig policy_tuning_config(const CompressionOptions& o) {
  CompressionConfig c;
  c.planner.protected_window = o.protected_window;
  c.planner.sink_tokens = o.sink_tokens;
  if (o.observation_window > 0) c.observation_window = o.observation_window;
  c.observation_buffer = o.observation_buffer;
  c.pool_kernel = o.pool_kernel;
  c.word_spans = o.word_spans;
  c.planner.marginal_error = o.marginal_error;
  c.pool_successors = o.pool_successors;
  c.streaming_sinks = o.streaming_sinks;
  c.random_seed = o.policy_seed;
  c.ada_safeguard = o.ada_safeguard;
  c.charge_repeated_kvs = o.charge_repeated_kvs;
  return c;
}

CompressionConfig compression_config(const CompressionOptions& o) {
  CompressionConfig c = policy_tuning_config(o);
  set_policy(c, o.policy);
  const bool budget_given = o.compression_rate > 0 || o.fraction_kept > 0 || o.max_cache_tokens > 0;
  if (budget_given && c.policy == KvPolicy::kFull) {
    if (o.policy_given) fail("--kv-policy full keeps every KV: drop the budget or pick a policy");
    set_policy(c, kAutoPolicy);  // a budget alone means the recommended setting
  }
  if (o.observation_window > 0) c.observation_window = o.observation_window;  // over auto's
  if (o.compression_rate > 0) {
    c.budget = CacheBudget{CacheBudget::kCompressionRate, o.compression_rate, o.min_cache};
  } else if (o.fraction_kept > 0) {
    c.budget = CacheBudget{CacheBudget::kFractionKept, o.fraction_kept, o.min_cache};
  } else {
    c.budget = CacheBudget{CacheBudget::kMaxCacheTokens,
                           o.max_cache_tokens > 0 ? o.max_cache_tokens : 128.0, o.min_cache};
  }
  c.full_observation = o.full_observation;
  apply_policy_defaults(c);  // the metric each policy reads (and H2O's full observation)
  if (!o.metric.empty()) {
    c.metric = o.metric == "l1" ? MetricAccumulation::kAbsolute : MetricAccumulation::kSquared;
  }
  c.continual = !o.no_continual;
  c.interval = o.interval;
  c.compress_chunk = o.compress_chunk;
  c.chunk_budget_factor = o.chunk_budget_factor;
  if (o.tail_probe && o.compress_chunk == 0) {
    fail("--tail-probe previews the prompt's end for the passes between prefill chunks: set "
         "--compress-chunk too");
  }
  if (o.tail_probe) c.tail_probe = true;
  if (o.no_tail_probe) c.tail_probe = false;
  validate_compression_config(c);
  return c;
}

std::unique_ptr<Model> load_model(const ModelOptions& o) {
  if (o.threads > 0) omp_set_num_threads(o.threads);
  if (o.kernels == "auto") {
    force_scalar_kernels(false);
  } else {
    const KernelIsa requested = *parse_kernel_isa(o.kernels);  // checked by CLI11
    if (requested > cpu_best_kernel_isa()) {
      throw Error(fmt::format("--kernels {}: this CPU runs at most {}", o.kernels,
                              kernel_isa_name(cpu_best_kernel_isa())));
    }
    limit_kernel_isa(requested);
  }
  std::string path = o.model_path;
  if (path == kDefaultModel && !std::filesystem::exists(path)) {
    // Run from another directory: look for the default model beside the build tree
    // (<repo>/build/<preset>/kvc -> <repo>/models/...).
    std::error_code ec;
    const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
    const auto candidate = exe.parent_path() / "../.." / kDefaultModel;
    if (!ec && std::filesystem::exists(candidate)) path = candidate.lexically_normal().string();
  }
  return Model::load(path);
}

namespace {

// Refuses KV pools that cannot fit in this machine's memory, before allocating them.
void check_fits_in_memory(const EngineConfig& c, const ModelConfig& model) {
  const BlockPool probe(BlockPoolConfig{0, c.block_size, model.head_dim, c.kv_storage});
  const double bytes = static_cast<double>(c.num_blocks) * static_cast<double>(probe.block_bytes());
  const double physical = static_cast<double>(sysconf(_SC_PHYS_PAGES)) * sysconf(_SC_PAGESIZE);
  if (physical > 0 && bytes > 0.9 * physical) {
    fail("the KV cache would need {:.1f} GiB but this machine has {:.1f} GiB: lower --ctx or set "
         "--kv-budget",
         bytes / (1 << 30), physical / (1 << 30));
  }
}

}  // namespace

KvStorageType kv_storage_type(const std::string& kv_dtype, const ModelConfig& model) {
  const KvStorageType t = kv_dtype == "f32"    ? KvStorageType::kF32
                          : kv_dtype == "q8_0" ? KvStorageType::kQ8_0
                                               : KvStorageType::kF16;
  if (kv_row_bytes(t, model.head_dim) == 0) {
    fail("--kv-dtype {} stores heads in blocks of 32 values; this model's head_dim is {}",
         kv_dtype, model.head_dim);
  }
  return t;
}

void add_kv_dtype_option(CLI::App& app, std::string& kv_dtype) {
  app.add_option("--kv-dtype", kv_dtype,
                 "KV storage type: f16, f32, or q8_0 (8-bit values with one fp16 scale per 32, "
                 "inside each block: 1.8x the KVs of f16 in the same memory)")
      ->check(CLI::IsMember({"f16", "f32", "q8_0"}))
      ->capture_default_str();
}

EngineConfig engine_config(const CacheOptions& o, const ModelConfig& model) {
  EngineConfig c;
  c.max_context = o.max_context;
  c.max_batch_tokens = o.batch;
  c.max_running = o.max_running;
  if (o.max_context > model.n_ctx_train) {
    fail("--ctx {} is longer than the model's trained context of {} tokens", o.max_context,
         model.n_ctx_train);
  }
  c.block_size = o.block_size;
  c.kv_storage = kv_storage_type(o.kv_dtype, model);
  c.poison_freed = o.poison_kv;
  if (o.kv_budget_mib > 0.0) {
    const BlockPool probe(BlockPoolConfig{0, o.block_size, model.head_dim, c.kv_storage});
    const double blocks = std::floor(o.kv_budget_mib * 1024.0 * 1024.0 / probe.block_bytes());
    if (blocks < model.n_layer * model.n_head_kv) {
      fail("--kv-budget {} MiB holds {} blocks; at least one per (layer, KV head) = {} is needed",
           o.kv_budget_mib, blocks, model.n_layer * model.n_head_kv);
    }
    c.num_blocks = static_cast<int32_t>(std::min(blocks, 2e9));
  }
  if (o.kv_blocks > 0) {
    if (o.kv_blocks < model.n_layer * model.n_head_kv) {
      fail("--kv-blocks {} is less than one block per (layer, KV head) = {}", o.kv_blocks,
           model.n_layer * model.n_head_kv);
    }
    c.num_blocks = o.kv_blocks;
  }
  check_fits_in_memory(resolve_engine_config(model, c), model);
  return c;
}

}  // namespace kvc::cli
