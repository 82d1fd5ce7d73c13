// AVX2 element-wise operations of the forward pass; call only when cpu_has_avx2(). They are the
// only implementation on x86 (AVX-512 machines run them too), so their bits are the same on
// every CPU that has AVX2; without AVX2 the scalar loops in kernels/ops.cpp run instead.
#pragma once

#include <cstdint>

namespace kvc::avx2 {

// gate[n] = gate[n] / (1 + exp(-gate[n])) * up[n], exp by the polynomial of x86_shared_helpers.h
// (within 2 ulp of std::exp over the range where silu is not 0 or the identity).
void silu_mul(float* gate, const float* up, int64_t n);

// out[n] = x[n] rounded to fp16, to nearest even (F16C): the bits of float_to_fp16 (util/fp16.h)
// for every number and infinity.
void float_to_fp16_row(const float* x, uint16_t* out, int64_t n);

}  // namespace kvc::avx2
