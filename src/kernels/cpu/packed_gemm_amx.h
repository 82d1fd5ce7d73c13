// AMX packed matmul kernels: one group of 16 weight rows times 16k tokens per call, the
// integer block products on the tile unit and the float bookkeeping in AVX-512.
//
// Same arguments and same bits as every other packed kernel (kernels/packed_layout.h): a
// block's int32 product is exact however it is computed, and the scaling that follows is the
// VNNI kernel's, operation for operation. So a token's result does not depend on whether its
// matmul ran on tiles, and packed_matmul gives the tiles only whole groups of 16 tokens.
//
// Call only when active_kernel_isa() >= KernelIsa::kAmx (cpu_features.h has asked the OS for
// the tile state); each thread loads its tile configuration on first use.
#pragma once

#include "kernels/cpu/row_kernels.h"

namespace kvc::amx {

inline constexpr int kTileTokens = 16;

// The kernel of a format; its args.n_tokens must be a multiple of kTileTokens (unlike the
// other packed kernels, which take 1..packed::kMaxTokens).
cpu::PackedGemmFn packed_gemm_kernel(cpu::PackedFormat format);

}  // namespace kvc::amx
