#include "kernels/matmul.h"

#include <omp.h>

#include <algorithm>

#include "kernels/packed_weights.h"
#include "kernels/quant.h"
#include "util/error.h"

namespace kvc {

void matmul(const WeightMatrix& w, const float* x, int64_t x_stride, int64_t n_tokens, float* y,
            int64_t y_stride, MatmulScratch& scratch) {
  if (w.packed) return packed_matmul(*w.packed, x, x_stride, n_tokens, y, y_stride, scratch);
  const TensorType dot_type = type_traits(w.type).dot_type;
  const size_t act_stride = row_bytes(dot_type, w.cols);
  uint8_t* act = scratch.reserve(act_stride * static_cast<size_t>(n_tokens));
  const size_t w_stride = w.row_stride();

  // Rows per tile: enough that every thread gets several tiles, small enough that a tile of
  // weights stays in L2 while all tokens pass over it.
  constexpr int64_t kTileRows = 16;
  const int64_t n_tiles = (w.rows + kTileRows - 1) / kTileRows;
  const VecDotKernels dot = vec_dot_kernels(w.type);
  // Four tokens at a time where the kernel set can (prefill): each weight block is unpacked
  // once for the four. Same bits as one token at a time, so chunking never changes results.
  const int64_t n_quads = dot.four ? n_tokens / 4 : 0;

#pragma omp parallel
  {
#pragma omp for schedule(static)
    for (int64_t t = 0; t < n_tokens; ++t) {
      quantize_row_for_dot(dot_type, x + t * x_stride, act + static_cast<size_t>(t) * act_stride,
                           w.cols);
    }
#pragma omp for schedule(static)
    for (int64_t tile = 0; tile < n_tiles; ++tile) {
      const int64_t r0 = tile * kTileRows;
      const int64_t r1 = std::min(w.rows, r0 + kTileRows);
      for (int64_t q = 0; q < n_quads; ++q) {
        const uint8_t* a = act + static_cast<size_t>(4 * q) * act_stride;
        float* yt = y + 4 * q * y_stride;
        for (int64_t r = r0; r < r1; ++r) {
          float out[4];
          dot.four(w.cols, w.data + static_cast<size_t>(r) * w_stride, a, act_stride, out);
          for (int k = 0; k < 4; ++k) yt[k * y_stride + r] = out[k];
        }
      }
      for (int64_t t = 4 * n_quads; t < n_tokens; ++t) {
        const uint8_t* a = act + static_cast<size_t>(t) * act_stride;
        float* yt = y + t * y_stride;
        for (int64_t r = r0; r < r1; ++r) {
          const uint8_t* row = w.data + static_cast<size_t>(r) * w_stride;
          yt[r] = dot.one ? dot.one(w.cols, row, a) : reference::vec_dot(w.type, w.cols, row, a);
        }
      }
    }
  }
}

void matmul_shared_input(std::span<const MatmulOutput> outputs, const float* x, int64_t x_stride,
                         int64_t n_tokens, MatmulScratch& scratch) {
  const auto fusable = [&] {
    if (outputs.size() < 2 || outputs.size() > kMaxPackedOutputs) return false;
    const PackedWeights* first = outputs[0].w->packed.get();
    const auto alike = [&](const MatmulOutput& o) {
      const PackedWeights* p = o.w->packed.get();
      return p != nullptr && p->format == first->format && p->dot_type == first->dot_type &&
             p->cols == first->cols;
    };
    return first != nullptr && std::all_of(outputs.begin(), outputs.end(), alike);
  };
  if (!fusable()) {
    for (const MatmulOutput& o : outputs) {
      matmul(*o.w, x, x_stride, n_tokens, o.y, o.y_stride, scratch);
    }
    return;
  }
  PackedOutput packed[kMaxPackedOutputs];
  for (size_t i = 0; i < outputs.size(); ++i) {
    packed[i] = PackedOutput{outputs[i].w->packed.get(), outputs[i].y, outputs[i].y_stride};
  }
  packed_matmul({packed, outputs.size()}, x, x_stride, n_tokens, scratch);
}

void dequantize_weight_row(const WeightMatrix& w, int64_t row, float* out) {
  KVC_ASSERT(row >= 0 && row < w.rows);
  if (!w.packed) {
    return dequantize_row(w.type, w.data + static_cast<size_t>(row) * w.row_stride(), out, w.cols);
  }
  constexpr size_t kStackBytes = 8192;  // rows up to 7,680 Q8_0 columns avoid the heap
  uint8_t stack[kStackBytes];
  std::vector<uint8_t> heap;
  uint8_t* bytes = stack;
  if (w.row_stride() > kStackBytes) {
    heap.resize(w.row_stride());
    bytes = heap.data();
  }
  packed_row_bytes(*w.packed, row, bytes);
  dequantize_row(w.type, bytes, out, w.cols);
}

void matmul_reference(const WeightMatrix& w, const float* x, int64_t x_stride, int64_t n_tokens,
                      float* y, int64_t y_stride) {
  std::vector<float> row(static_cast<size_t>(w.cols));
  for (int64_t r = 0; r < w.rows; ++r) {
    reference::dequantize_row(w.type, w.data + static_cast<size_t>(r) * w.row_stride(), row.data(),
                              w.cols);
    for (int64_t t = 0; t < n_tokens; ++t) {
      double sum = 0.0;
      for (int64_t c = 0; c < w.cols; ++c) sum += static_cast<double>(row[c]) * x[t * x_stride + c];
      y[t * y_stride + r] = static_cast<float>(sum);
    }
  }
}

}  // namespace kvc
