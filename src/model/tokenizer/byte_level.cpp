#include "model/tokenizer/byte_level.h"

#include <array>

namespace kvc {
namespace {

constexpr uint32_t kReplacement = 0xFFFD;

// GPT-2's bytes_to_unicode table: byte -> code point, and its inverse for code points < 0x144.
struct ByteAlphabet {
  std::array<uint32_t, 256> byte_to_cpt{};
  std::array<std::string, 256> byte_to_utf8;  // the same, pre-encoded: encoding is a table lookup
  std::array<int16_t, 0x144> cpt_to_byte{};    // -1: not in the alphabet

  ByteAlphabet() {
    cpt_to_byte.fill(-1);
    auto printable = [](int b) {
      return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    };
    uint32_t next_extra = 256;
    for (int b = 0; b < 256; ++b) {
      byte_to_cpt[b] = printable(b) ? static_cast<uint32_t>(b) : next_extra++;
      append_utf8(byte_to_cpt[b], byte_to_utf8[b]);
      cpt_to_byte[byte_to_cpt[b]] = static_cast<int16_t>(b);
    }
  }
};

const ByteAlphabet& alphabet() {
  static const ByteAlphabet table;  // immutable after construction: safe to share across threads
  return table;
}

// One code point starting at text[pos]; advances pos. Mirrors llama.cpp's unicode_cpt_from_utf8
// (it checks lead-bit patterns and continuation bytes but not overlong forms), returning
// kReplacement and advancing one byte where llama.cpp would throw.
uint32_t decode_one(std::string_view text, size_t& pos) {
  auto byte = [&](size_t i) { return static_cast<uint8_t>(text[i]); };
  auto continuation = [&](size_t i) { return i < text.size() && (byte(i) & 0xC0) == 0x80; };
  const uint8_t lead = byte(pos);
  if (lead < 0x80) {
    pos += 1;
    return lead;
  }
  if ((lead & 0xE0) == 0xC0 && continuation(pos + 1)) {
    uint32_t cpt = ((lead & 0x1Fu) << 6) | (byte(pos + 1) & 0x3Fu);
    pos += 2;
    return cpt;
  }
  if ((lead & 0xF0) == 0xE0 && continuation(pos + 1) && continuation(pos + 2)) {
    uint32_t cpt = ((lead & 0x0Fu) << 12) | ((byte(pos + 1) & 0x3Fu) << 6) | (byte(pos + 2) & 0x3Fu);
    pos += 3;
    return cpt;
  }
  if ((lead & 0xF8) == 0xF0 && continuation(pos + 1) && continuation(pos + 2) &&
      continuation(pos + 3)) {
    uint32_t cpt = ((lead & 0x07u) << 18) | ((byte(pos + 1) & 0x3Fu) << 12) |
                   ((byte(pos + 2) & 0x3Fu) << 6) | (byte(pos + 3) & 0x3Fu);
    pos += 4;
    return cpt;
  }
  pos += 1;
  return kReplacement;
}

}  // namespace

std::vector<uint32_t> utf8_to_codepoints(std::string_view text) {
  std::vector<uint32_t> cpts;
  cpts.reserve(text.size());
  for (size_t pos = 0; pos < text.size();) {
    uint32_t cpt = decode_one(text, pos);
    if (cpt > 0x10FFFF) cpt = kReplacement;
    cpts.push_back(cpt);
  }
  return cpts;
}

void append_utf8(uint32_t cpt, std::string& out) {
  if (cpt < 0x80) {
    out.push_back(static_cast<char>(cpt));
  } else if (cpt < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cpt >> 6)));
    out.push_back(static_cast<char>(0x80 | (cpt & 0x3F)));
  } else if (cpt < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cpt >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cpt >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cpt & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cpt >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cpt >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cpt >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cpt & 0x3F)));
  }
}

std::string sanitize_utf8(std::string_view text, std::string& regex_subject) {
  std::string out;
  out.reserve(text.size());
  bool has_surrogate = false;
  for (uint32_t cpt : utf8_to_codepoints(text)) {
    has_surrogate |= cpt >= 0xD800 && cpt <= 0xDFFF;
    append_utf8(cpt, out);
  }
  regex_subject.clear();
  if (has_surrogate) {
    for (uint32_t cpt : utf8_to_codepoints(out)) {
      append_utf8(cpt >= 0xD800 && cpt <= 0xDFFF ? kReplacement : cpt, regex_subject);
    }
  }
  return out;
}

size_t utf8_sequence_length(uint8_t lead) {
  // Indexed by the high nibble, exactly llama.cpp's lookup table.
  static constexpr uint8_t lengths[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return lengths[lead >> 4];
}

std::string byte_level_encode(std::string_view raw) {
  const ByteAlphabet& table = alphabet();
  std::string out;
  out.reserve(raw.size() * 2);
  for (char c : raw) out += table.byte_to_utf8[static_cast<uint8_t>(c)];
  return out;
}

std::string byte_level_decode(std::string_view encoded) {
  const ByteAlphabet& table = alphabet();
  std::string out;
  out.reserve(encoded.size());
  for (size_t pos = 0; pos < encoded.size();) {
    const size_t start = pos;
    const uint32_t cpt = decode_one(encoded, pos);
    if (cpt < table.cpt_to_byte.size() && table.cpt_to_byte[cpt] >= 0) {
      out.push_back(static_cast<char>(table.cpt_to_byte[cpt]));
    } else {
      out.append(encoded.substr(start, pos - start));
    }
  }
  return out;
}

}  // namespace kvc
