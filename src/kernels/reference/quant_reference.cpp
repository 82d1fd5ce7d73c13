// Scalar reference kernels: the specification every optimized path is tested against.
//
// Dequantization follows ggml's dequantize_row_* expression by expression (same float
// operations in the same order), so SIMD versions can be required to match bit for bit.
// Activation quantization follows ggml's quantize_row_q8_{0,1,K}_ref. Dot products work
// block by block in exact integer arithmetic, scale each block's integer sum by the product
// of the two block scales (rounded to float, as every implementation does) and accumulate
// the blocks in double: the most accurate result the quantized data allows.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/block_layouts.h"
#include "kernels/quant.h"
#include "kernels/reference/block_elements.h"
#include "kernels/reference/vec_dot_reference.h"
#include "util/error.h"
#include "util/fp16.h"

namespace kvc::reference {
namespace {

using namespace kvc::blocks;

template <typename Block>
const Block* blocks_of(const void* p) {
  return static_cast<const Block*>(p);
}

// Same as ggml's nearest_int: round half to even via the 1.5 * 2^23 trick (|x| < 2^22).
int nearest_int(float x) {
  const float shifted = x + 12582912.f;
  int32_t bits;
  std::memcpy(&bits, &shifted, sizeof(bits));
  return (bits & 0x007fffff) - 0x00400000;
}

void dequantize_blocks(TensorType type, const void* src, float* y, int64_t n) {
  switch (type) {
    case TensorType::F32:
      std::memcpy(y, src, static_cast<size_t>(n) * sizeof(float));
      return;
    case TensorType::F16: {
      const auto* h = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) y[i] = fp16_to_float(h[i]);
      return;
    }
    case TensorType::BF16: {
      const auto* h = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) y[i] = bf16_to_float(h[i]);
      return;
    }
    case TensorType::Q4_0:
      for (int64_t i = 0; i < n / kQK; ++i, y += kQK) {
        const BlockQ4_0& b = blocks_of<BlockQ4_0>(src)[i];
        const float d = fp16_to_float(b.d);
        for (int j = 0; j < kQK; ++j) y[j] = static_cast<float>(nibble(b.qs, j) - 8) * d;
      }
      return;
    case TensorType::Q4_1:
      for (int64_t i = 0; i < n / kQK; ++i, y += kQK) {
        const BlockQ4_1& b = blocks_of<BlockQ4_1>(src)[i];
        const float d = fp16_to_float(b.d), m = fp16_to_float(b.m);
        for (int j = 0; j < kQK; ++j) y[j] = static_cast<float>(nibble(b.qs, j)) * d + m;
      }
      return;
    case TensorType::Q5_0:
      for (int64_t i = 0; i < n / kQK; ++i, y += kQK) {
        const BlockQ5_0& b = blocks_of<BlockQ5_0>(src)[i];
        const float d = fp16_to_float(b.d);
        const uint32_t qh = load_qh(b.qh);
        for (int j = 0; j < kQK; ++j) y[j] = static_cast<float>(five_bits(b.qs, qh, j) - 16) * d;
      }
      return;
    case TensorType::Q5_1:
      for (int64_t i = 0; i < n / kQK; ++i, y += kQK) {
        const BlockQ5_1& b = blocks_of<BlockQ5_1>(src)[i];
        const float d = fp16_to_float(b.d), m = fp16_to_float(b.m);
        const uint32_t qh = load_qh(b.qh);
        for (int j = 0; j < kQK; ++j) y[j] = static_cast<float>(five_bits(b.qs, qh, j)) * d + m;
      }
      return;
    case TensorType::Q8_0:
      for (int64_t i = 0; i < n / kQK; ++i, y += kQK) {
        const BlockQ8_0& b = blocks_of<BlockQ8_0>(src)[i];
        const float d = fp16_to_float(b.d);
        for (int j = 0; j < kQK; ++j) y[j] = static_cast<float>(b.qs[j]) * d;
      }
      return;
    case TensorType::Q8_1:
      for (int64_t i = 0; i < n / kQK; ++i, y += kQK) {
        const BlockQ8_1& b = blocks_of<BlockQ8_1>(src)[i];
        const float d = fp16_to_float(b.d);
        for (int j = 0; j < kQK; ++j) y[j] = static_cast<float>(b.qs[j]) * d;
      }
      return;
    case TensorType::Q4_K:
      for (int64_t i = 0; i < n / kQK_K; ++i, y += kQK_K) {
        const BlockQ4_K& b = blocks_of<BlockQ4_K>(src)[i];
        const float d = fp16_to_float(b.d), dmin = fp16_to_float(b.dmin);
        uint8_t sc[8], m[8];
        unpack_scales_mins_k4(b.scales, sc, m);
        for (int l = 0; l < kQK_K; ++l) {
          const float dl = d * static_cast<float>(sc[l / 32]);
          const float ml = dmin * static_cast<float>(m[l / 32]);
          y[l] = dl * static_cast<float>(q4_k_quant(b, l)) - ml;
        }
      }
      return;
    case TensorType::Q5_K:
      for (int64_t i = 0; i < n / kQK_K; ++i, y += kQK_K) {
        const BlockQ5_K& b = blocks_of<BlockQ5_K>(src)[i];
        const float d = fp16_to_float(b.d), dmin = fp16_to_float(b.dmin);
        uint8_t sc[8], m[8];
        unpack_scales_mins_k4(b.scales, sc, m);
        for (int l = 0; l < kQK_K; ++l) {
          const float dl = d * static_cast<float>(sc[l / 32]);
          const float ml = dmin * static_cast<float>(m[l / 32]);
          y[l] = dl * static_cast<float>(q5_k_quant(b, l)) - ml;
        }
      }
      return;
    case TensorType::Q6_K:
      for (int64_t i = 0; i < n / kQK_K; ++i, y += kQK_K) {
        const BlockQ6_K& b = blocks_of<BlockQ6_K>(src)[i];
        const float d = fp16_to_float(b.d);
        for (int l = 0; l < kQK_K; ++l) {
          y[l] =
              d * static_cast<float>(b.scales[l / 16]) * static_cast<float>(q6_k_quant(b, l) - 32);
        }
      }
      return;
    case TensorType::Q8_K:
      for (int64_t i = 0; i < n / kQK_K; ++i, y += kQK_K) {
        const BlockQ8_K& b = blocks_of<BlockQ8_K>(src)[i];
        for (int l = 0; l < kQK_K; ++l) y[l] = b.d * static_cast<float>(b.qs[l]);
      }
      return;
    default:
      KVC_ASSERT(false && "dequantize: unsupported type");
  }
}

// ggml's quantize_row_q8_0_ref / q8_1_ref: d = amax / 127, q = roundf(x / d) (half away from
// zero). Q8_1 also stores s = d * sum(q).
template <typename Block>
void quantize_q8_legacy(const float* x, Block* y, int64_t n) {
  for (int64_t i = 0; i < n / kQK; ++i, x += kQK) {
    float amax = 0.0f;
    for (int j = 0; j < kQK; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    int sum = 0;
    for (int j = 0; j < kQK; ++j) {
      y[i].qs[j] = static_cast<int8_t>(std::roundf(x[j] * id));
      sum += y[i].qs[j];
    }
    y[i].d = float_to_fp16(d);
    if constexpr (requires { y[i].s; }) y[i].s = float_to_fp16(static_cast<float>(sum) * d);
  }
}

// ggml's quantize_row_q8_K_ref: the scale maps the element of largest magnitude (the first
// one on ties) to -127, i.e. d = 1 / (-127 / max) keeps the sign of -max; q = nearest (ties
// to even), capped at 127.
void quantize_q8_k(const float* x, BlockQ8_K* y, int64_t n) {
  for (int64_t i = 0; i < n / kQK_K; ++i, x += kQK_K) {
    float max = 0.0f, amax = 0.0f;
    for (int j = 0; j < kQK_K; ++j) {
      const float ax = std::fabs(x[j]);
      if (ax > amax) {
        amax = ax;
        max = x[j];
      }
    }
    if (amax == 0.0f) {
      std::memset(&y[i], 0, sizeof(BlockQ8_K));  // ggml leaves bsums unset; we zero them
      continue;
    }
    const float iscale = -127.0f / max;
    for (int j = 0; j < kQK_K; ++j) {
      y[i].qs[j] = static_cast<int8_t>(std::min(127, nearest_int(iscale * x[j])));
    }
    for (int g = 0; g < kQK_K / 16; ++g) {
      int sum = 0;
      for (int j = 0; j < 16; ++j) sum += y[i].qs[16 * g + j];
      y[i].bsums[g] = static_cast<int16_t>(sum);
    }
    y[i].d = 1.0f / iscale;
  }
}

}  // namespace

void dequantize_row(TensorType type, const void* src, float* dst, int64_t n) {
  const TypeTraits& traits = type_traits(type);
  KVC_ASSERT(traits.weights_supported || type == TensorType::Q8_1 || type == TensorType::Q8_K);
  KVC_ASSERT(n >= 0 && n % traits.block_elems == 0);
  dequantize_blocks(type, src, dst, n);
}

void quantize_row_for_dot(TensorType dot_type, const float* src, void* dst, int64_t n) {
  KVC_ASSERT(n >= 0 && n % type_traits(dot_type).block_elems == 0);
  switch (dot_type) {
    case TensorType::F32:
      std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
      return;
    case TensorType::Q8_0:
      quantize_q8_legacy(src, static_cast<BlockQ8_0*>(dst), n);
      return;
    case TensorType::Q8_1:
      quantize_q8_legacy(src, static_cast<BlockQ8_1*>(dst), n);
      return;
    case TensorType::Q8_K:
      quantize_q8_k(src, static_cast<BlockQ8_K*>(dst), n);
      return;
    default:
      KVC_ASSERT(false && "quantize_row_for_dot: not an activation type");
  }
}

float vec_dot(TensorType weight_type, int64_t n, const void* weight_row, const void* activations) {
  const TypeTraits& traits = type_traits(weight_type);
  KVC_ASSERT(traits.weights_supported);
  KVC_ASSERT(n >= 0 && n % traits.block_elems == 0);
  return vec_dot_blocks(weight_type, n, weight_row, activations);
}

}  // namespace kvc::reference
