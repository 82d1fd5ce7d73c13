// Reading a whole (small) file that a user named on the command line.
#pragma once

#include <string>
#include <string_view>

namespace kvc {

// The bytes of the regular file at `path`. Throws kvc::Error "cannot open WHAT 'PATH': why"
// when it is missing, not a regular file, unreadable, or fails while being read.
std::string read_whole_file(const std::string& path, std::string_view what);

}  // namespace kvc
