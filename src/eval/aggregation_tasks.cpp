// Multi-hop tracing and aggregation recipes: variable tracking (RULER's variable_tracking.py),
// common words extraction (common_words_extraction.py) and frequent words extraction
// (freq_words_extraction.py).
#include <fmt/format.h>

#include <algorithm>
#include <unordered_set>

#include "eval/haystack.h"
#include "eval/task_recipes.h"
#include "util/error.h"

namespace kvc::eval {
namespace {

// ---- variable tracking -------------------------------------------------------------------

constexpr int kVtHops = 4;          // RULER vt: num_chains 1, num_hops 4
constexpr int kVtExampleNoise = 6;  // noise sentences in the solved example

// `count` distinct upper-case names of `letters` letters.
std::vector<std::string> variable_names(Rng& rng, int count, int letters) {
  std::vector<std::string> names;
  std::unordered_set<std::string> seen;
  while (static_cast<int>(names.size()) < count) {
    std::string name;
    for (int i = 0; i < letters; ++i) name.push_back(static_cast<char>('A' + rng.below(26)));
    if (seen.insert(name).second) names.push_back(std::move(name));
  }
  return names;
}

struct VariableChain {
  std::vector<std::string> names;       // names[0] = value, names[i] = names[i-1]
  std::string value;                    // 5 digits
  std::vector<std::string> statements;  // "VAR A = 12345", "VAR B = VAR A", ...
  std::vector<double> places;           // where each statement goes, in [0, 1), sorted
};

VariableChain make_chain(Rng& rng, int letters) {
  VariableChain chain;
  chain.names = variable_names(rng, kVtHops + 1, letters);
  chain.value = random_digits(rng, 5);
  chain.statements.push_back(fmt::format("VAR {} = {}", chain.names[0], chain.value));
  for (int i = 1; i <= kVtHops; ++i) {
    chain.statements.push_back(fmt::format("VAR {} = VAR {}", chain.names[i], chain.names[i - 1]));
  }
  for (int i = 0; i <= kVtHops; ++i) chain.places.push_back(rng.uniform());
  std::sort(chain.places.begin(), chain.places.end());
  return chain;
}

// The statements placed among n noise lines (each noise unit ends with a newline, as RULER's).
std::string vt_context(const VariableChain& chain, int64_t n) {
  const std::vector<std::string> noise(static_cast<size_t>(n), std::string(kNoiseSentence) + "\n");
  std::vector<size_t> at;
  for (double place : chain.places) {
    at.push_back(static_cast<size_t>(place * static_cast<double>(n + 1)));
  }
  return join_with_needles(noise, chain.statements, at, " ");
}

std::string vt_question(const VariableChain& chain, const std::string& context) {
  return fmt::format(
      "Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n"
      "{}\nQuestion: Find all variables that are assigned the value {} in the text above.",
      context, chain.value);
}

std::string vt_answer_prefix(const VariableChain& chain) {
  return fmt::format(
      "Answer: According to the chain(s) of variable assignment in the text above, {} variables "
      "are assigned the value {}, they are:",
      chain.names.size(), chain.value);
}

// ---- common words extraction --------------------------------------------------------------

constexpr size_t kCweCommon = 10;        // RULER num_cw
constexpr size_t kCweExampleWords = 20;  // RULER's short example: 20 words, 3 and 1 repeats
constexpr int kCweExampleCommonRepeats = 3;
constexpr int kCweExampleRareRepeats = 1;

constexpr std::string_view kCweInstruction =
    "Below is a numbered list of words. In these words, some appear more often than others. "
    "Memorize the ones that appear most often.\n";
constexpr std::string_view kCweQuestion =
    "\nQuestion: What are the 10 most common words in the above list?";
constexpr std::string_view kCweAnswerPrefix =
    "Answer: The top 10 words that appear most often in the list are:";

void add_words(std::string_view text, std::unordered_set<std::string>& out) {
  std::string word;
  for (char c : text) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (c >= 'a' && c <= 'z') {
      word.push_back(c);
    } else if (!word.empty()) {
      out.insert(word);
      word.clear();
    }
  }
  if (!word.empty()) out.insert(word);
}

// Candidate words, sorted: the lower-case words of 4-10 letters in the Austen novels (~10.7K),
// minus the words of the instructions.
std::vector<std::string> cwe_vocabulary(const TextSources& texts) {
  std::unordered_set<std::string> banned;
  add_words(kCweInstruction, banned);
  add_words(kCweQuestion, banned);
  add_words(kCweAnswerPrefix, banned);
  const auto is_letter = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); };
  std::unordered_set<std::string> words;
  for (const std::string& novel : texts.austen) {
    size_t i = 0;
    while (i < novel.size()) {
      // A run of letters, apostrophes and non-ASCII bytes; kept when all lower-case ASCII.
      size_t j = i;
      bool lower = true;
      while (j < novel.size() && (is_letter(novel[j]) || novel[j] == '\'' ||
                                  static_cast<unsigned char>(novel[j]) >= 0x80)) {
        lower = lower && novel[j] >= 'a' && novel[j] <= 'z';
        ++j;
      }
      if (lower && j - i >= 4 && j - i <= 10) words.insert(novel.substr(i, j - i));
      i = j == i ? i + 1 : j;
    }
  }
  std::vector<std::string> vocabulary;
  for (const std::string& w : words) {
    if (!banned.contains(w)) vocabulary.push_back(w);
  }
  std::sort(vocabulary.begin(), vocabulary.end());
  return vocabulary;
}

// "1. w 2. w ..." for `common` x common_repeats and `rare` x rare_repeats, shuffled.
std::string numbered_list(std::span<const std::string> common, int common_repeats,
                          std::span<const std::string> rare, int rare_repeats, Rng rng) {
  std::vector<const std::string*> entries;
  for (int r = 0; r < common_repeats; ++r) {
    for (const std::string& w : common) entries.push_back(&w);
  }
  for (int r = 0; r < rare_repeats; ++r) {
    for (const std::string& w : rare) entries.push_back(&w);
  }
  rng.shuffle(entries);
  std::string out;
  for (size_t i = 0; i < entries.size(); ++i) {
    if (i > 0) out.push_back(' ');
    out += fmt::format("{}. {}", i + 1, *entries[i]);
  }
  return out;
}

std::string numbered_answers(std::span<const std::string> words) {
  std::string out;
  for (size_t i = 0; i < words.size(); ++i) out += fmt::format(" {}. {}", i + 1, words[i]);
  return out;
}

// ---- frequent words extraction ------------------------------------------------------------

constexpr int kFweWordLetters = 6;             // RULER coded_wordlen
constexpr double kZeta2 = 1.6449340668482264;  // zeta(2) = pi^2 / 6, RULER's alpha = 2

}  // namespace

TaskSample generate_vt(const TaskRequest& request) {
  Rng rng = request.rng(kStreamNeedles);
  const VariableChain chain = make_chain(rng, 5);
  Rng example_rng = request.rng(kStreamExample);
  const VariableChain example = make_chain(example_rng, 3);
  std::string example_text =
      vt_question(example, vt_context(example, kVtExampleNoise)) + " " + vt_answer_prefix(example);
  for (const std::string& name : example.names) example_text += " " + name;
  example_text += "\n\n";

  auto build = [&](int64_t n) { return example_text + vt_question(chain, vt_context(chain, n)); };
  return request.finish(1, request.target_tokens, build, vt_answer_prefix(chain), chain.names,
                        -1.0);
}

TaskSample generate_cwe(const TaskRequest& request) {
  // RULER uses 6 and 1 repeats below 4K tokens and 30 and 3 from 4K on.
  const bool long_input = request.target_tokens >= 4096;
  const int common_repeats = long_input ? 30 : 6;
  const int rare_repeats = long_input ? 3 : 1;

  std::vector<std::string> vocabulary = cwe_vocabulary(request.texts);
  Rng rng = request.rng(kStreamNeedles);
  rng.shuffle(vocabulary);
  if (vocabulary.size() < kCweExampleWords + 2 * kCweCommon) {
    fail("task cwe: only {} candidate words", vocabulary.size());
  }
  const std::span<const std::string> all(vocabulary);
  const std::span<const std::string> example = all.first(kCweExampleWords);
  const std::span<const std::string> words = all.subspan(kCweExampleWords);
  const std::string example_text =
      std::string(kCweInstruction) +
      numbered_list(example.first(kCweCommon), kCweExampleCommonRepeats,
                    example.subspan(kCweCommon), kCweExampleRareRepeats,
                    request.rng(kStreamExample)) +
      std::string(kCweQuestion) + " " + std::string(kCweAnswerPrefix) +
      numbered_answers(example.first(kCweCommon)) + "\n";

  auto build = [&](int64_t n) {  // n words: kCweCommon common ones, the rest rare
    const std::span<const std::string> used = words.first(static_cast<size_t>(n));
    return example_text + std::string(kCweInstruction) +
           numbered_list(used.first(kCweCommon), common_repeats, used.subspan(kCweCommon),
                         rare_repeats, request.rng(kStreamShuffle)) +
           std::string(kCweQuestion);
  };
  const std::span<const std::string> common = words.first(kCweCommon);
  return request.finish(static_cast<int64_t>(2 * kCweCommon), static_cast<int64_t>(words.size()),
                        build, std::string(kCweAnswerPrefix),
                        std::vector<std::string>(common.begin(), common.end()), -1.0);
}

TaskSample generate_fwe(const TaskRequest& request) {
  Rng rng = request.rng(kStreamNeedles);
  const size_t vocab_size = std::max<size_t>(16, static_cast<size_t>(request.target_tokens / 50));
  std::unordered_set<std::string> seen;
  std::vector<std::string> vocab;
  while (vocab.size() < vocab_size) {
    std::string word;
    for (int i = 0; i < kFweWordLetters; ++i)
      word.push_back(static_cast<char>('a' + rng.below(26)));
    if (seen.insert(word).second) vocab.push_back(std::move(word));
  }
  std::sort(vocab.begin(), vocab.end());
  rng.shuffle(vocab);
  vocab[0] = "...";  // the most frequent "word" is noise, as in RULER

  // Rank k (from 1) appears floor(N * k^-2 / zeta(2)) times. From N = 100 on, ranks 2, 3 and 4
  // have strictly decreasing counts, all above rank 5's, so the answer is unambiguous.
  auto build = [&](int64_t n) {
    std::vector<const std::string*> text;
    for (size_t k = 1; k <= vocab.size(); ++k) {
      const double expected = static_cast<double>(n) / (static_cast<double>(k * k) * kZeta2);
      const int64_t count = static_cast<int64_t>(expected);
      for (int64_t c = 0; c < count; ++c) text.push_back(&vocab[k - 1]);
    }
    Rng shuffle_rng = request.rng(kStreamShuffle);
    shuffle_rng.shuffle(text);
    std::string context;
    for (const std::string* w : text) {
      if (!context.empty()) context.push_back(' ');
      context += *w;
    }
    return "Read the following coded text and track the frequency of each coded word. Find the "
           "three most frequently appeared coded words. " +
           context +
           "\nQuestion: Do not provide any explanation. Please ignore the dots '....'. What are "
           "the three most frequently appeared words in the above coded text?";
  };
  return request.finish(
      100, int64_t{64} * request.target_tokens, build,
      "Answer: According to the coded text above, the three most frequently appeared words are:",
      {vocab[1], vocab[2], vocab[3]}, -1.0);
}

}  // namespace kvc::eval
