#include "kernels/types.h"

#include <array>

#include "kernels/block_layouts.h"
#include "util/error.h"

namespace kvc {
namespace {

struct TypeEntry {
  TensorType type;
  TypeTraits traits;
};

// Sizes match ggml's type_traits (ggml.c); the quantized ones are also tied to the packed
// structs so that a layout change cannot silently disagree with the size table.
constexpr std::array<TypeEntry, 15> kTypes{{
    {TensorType::F32, {"f32", 1, 4, true, TensorType::F32}},
    {TensorType::F16, {"f16", 1, 2, true, TensorType::F32}},
    {TensorType::Q4_0, {"q4_0", 32, sizeof(blocks::BlockQ4_0), true, TensorType::Q8_0}},
    {TensorType::Q4_1, {"q4_1", 32, sizeof(blocks::BlockQ4_1), true, TensorType::Q8_1}},
    {TensorType::Q5_0, {"q5_0", 32, sizeof(blocks::BlockQ5_0), true, TensorType::Q8_0}},
    {TensorType::Q5_1, {"q5_1", 32, sizeof(blocks::BlockQ5_1), true, TensorType::Q8_1}},
    {TensorType::Q8_0, {"q8_0", 32, sizeof(blocks::BlockQ8_0), true, TensorType::Q8_0}},
    // Activation-only types: never weights; their dot_type is themselves (unused).
    {TensorType::Q8_1, {"q8_1", 32, sizeof(blocks::BlockQ8_1), false, TensorType::Q8_1}},
    // Q2_K/Q3_K: known so that files are validated with the right sizes; no kernels yet.
    {TensorType::Q2_K, {"q2_K", 256, sizeof(blocks::BlockQ2_K), false, TensorType::Q8_K}},
    {TensorType::Q3_K, {"q3_K", 256, sizeof(blocks::BlockQ3_K), false, TensorType::Q8_K}},
    {TensorType::Q4_K, {"q4_K", 256, sizeof(blocks::BlockQ4_K), true, TensorType::Q8_K}},
    {TensorType::Q5_K, {"q5_K", 256, sizeof(blocks::BlockQ5_K), true, TensorType::Q8_K}},
    {TensorType::Q6_K, {"q6_K", 256, sizeof(blocks::BlockQ6_K), true, TensorType::Q8_K}},
    {TensorType::Q8_K, {"q8_K", 256, sizeof(blocks::BlockQ8_K), false, TensorType::Q8_K}},
    {TensorType::BF16, {"bf16", 1, 2, true, TensorType::F32}},
}};

// Traits indexed by type id (nullptr for ids we do not know): vec_dot and friends look up
// their type on every call, so this must be O(1).
constexpr uint32_t kIdCount = 31;  // BF16 = 30 is the largest id we know

constexpr std::array<const TypeTraits*, kIdCount> make_index() {
  std::array<const TypeTraits*, kIdCount> index{};
  for (const TypeEntry& entry : kTypes) index[static_cast<uint32_t>(entry.type)] = &entry.traits;
  return index;
}

constexpr std::array<const TypeTraits*, kIdCount> kIndex = make_index();

const TypeTraits* lookup(uint32_t type_id) {
  return type_id < kIdCount ? kIndex[type_id] : nullptr;
}

}  // namespace

std::optional<TypeTraits> find_type_traits(uint32_t type_id) {
  const TypeTraits* traits = lookup(type_id);
  if (traits == nullptr) return std::nullopt;
  return *traits;
}

const TypeTraits& type_traits(TensorType type) {
  const TypeTraits* traits = lookup(static_cast<uint32_t>(type));
  KVC_ASSERT(traits != nullptr);
  return *traits;
}

size_t row_bytes(TensorType type, int64_t n) {
  const TypeTraits& traits = type_traits(type);
  KVC_ASSERT(n >= 0 && n % traits.block_elems == 0);
  return static_cast<size_t>(n / traits.block_elems) * traits.block_bytes;
}

}  // namespace kvc
