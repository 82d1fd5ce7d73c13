// Run-time dispatch of the row kernels: AVX2 when the CPU has AVX2+FMA+F16C (detected once,
// see cpu_features.h) and scalar kernels were not forced; the scalar reference otherwise and
// for every type without an AVX2 kernel.
#include "kernels/quant.h"

#include <array>

#include "kernels/cpu/quant_avx2.h"
#include "kernels/cpu_features.h"
#include "util/error.h"

namespace kvc {
namespace {

// Type ids are small (ggml numbering, BF16 = 30 is the largest we know).
constexpr size_t kMaxTypeId = 32;

struct Avx2Kernels {
  std::array<avx2::DequantizeRowFn, kMaxTypeId> dequantize{};
  std::array<avx2::QuantizeRowFn, kMaxTypeId> quantize{};
  std::array<avx2::VecDotFn, kMaxTypeId> vec_dot{};
};

// Built on first use, and only once the CPU is known to run AVX2 code.
const Avx2Kernels& avx2_kernels() {
  static const Avx2Kernels kernels = [] {
    Avx2Kernels k;
    for (uint32_t id = 0; id < kMaxTypeId; ++id) {
      if (!find_type_traits(id)) continue;
      const auto type = static_cast<TensorType>(id);
      k.dequantize[id] = avx2::dequantize_row_kernel(type);
      k.quantize[id] = avx2::quantize_row_kernel(type);
      k.vec_dot[id] = avx2::vec_dot_kernel(type);
    }
    return k;
  }();
  return kernels;
}

size_t type_index(TensorType type) {
  const auto id = static_cast<size_t>(type);
  KVC_ASSERT(id < kMaxTypeId);
  return id;
}

}  // namespace

void dequantize_row(TensorType type, const void* src, float* dst, int64_t n) {
  const TypeTraits& traits = type_traits(type);
  KVC_ASSERT(traits.weights_supported || type == TensorType::Q8_1 || type == TensorType::Q8_K);
  KVC_ASSERT(n >= 0 && n % traits.block_elems == 0);
  if (cpu_has_avx2()) {
    if (const auto kernel = avx2_kernels().dequantize[type_index(type)]) return kernel(src, dst, n);
  }
  reference::dequantize_row(type, src, dst, n);
}

void quantize_row_for_dot(TensorType dot_type, const float* src, void* dst, int64_t n) {
  KVC_ASSERT(dot_type == TensorType::F32 || dot_type == TensorType::Q8_0 ||
             dot_type == TensorType::Q8_1 || dot_type == TensorType::Q8_K);
  KVC_ASSERT(n >= 0 && n % type_traits(dot_type).block_elems == 0);
  if (cpu_has_avx2()) {
    if (const auto kernel = avx2_kernels().quantize[type_index(dot_type)])
      return kernel(src, dst, n);
  }
  reference::quantize_row_for_dot(dot_type, src, dst, n);
}

float vec_dot(TensorType weight_type, int64_t n, const void* weight_row, const void* activations) {
  const TypeTraits& traits = type_traits(weight_type);
  KVC_ASSERT(traits.weights_supported);
  KVC_ASSERT(n >= 0 && n % traits.block_elems == 0);
  if (cpu_has_avx2()) {
    if (const auto kernel = avx2_kernels().vec_dot[type_index(weight_type)])
      return kernel(n, weight_row, activations);
  }
  return reference::vec_dot(weight_type, n, weight_row, activations);
}

const char* cpu_kernel_isa() { return cpu_has_avx2() ? "avx2" : "scalar"; }

}  // namespace kvc
