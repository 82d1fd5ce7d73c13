#include "util/files.h"

#include <filesystem>
#include <fstream>
#include <iterator>

#include "util/error.h"

namespace kvc {

std::string read_whole_file(const std::string& path, std::string_view what) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) fail("cannot open {} '{}': no such file", what, path);
  if (!std::filesystem::is_regular_file(path, ec)) {
    fail("cannot open {} '{}': not a regular file", what, path);
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot open {} '{}': permission denied or unreadable", what, path);
  std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) fail("cannot open {} '{}': read error", what, path);
  return data;
}

}  // namespace kvc
