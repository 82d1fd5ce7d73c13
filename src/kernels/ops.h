// Small element-wise and row operations of the forward pass. Scalar C++ written so the compiler
// vectorizes it, except silu_mul, whose exp the compiler cannot vectorize: it runs the AVX2
// kernel (kernels/cpu/ops_avx2.h) where the CPU has AVX2 (it was a tenth of a chunked prefill's
// time as scalar std::exp).
#pragma once

#include <cstdint>

namespace kvc {

// out[n] = x[n] / rms(x) * weight[n]; rms = sqrt(mean(x^2) + eps). out may alias x.
void rms_norm(const float* x, const float* weight, float* out, int64_t n, float eps);

enum class RopeStyle {
  kAdjacentPairs,  // rotates (x[2i], x[2i+1]): llama.cpp's "norm" mode, used by llama GGUFs
  kHalves,         // rotates (x[i], x[i + d/2]): "neox" mode, used by qwen2
};

// The rotation of token position `pos`: cos_sin[i] = cos(pos * inv_freq[i]) and
// cos_sin[rope_dims / 2 + i] = sin(pos * inv_freq[i]) for i < rope_dims / 2.
// inv_freq: [rope_dims / 2], inv_freq[i] = theta^(-2i / rope_dims). The forward pass computes
// it once per token and step and applies it to q and k of every layer.
void rope_angles(int32_t pos, const float* inv_freq, int32_t rope_dims, float* cos_sin);

// Rotates `n_heads` heads of `head_dim` values in place by the rotation from rope_angles:
// x: [n_heads, head_dim]. Only the first `rope_dims` values of each head rotate.
void apply_rope(float* x, int32_t n_heads, int32_t head_dim, int32_t rope_dims,
                const float* cos_sin, RopeStyle style);

// gate[n] = silu(gate[n]) * up[n]; on AVX2 CPUs within a few ulp of the scalar loop.
void silu_mul(float* gate, const float* up, int64_t n);

// x[n] += y[n]
void add_inplace(float* x, const float* y, int64_t n);

// In-place softmax of x[n]; returns nothing, x sums to 1. n >= 1.
void softmax_inplace(float* x, int64_t n);

}  // namespace kvc
