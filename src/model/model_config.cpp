#include "model/model_config.h"

#include "util/error.h"

namespace kvc {
namespace {

int32_t require_dim(const GgufFile& f, const std::string& key, int64_t max = 1 << 24) {
  const auto v = f.get_uint(key);
  if (!v) fail("model: {}: missing metadata '{}'", f.name(), key);
  if (*v == 0 || *v > static_cast<uint64_t>(max)) {
    fail("model: {}: metadata '{}' = {} is out of range [1, {}]", f.name(), key, *v, max);
  }
  return static_cast<int32_t>(*v);
}

}  // namespace

ModelConfig ModelConfig::from_gguf(const GgufFile& f) {
  ModelConfig c;
  const auto arch = f.get_string("general.architecture");
  if (!arch) fail("model: {}: missing metadata 'general.architecture'", f.name());
  c.arch_name = std::string(*arch);
  if (c.arch_name == "llama") {
    c.arch = Architecture::kLlama;
    c.rope_style = RopeStyle::kAdjacentPairs;
  } else if (c.arch_name == "qwen2") {
    c.arch = Architecture::kQwen2;
    c.rope_style = RopeStyle::kHalves;
    c.qkv_bias = true;
  } else {
    fail("model: {}: unsupported architecture '{}' (supported: llama, qwen2)", f.name(),
         c.arch_name);
  }
  c.model_name = std::string(f.get_string("general.name").value_or(c.arch_name));
  const std::string p = c.arch_name + ".";
  c.n_layer = require_dim(f, p + "block_count", 1024);
  c.n_embd = require_dim(f, p + "embedding_length");
  c.n_head = require_dim(f, p + "attention.head_count", 4096);
  c.n_head_kv = f.find(p + "attention.head_count_kv") ? require_dim(f, p + "attention.head_count_kv", 4096)
                                                       : c.n_head;
  c.n_ff = require_dim(f, p + "feed_forward_length");
  c.n_ctx_train = require_dim(f, p + "context_length", 1 << 24);
  if (c.n_head % c.n_head_kv != 0) {
    fail("model: {}: head_count {} is not a multiple of head_count_kv {}", f.name(), c.n_head,
         c.n_head_kv);
  }
  c.head_dim = f.find(p + "attention.key_length") ? require_dim(f, p + "attention.key_length", 1024)
                                                   : c.n_embd / c.n_head;
  if (f.find(p + "attention.key_length") == nullptr && c.n_embd % c.n_head != 0) {
    fail("model: {}: embedding_length {} is not a multiple of head_count {}", f.name(), c.n_embd,
         c.n_head);
  }
  if (const auto vl = f.get_uint(p + "attention.value_length"); vl && *vl != static_cast<uint64_t>(c.head_dim)) {
    fail("model: {}: key_length != value_length is not supported", f.name());
  }
  c.rope_dims = f.find(p + "rope.dimension_count") ? require_dim(f, p + "rope.dimension_count", 1024)
                                                    : c.head_dim;
  if (c.rope_dims > c.head_dim || c.rope_dims % 2 != 0) {
    fail("model: {}: rope.dimension_count {} invalid for head_dim {}", f.name(), c.rope_dims,
         c.head_dim);
  }
  c.rope_theta = static_cast<float>(f.get_float(p + "rope.freq_base").value_or(10000.0));
  if (!(c.rope_theta > 0.0f)) fail("model: {}: rope.freq_base must be positive", f.name());
  if (f.find(p + "rope.scaling.type") != nullptr) {
    const auto type = f.get_string(p + "rope.scaling.type");
    if (type && *type != "none") {
      fail("model: {}: rope scaling '{}' is not supported yet", f.name(), *type);
    }
  }
  const auto eps = f.get_float(p + "attention.layer_norm_rms_epsilon");
  if (!eps) fail("model: {}: missing metadata '{}'", f.name(), p + "attention.layer_norm_rms_epsilon");
  c.rms_eps = static_cast<float>(*eps);
  if (!(c.rms_eps > 0.0f && c.rms_eps < 1.0f)) fail("model: {}: invalid rms epsilon", f.name());

  const GgufTensorInfo* embd = f.find_tensor("token_embd.weight");
  if (embd == nullptr) fail("model: {}: missing tensor 'token_embd.weight'", f.name());
  if (embd->dims.size() != 2) fail("model: {}: token_embd.weight must be 2-D", f.name());
  c.n_vocab = static_cast<int32_t>(embd->dims[1]);
  c.tied_embeddings = f.find_tensor("output.weight") == nullptr;
  return c;
}

}  // namespace kvc
