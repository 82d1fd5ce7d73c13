#include "kernels/cpu_features.h"

#include <atomic>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

namespace kvc {
namespace {

std::atomic<bool> g_force_scalar{false};

bool detect_avx2() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  // F16C via cpuid (leaf 1, ECX bit 29): clang's __builtin_cpu_supports does not know it.
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  const bool f16c = __get_cpuid(1, &eax, &ebx, &ecx, &edx) != 0 && (ecx & (1u << 29)) != 0;
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c;
#else
  return false;
#endif
}

}  // namespace

bool cpu_has_avx2() {
  static const bool detected = detect_avx2();
  return detected && !g_force_scalar.load(std::memory_order_relaxed);
}

void force_scalar_kernels(bool force) { g_force_scalar.store(force, std::memory_order_relaxed); }

}  // namespace kvc
