#include "model/model_weights.h"

#include <fmt/format.h>

#include "kernels/packed_weights.h"
#include "kernels/quant.h"
#include "util/error.h"

namespace kvc {
namespace {

const GgufTensorInfo& require(const GgufFile& f, const std::string& name,
                              std::initializer_list<int64_t> dims) {
  const GgufTensorInfo* t = f.find_tensor(name);
  if (t == nullptr) fail("model: {}: missing tensor '{}'", f.name(), name);
  bool ok = t->dims.size() == dims.size();
  for (size_t i = 0; ok && i < dims.size(); ++i) ok = t->dims[i] == *(dims.begin() + i);
  if (!ok) {
    fail("model: {}: tensor '{}' has shape [{}], expected [{}]", f.name(), name,
         fmt::join(t->dims, ", "), fmt::join(dims, ", "));
  }
  if (!type_traits(t->type).weights_supported) {
    fail("model: {}: tensor '{}' has type {}, which is not supported yet", f.name(), name,
         type_traits(t->type).name);
  }
  return *t;
}

// ggml dims are [cols, rows]: dims[0] is the contiguous input dimension.
WeightMatrix matrix(const GgufFile& f, const std::string& name, int64_t rows, int64_t cols) {
  const GgufTensorInfo& t = require(f, name, {cols, rows});
  WeightMatrix w{t.type, rows, cols, t.data, nullptr};
  w.packed = pack_weights(w);
  // Matmuls and row lookups (the token embedding) read only the packed copy now: give the
  // file's pages back.
  if (w.packed) f.release_pages(t.data, w.row_stride() * static_cast<size_t>(rows));
  return w;
}

std::vector<float> vector(const GgufFile& f, const std::string& name, int64_t n) {
  const GgufTensorInfo& t = require(f, name, {n});
  std::vector<float> out(static_cast<size_t>(n));
  dequantize_row(t.type, t.data, out.data(), n);
  return out;
}

}  // namespace

ModelWeights ModelWeights::from_gguf(const GgufFile& f, const ModelConfig& c) {
  ModelWeights w;
  const int64_t q_dim = static_cast<int64_t>(c.n_head) * c.head_dim;
  const int64_t kv_dim = static_cast<int64_t>(c.n_head_kv) * c.head_dim;
  w.token_embd = matrix(f, "token_embd.weight", c.n_vocab, c.n_embd);
  w.output_norm = vector(f, "output_norm.weight", c.n_embd);
  w.output = c.tied_embeddings ? w.token_embd : matrix(f, "output.weight", c.n_vocab, c.n_embd);
  w.layers.resize(static_cast<size_t>(c.n_layer));
  for (int32_t i = 0; i < c.n_layer; ++i) {
    LayerWeights& l = w.layers[static_cast<size_t>(i)];
    const std::string p = fmt::format("blk.{}.", i);
    l.attn_norm = vector(f, p + "attn_norm.weight", c.n_embd);
    l.wq = matrix(f, p + "attn_q.weight", q_dim, c.n_embd);
    l.wk = matrix(f, p + "attn_k.weight", kv_dim, c.n_embd);
    l.wv = matrix(f, p + "attn_v.weight", kv_dim, c.n_embd);
    l.wo = matrix(f, p + "attn_output.weight", c.n_embd, q_dim);
    if (c.qkv_bias) {
      l.bq = vector(f, p + "attn_q.bias", q_dim);
      l.bk = vector(f, p + "attn_k.bias", kv_dim);
      l.bv = vector(f, p + "attn_v.bias", kv_dim);
    }
    l.ffn_norm = vector(f, p + "ffn_norm.weight", c.n_embd);
    l.w_gate = matrix(f, p + "ffn_gate.weight", c.n_ff, c.n_embd);
    l.w_up = matrix(f, p + "ffn_up.weight", c.n_ff, c.n_embd);
    l.w_down = matrix(f, p + "ffn_down.weight", c.n_embd, c.n_ff);
  }
  return w;
}

}  // namespace kvc
