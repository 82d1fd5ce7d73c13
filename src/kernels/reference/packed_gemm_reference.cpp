// The scalar packed kernel: kernels/packed_layout.h's arithmetic, one (row, token) at a time.
#include <cmath>

#include "kernels/packed_layout.h"
#include "kernels/packed_weights.h"
#include "util/fp16.h"

namespace kvc::reference {
namespace {

using cpu::PackedFormat;
using cpu::PackedGemmArgs;

// Element i (0..31) of row r in one block's quants, offset removed.
template <PackedFormat F>
int packed_quant(const uint8_t* qs, int r, int i) {
  if constexpr (F == PackedFormat::kQ8_0) {
    return static_cast<int8_t>(qs[packed::kChunkBytes * (i / 4) + 4 * r + i % 4]);
  } else {
    const int j = i / 8, within = i % 8;
    const uint8_t byte = qs[packed::kChunkBytes * j + 4 * r + within % 4];
    return (within < 4 ? byte & 0x0F : byte >> 4) - packed::kOffset<F>;
  }
}

template <PackedFormat F>
void gemm(const PackedGemmArgs& a) {
  for (int t = 0; t < a.n_tokens; ++t) {
    const int8_t* x = a.q + t * a.q_stride;
    for (int r = 0; r < a.n_rows; ++r) {
      float acc = 0.0f;
      for (int64_t b = 0; b < a.n_blocks; ++b) {
        const uint16_t* scales = packed::block_scales<F>(a.group, b);
        const uint8_t* qs = packed::block_quants<F>(a.group, b);
        int32_t isum = 0;
        for (int i = 0; i < packed::kBlockElems; ++i) {
          isum += packed_quant<F>(qs, r, i) * x[packed::kBlockElems * b + i];
        }
        const int64_t k = t * a.scale_stride + b;
        acc = std::fma(static_cast<float>(isum), fp16_to_float(scales[r]) * a.d[k], acc);
        if constexpr (packed::kHasMin<F>) {
          acc = std::fma(fp16_to_float(scales[packed::kGroupRows + r]), a.s[k], acc);
        }
      }
      a.y[t * a.y_stride + r] = acc;
    }
  }
}

}  // namespace

#include "kernels/packed_gemm_dispatch.h"  // NOLINT(build/include): inside the namespace

}  // namespace kvc::reference
