// libFuzzer target: any byte string either parses into views that stay inside the input, or is
// rejected with kvc::Error. Anything else (crash, sanitizer report, other exception) is a bug.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "gguf/gguf.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const kvc::GgufFile file = kvc::GgufFile::parse({data, size}, "fuzz");
    for (const kvc::GgufTensorInfo& t : file.tensors()) {
      if (t.data < data || t.data + t.bytes > data + size) std::abort();
    }
    for (const auto& [key, value] : file.metadata()) {
      if (std::holds_alternative<kvc::GgufArray>(value)) {
        (void)file.get_int_array(key);
      }
    }
  } catch (const kvc::Error&) {
  }
  return 0;
}
