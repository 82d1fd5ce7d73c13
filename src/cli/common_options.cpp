#include "cli/common_options.h"

#include <omp.h>

#include <cmath>

#include "kernels/cpu_features.h"
#include "util/error.h"

namespace kvc::cli {

void add_model_options(CLI::App& app, ModelOptions& o) {
  app.add_option("-m,--model", o.model_path, "GGUF model file")->capture_default_str();
  app.add_option("-t,--threads", o.threads, "Worker threads (0: all cores)")
      ->check(CLI::Range(0, 1024))
      ->capture_default_str();
  app.add_option("--kernels", o.kernels,
                 "CPU kernels: auto (fastest the CPU supports) or scalar (reference loops)")
      ->check(CLI::IsMember({"auto", "scalar"}))
      ->capture_default_str();
}

void add_cache_options(CLI::App& app, CacheOptions& o) {
  app.add_option("-c,--ctx", o.max_context,
                 "Context length in tokens, prompt + output (0: the model's trained length)")
      ->check(CLI::Range(0, 1 << 24))
      ->capture_default_str();
  app.add_option("-b,--batch", o.batch, "Prefill chunk size in tokens")
      ->check(CLI::Range(1, 1 << 16))
      ->capture_default_str();
  app.add_option("--block-size", o.block_size, "KV slots per cache block (one layer, one KV head)")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  app.add_option("--kv-dtype", o.kv_dtype, "KV storage type: f16 or f32")
      ->check(CLI::IsMember({"f16", "f32"}))
      ->capture_default_str();
  app.add_option("--kv-budget", o.kv_budget_mib,
                 "KV-cache memory in MiB (0: enough for one full context)")
      ->check(CLI::Range(0.0, 1e7))
      ->capture_default_str();
}

std::unique_ptr<Model> load_model(const ModelOptions& o) {
  if (o.threads > 0) omp_set_num_threads(o.threads);
  force_scalar_kernels(o.kernels == "scalar");
  return Model::load(o.model_path);
}

EngineConfig engine_config(const CacheOptions& o, const ModelConfig& model) {
  EngineConfig c;
  c.max_context = o.max_context;
  c.max_batch_tokens = o.batch;
  c.block_size = o.block_size;
  c.kv_storage = o.kv_dtype == "f32" ? KvStorageType::kF32 : KvStorageType::kF16;
  if (o.kv_budget_mib > 0.0) {
    const BlockPool probe(BlockPoolConfig{0, o.block_size, model.head_dim, c.kv_storage});
    const double blocks = std::floor(o.kv_budget_mib * 1024.0 * 1024.0 / probe.block_bytes());
    if (blocks < model.n_layer * model.n_head_kv) {
      fail("--kv-budget {} MiB holds {} blocks; at least one per (layer, KV head) = {} is needed",
           o.kv_budget_mib, blocks, model.n_layer * model.n_head_kv);
    }
    c.num_blocks = static_cast<int32_t>(std::min(blocks, 2e9));
  }
  return c;
}

}  // namespace kvc::cli
