// Options shared by several subcommands, each declared once here (name, default, help) and
// parsed into typed structs at the edge; nothing below the CLI reads flags or the environment.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <memory>
#include <string>

#include "engine/generator.h"
#include "model/model.h"

namespace kvc::cli {

inline constexpr const char* kDefaultModel = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

struct ModelOptions {
  std::string model_path = kDefaultModel;
  int32_t threads = 0;          // 0: all cores
  std::string kernels = "auto";  // auto | scalar
};

struct CacheOptions {
  int32_t max_context = 0;
  int32_t batch = 256;
  int32_t block_size = 16;
  std::string kv_dtype = "f16";
  double kv_budget_mib = 0.0;  // 0: enough for a full context
};

void add_model_options(CLI::App& app, ModelOptions& options);
void add_cache_options(CLI::App& app, CacheOptions& options);

// Applies --threads and --kernels, then loads the model (throws kvc::Error).
std::unique_ptr<Model> load_model(const ModelOptions& options);
EngineConfig engine_config(const CacheOptions& options, const ModelConfig& model);

}  // namespace kvc::cli
