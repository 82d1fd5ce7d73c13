// Matrix multiplication of a (possibly quantized) weight matrix by float activations.
//
//   y[t, r] = sum_c W[r, c] * x[t, c]      W: [rows, cols] of `type`, row-major, one quantized
//                                          row per output feature (GGUF/ggml layout)
//
// A matrix with a packed copy (kernels/packed_weights.h: Q4_0, Q4_1, Q8_0 weights of a loaded
// model) goes through the packed kernels, 16 rows per instruction. Otherwise:
// the activations are quantized once to the weight type's dot type, then every (row, token)
// pair is one vec_dot, or every (row, four tokens) one vec_dot_4 where the kernel set has it
// (weights unpacked once for four tokens; the same bits, so results never depend on how many
// tokens a call batches). Rows are split across OpenMP threads; for many tokens, rows are tiled
// so a tile of weights stays in cache while every token passes over it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "kernels/types.h"

namespace kvc {

struct PackedWeights;  // kernels/packed_weights.h

// A read-only view of a 2-D weight tensor (usually inside the mmapped GGUF file).
struct WeightMatrix {
  TensorType type = TensorType::F32;
  int64_t rows = 0;       // output features
  int64_t cols = 0;       // input features (contiguous)
  const uint8_t* data = nullptr;  // [rows, row_bytes(type, cols)]
  // The same matrix repacked for the packed kernels (pack_weights), when the model loader made
  // one; matmul then reads it instead of `data`.
  std::shared_ptr<const PackedWeights> packed;

  size_t row_stride() const { return row_bytes(type, cols); }
};

// Scratch for quantized activations, grown on first use and then reused (no per-step allocation
// once warm).
class MatmulScratch {
 public:
  uint8_t* reserve(size_t bytes) {
    if (buffer_.size() < bytes) buffer_.resize(bytes);
    return buffer_.data();
  }

 private:
  std::vector<uint8_t> buffer_;
};

// y: [n_tokens, w.rows] (row stride y_stride), x: [n_tokens, w.cols] (row stride x_stride).
void matmul(const WeightMatrix& w, const float* x, int64_t x_stride, int64_t n_tokens, float* y,
            int64_t y_stride, MatmulScratch& scratch);

// One matrix of matmul_shared_input and its output ([n_tokens, w.rows], row stride y_stride).
struct MatmulOutput {
  const WeightMatrix* w;
  float* y;
  int64_t y_stride;
};

// y_i = W_i x for matrices that read the same input (q, k and v; gate and up). When all are
// packed alike, x is quantized once and one parallel loop covers them (one fork and join, not
// one per matrix); otherwise one matmul each. Either way the bits of separate matmul calls.
void matmul_shared_input(std::span<const MatmulOutput> outputs, const float* x, int64_t x_stride,
                         int64_t n_tokens, MatmulScratch& scratch);

// out[cols] = row `row` of w dequantized, read from the packed copy when there is one (the
// file's bytes of that row, rebuilt), so a loaded model's lookups (the token embedding) touch
// none of the file's pages; the bits of dequantize_row on the file's row either way.
void dequantize_weight_row(const WeightMatrix& w, int64_t row, float* out);

// Naive reference: dequantizes each weight row and accumulates in double. For tests.
void matmul_reference(const WeightMatrix& w, const float* x, int64_t x_stride, int64_t n_tokens,
                      float* y, int64_t y_stride);

}  // namespace kvc
