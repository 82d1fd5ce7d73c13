// Run-time CPU feature detection for kernel dispatch.
//
// The CPU is probed once. The active kernel set is the best one it runs, unless a lower cap
// was set (`kvc --kernels`, tests that compare paths end to end).
#pragma once

#include <optional>
#include <string_view>

namespace kvc {

// x86 kernel sets, in increasing order; each needs everything the previous one does.
enum class KernelIsa {
  kScalar,      // the reference loops (kernels/reference/)
  kAvx2,        // AVX2 + FMA + F16C (x86-64-v3)
  kAvx512,      // + AVX512 F, BW, DQ, VL (x86-64-v4)
  kAvx512Vnni,  // + AVX512-VNNI (vpdpbusd)
  kAmx,         // + AMX-TILE and AMX-INT8, with the OS's leave to use tile data (Linux asks
                //   once per process): the packed matmuls then take 16 tokens per tile
};
inline constexpr KernelIsa kBestKernelIsa = KernelIsa::kAmx;

// "scalar", "avx2", "avx512", "avx512-vnni", "amx"
const char* kernel_isa_name(KernelIsa isa);
std::optional<KernelIsa> parse_kernel_isa(std::string_view name);

// The best kernel set this CPU (and OS: AVX-512 state must be enabled) runs.
KernelIsa cpu_best_kernel_isa();

// The kernel set the dispatchers use: the CPU's best, capped by limit_kernel_isa().
KernelIsa active_kernel_isa();

// Caps the dispatchers at `max` (kScalar pins every dispatcher to the reference loops).
// Call before any kernel runs.
void limit_kernel_isa(KernelIsa max);

// active_kernel_isa() >= kAvx2: the AVX2 kernels (paged attention) may run.
inline bool cpu_has_avx2() { return active_kernel_isa() >= KernelIsa::kAvx2; }

// limit_kernel_isa(kScalar) when `force`, no cap otherwise.
void force_scalar_kernels(bool force);

}  // namespace kvc
