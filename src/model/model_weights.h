// Views of a Llama-family model's weights inside the mapped GGUF file. Matrices stay quantized
// (never dequantized whole); those of the legacy 32-element types (Q4_0, Q4_1, Q8_0) also get a
// packed copy for the packed matmul kernels (kernels/packed_weights.h), made once at load.
// Small vectors (norms, biases) are copied to float.
#pragma once

#include <optional>
#include <vector>

#include "gguf/gguf.h"
#include "kernels/matmul.h"
#include "model/model_config.h"

namespace kvc {

struct LayerWeights {
  std::vector<float> attn_norm;  // [n_embd]
  WeightMatrix wq;               // [n_head * head_dim, n_embd]
  WeightMatrix wk;               // [n_head_kv * head_dim, n_embd]
  WeightMatrix wv;               // [n_head_kv * head_dim, n_embd]
  WeightMatrix wo;               // [n_embd, n_head * head_dim]
  std::vector<float> bq, bk, bv;  // qwen2 only: [n_head * head_dim], [n_head_kv * head_dim] x2
  std::vector<float> ffn_norm;   // [n_embd]
  WeightMatrix w_gate;           // [n_ff, n_embd]
  WeightMatrix w_up;             // [n_ff, n_embd]
  WeightMatrix w_down;           // [n_embd, n_ff]
};

struct ModelWeights {
  WeightMatrix token_embd;       // [n_vocab, n_embd]
  std::vector<float> output_norm;  // [n_embd]
  WeightMatrix output;           // [n_vocab, n_embd]; token_embd when tied
  std::vector<LayerWeights> layers;

  // Binds every tensor, checking presence, shape and supported type; throws kvc::Error.
  static ModelWeights from_gguf(const GgufFile& file, const ModelConfig& config);
};

}  // namespace kvc
