#include "model/tokenizer/bpe.h"

#include <algorithm>
#include <cstring>
#include <queue>

#include "model/tokenizer/byte_level.h"
#include "util/error.h"

namespace kvc {
namespace {

void make_key(std::string_view left, std::string_view right, std::string& key) {
  const auto left_size = static_cast<uint32_t>(left.size());
  key.resize(sizeof(left_size));
  std::memcpy(key.data(), &left_size, sizeof(left_size));
  key.append(left);
  key.append(right);
}

// A live symbol: bytes [start, start + size) of the word, linked to its live neighbours.
struct Symbol {
  uint32_t start;
  uint32_t size;  // 0 once merged into its left neighbour
  int32_t prev;   // index of the left neighbour, -1 at the word start
  int32_t next;   // index of the right neighbour, -1 at the word end
};

// A candidate merge of symbols `left` and `right`, valid only while both still have the sizes
// recorded here (symbols only ever grow or die, so equal sizes mean the pair is unchanged; this
// is llama.cpp's "left + right text == bigram text" test without building strings).
struct Candidate {
  int32_t rank;
  int32_t left;
  int32_t right;
  uint32_t left_size;
  uint32_t right_size;
};

// Lowest rank first; among equal ranks the leftmost pair, like llama.cpp's comparator.
struct LaterCandidate {
  bool operator()(const Candidate& a, const Candidate& b) const {
    return a.rank > b.rank || (a.rank == b.rank && a.left > b.left);
  }
};

}  // namespace

BpeModel::BpeModel(const std::vector<std::string_view>& merges, bool ignore_merges)
    : ignore_merges_(ignore_merges) {
  ranks_.reserve(merges.size());
  std::string key;
  for (size_t i = 0; i < merges.size(); ++i) {
    const std::string_view merge = merges[i];
    const size_t space = merge.size() > 1 ? merge.find(' ', 1) : std::string_view::npos;
    if (space == std::string_view::npos) {
      fail("tokenizer: merge {} '{}' has no space separating its two parts", i, merge);
    }
    make_key(merge.substr(0, space), merge.substr(space + 1), key);
    ranks_.emplace(key, static_cast<int32_t>(i));  // emplace keeps the first (lowest) rank
  }
}

int32_t BpeModel::rank(std::string_view left, std::string_view right, std::string& scratch) const {
  make_key(left, right, scratch);
  auto it = ranks_.find(std::string_view(scratch));
  return it == ranks_.end() ? -1 : it->second;
}

void BpeModel::encode_word(std::string_view word, const StringToId& vocab,
                           std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    if (auto it = vocab.find(word); it != vocab.end()) {
      out.push_back(it->second);
      return;
    }
  }

  // One symbol per UTF-8 character (a truncated sequence at the end keeps its remaining bytes).
  std::vector<Symbol> symbols;  // [n_characters]
  for (size_t offset = 0; offset < word.size();) {
    const size_t size = std::min(word.size() - offset,
                                 utf8_sequence_length(static_cast<uint8_t>(word[offset])));
    const auto index = static_cast<int32_t>(symbols.size());
    symbols.push_back({static_cast<uint32_t>(offset), static_cast<uint32_t>(size), index - 1,
                       offset + size == word.size() ? -1 : index + 1});
    offset += size;
  }

  auto text = [&](int32_t i) { return word.substr(symbols[i].start, symbols[i].size); };
  std::priority_queue<Candidate, std::vector<Candidate>, LaterCandidate> queue;
  std::string scratch;
  auto consider = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const int32_t r = rank(text(left), text(right), scratch);
    if (r >= 0) queue.push({r, left, right, symbols[left].size, symbols[right].size});
  };
  for (int32_t i = 1; i < static_cast<int32_t>(symbols.size()); ++i) consider(i - 1, i);

  while (!queue.empty()) {
    const Candidate best = queue.top();
    queue.pop();
    Symbol& left = symbols[best.left];
    Symbol& right = symbols[best.right];
    if (left.size != best.left_size || right.size != best.right_size || left.next != best.right) {
      continue;  // stale: one side has merged with something else since this pair was queued
    }
    left.size += right.size;
    right.size = 0;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = best.left;
    consider(left.prev, best.left);
    consider(best.left, left.next);
  }

  for (int32_t i = 0; i >= 0; i = symbols[i].next) {
    const std::string_view piece = text(i);
    if (auto it = vocab.find(piece); it != vocab.end()) {
      out.push_back(it->second);
      continue;
    }
    for (char byte : piece) {
      if (auto it = vocab.find(std::string_view(&byte, 1)); it != vocab.end()) {
        out.push_back(it->second);
      }
    }
  }
}

}  // namespace kvc
