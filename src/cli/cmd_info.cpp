// `kvc info`: what a GGUF file holds and how the engine will run it.
#include <cstdio>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/common_options.h"
#include "kernels/cpu_features.h"
#include "kernels/quant.h"

namespace kvc::cli {
namespace {

struct InfoOptions {
  ModelOptions model;
  bool json = false;
};

void run_info(const InfoOptions& o) {
  const std::unique_ptr<Model> model = load_model(o.model);
  const ModelConfig& c = model->config();
  std::map<std::string, int> types;
  for (const GgufTensorInfo& t : model->file().tensors()) {
    ++types[std::string(type_traits(t.type).name)];
  }
  nlohmann::json j;
  j["file"] = o.model.model_path;
  j["file_bytes"] = model->file().file_bytes();
  j["gguf_version"] = model->file().version();
  j["name"] = c.model_name;
  j["architecture"] = c.arch_name;
  j["n_layer"] = c.n_layer;
  j["n_embd"] = c.n_embd;
  j["n_head"] = c.n_head;
  j["n_head_kv"] = c.n_head_kv;
  j["head_dim"] = c.head_dim;
  j["n_ff"] = c.n_ff;
  j["n_vocab"] = c.n_vocab;
  j["context_length"] = c.n_ctx_train;
  j["rope_theta"] = c.rope_theta;
  j["rope_style"] = c.rope_style == RopeStyle::kHalves ? "halves (neox)" : "adjacent pairs";
  j["tied_embeddings"] = c.tied_embeddings;
  j["tensors"] = model->file().tensors().size();
  j["tensor_types"] = types;
  j["kv_bytes_per_token_f16"] = 2 * c.n_layer * c.n_head_kv * c.head_dim * 2;
  j["cpu_kernels"] = cpu_kernel_isa();  // the set the dispatcher uses (after --kernels)
  j["cpu_best_kernels"] = kernel_isa_name(cpu_best_kernel_isa());
  if (o.json) {
    std::cout << j.dump(2) << "\n";
    return;
  }
  for (const auto& [key, value] : j.items()) std::cout << key << ": " << value.dump() << "\n";
}

}  // namespace

void register_info(CLI::App& app) {
  auto o = std::make_shared<InfoOptions>();
  CLI::App* cmd = app.add_subcommand("info", "Show a model's architecture, tensors and KV size");
  add_model_options(*cmd, o->model);
  cmd->add_flag("--json", o->json, "Print JSON");
  cmd->callback([o] { run_info(*o); });
}

}  // namespace kvc::cli
