#include "kernels/cpu_features.h"

#include <atomic>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

namespace kvc {
namespace {

std::atomic<KernelIsa> g_limit{KernelIsa::kAvx512Vnni};

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
  return __builtin_cpu_supports("avx512vnni") ? KernelIsa::kAvx512Vnni : KernelIsa::kAvx512;
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
  }
  return "?";
}

std::optional<KernelIsa> parse_kernel_isa(std::string_view name) {
  for (KernelIsa isa :
       {KernelIsa::kScalar, KernelIsa::kAvx2, KernelIsa::kAvx512, KernelIsa::kAvx512Vnni}) {
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
  limit_kernel_isa(force ? KernelIsa::kScalar : KernelIsa::kAvx512Vnni);
}

}  // namespace kvc
