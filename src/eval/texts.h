// Long public-domain texts from Debian packages, the raw material of the evaluation haystacks
// (../shared/docs/MODELS.md). Both loaders read untrusted files: every length is checked
// against the bytes present, and any problem throws kvc::Error with a one-line message.
//
// Jane Austen's novels (r-cran-janeaustenr) live in an R lazy-load database, Rdata.rdb: a
// sequence of blocks, each a big-endian u32 uncompressed length followed by a zlib stream
// (whose compressed length is not stored, so it is inflated as a stream). Each block is one
// R object in XDR serialization:
//   "X\n", i32 version (2 or 3), i32 writer R version, i32 minimal reader R version,
//   [version 3: i32 n, n bytes of native encoding name],
//   i32 flags (low byte = SEXP type, 16 = STRSXP), i32 length,
//   length x (i32 flags, i32 n, n bytes of UTF-8; n = -1 means NA).
// The six novels are the character vectors with more than 1000 elements (one per line).
// scripts/golden/texts.py is the independent Python reading of the same file.
#pragma once

#include <string>
#include <vector>

namespace kvc::eval {

inline constexpr const char* kAustenRdbPath = "/usr/lib/R/site-library/janeaustenr/data/Rdata.rdb";
inline constexpr const char* kJargonPath = "/usr/share/doc/jargon-text/jargon.txt.gz";

// The six novels in file order: 0 Emma, 1 Mansfield Park, 2 Northanger Abbey, 3 Persuasion,
// 4 Pride and Prejudice, 5 Sense and Sensibility; each novel's lines joined by "\n", NA lines
// as "". Invalid UTF-8 bytes become U+FFFD (as Python's errors="replace").
std::vector<std::string> load_austen_novels(const std::string& path = kAustenRdbPath);

// The Jargon File as plain text (gunzipped; invalid UTF-8 kept as is).
std::string load_jargon(const std::string& path = kJargonPath);

}  // namespace kvc::eval
