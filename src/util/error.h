// Errors in three tiers:
//   - programmer errors: KVC_ASSERT, always on, aborts with file:line;
//   - untrusted input (files, CLI values, request bodies): throw kvc::Error with a one-line
//     message naming what is wrong; the edge (CLI, server) catches it and reports it;
//   - device (CUDA) calls: checked with file and line in the backend itself.
#pragma once

#include <fmt/format.h>
#include <stdexcept>
#include <string>

namespace kvc {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> fmt, Args&&... args) {
  throw Error(fmt::format(fmt, std::forward<Args>(args)...));
}

[[noreturn]] void assert_failed(const char* expr, const char* file, int line);

}  // namespace kvc

#define KVC_ASSERT(expr) \
  ((expr) ? static_cast<void>(0) : ::kvc::assert_failed(#expr, __FILE__, __LINE__))
