// Weight matrices repacked once at load time so that one SIMD multiply-add advances 16 output
// rows at once (layout and arithmetic: kernels/packed_layout.h). For the 32-element legacy
// types Q4_0, Q4_1 and Q8_0; matmul() uses the packed copy whenever a WeightMatrix has one.
//
// Why: the row-at-a-time dot products (quant.h) end every (row, token) pair in a horizontal
// sum and spend most of their instructions on scales and unpacking; with rows in lanes, a
// weight block is unpacked once for up to four tokens and each product instruction does 16
// rows' work. Decode batches and prefill both run on it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>

#include "kernels/cpu/row_kernels.h"
#include "kernels/matmul.h"

namespace kvc {

struct PackedWeights {
  struct Free {
    void operator()(uint8_t* p) const;
  };

  cpu::PackedFormat format{};
  TensorType dot_type{};  // what activations are quantized to first (Q8_0, or Q8_1 for Q4_1)
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t n_blocks = 0;   // cols / 32
  int64_t n_groups = 0;   // ceil(rows / 16)
  size_t group_bytes = 0;
  std::unique_ptr<uint8_t, Free> storage;  // n_groups * group_bytes, 64-byte aligned

  const uint8_t* group(int64_t g) const { return storage.get() + static_cast<size_t>(g) * group_bytes; }
  size_t bytes() const { return static_cast<size_t>(n_groups) * group_bytes; }
};

// The packed format of a weight type, nullopt when it has none.
std::optional<cpu::PackedFormat> packed_format(TensorType type);

// A packed copy of `w` (rows packed in parallel), or nullptr when its type has no packed format.
std::shared_ptr<const PackedWeights> pack_weights(const WeightMatrix& w);

// Row `row` of the matrix as the file held it (row_bytes(type, cols) bytes into `out`): the
// packed copy keeps every byte of the file's blocks.
void packed_row_bytes(const PackedWeights& w, int64_t row, uint8_t* out);

// One matrix of a packed matmul and where its output goes.
struct PackedOutput {
  const PackedWeights* w;
  float* y;  // [n_tokens, w->rows], row stride y_stride
  int64_t y_stride;
};
inline constexpr size_t kMaxPackedOutputs = 4;

// y_i = W_i x for up to kMaxPackedOutputs matrices of one input (q, k and v; gate and up), all
// of the same format and width: x is quantized once and every matrix's row groups share one
// parallel loop. The bits of one packed_matmul per matrix.
void packed_matmul(std::span<const PackedOutput> outputs, const float* x, int64_t x_stride,
                   int64_t n_tokens, MatmulScratch& scratch);

// y[t, r] = W[r, :] . x[t, :] through the packed kernels (same shapes and strides as matmul).
void packed_matmul(const PackedWeights& w, const float* x, int64_t x_stride, int64_t n_tokens,
                   float* y, int64_t y_stride, MatmulScratch& scratch);

// The dispatched kernel of a format (the active kernel set's, else the scalar reference).
cpu::PackedGemmFn packed_gemm_kernel(cpu::PackedFormat format);

// The AMX kernel of a format, for any multiple of amx::kTileTokens tokens a call, when the active
// kernel set has one (else nullptr). Same bits as packed_gemm_kernel.
cpu::PackedGemmFn packed_tile_gemm_kernel(cpu::PackedFormat format);

namespace reference {
// The specification of every packed kernel (kernels/packed_layout.h), one (row, token) at a
// time in scalar code.
cpu::PackedGemmFn packed_gemm_kernel(cpu::PackedFormat format);
}  // namespace reference

}  // namespace kvc
