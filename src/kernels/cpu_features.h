// Run-time CPU feature detection for kernel dispatch.
#pragma once

namespace kvc {

// AVX2 + FMA + F16C: the x86-64-v3 feature set our *_avx2.cpp kernels are compiled for.
// False when the CPU lacks them or scalar kernels were forced.
bool cpu_has_avx2();

// Pins every dispatcher to the scalar reference kernels (`kvc --kernels scalar`, tests that
// compare paths end to end). Call before any kernel runs.
void force_scalar_kernels(bool force);

}  // namespace kvc
