#include "gguf/gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <limits>
#include <utility>

#include "util/error.h"

namespace kvc {
namespace {

// Limits that no real model comes near; they turn absurd counts into clear errors before any
// allocation is sized from them.
constexpr uint64_t kMaxTensors = 1u << 20;
constexpr uint64_t kMaxMetadata = 1u << 20;
constexpr uint32_t kMaxDims = 4;
constexpr uint64_t kMaxStringBytes = 1u << 30;

size_t scalar_size(GgufValueType t) {
  switch (t) {
    case GgufValueType::UINT8: case GgufValueType::INT8: case GgufValueType::BOOL: return 1;
    case GgufValueType::UINT16: case GgufValueType::INT16: return 2;
    case GgufValueType::UINT32: case GgufValueType::INT32: case GgufValueType::FLOAT32: return 4;
    case GgufValueType::UINT64: case GgufValueType::INT64: case GgufValueType::FLOAT64: return 8;
    default: return 0;
  }
}

// Sequential reader over the untrusted bytes. Every read checks the remaining length first.
class Cursor {
 public:
  Cursor(std::span<const uint8_t> bytes, const std::string& file) : bytes_(bytes), file_(file) {}

  size_t offset() const { return pos_; }
  size_t remaining() const { return bytes_.size() - pos_; }

  const uint8_t* take(uint64_t n, const char* what) {
    if (n > bytes_.size() - pos_) {
      fail("gguf: {}: {} needs {} bytes at offset {} but the file has {} bytes", file_, what, n,
           pos_, bytes_.size());
    }
    const uint8_t* p = bytes_.data() + pos_;
    pos_ += n;
    return p;
  }

  template <typename T>
  T read(const char* what) {
    T value;
    std::memcpy(&value, take(sizeof(T), what), sizeof(T));
    return value;
  }

  std::string_view read_string(const char* what) {
    const uint64_t n = read<uint64_t>(what);
    if (n > kMaxStringBytes) fail("gguf: {}: {} has absurd length {}", file_, what, n);
    return {reinterpret_cast<const char*>(take(n, what)), static_cast<size_t>(n)};
  }

 private:
  std::span<const uint8_t> bytes_;
  const std::string& file_;
  size_t pos_ = 0;
};

GgufValueType read_value_type(Cursor& c, const std::string& file, std::string_view key) {
  const uint32_t t = c.read<uint32_t>("metadata value type");
  if (t > static_cast<uint32_t>(GgufValueType::FLOAT64)) {
    fail("gguf: {}: metadata '{}' has unknown value type {}", file, key, t);
  }
  return static_cast<GgufValueType>(t);
}

template <typename T>
GgufValue read_scalar(Cursor& c) {
  return c.read<T>("metadata value");
}

GgufValue read_value(Cursor& c, GgufValueType type, const std::string& file, std::string_view key) {
  switch (type) {
    case GgufValueType::UINT8: return read_scalar<uint8_t>(c);
    case GgufValueType::INT8: return read_scalar<int8_t>(c);
    case GgufValueType::UINT16: return read_scalar<uint16_t>(c);
    case GgufValueType::INT16: return read_scalar<int16_t>(c);
    case GgufValueType::UINT32: return read_scalar<uint32_t>(c);
    case GgufValueType::INT32: return read_scalar<int32_t>(c);
    case GgufValueType::FLOAT32: return read_scalar<float>(c);
    case GgufValueType::UINT64: return read_scalar<uint64_t>(c);
    case GgufValueType::INT64: return read_scalar<int64_t>(c);
    case GgufValueType::FLOAT64: return read_scalar<double>(c);
    case GgufValueType::BOOL: {
      const uint8_t b = c.read<uint8_t>("metadata bool");
      if (b > 1) fail("gguf: {}: metadata '{}' has invalid bool byte {}", file, key, b);
      return b != 0;
    }
    case GgufValueType::STRING: return c.read_string("metadata string");
    case GgufValueType::ARRAY: {
      GgufArray array;
      array.element_type = read_value_type(c, file, key);
      array.count = c.read<uint64_t>("array length");
      if (array.element_type == GgufValueType::ARRAY) {  // allowed by GGUF, used by no model
        fail("gguf: {}: metadata '{}' nests arrays (unsupported)", file, key);
      }
      if (array.element_type == GgufValueType::STRING) {
        // Each string takes at least its 8-byte length: bound the count before reserving.
        if (array.count > c.remaining() / 8) {
          fail("gguf: {}: metadata '{}' array has absurd length {}", file, key, array.count);
        }
        array.strings.reserve(static_cast<size_t>(array.count));
        for (uint64_t i = 0; i < array.count; ++i) {
          array.strings.push_back(c.read_string("array string"));
        }
      } else {
        const size_t elem = scalar_size(array.element_type);
        if (array.count > std::numeric_limits<uint64_t>::max() / elem) {
          fail("gguf: {}: metadata '{}' array has absurd length {}", file, key, array.count);
        }
        array.data = c.take(array.count * elem, "array data");
        if (array.element_type == GgufValueType::BOOL) {
          for (uint64_t i = 0; i < array.count; ++i) {
            if (array.data[i] > 1) fail("gguf: {}: metadata '{}' has invalid bool", file, key);
          }
        }
      }
      return array;
    }
  }
  fail("gguf: {}: metadata '{}' has unknown value type", file, key);
}

bool checked_mul(uint64_t a, uint64_t b, uint64_t* out) { return !__builtin_mul_overflow(a, b, out); }

}  // namespace

std::string_view gguf_type_name(GgufValueType type) {
  static constexpr std::string_view kNames[] = {"u8",   "i8",     "u16",   "i16",  "u32",
                                                "i32",  "f32",    "bool",  "str",  "array",
                                                "u64",  "i64",    "f64"};
  const auto i = static_cast<uint32_t>(type);
  return i < std::size(kNames) ? kNames[i] : "?";
}

int64_t GgufTensorInfo::elements() const {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;  // validated at load: no overflow
  return n;
}

GgufFile::GgufFile(GgufFile&& o) noexcept { *this = std::move(o); }

GgufFile& GgufFile::operator=(GgufFile&& o) noexcept {
  if (this != &o) {
    if (mapping_ != nullptr) munmap(mapping_, mapping_size_);
    name_ = std::move(o.name_);
    bytes_ = o.bytes_;
    mapping_ = std::exchange(o.mapping_, nullptr);
    mapping_size_ = std::exchange(o.mapping_size_, 0);
    version_ = o.version_;
    alignment_ = o.alignment_;
    metadata_ = std::move(o.metadata_);
    metadata_index_ = std::move(o.metadata_index_);
    tensors_ = std::move(o.tensors_);
    tensor_index_ = std::move(o.tensor_index_);
  }
  return *this;
}

GgufFile::~GgufFile() {
  if (mapping_ != nullptr) munmap(mapping_, mapping_size_);
}

GgufFile GgufFile::open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("gguf: cannot open '{}': {}", path, std::strerror(errno));
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail("gguf: '{}' is not a regular file", path);
  }
  GgufFile file;
  file.name_ = path;
  const auto size = static_cast<size_t>(st.st_size);
  if (size > 0) {
    void* m = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED) {
      ::close(fd);
      fail("gguf: cannot map '{}': {}", path, std::strerror(errno));
    }
    file.mapping_ = m;
    file.mapping_size_ = size;
    file.bytes_ = {static_cast<const uint8_t*>(m), size};
  }
  ::close(fd);
  file.parse_all();
  return file;
}

void GgufFile::release_pages(const uint8_t* data, size_t bytes) const {
  if (mapping_ == nullptr || bytes == 0) return;
  const auto page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const auto begin = reinterpret_cast<uintptr_t>(data);
  const uintptr_t first = (begin + page - 1) / page * page;
  const uintptr_t last = (begin + bytes) / page * page;
  const auto map_begin = reinterpret_cast<uintptr_t>(mapping_);
  KVC_ASSERT(begin >= map_begin && begin + bytes <= map_begin + mapping_size_);
  if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
}

GgufFile GgufFile::parse(std::span<const uint8_t> bytes, std::string name) {
  GgufFile file;
  file.name_ = std::move(name);
  file.bytes_ = bytes;
  file.parse_all();
  return file;
}

void GgufFile::parse_all() {
  Cursor c(bytes_, name_);
  const uint8_t* magic = c.take(4, "magic");
  if (std::memcmp(magic, "GGUF", 4) != 0) fail("gguf: {}: bad magic (not a GGUF file)", name_);
  version_ = c.read<uint32_t>("version");
  if (version_ != 2 && version_ != 3) {
    fail("gguf: {}: unsupported GGUF version {} (supported: 2, 3)", name_, version_);
  }
  const uint64_t n_tensors = c.read<uint64_t>("tensor count");
  const uint64_t n_kv = c.read<uint64_t>("metadata count");
  if (n_tensors > kMaxTensors) fail("gguf: {}: absurd tensor count {}", name_, n_tensors);
  if (n_kv > kMaxMetadata) fail("gguf: {}: absurd metadata count {}", name_, n_kv);

  for (uint64_t i = 0; i < n_kv; ++i) {
    std::string key(c.read_string("metadata key"));
    const GgufValueType type = read_value_type(c, name_, key);
    GgufValue value = read_value(c, type, name_, key);
    if (!metadata_index_.emplace(key, metadata_.size()).second) {
      fail("gguf: {}: duplicate metadata key '{}'", name_, key);
    }
    metadata_.emplace_back(std::move(key), std::move(value));
  }

  if (const GgufValue* a = find("general.alignment")) {
    const auto* v = std::get_if<uint32_t>(a);
    if (v == nullptr || *v == 0 || (*v & (*v - 1)) != 0) {
      fail("gguf: {}: general.alignment must be a power-of-two u32", name_);
    }
    alignment_ = *v;
  }

  tensors_.reserve(static_cast<size_t>(n_tensors));
  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensorInfo t;
    t.name = std::string(c.read_string("tensor name"));
    const uint32_t n_dims = c.read<uint32_t>("tensor dimension count");
    if (n_dims == 0 || n_dims > kMaxDims) {
      fail("gguf: {}: tensor '{}' has {} dimensions (1..{} supported)", name_, t.name, n_dims,
           kMaxDims);
    }
    uint64_t elements = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const uint64_t dim = c.read<uint64_t>("tensor dimension");
      if (dim == 0 || dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
          !checked_mul(elements, dim, &elements) ||
          elements > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        fail("gguf: {}: tensor '{}' has invalid dimension {}", name_, t.name, dim);
      }
      t.dims.push_back(static_cast<int64_t>(dim));
    }
    const uint32_t type_id = c.read<uint32_t>("tensor type");
    const auto traits = find_type_traits(type_id);
    if (!traits) fail("gguf: {}: tensor '{}' has unknown type id {}", name_, t.name, type_id);
    t.type = static_cast<TensorType>(type_id);
    if (static_cast<uint64_t>(t.dims[0]) % traits->block_elems != 0) {
      fail("gguf: {}: tensor '{}' row of {} elements is not a multiple of the {} block size {}",
           name_, t.name, t.dims[0], traits->name, traits->block_elems);
    }
    if (!checked_mul(elements / traits->block_elems, traits->block_bytes, &t.bytes)) {
      fail("gguf: {}: tensor '{}' is too large", name_, t.name);
    }
    t.offset = c.read<uint64_t>("tensor offset");
    if (t.offset % alignment_ != 0) {
      fail("gguf: {}: tensor '{}' offset {} is not aligned to {}", name_, t.name, t.offset,
           alignment_);
    }
    if (!tensor_index_.emplace(t.name, tensors_.size()).second) {
      fail("gguf: {}: duplicate tensor name '{}'", name_, t.name);
    }
    tensors_.push_back(std::move(t));
  }

  // The data section starts at the next multiple of the alignment.
  const uint64_t header_end = c.offset();
  const uint64_t data_start = (header_end + alignment_ - 1) / alignment_ * alignment_;
  if (data_start > bytes_.size() && !tensors_.empty()) {
    fail("gguf: {}: data section starts at {} past end of file ({} bytes)", name_, data_start,
         bytes_.size());
  }
  const uint64_t data_size = bytes_.size() > data_start ? bytes_.size() - data_start : 0;
  for (GgufTensorInfo& t : tensors_) {
    if (t.offset > data_size || t.bytes > data_size - t.offset) {
      fail("gguf: {}: tensor '{}' data [offset {}, {} bytes] runs past end of file ({} bytes)",
           name_, t.name, data_start + t.offset, t.bytes, bytes_.size());
    }
    t.data = bytes_.data() + data_start + t.offset;
  }
}

const GgufValue* GgufFile::find(std::string_view key) const {
  const auto it = metadata_index_.find(std::string(key));
  return it == metadata_index_.end() ? nullptr : &metadata_[it->second].second;
}

const GgufTensorInfo* GgufFile::find_tensor(std::string_view name) const {
  const auto it = tensor_index_.find(std::string(name));
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

namespace {

[[noreturn]] void wrong_type(const std::string& file, std::string_view key, const char* wanted) {
  fail("gguf: {}: metadata '{}' is not {}", file, key, wanted);
}

// Reads element i of a numeric array as T0 (memcpy: array data may be unaligned).
template <typename T>
T load(const uint8_t* p, uint64_t i) {
  T v;
  std::memcpy(&v, p + i * sizeof(T), sizeof(T));
  return v;
}

}  // namespace

std::optional<int64_t> GgufFile::get_int(std::string_view key) const {
  const GgufValue* v = find(key);
  if (v == nullptr) return std::nullopt;
  return std::visit(
      [&](const auto& x) -> int64_t {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
          if constexpr (std::is_same_v<T, uint64_t>) {
            if (x > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
              wrong_type(name_, key, "an integer in range");
            }
          }
          return static_cast<int64_t>(x);
        } else {
          wrong_type(name_, key, "an integer");
        }
      },
      *v);
}

std::optional<uint64_t> GgufFile::get_uint(std::string_view key) const {
  const GgufValue* v = find(key);
  if (v == nullptr) return std::nullopt;
  if (const auto* u = std::get_if<uint64_t>(v)) return *u;
  const int64_t i = *get_int(key);
  if (i < 0) wrong_type(name_, key, "a non-negative integer");
  return static_cast<uint64_t>(i);
}

std::optional<double> GgufFile::get_float(std::string_view key) const {
  const GgufValue* v = find(key);
  if (v == nullptr) return std::nullopt;
  if (const auto* f = std::get_if<float>(v)) return *f;
  if (const auto* d = std::get_if<double>(v)) return *d;
  wrong_type(name_, key, "a float");
}

std::optional<bool> GgufFile::get_bool(std::string_view key) const {
  const GgufValue* v = find(key);
  if (v == nullptr) return std::nullopt;
  if (const auto* b = std::get_if<bool>(v)) return *b;
  wrong_type(name_, key, "a bool");
}

std::optional<std::string_view> GgufFile::get_string(std::string_view key) const {
  const GgufValue* v = find(key);
  if (v == nullptr) return std::nullopt;
  if (const auto* s = std::get_if<std::string_view>(v)) return *s;
  wrong_type(name_, key, "a string");
}

const GgufArray* GgufFile::get_array(std::string_view key) const {
  const GgufValue* v = find(key);
  if (v == nullptr) return nullptr;
  if (const auto* a = std::get_if<GgufArray>(v)) return a;
  wrong_type(name_, key, "an array");
}

std::optional<std::vector<std::string_view>> GgufFile::get_string_array(
    std::string_view key) const {
  const GgufArray* a = get_array(key);
  if (a == nullptr) return std::nullopt;
  if (a->element_type != GgufValueType::STRING) wrong_type(name_, key, "an array of strings");
  return a->strings;
}

std::optional<std::vector<int64_t>> GgufFile::get_int_array(std::string_view key) const {
  const GgufArray* a = get_array(key);
  if (a == nullptr) return std::nullopt;
  std::vector<int64_t> out(static_cast<size_t>(a->count));
  for (uint64_t i = 0; i < a->count; ++i) {
    switch (a->element_type) {
      case GgufValueType::UINT8: out[i] = load<uint8_t>(a->data, i); break;
      case GgufValueType::INT8: out[i] = load<int8_t>(a->data, i); break;
      case GgufValueType::UINT16: out[i] = load<uint16_t>(a->data, i); break;
      case GgufValueType::INT16: out[i] = load<int16_t>(a->data, i); break;
      case GgufValueType::UINT32: out[i] = load<uint32_t>(a->data, i); break;
      case GgufValueType::INT32: out[i] = load<int32_t>(a->data, i); break;
      case GgufValueType::INT64: out[i] = load<int64_t>(a->data, i); break;
      case GgufValueType::UINT64: {
        const uint64_t u = load<uint64_t>(a->data, i);
        if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
          wrong_type(name_, key, "an array of integers in range");
        }
        out[i] = static_cast<int64_t>(u);
        break;
      }
      default: wrong_type(name_, key, "an array of integers");
    }
  }
  return out;
}

std::optional<std::vector<double>> GgufFile::get_float_array(std::string_view key) const {
  const GgufArray* a = get_array(key);
  if (a == nullptr) return std::nullopt;
  std::vector<double> out(static_cast<size_t>(a->count));
  for (uint64_t i = 0; i < a->count; ++i) {
    if (a->element_type == GgufValueType::FLOAT32) {
      out[i] = load<float>(a->data, i);
    } else if (a->element_type == GgufValueType::FLOAT64) {
      out[i] = load<double>(a->data, i);
    } else {
      wrong_type(name_, key, "an array of floats");
    }
  }
  return out;
}

}  // namespace kvc
