// UTF-8 helpers and GPT-2 byte-level encoding.
//
// Byte-level BPE vocabularies (GPT-2, StarCoder, SmolLM, Qwen2, Llama 3) never store raw bytes:
// each byte 0..255 is first mapped to a printable code point (GPT-2's `bytes_to_unicode`:
// printable Latin-1 bytes map to themselves, the other 68 bytes to U+0100.. in order, so a space
// becomes 'Ġ' U+0120 and '\n' becomes 'Ċ' U+010A). Token texts and merges are written in that
// alphabet; `byte_level_encode` maps text into it and `byte_level_decode` maps token texts back.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace kvc {

// Decodes UTF-8 the way llama.cpp does (unicode_cpts_from_utf8): every byte that does not start
// a well-formed sequence becomes U+FFFD and decoding resumes at the next byte, so untrusted text
// never throws. Like llama.cpp it accepts overlong forms and UTF-16 surrogates (U+D800..DFFF);
// values above U+10FFFF (on which llama.cpp throws) become U+FFFD.
std::vector<uint32_t> utf8_to_codepoints(std::string_view text);

// Appends the UTF-8 encoding of `cpt` (<= U+10FFFF) to `out`.
void append_utf8(uint32_t cpt, std::string& out);

// The bytes llama.cpp actually tokenizes for `text`: decoded as above and re-encoded (identity
// for valid UTF-8). PCRE2 rejects surrogates, so when the result holds any, `regex_subject`
// receives a copy with each replaced by U+FFFD -- same length, and like a surrogate it is neither
// letter, number, mark nor space, so every pre-tokenizer regex splits both alike; otherwise
// `regex_subject` is cleared and the result itself is valid for PCRE2.
std::string sanitize_utf8(std::string_view text, std::string& regex_subject);

// Length in bytes of the UTF-8 sequence starting with `lead` (1 for invalid lead bytes), as
// llama.cpp's unicode_len_utf8: the BPE splits a word into initial symbols with it.
size_t utf8_sequence_length(uint8_t lead);

// Raw bytes -> GPT-2 alphabet ("a b" -> "aĠb").
std::string byte_level_encode(std::string_view raw);

// GPT-2 alphabet -> raw bytes ("aĠb" -> "a b"). Code points outside the alphabet (possible only
// in malformed vocabularies) are copied through as UTF-8 rather than dropped.
std::string byte_level_decode(std::string_view encoded);

}  // namespace kvc
