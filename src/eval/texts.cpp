#include "eval/texts.h"

#include <zlib.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <iterator>
#include <limits>

#include "util/error.h"
#include "util/files.h"

namespace kvc::eval {
namespace {

// A block that claims more than this is corrupt (the largest novel inflates to ~2.5 MB).
constexpr uint64_t kMaxBlockBytes = uint64_t{1} << 30;
constexpr size_t kNovelMinLines = 1000;  // the novels; the file also holds small index vectors

std::string read_file(const std::string& path, const char* package) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    fail("{}: file not found; install the Debian package {} (scripts/setup.sh does)", path,
         package);
  }
  return read_whole_file(path, "text");
}

uint32_t read_be_u32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

// Appends `bytes` to `out`, replacing each maximal invalid UTF-8 subsequence by U+FFFD, which is
// what Python's bytes.decode("utf-8", errors="replace") does.
void append_utf8_replacing(std::string& out, const uint8_t* bytes, size_t n) {
  static constexpr char kReplacement[] = "\xEF\xBF\xBD";
  size_t i = 0;
  while (i < n) {
    const uint8_t b = bytes[i];
    if (b < 0x80) {
      out.push_back(static_cast<char>(b));
      ++i;
      continue;
    }
    int continuation = 0;
    uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the first continuation byte
    if (b >= 0xC2 && b <= 0xDF) {
      continuation = 1;
    } else if (b >= 0xE0 && b <= 0xEF) {
      continuation = 2;
      if (b == 0xE0) lo = 0xA0;
      if (b == 0xED) hi = 0x9F;
    } else if (b >= 0xF0 && b <= 0xF4) {
      continuation = 3;
      if (b == 0xF0) lo = 0x90;
      if (b == 0xF4) hi = 0x8F;
    }
    size_t len = 1;
    bool valid = continuation > 0;
    for (int k = 0; valid && k < continuation; ++k) {
      const size_t j = i + 1 + k;
      const uint8_t lo_k = k == 0 ? lo : 0x80, hi_k = k == 0 ? hi : 0xBF;
      if (j >= n || bytes[j] < lo_k || bytes[j] > hi_k) {
        valid = false;
      } else {
        ++len;
      }
    }
    if (valid) {
      out.append(reinterpret_cast<const char*>(bytes + i), len);
    } else {
      out.append(kReplacement);
    }
    i += len;
  }
}

// Bounds-checked reader of one inflated R object.
class XdrReader {
 public:
  XdrReader(const std::string& file, size_t block, const std::string& raw)
      : file_(file),
        block_(block),
        raw_(reinterpret_cast<const uint8_t*>(raw.data())),
        size_(raw.size()) {}

  void need(size_t n, const char* what) const {
    if (n > size_ - pos_) {
      fail("{}: R data block {}: {} needs {} bytes at offset {} but the block has {}", file_,
           block_, what, n, pos_, size_);
    }
  }
  int32_t i32(const char* what) {
    need(4, what);
    const int32_t v = static_cast<int32_t>(read_be_u32(raw_ + pos_));
    pos_ += 4;
    return v;
  }
  const uint8_t* bytes(size_t n, const char* what) {
    need(n, what);
    const uint8_t* p = raw_ + pos_;
    pos_ += n;
    return p;
  }
  [[noreturn]] void bad(const std::string& why) const {
    fail("{}: R data block {}: {}", file_, block_, why);
  }

 private:
  const std::string& file_;
  size_t block_;
  const uint8_t* raw_;
  size_t size_;
  size_t pos_ = 0;
};

// One XDR-serialized character vector -> its elements (NA as "").
std::vector<std::string> read_character_vector(const std::string& file, size_t block,
                                               const std::string& raw) {
  XdrReader r(file, block, raw);
  const uint8_t* magic = r.bytes(2, "serialization header");
  if (magic[0] != 'X' || magic[1] != '\n') r.bad("not an XDR R serialization (header is not X\\n)");
  const int32_t version = r.i32("format version");
  if (version != 2 && version != 3) r.bad(fmt::format("unsupported format version {}", version));
  r.i32("writer R version");
  r.i32("minimal reader R version");
  if (version == 3) {
    const int32_t n = r.i32("native encoding length");
    if (n < 0) r.bad(fmt::format("negative native encoding length {}", n));
    r.bytes(static_cast<size_t>(n), "native encoding name");
  }
  const int32_t flags = r.i32("object flags");
  if ((flags & 0xFF) != 16) {
    r.bad(
        fmt::format("expected a character vector (SEXP type 16), got SEXP type {}", flags & 0xFF));
  }
  const int32_t length = r.i32("vector length");
  if (length < 0) r.bad(fmt::format("negative vector length {}", length));
  std::vector<std::string> lines;
  lines.reserve(static_cast<size_t>(length));
  for (int32_t i = 0; i < length; ++i) {
    r.i32("element flags");
    const int32_t n = r.i32("element length");
    if (n < -1) r.bad(fmt::format("element {} has invalid length {}", i, n));
    std::string line;
    if (n > 0) {
      const uint8_t* p = r.bytes(static_cast<size_t>(n), "element bytes");
      append_utf8_replacing(line, p, static_cast<size_t>(n));
    }
    lines.push_back(std::move(line));
  }
  return lines;
}

// Inflates the zlib stream starting at data[pos] into exactly `expected` bytes; returns the
// number of compressed bytes consumed.
size_t inflate_block(const std::string& file, size_t block, const std::string& data, size_t pos,
                     uint64_t expected, std::string& out) {
  out.assign(expected + 1, '\0');  // one spare byte detects a stream longer than announced
  z_stream zs{};
  if (inflateInit(&zs) != Z_OK) fail("{}: zlib initialisation failed", file);
  const size_t available = data.size() - pos;
  if (available > std::numeric_limits<uInt>::max()) {
    inflateEnd(&zs);
    fail("{}: file too large", file);
  }
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data() + pos));
  zs.avail_in = static_cast<uInt>(available);
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  int rc = Z_OK;
  while (rc == Z_OK) rc = inflate(&zs, Z_NO_FLUSH);
  const uint64_t produced = zs.total_out;
  const size_t consumed = zs.total_in;
  const char* msg = zs.msg;
  inflateEnd(&zs);
  if (rc != Z_STREAM_END) {
    if (rc == Z_BUF_ERROR && zs.avail_out == 0) {
      fail("{}: R data block {} at offset {}: inflates to more than the {} bytes announced", file,
           block, pos - 4, expected);
    }
    if (rc == Z_BUF_ERROR) {
      fail("{}: R data block {} at offset {}: zlib stream truncated (file ends)", file, block,
           pos - 4);
    }
    fail("{}: R data block {} at offset {}: corrupt zlib stream ({})", file, block, pos - 4,
         msg ? msg : zError(rc));
  }
  if (produced != expected) {
    fail("{}: R data block {} at offset {}: inflated {} bytes but the header announced {}", file,
         block, pos - 4, produced, expected);
  }
  out.resize(expected);
  return consumed;
}

}  // namespace

std::vector<std::string> load_austen_novels(const std::string& path) {
  const std::string data = read_file(path, "r-cran-janeaustenr");
  std::vector<std::string> novels;
  std::string raw;
  size_t pos = 0;
  size_t block = 0;
  while (pos < data.size()) {
    if (data.size() - pos < 4) {
      fail("{}: truncated: {} stray bytes at offset {} (expected a 4-byte block length)", path,
           data.size() - pos, pos);
    }
    const uint64_t expected = read_be_u32(reinterpret_cast<const uint8_t*>(data.data() + pos));
    if (expected > kMaxBlockBytes) {
      fail("{}: R data block {} at offset {} claims an absurd length {}", path, block, pos,
           expected);
    }
    pos += 4;
    pos += inflate_block(path, block, data, pos, expected, raw);
    std::vector<std::string> lines = read_character_vector(path, block, raw);
    if (lines.size() > kNovelMinLines) {
      size_t total = lines.size();
      for (const std::string& line : lines) total += line.size();
      std::string novel;
      novel.reserve(total);
      for (size_t i = 0; i < lines.size(); ++i) {
        if (i > 0) novel.push_back('\n');
        novel += lines[i];
      }
      novels.push_back(std::move(novel));
    }
    ++block;
  }
  if (novels.size() != 6) {
    fail("{}: expected the 6 Austen novels (character vectors of more than {} lines), found {}",
         path, kNovelMinLines, novels.size());
  }
  return novels;
}

std::string load_jargon(const std::string& path) {
  const std::string data = read_file(path, "jargon-text");
  if (data.size() > std::numeric_limits<uInt>::max()) fail("{}: file too large", path);
  z_stream zs{};
  if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) fail("{}: zlib initialisation failed", path);
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  zs.avail_in = static_cast<uInt>(data.size());
  std::string text;
  char chunk[1 << 16];
  int rc = Z_OK;
  while (true) {
    zs.next_out = reinterpret_cast<Bytef*>(chunk);
    zs.avail_out = sizeof(chunk);
    rc = inflate(&zs, Z_NO_FLUSH);
    text.append(chunk, sizeof(chunk) - zs.avail_out);
    if (rc == Z_STREAM_END) {
      if (zs.avail_in == 0) break;
      // Another gzip member follows (gzip allows concatenation).
      if (inflateReset(&zs) != Z_OK) break;
      continue;
    }
    if (rc != Z_OK) break;
    if (text.size() > kMaxBlockBytes) {
      inflateEnd(&zs);
      fail("{}: inflates to more than {} bytes", path, kMaxBlockBytes);
    }
  }
  const char* msg = zs.msg;
  inflateEnd(&zs);
  if (rc == Z_BUF_ERROR) fail("{}: truncated gzip stream", path);
  if (rc != Z_STREAM_END) fail("{}: corrupt gzip stream ({})", path, msg ? msg : zError(rc));
  return text;
}

}  // namespace kvc::eval
