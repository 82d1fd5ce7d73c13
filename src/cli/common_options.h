// Options shared by several subcommands, each declared once here (name, default, help) and
// parsed into typed structs at the edge; nothing below the CLI reads flags or the environment.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <memory>
#include <string>

#include "engine/engine.h"
#include "model/model.h"

namespace kvc::cli {

inline constexpr const char* kDefaultModel = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

struct ModelOptions {
  std::string model_path = kDefaultModel;
  int32_t threads = 0;          // 0: all cores
  std::string kernels = "auto";  // auto | amx | avx512-vnni | avx512 | avx2 | scalar
};

struct CacheOptions {
  int32_t max_context = 0;
  int32_t batch = 256;
  int32_t max_running = 64;
  int32_t block_size = 16;
  std::string kv_dtype = "f16";
  double kv_budget_mib = 0.0;  // 0: enough for a full context
  int32_t kv_blocks = 0;       // the same budget counted in blocks (0: unset)
  bool poison_kv = false;
};

struct CompressionOptions {
  std::string policy = "full";
  bool policy_given = false;  // --kv-policy on the command line
  double max_cache_tokens = 0.0;
  double compression_rate = 0.0;
  double fraction_kept = 0.0;
  int32_t min_cache = 128;
  int32_t protected_window = 8;
  int32_t sink_tokens = 0;
  std::string metric;  // "" = the policy's own (l2 for kvcompress, l1 for h2o/snapkv/...)
  int32_t observation_window = 0;  // 0: the policy's own (8; auto: 32)
  bool full_observation = false;
  int32_t observation_buffer = 10;
  int32_t pool_kernel = 7;
  bool word_spans = false;
  bool marginal_error = false;
  bool pool_successors = false;
  bool no_continual = false;
  int32_t interval = 0;
  int32_t compress_chunk = 0;
  double chunk_budget_factor = 1.0;
  bool tail_probe = false;     // --tail-probe
  bool no_tail_probe = false;  // --no-tail-probe (auto's default is on)
  int32_t streaming_sinks = 4;
  uint64_t policy_seed = 0;
  double ada_safeguard = 0.2;
  bool charge_repeated_kvs = false;
};

void add_model_options(CLI::App& app, ModelOptions& options);
void add_cache_options(CLI::App& app, CacheOptions& options);
void add_compression_options(CLI::App& app, CompressionOptions& options);
// The policies' own knobs only (protected window, sinks, pooling, seeds, ...), for commands
// that choose policies and budgets themselves (`kvc eval`); add_compression_options adds them too.
void add_policy_tuning_options(CLI::App& app, CompressionOptions& options);

// Applies --threads and --kernels, then loads the model (throws kvc::Error).
std::unique_ptr<Model> load_model(const ModelOptions& options);
EngineConfig engine_config(const CacheOptions& options, const ModelConfig& model);
// --kv-dtype (f16, f32, q8_0), shared by the cache options and `kvc eval`; the parsed type,
// or a one-line error when the model's heads cannot be stored that way.
void add_kv_dtype_option(CLI::App& app, std::string& kv_dtype);
KvStorageType kv_storage_type(const std::string& kv_dtype, const ModelConfig& model);
// Validated CompressionConfig (throws kvc::Error naming the bad flag).
CompressionConfig compression_config(const CompressionOptions& options);
// Only the fields add_policy_tuning_options sets (policy full, default budget), unvalidated.
CompressionConfig policy_tuning_config(const CompressionOptions& options);

}  // namespace kvc::cli
