// Zeroed memory for the large arrays that kernels stream through (the KV pool's K and V):
// mapped anonymously, aligned to 2 MiB and advised as transparent huge pages where Linux
// offers them (THP "madvise" mode), so a pass over blocks scattered across the pool takes one
// TLB miss per 2 MiB instead of one per 4 KiB. Pages are backed when first touched, so an
// unused part of a budget costs no resident memory.
#pragma once

#include <cstddef>
#include <cstdint>

namespace kvc {

class HugePageBuffer {
 public:
  HugePageBuffer() = default;
  explicit HugePageBuffer(size_t bytes);
  ~HugePageBuffer();
  HugePageBuffer(HugePageBuffer&& other) noexcept;
  HugePageBuffer& operator=(HugePageBuffer&& other) noexcept;
  HugePageBuffer(const HugePageBuffer& other);  // a deep copy
  HugePageBuffer& operator=(const HugePageBuffer& other);

  uint8_t* data() { return data_; }
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  void release();

  uint8_t* data_ = nullptr;  // 2 MiB aligned inside the mapping
  size_t size_ = 0;
  void* mapping_ = nullptr;
  size_t mapping_bytes_ = 0;
};

}  // namespace kvc
