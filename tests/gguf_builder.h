// Test helper: writes GGUF images in memory (valid ones, then tests break them on purpose).
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "gguf/gguf.h"

namespace kvc::test_support {

class GgufBuilder {
 public:
  explicit GgufBuilder(uint32_t version = 3) : version_(version) {}

  void add_u32(const std::string& key, uint32_t v) { kv(key, GgufValueType::UINT32, &v, 4); }
  void add_f32(const std::string& key, float v) { kv(key, GgufValueType::FLOAT32, &v, 4); }
  void add_bool(const std::string& key, bool v) {
    const uint8_t b = v ? 1 : 0;
    kv(key, GgufValueType::BOOL, &b, 1);
  }
  void add_string(const std::string& key, const std::string& v) {
    begin_kv(key, GgufValueType::STRING);
    put_string(meta_, v);
    ++n_kv_;
  }
  void add_string_array(const std::string& key, const std::vector<std::string>& values) {
    begin_kv(key, GgufValueType::ARRAY);
    put(meta_, static_cast<uint32_t>(GgufValueType::STRING));
    put(meta_, static_cast<uint64_t>(values.size()));
    for (const std::string& s : values) put_string(meta_, s);
    ++n_kv_;
  }
  void add_i32_array(const std::string& key, const std::vector<int32_t>& values) {
    begin_kv(key, GgufValueType::ARRAY);
    put(meta_, static_cast<uint32_t>(GgufValueType::INT32));
    put(meta_, static_cast<uint64_t>(values.size()));
    for (int32_t v : values) put(meta_, v);
    ++n_kv_;
  }
  // Adds a tensor whose data is `data` (already in the tensor's type layout).
  void add_tensor(const std::string& name, TensorType type, const std::vector<int64_t>& dims,
                  const std::vector<uint8_t>& data) {
    put_string(infos_, name);
    put(infos_, static_cast<uint32_t>(dims.size()));
    for (int64_t d : dims) put(infos_, static_cast<uint64_t>(d));
    put(infos_, static_cast<uint32_t>(type));
    while (data_.size() % 32 != 0) data_.push_back(0);
    put(infos_, static_cast<uint64_t>(data_.size()));
    data_.insert(data_.end(), data.begin(), data.end());
    ++n_tensors_;
  }

  std::vector<uint8_t> build() const {
    std::vector<uint8_t> out;
    out.insert(out.end(), {'G', 'G', 'U', 'F'});
    put(out, version_);
    put(out, n_tensors_);
    put(out, n_kv_);
    out.insert(out.end(), meta_.begin(), meta_.end());
    out.insert(out.end(), infos_.begin(), infos_.end());
    while (out.size() % 32 != 0) out.push_back(0);
    out.insert(out.end(), data_.begin(), data_.end());
    return out;
  }

  // Offset in build() output where the metadata section starts (after the 24-byte header).
  static constexpr size_t kHeaderBytes = 24;

 private:
  template <typename T>
  static void put(std::vector<uint8_t>& out, T v) {
    uint8_t b[sizeof(T)];
    std::memcpy(b, &v, sizeof(T));
    out.insert(out.end(), b, b + sizeof(T));
  }
  static void put_string(std::vector<uint8_t>& out, const std::string& s) {
    put(out, static_cast<uint64_t>(s.size()));
    out.insert(out.end(), s.begin(), s.end());
  }
  void begin_kv(const std::string& key, GgufValueType type) {
    put_string(meta_, key);
    put(meta_, static_cast<uint32_t>(type));
  }
  void kv(const std::string& key, GgufValueType type, const void* v, size_t n) {
    begin_kv(key, type);
    const auto* b = static_cast<const uint8_t*>(v);
    meta_.insert(meta_.end(), b, b + n);
    ++n_kv_;
  }

  uint32_t version_;
  uint64_t n_kv_ = 0;
  uint64_t n_tensors_ = 0;
  std::vector<uint8_t> meta_;
  std::vector<uint8_t> infos_;
  std::vector<uint8_t> data_;
};

}  // namespace kvc::test_support
