#include "model/tokenizer/special_tokens.h"

#include <algorithm>
#include <utility>

namespace kvc {

SpecialTokenSplitter::SpecialTokenSplitter(std::vector<SpecialToken> tokens) {
  for (SpecialToken& token : tokens) {
    if (!token.text.empty()) tokens_.push_back(std::move(token));
  }
  // llama.cpp sorts by length only (std::sort, so equal lengths come in an unspecified order);
  // breaking ties by id keeps our output deterministic.
  std::stable_sort(tokens_.begin(), tokens_.end(), [](const SpecialToken& a, const SpecialToken& b) {
    if (a.text.size() != b.text.size()) return a.text.size() > b.text.size();
    return a.id < b.id;
  });
}

std::vector<TextFragment> SpecialTokenSplitter::split(std::string_view text,
                                                      bool parse_special) const {
  std::vector<TextFragment> fragments;
  if (text.empty()) return fragments;
  fragments.push_back({-1, text});
  std::vector<TextFragment> next;

  for (const SpecialToken& token : tokens_) {
    if (token.control && !parse_special) continue;
    // Cheap rejection: most tokens occur nowhere, and then the fragments stay as they are.
    bool found = false;
    for (const TextFragment& fragment : fragments) {
      if (fragment.token < 0 && fragment.text.find(token.text) != std::string_view::npos) {
        found = true;
        break;
      }
    }
    if (!found) continue;

    next.clear();
    for (const TextFragment& fragment : fragments) {
      if (fragment.token >= 0) {
        next.push_back(fragment);
        continue;
      }
      std::string_view rest = fragment.text;
      for (size_t match = rest.find(token.text); match != std::string_view::npos;
           match = rest.find(token.text)) {
        if (match > 0) next.push_back({-1, rest.substr(0, match)});
        next.push_back({token.id, {}});
        rest.remove_prefix(match + token.text.size());
      }
      if (!rest.empty()) next.push_back({-1, rest});
    }
    fragments.swap(next);
  }
  return fragments;
}

}  // namespace kvc
