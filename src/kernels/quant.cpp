// Run-time dispatch of the row kernels to the active kernel set (cpu_features.h): AVX-512
// VNNI, AVX-512 or AVX2, each tabled once per type on first use; the scalar reference for a
// type the set has no kernel for, and when scalar kernels are forced.
#include "kernels/quant.h"

#include <array>
#include <atomic>
#include <map>
#include <memory>
#include <mutex>

#include "kernels/cpu/packed_gemm_amx.h"
#include "kernels/cpu/quant_avx2.h"
#include "kernels/cpu/quant_avx512.h"
#include "kernels/cpu_features.h"
#include "kernels/packed_weights.h"
#include "util/error.h"

namespace kvc {
namespace {

// Type ids are small (ggml numbering, BF16 = 30 is the largest we know).
constexpr size_t kMaxTypeId = 32;

struct KernelTable {
  std::array<cpu::DequantizeRowFn, kMaxTypeId> dequantize{};
  std::array<cpu::QuantizeRowFn, kMaxTypeId> quantize{};
  std::array<cpu::VecDotFn, kMaxTypeId> vec_dot{};
  std::array<cpu::VecDot4Fn, kMaxTypeId> vec_dot_4{};
  std::array<cpu::PackedGemmFn, cpu::kPackedFormats> packed_gemm{};
};

KernelTable make_table(const cpu::RowKernelSet& set) {
  KernelTable t;
  for (uint32_t id = 0; id < kMaxTypeId; ++id) {
    if (!find_type_traits(id)) continue;
    const auto type = static_cast<TensorType>(id);
    t.dequantize[id] = set.dequantize(type);
    t.quantize[id] = set.quantize(type);
    t.vec_dot[id] = set.vec_dot(type);
    t.vec_dot_4[id] = set.vec_dot_4(type);
  }
  for (int f = 0; f < cpu::kPackedFormats; ++f) {
    t.packed_gemm[static_cast<size_t>(f)] = set.packed_gemm(static_cast<cpu::PackedFormat>(f));
  }
  return t;
}

// Set by override_row_kernels_for_testing; nullptr in normal runs.
std::atomic<const KernelTable*> g_override{nullptr};

// The active set's table; nullptr for the scalar reference. Tables are built only once the
// CPU is known to run their instructions (active_kernel_isa never exceeds the CPU's best).
const KernelTable* active_table() {
  if (const KernelTable* table = g_override.load(std::memory_order_relaxed)) return table;
  switch (active_kernel_isa()) {
    case KernelIsa::kScalar:
      return nullptr;
    case KernelIsa::kAvx2: {
      static const KernelTable table = make_table(avx2::kRowKernels);
      return &table;
    }
    case KernelIsa::kAvx512: {
      static const KernelTable table = make_table(avx512::kRowKernels);
      return &table;
    }
    case KernelIsa::kAvx512Vnni:
    case KernelIsa::kAmx: {  // AMX adds only the tile matmuls (packed_tile_gemm_kernel)
      static const KernelTable table = make_table(avx512_vnni::kRowKernels);
      return &table;
    }
  }
  return nullptr;
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
  if (const KernelTable* table = active_table()) {
    if (const auto kernel = table->dequantize[type_index(type)]) return kernel(src, dst, n);
  }
  reference::dequantize_row(type, src, dst, n);
}

void quantize_row_for_dot(TensorType dot_type, const float* src, void* dst, int64_t n) {
  KVC_ASSERT(dot_type == TensorType::F32 || dot_type == TensorType::Q8_0 ||
             dot_type == TensorType::Q8_1 || dot_type == TensorType::Q8_K);
  KVC_ASSERT(n >= 0 && n % type_traits(dot_type).block_elems == 0);
  if (const KernelTable* table = active_table()) {
    if (const auto kernel = table->quantize[type_index(dot_type)]) return kernel(src, dst, n);
  }
  reference::quantize_row_for_dot(dot_type, src, dst, n);
}

float vec_dot(TensorType weight_type, int64_t n, const void* weight_row, const void* activations) {
  const TypeTraits& traits = type_traits(weight_type);
  KVC_ASSERT(traits.weights_supported);
  KVC_ASSERT(n >= 0 && n % traits.block_elems == 0);
  if (const KernelTable* table = active_table()) {
    if (const auto kernel = table->vec_dot[type_index(weight_type)])
      return kernel(n, weight_row, activations);
  }
  return reference::vec_dot(weight_type, n, weight_row, activations);
}

VecDotKernels vec_dot_kernels(TensorType weight_type) {
  KVC_ASSERT(type_traits(weight_type).weights_supported);
  VecDotKernels k;
  if (const KernelTable* table = active_table()) {
    k.one = table->vec_dot[type_index(weight_type)];
    if (k.one) k.four = table->vec_dot_4[type_index(weight_type)];
  }
  return k;
}

cpu::PackedGemmFn packed_gemm_kernel(cpu::PackedFormat format) {
  const auto index = static_cast<size_t>(format);
  KVC_ASSERT(index < static_cast<size_t>(cpu::kPackedFormats));
  if (const KernelTable* table = active_table()) {
    if (const auto kernel = table->packed_gemm[index]) return kernel;
  }
  return reference::packed_gemm_kernel(format);
}

cpu::PackedGemmFn packed_tile_gemm_kernel(cpu::PackedFormat format) {
  // Tests that pin a row kernel set get exactly that set.
  if (g_override.load(std::memory_order_relaxed) != nullptr) return nullptr;
  return active_kernel_isa() >= KernelIsa::kAmx ? amx::packed_gemm_kernel(format) : nullptr;
}

const char* cpu_kernel_isa() { return kernel_isa_name(active_kernel_isa()); }

void override_row_kernels_for_testing(const cpu::RowKernelSet* set) {
  // One table per set ever overridden with, kept for the process (tests use one or two).
  static std::mutex mutex;
  static std::map<const cpu::RowKernelSet*, std::unique_ptr<const KernelTable>> tables;
  if (set == nullptr) {
    g_override.store(nullptr);
    return;
  }
  const std::lock_guard<std::mutex> lock(mutex);
  auto& table = tables[set];
  if (!table) table = std::make_unique<const KernelTable>(make_table(*set));
  g_override.store(table.get());
}

}  // namespace kvc
