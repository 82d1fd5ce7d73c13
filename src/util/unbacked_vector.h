// A std::vector whose resize() leaves new elements of trivial types unwritten (default- rather
// than value-initialized), for buffers sized for the largest case: glibc maps large blocks
// fresh from the kernel, so their pages cost no resident memory until a step first writes
// them (an activation buffer sized for 512 tokens costs one row's pages in a one-token decode
// step; a KV pool's per-slot metadata costs only the blocks ever used). Fresh pages read zero,
// but code must not rely on it: memory malloc reuses holds what it held. Every reader of
// these buffers reads only what its step wrote.
#pragma once

#include <memory>
#include <new>
#include <type_traits>
#include <utility>
#include <vector>

namespace kvc {

template <typename T>
struct DefaultInitAllocator : std::allocator<T> {
  template <typename U>
  struct rebind {
    using other = DefaultInitAllocator<U>;
  };
  DefaultInitAllocator() = default;
  template <typename U>
  DefaultInitAllocator(const DefaultInitAllocator<U>& /*other*/) noexcept {}  // NOLINT

  template <typename U>
  void construct(U* p) noexcept(std::is_nothrow_default_constructible_v<U>) {
    ::new (static_cast<void*>(p)) U;
  }
  template <typename U, typename... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
};

template <typename T>
using UnbackedVector = std::vector<T, DefaultInitAllocator<T>>;

}  // namespace kvc
