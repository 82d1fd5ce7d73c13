// The x86 kernel sets the kernel tests run on (test_kernel_sets.cpp, test_packed_gemm.cpp):
// AVX2, the AVX-512 builds natively where the CPU has AVX-512, and the same AVX-512 sources
// compiled against SIMDe (AVX2 code), so every AVX2 machine checks the AVX-512 logic too.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <ostream>
#include <string>

#include "kernels/cpu/quant_avx2.h"
#include "kernels/cpu/quant_avx512.h"
#include "kernels/cpu_features.h"

namespace kvc::test_support {

struct KernelSetCase {
  const cpu::RowKernelSet* set;
  KernelIsa needs;  // what the CPU must run for this build of the set
};

inline const KernelSetCase kKernelSets[] = {
    {&avx2::kRowKernels, KernelIsa::kAvx2},
    {&avx512::kRowKernels, KernelIsa::kAvx512},
    {&avx512_vnni::kRowKernels, KernelIsa::kAvx512Vnni},
    {&avx512_emulated::kRowKernels, KernelIsa::kAvx2},
    {&avx512_vnni_emulated::kRowKernels, KernelIsa::kAvx2},
};

inline void PrintTo(const KernelSetCase& c, std::ostream* os) { *os << c.set->name; }

// Test names: the set's name with '-' as '_'.
inline std::string kernel_set_test_name(const ::testing::TestParamInfo<KernelSetCase>& info) {
  std::string name = info.param.set->name;
  std::replace(name.begin(), name.end(), '-', '_');
  return name;
}

// Base fixture: skips (saying why) a native set the CPU cannot run.
class KernelSetFixture : public ::testing::TestWithParam<KernelSetCase> {
 protected:
  void SetUp() override {
    if (cpu_best_kernel_isa() < GetParam().needs) {
      GTEST_SKIP() << GetParam().set->name << " needs " << kernel_isa_name(GetParam().needs)
                   << "; this CPU runs " << kernel_isa_name(cpu_best_kernel_isa());
    }
  }
  const cpu::RowKernelSet& set() const { return *GetParam().set; }
};

}  // namespace kvc::test_support
