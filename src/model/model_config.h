// Hyperparameters of a Llama-family decoder, read from GGUF metadata and validated.
#pragma once

#include <cstdint>
#include <string>

#include "gguf/gguf.h"
#include "kernels/ops.h"

namespace kvc {

enum class Architecture { kLlama, kQwen2 };

struct ModelConfig {
  Architecture arch = Architecture::kLlama;
  std::string arch_name;     // as in general.architecture
  std::string model_name;    // general.name, for display
  int32_t n_layer = 0;
  int32_t n_embd = 0;        // hidden size
  int32_t n_head = 0;        // query heads
  int32_t n_head_kv = 0;     // KV heads (GQA when < n_head)
  int32_t head_dim = 0;      // n_embd / n_head unless the file says otherwise
  int32_t n_ff = 0;          // feed-forward hidden size
  int32_t n_vocab = 0;
  int32_t n_ctx_train = 0;   // context length the model was trained for
  int32_t rope_dims = 0;     // leading dims of each head that rotate
  float rope_theta = 10000.0f;
  float rms_eps = 1e-5f;
  RopeStyle rope_style = RopeStyle::kAdjacentPairs;
  bool qkv_bias = false;     // qwen2
  bool tied_embeddings = false;  // no output.weight: logits use token_embd

  int32_t group_size() const { return n_head / n_head_kv; }

  // Reads and validates; throws kvc::Error naming the missing/invalid key or the unsupported
  // architecture.
  static ModelConfig from_gguf(const GgufFile& file);
};

}  // namespace kvc
