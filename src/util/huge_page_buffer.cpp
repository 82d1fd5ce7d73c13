#include "util/huge_page_buffer.h"

#include <sys/mman.h>

#include <cstring>
#include <new>
#include <utility>

namespace kvc {
namespace {
constexpr size_t kHugePage = size_t{2} << 20;
}  // namespace

HugePageBuffer::HugePageBuffer(size_t bytes) : size_(bytes) {
  if (bytes == 0) return;
  const size_t rounded = (bytes + kHugePage - 1) / kHugePage * kHugePage;
  mapping_bytes_ = rounded + kHugePage;  // room to align the start
  mapping_ = mmap(nullptr, mapping_bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                  -1, 0);
  if (mapping_ == MAP_FAILED) {
    mapping_ = nullptr;
    throw std::bad_alloc();
  }
  const auto start = reinterpret_cast<uintptr_t>(mapping_);
  data_ = reinterpret_cast<uint8_t*>((start + kHugePage - 1) / kHugePage * kHugePage);
#if defined(MADV_HUGEPAGE)
  madvise(data_, rounded, MADV_HUGEPAGE);  // advice only: without THP, plain pages
#endif
}

HugePageBuffer::~HugePageBuffer() { release(); }

HugePageBuffer::HugePageBuffer(const HugePageBuffer& other) : HugePageBuffer(other.size_) {
  if (size_ > 0) std::memcpy(data_, other.data_, size_);
}

HugePageBuffer& HugePageBuffer::operator=(const HugePageBuffer& other) {
  if (this != &other) *this = HugePageBuffer(other);
  return *this;
}

HugePageBuffer::HugePageBuffer(HugePageBuffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      mapping_(std::exchange(other.mapping_, nullptr)),
      mapping_bytes_(std::exchange(other.mapping_bytes_, 0)) {}

HugePageBuffer& HugePageBuffer::operator=(HugePageBuffer&& other) noexcept {
  if (this != &other) {
    release();
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    mapping_ = std::exchange(other.mapping_, nullptr);
    mapping_bytes_ = std::exchange(other.mapping_bytes_, 0);
  }
  return *this;
}

void HugePageBuffer::release() {
  if (mapping_ != nullptr) munmap(mapping_, mapping_bytes_);
  data_ = nullptr;
  mapping_ = nullptr;
  size_ = mapping_bytes_ = 0;
}

}  // namespace kvc
