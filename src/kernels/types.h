// Tensor element types as numbered by the GGUF format (ggml_type), with the block layout of
// each quantized type. Every quantized row is a sequence of fixed-size blocks; a row of `n`
// elements of type `t` occupies (n / block_elems(t)) * block_bytes(t) bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace kvc {

enum class TensorType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  BF16 = 30,
};

struct TypeTraits {
  std::string_view name;
  int64_t block_elems;   // elements per block (1 for float types)
  size_t block_bytes;    // bytes per block
  bool weights_supported;  // matmul/dequantize implemented for this type as a weight
  TensorType dot_type;   // type activations are quantized to for vec_dot with this weight type
};

// Traits for a type id read from a file; nullopt when the id is unknown to us.
std::optional<TypeTraits> find_type_traits(uint32_t type_id);
// Traits for a known type (asserts it is known).
const TypeTraits& type_traits(TensorType type);
// Bytes taken by a row of `n` elements; `n` must be a multiple of block_elems (asserted).
size_t row_bytes(TensorType type, int64_t n);

}  // namespace kvc
