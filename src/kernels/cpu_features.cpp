#include "kernels/cpu_features.h"

#include <atomic>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#if defined(__linux__) && defined(__x86_64__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace kvc {
namespace {

std::atomic<KernelIsa> g_limit{kBestKernelIsa};

// AMX-TILE and AMX-INT8 (cpuid leaf 7, EDX bits 24 and 25), and Linux's leave to use the tile
// data state (arch_prctl ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA; kernels before 5.16 and
// other systems refuse or lack it, and then AMX is off).
bool amx_usable() {
#if defined(__linux__) && defined(__x86_64__)
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) == 0) return false;
  if ((edx & (1u << 24)) == 0 || (edx & (1u << 25)) == 0) return false;
  constexpr long kArchReqXcompPerm = 0x1023;
  constexpr long kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
#else
  return false;
#endif
}

KernelIsa detect() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  // F16C via cpuid (leaf 1, ECX bit 29): clang's __builtin_cpu_supports does not know it.
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  const bool f16c = __get_cpuid(1, &eax, &ebx, &ecx, &edx) != 0 && (ecx & (1u << 29)) != 0;
  if (!(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c)) {
    return KernelIsa::kScalar;
  }
  // libgcc reports AVX-512 features only when the OS saves the ZMM and mask state (XCR0).
  if (!(__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))) {
    return KernelIsa::kAvx2;
  }
  if (!__builtin_cpu_supports("avx512vnni")) return KernelIsa::kAvx512;
  return amx_usable() ? KernelIsa::kAmx : KernelIsa::kAvx512Vnni;
#else
  return KernelIsa::kScalar;
#endif
}

}  // namespace

const char* kernel_isa_name(KernelIsa isa) {
  switch (isa) {
    case KernelIsa::kScalar:
      return "scalar";
    case KernelIsa::kAvx2:
      return "avx2";
    case KernelIsa::kAvx512:
      return "avx512";
    case KernelIsa::kAvx512Vnni:
      return "avx512-vnni";
    case KernelIsa::kAmx:
      return "amx";
  }
  return "?";
}

std::optional<KernelIsa> parse_kernel_isa(std::string_view name) {
  for (KernelIsa isa :
       {KernelIsa::kScalar, KernelIsa::kAvx2, KernelIsa::kAvx512, KernelIsa::kAvx512Vnni,
        KernelIsa::kAmx}) {
    if (name == kernel_isa_name(isa)) return isa;
  }
  return std::nullopt;
}

KernelIsa cpu_best_kernel_isa() {
  static const KernelIsa detected = detect();
  return detected;
}

KernelIsa active_kernel_isa() {
  const KernelIsa limit = g_limit.load(std::memory_order_relaxed);
  const KernelIsa best = cpu_best_kernel_isa();
  return limit < best ? limit : best;
}

void limit_kernel_isa(KernelIsa max) { g_limit.store(max, std::memory_order_relaxed); }

void force_scalar_kernels(bool force) {
  limit_kernel_isa(force ? KernelIsa::kScalar : kBestKernelIsa);
}

}  // namespace kvc
