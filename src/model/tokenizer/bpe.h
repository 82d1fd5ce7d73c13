// Byte-level BPE merging of one pre-tokenized word, as llama.cpp's llm_tokenizer_bpe_session.
//
// A word (already in the GPT-2 byte alphabet, see byte_level.h) starts as one symbol per UTF-8
// character. Repeatedly, the adjacent pair with the lowest merge rank (ties: leftmost) is joined;
// a min-heap holds candidate pairs and a doubly linked list the live symbols, so a word of n
// characters costs O(n log n) rather than rescanning all pairs after every merge. Each final
// symbol maps to its vocabulary id; a symbol missing from the vocabulary (only in inconsistent
// vocabularies) falls back to the ids of its single bytes, dropping bytes without one, exactly as
// llama.cpp does.
//
// Invariants: BpeModel is immutable after construction (encode_word is safe to call from many
// threads); nothing is cached across calls.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace kvc {

// Heterogeneous lookup: find() with a string_view does not allocate a std::string.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using StringToId = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

class BpeModel {
 public:
  // `merges`: GGUF `tokenizer.ggml.merges`, each "left right" split at the first space after the
  // first byte (llama.cpp's rule); rank = position, and the first occurrence of a duplicated pair
  // wins. Throws kvc::Error for a merge without a separating space.
  BpeModel(const std::vector<std::string_view>& merges, bool ignore_merges);

  // Appends the ids of `word` (byte alphabet) to `out`; `vocab` maps token text -> id.
  void encode_word(std::string_view word, const StringToId& vocab,
                   std::vector<int32_t>& out) const;

  size_t merge_count() const { return ranks_.size(); }

 private:
  // The rank of merging `left` + `right`, or -1. Keys are "<4-byte left length><left><right>", so
  // no separator character can make two different pairs collide.
  int32_t rank(std::string_view left, std::string_view right, std::string& scratch) const;

  std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>> ranks_;
  bool ignore_merges_;
};

}  // namespace kvc
