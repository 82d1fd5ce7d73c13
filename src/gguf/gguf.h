// GGUF reader: maps a file read-only and validates it completely before anything trusts it.
//
// Every count, length, offset, dimension and size is checked against the bytes actually
// present, with overflow-safe arithmetic; any violation throws kvc::Error with one line naming
// the problem ("gguf: tensor 'blk.0.attn_q.weight': data [offset 123, 456 bytes] runs past end
// of file (789 bytes)"). After open() succeeds, every view handed out points inside the mapping.
//
// Layout (little-endian): magic "GGUF", u32 version (2 or 3), u64 tensor_count, u64 kv_count,
// kv_count × (string key, u32 value_type, value), tensor_count × (string name, u32 n_dims,
// n_dims × u64 dims, u32 type, u64 offset), padding to `general.alignment` (default 32),
// then the tensor data section; tensor offsets are relative to that section.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <variant>
#include <vector>

#include "kernels/types.h"

namespace kvc {

enum class GgufValueType : uint32_t {
  UINT8 = 0, INT8 = 1, UINT16 = 2, INT16 = 3, UINT32 = 4, INT32 = 5, FLOAT32 = 6,
  BOOL = 7, STRING = 8, ARRAY = 9, UINT64 = 10, INT64 = 11, FLOAT64 = 12,
};

std::string_view gguf_type_name(GgufValueType type);

// An array value. Numeric elements stay in the mapping (`data`, `count` × element size,
// possibly unaligned: read with memcpy); string elements are decoded into views.
struct GgufArray {
  GgufValueType element_type;
  uint64_t count = 0;
  const uint8_t* data = nullptr;         // numeric and bool elements
  std::vector<std::string_view> strings;  // string elements
};

using GgufValue = std::variant<uint8_t, int8_t, uint16_t, int16_t, uint32_t, int32_t, float,
                               bool, std::string_view, GgufArray, uint64_t, int64_t, double>;

struct GgufTensorInfo {
  std::string name;
  TensorType type;
  std::vector<int64_t> dims;  // ggml order: dims[0] is the contiguous (row) dimension
  uint64_t offset = 0;        // relative to the data section
  uint64_t bytes = 0;
  const uint8_t* data = nullptr;  // inside the mapping

  int64_t elements() const;
  int64_t rows() const { return dims.empty() ? 0 : elements() / dims[0]; }
};

class GgufFile {
 public:
  // Maps and validates `path`. Throws kvc::Error naming the file and the problem.
  static GgufFile open(const std::string& path);
  // Validates an in-memory image (tests, fuzzing). `bytes` must outlive the result.
  static GgufFile parse(std::span<const uint8_t> bytes, std::string name = "<memory>");

  GgufFile(GgufFile&&) noexcept;
  GgufFile& operator=(GgufFile&&) noexcept;
  ~GgufFile();

  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  const std::string& name() const { return name_; }
  size_t file_bytes() const { return bytes_.size(); }

  const std::vector<std::pair<std::string, GgufValue>>& metadata() const { return metadata_; }
  const GgufValue* find(std::string_view key) const;

  // Typed lookups: nullopt when absent; throw kvc::Error when present with another type.
  // Integer getters accept any integer type whose value fits.
  std::optional<uint64_t> get_uint(std::string_view key) const;
  std::optional<int64_t> get_int(std::string_view key) const;
  std::optional<double> get_float(std::string_view key) const;  // FLOAT32 or FLOAT64
  std::optional<bool> get_bool(std::string_view key) const;
  std::optional<std::string_view> get_string(std::string_view key) const;
  const GgufArray* get_array(std::string_view key) const;
  // Array of strings / integers; nullopt when absent, throws on wrong element type.
  std::optional<std::vector<std::string_view>> get_string_array(std::string_view key) const;
  std::optional<std::vector<int64_t>> get_int_array(std::string_view key) const;
  std::optional<std::vector<double>> get_float_array(std::string_view key) const;

  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* find_tensor(std::string_view name) const;

  // Tells the OS that the mapped bytes [data, data + bytes) will not be read again soon (a
  // tensor that was copied elsewhere): the whole pages inside the range leave the resident
  // set, and are read back from the file if touched. A no-op for in-memory images.
  void release_pages(const uint8_t* data, size_t bytes) const;

 private:
  GgufFile() = default;
  void parse_all();

  std::string name_;
  std::span<const uint8_t> bytes_;
  void* mapping_ = nullptr;  // owned mmap, or null for parse()
  size_t mapping_size_ = 0;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  std::vector<std::pair<std::string, GgufValue>> metadata_;
  std::unordered_map<std::string, size_t> metadata_index_;
  std::vector<GgufTensorInfo> tensors_;
  std::unordered_map<std::string, size_t> tensor_index_;
};

}  // namespace kvc
