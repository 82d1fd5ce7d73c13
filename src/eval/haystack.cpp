#include "eval/haystack.h"

#include <algorithm>
#include <array>
#include <cmath>

#include "util/error.h"

namespace kvc::eval {
namespace {

bool is_lower(char c) { return c >= 'a' && c <= 'z'; }
bool is_upper(char c) { return c >= 'A' && c <= 'Z'; }
bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

// Title, "VOLUME I", "CHAPTER IV", "Chapter 12" and "By Jane Austen" lines are not prose.
bool is_heading(std::string_view line) {
  if (std::none_of(line.begin(), line.end(), is_lower)) return true;
  if (line.starts_with("By Jane Austen")) return true;
  if (line.starts_with("Chapter ")) {
    return std::none_of(line.begin() + 8, line.end(), is_lower);
  }
  return false;
}

bool is_closing(char c) { return c == '"' || c == '\'' || c == ')' || c == ']' || c == '_'; }
bool is_opening(char c) { return c == '"' || c == '\'' || c == '(' || c == '[' || c == '_'; }

// Whether `word` may end a sentence: ends in . ! or ? (before closing quotes), and is not an
// abbreviation such as "Mr." or an initial such as "F.".
bool ends_sentence(std::string_view word) {
  while (!word.empty() && is_closing(word.back())) word.remove_suffix(1);
  if (word.empty()) return false;
  const char last = word.back();
  if (last == '!' || last == '?') return true;
  if (last != '.') return false;
  std::string_view stem = word.substr(0, word.size() - 1);
  while (!stem.empty() && is_opening(stem.front())) stem.remove_prefix(1);
  static constexpr std::array<std::string_view, 7> kAbbreviations = {"Mr",  "Mrs", "Dr",    "St",
                                                                     "Esq", "Ms",  "Messrs"};
  if (std::find(kAbbreviations.begin(), kAbbreviations.end(), stem) != kAbbreviations.end()) {
    return false;
  }
  return !(stem.size() == 1 && is_upper(stem[0]));
}

// Whether `word` can start a sentence (an upper-case letter, possibly after opening quotes).
bool starts_sentence(std::string_view word) {
  while (!word.empty() && is_opening(word.front())) word.remove_prefix(1);
  return !word.empty() && is_upper(word.front());
}

// Splits prose into sentences, line by line. The first sentence it emits is dropped by the
// caller because the scan usually starts in the middle of one.
class SentenceSplitter {
 public:
  explicit SentenceSplitter(std::vector<std::string>& out) : out_(out) {}

  void line(std::string_view text) {
    if (std::all_of(text.begin(), text.end(), is_space) || is_heading(text)) {
      flush();  // paragraph end
      return;
    }
    size_t i = 0;
    while (i < text.size()) {
      while (i < text.size() && is_space(text[i])) ++i;
      size_t j = i;
      while (j < text.size() && !is_space(text[j])) ++j;
      if (j > i) word(text.substr(i, j - i));
      i = j;
    }
  }

  void flush() {
    if (!current_.empty()) {
      bytes_ += current_.size();
      out_.push_back(std::move(current_));
      current_.clear();
    }
    pending_end_ = false;
  }

  size_t bytes() const { return bytes_; }

 private:
  void word(std::string_view w) {
    if (pending_end_ && starts_sentence(w)) flush();
    if (!current_.empty()) current_.push_back(' ');
    current_.append(w);
    pending_end_ = ends_sentence(w);
  }

  std::vector<std::string>& out_;
  std::string current_;
  bool pending_end_ = false;
  size_t bytes_ = 0;
};

}  // namespace

std::vector<std::string> austen_sentences(std::span<const std::string> novels, Rng& rng,
                                          size_t min_bytes) {
  if (novels.empty()) {
    fail(
        "the Austen novels are not loaded (install the Debian package r-cran-janeaustenr; "
        "scripts/setup.sh does)");
  }
  size_t novel = static_cast<size_t>(rng.below(novels.size()));
  size_t pos = novels[novel].empty() ? 0 : static_cast<size_t>(rng.below(novels[novel].size()));
  // Start at the next line so the scan never begins inside a word.
  const size_t eol = novels[novel].find('\n', pos);
  pos = eol == std::string::npos ? novels[novel].size() : eol + 1;

  std::vector<std::string> sentences;
  SentenceSplitter splitter(sentences);
  size_t total_read = 0;
  size_t total_size = 0;
  for (const std::string& n : novels) total_size += n.size();
  while (splitter.bytes() < min_bytes + (sentences.empty() ? 0 : sentences.front().size()) &&
         total_read <= total_size) {
    const std::string& text = novels[novel];
    if (pos >= text.size()) {
      splitter.flush();  // a novel's end is a paragraph end
      novel = (novel + 1) % novels.size();
      pos = 0;
      continue;
    }
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    splitter.line(std::string_view(text).substr(pos, end - pos));
    total_read += end - pos + 1;
    pos = end + 1;
  }
  splitter.flush();
  if (!sentences.empty()) sentences.erase(sentences.begin());  // probably a partial sentence
  return sentences;
}

std::vector<size_t> insertion_boundaries(std::span<const std::string> units,
                                         std::span<const double> depths) {
  // offsets[b] = bytes before unit b in the joined haystack; offsets[units.size()] = total.
  std::vector<double> offsets(units.size() + 1, 0.0);
  for (size_t i = 0; i < units.size(); ++i) {
    offsets[i + 1] = offsets[i] + static_cast<double>(units[i].size()) + (i > 0 ? 1.0 : 0.0);
  }
  const double total = offsets.back();
  std::vector<size_t> boundaries;
  boundaries.reserve(depths.size());
  for (double depth : depths) {
    KVC_ASSERT(depth >= 0.0 && depth <= 1.0);
    const double want = depth * total;
    const auto it = std::lower_bound(offsets.begin(), offsets.end(), want);
    size_t b = static_cast<size_t>(it - offsets.begin());
    if (b == offsets.size()) b = units.size();
    if (b > 0 && want - offsets[b - 1] <= offsets[b] - want) --b;
    boundaries.push_back(b);
  }
  return boundaries;
}

std::string join_with_needles(std::span<const std::string> units,
                              std::span<const std::string> needles,
                              std::span<const size_t> boundaries, std::string_view separator) {
  KVC_ASSERT(needles.size() == boundaries.size());
  KVC_ASSERT(std::is_sorted(boundaries.begin(), boundaries.end()));
  size_t bytes = 0;
  for (const std::string& u : units) bytes += u.size() + separator.size();
  for (const std::string& n : needles) bytes += n.size() + separator.size();
  std::string out;
  out.reserve(bytes);
  bool first = true;
  auto add = [&](std::string_view piece) {
    if (!first) out.append(separator);
    out.append(piece);
    first = false;
  };
  size_t next_needle = 0;
  for (size_t i = 0; i <= units.size(); ++i) {
    while (next_needle < needles.size() && boundaries[next_needle] == i)
      add(needles[next_needle++]);
    if (i < units.size()) add(units[i]);
  }
  return out;
}

}  // namespace kvc::eval
