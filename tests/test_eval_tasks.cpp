// Evaluation tasks (src/eval/): the Austen and Jargon loaders (checked against facts of the
// texts and against corrupted copies), and the RULER task generators, checked on what a
// generator cannot fake: every answer is really in the input (counted, for the aggregation
// tasks), inputs fit the token budget, needles sit at their depth, samples are deterministic.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>

#include "eval/tasks.h"
#include "eval/texts.h"
#include "util/error.h"

namespace kvc::eval {
namespace {

// Loaded once; empty when the Debian packages are absent (those tests skip).
const TextSources& texts() {
  static const TextSources sources = [] {
    TextSources s;
    if (std::filesystem::exists(kAustenRdbPath)) s.austen = load_austen_novels();
    if (std::filesystem::exists(kJargonPath)) s.jargon = load_jargon();
    return s;
  }();
  return sources;
}

// Fast stand-ins for the engine's tokenizer.
int64_t bytes_over_4(std::string_view s) { return static_cast<int64_t>((s.size() + 3) / 4); }
int64_t words_times_1_3(std::string_view s) {
  int64_t words = 0;
  bool in_word = false;
  for (char c : s) {
    const bool space = c == ' ' || c == '\n' || c == '\t';
    if (!space && !in_word) ++words;
    in_word = !space;
  }
  return static_cast<int64_t>(std::ceil(1.3 * static_cast<double>(words)));
}

std::string file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_bytes(const std::string& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

size_t count_of(std::string_view haystack, std::string_view needle) {
  size_t n = 0;
  for (size_t p = haystack.find(needle); p != std::string_view::npos;
       p = haystack.find(needle, p + 1)) {
    ++n;
  }
  return n;
}

bool skip_for_missing_texts(const TaskInfo& info) {
  return info.uses_austen && texts().austen.empty();
}

// ---- texts --------------------------------------------------------------------------------

TEST(AustenTexts, SixNovelsWithKnownContent) {
  if (texts().austen.empty()) GTEST_SKIP() << "r-cran-janeaustenr not installed";
  const std::vector<std::string>& novels = texts().austen;
  ASSERT_EQ(novels.size(), 6u);
  EXPECT_TRUE(novels[0].starts_with("EMMA"));
  EXPECT_TRUE(novels[4].starts_with("PRIDE AND PREJUDICE"));
  EXPECT_NE(novels[4].find("It is a truth universally acknowledged"), std::string::npos);
  EXPECT_NE(novels[0].find("Emma Woodhouse, handsome, clever, and rich"), std::string::npos);
  EXPECT_NE(novels[5].find("Dashwood"), std::string::npos);
  int64_t words = 0;
  for (const std::string& novel : novels) {
    std::istringstream in(novel);
    std::string w;
    while (in >> w) ++words;
  }
  EXPECT_GT(words, 600000);
}

TEST(AustenTexts, CorruptFilesThrowClearErrors) {
  if (texts().austen.empty()) GTEST_SKIP() << "r-cran-janeaustenr not installed";
  const std::string good = file_bytes(kAustenRdbPath);
  const std::string dir = ::testing::TempDir();
  const std::string path = dir + "/kvc_test_austen.rdb";

  write_bytes(path, good.substr(0, good.size() / 2));  // ends inside a zlib stream
  EXPECT_NE(error_of([&] { load_austen_novels(path); }).find("truncated"), std::string::npos);

  write_bytes(path, good.substr(0, 2));  // not even a block length
  EXPECT_NE(error_of([&] { load_austen_novels(path); }).find("truncated"), std::string::npos);

  std::string bad = good;
  bad[3] = static_cast<char>(bad[3] ^ 0x01);  // first block length off by one
  write_bytes(path, bad);
  EXPECT_NE(error_of([&] { load_austen_novels(path); }), "");

  bad = good;
  bad[4] = 0x00;  // zlib header
  write_bytes(path, bad);
  EXPECT_NE(error_of([&] { load_austen_novels(path); }).find("zlib"), std::string::npos);

  EXPECT_NE(error_of([&] {
              load_austen_novels(dir + "/no_such_file.rdb");
            }).find("install the Debian package r-cran-janeaustenr (scripts/setup.sh does)"),
            std::string::npos);
  std::filesystem::remove(path);
}

TEST(JargonText, ContainsTheLexicon) {
  if (texts().jargon.empty()) GTEST_SKIP() << "jargon-text not installed";
  EXPECT_NE(texts().jargon.find("hacker"), std::string::npos);
  EXPECT_GT(texts().jargon.size(), 1000000u);
  EXPECT_NE(error_of([] {
              load_jargon(::testing::TempDir() + "/no_such_jargon.txt.gz");
            }).find("jargon-text"),
            std::string::npos);
}

// ---- registry, scoring ---------------------------------------------------------------------

TEST(Tasks, RegistryListsTwelveTasksAndRejectsUnknownNames) {
  const std::span<const TaskInfo> infos = task_infos();
  ASSERT_EQ(infos.size(), 12u);
  EXPECT_EQ(infos.front().name, "niah_single_1");
  for (const TaskInfo& info : infos) {
    EXPECT_EQ(&task_info(info.name), &info);
    EXPECT_GT(info.max_new_tokens, 0);
  }
  const std::string message = error_of([] { task_info("niah_single_9"); });
  EXPECT_NE(message.find("niah_single_9"), std::string::npos);
  EXPECT_NE(message.find("niah_multikey_3"), std::string::npos);  // lists the valid names
  EXPECT_THROW(generate_task_sample("bogus", 1024, 1, 0, texts(), bytes_over_4), Error);
}

TEST(Tasks, StringMatchAll) {
  const std::vector<std::string> one = {"1234567"};
  EXPECT_EQ(string_match_all("The number is 1234567.", one), 1.0);
  EXPECT_EQ(string_match_all("The number is 123456.", one), 0.0);
  const std::vector<std::string> words = {"Apple", "banana", "CHERRY", "date"};
  EXPECT_EQ(string_match_all("apple BANANA cherry DATE", words), 1.0);
  EXPECT_EQ(string_match_all("I like APPLES and cherry pie", words), 0.5);  // 2 of 4
  EXPECT_EQ(string_match_all("", words), 0.0);
  EXPECT_EQ(string_match_all("anything", std::span<const std::string>{}), 0.0);
}

TEST(Tasks, RejectsBadRequests) {
  for (const TaskInfo& info : task_infos()) {
    EXPECT_THROW(generate_task_sample(info.name, 100, 1, 0, texts(), bytes_over_4), Error)
        << info.name;
    EXPECT_THROW(generate_task_sample(info.name, 1024, 1, -1, texts(), bytes_over_4), Error)
        << info.name;
  }
  // A counter that makes every input enormous: the task cannot fit, and says so.
  const TokenCounter huge = [](std::string_view s) { return static_cast<int64_t>(s.size()) * 100; };
  EXPECT_NE(error_of([&] {
              generate_task_sample("passkey", 1024, 1, 0, texts(), huge);
            }).find("too small"),
            std::string::npos);
  // Austen tasks without the novels.
  EXPECT_NE(error_of([] {
              generate_task_sample("niah_single_2", 1024, 1, 0, TextSources{}, bytes_over_4);
            }).find("r-cran-janeaustenr"),
            std::string::npos);
}

// ---- generated samples ---------------------------------------------------------------------

TEST(Tasks, SamplesAreDeterministicAndVaryWithIndexAndSeed) {
  for (const TaskInfo& info : task_infos()) {
    if (skip_for_missing_texts(info)) continue;
    const TaskSample a = generate_task_sample(info.name, 1024, 7, 3, texts(), bytes_over_4);
    const TaskSample b = generate_task_sample(info.name, 1024, 7, 3, texts(), bytes_over_4);
    EXPECT_EQ(a.input, b.input) << info.name;
    EXPECT_EQ(a.answers, b.answers) << info.name;
    EXPECT_EQ(a.answer_prefix, b.answer_prefix) << info.name;
    EXPECT_EQ(a.depth, b.depth) << info.name;
    EXPECT_EQ(a.task, info.name);
    EXPECT_EQ(a.index, 3);
    EXPECT_EQ(a.target_tokens, 1024);
    EXPECT_EQ(a.max_new_tokens, info.max_new_tokens);
    const TaskSample other_index =
        generate_task_sample(info.name, 1024, 7, 4, texts(), bytes_over_4);
    const TaskSample other_seed =
        generate_task_sample(info.name, 1024, 8, 3, texts(), bytes_over_4);
    EXPECT_NE(a.input, other_index.input) << info.name;
    EXPECT_NE(a.answers, other_index.answers) << info.name;
    EXPECT_NE(a.input, other_seed.input) << info.name;
    EXPECT_NE(a.answers, other_seed.answers) << info.name;
  }
}

// Word counts of a "1. w 2. w ..." list.
std::map<std::string, int> numbered_list_counts(std::string_view list) {
  std::map<std::string, int> counts;
  std::istringstream in{std::string(list)};
  std::string number, word;
  while (in >> number >> word) {
    EXPECT_EQ(number.back(), '.');
    ++counts[word];
  }
  return counts;
}

void check_answers_in_input(const TaskSample& s) {
  const std::string& in = s.input;
  ASSERT_FALSE(s.answers.empty());
  if (s.task.starts_with("niah_")) {
    for (const std::string& answer : s.answers) {
      EXPECT_EQ(count_of(in, " is: " + answer + "."), 1u) << s.task << " " << answer;
    }
    const size_t expected_answers =
        s.task == "niah_multivalue" || s.task == "niah_multiquery" ? 4u : 1u;
    EXPECT_EQ(s.answers.size(), expected_answers) << s.task;
    if (s.task == "niah_multikey_1" || s.task == "niah_multivalue" || s.task == "niah_multiquery") {
      EXPECT_EQ(count_of(in, "One of the special magic numbers for "), 4u) << s.task;
    }
    if (s.task == "niah_multikey_2" || s.task == "niah_multikey_3") {
      EXPECT_GT(count_of(in, "One of the special magic "), 10u) << s.task;  // a needle haystack
    }
    if (s.task == "niah_single_3" || s.task == "niah_multikey_3") {
      const std::regex uuid("[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}");
      EXPECT_TRUE(std::regex_match(s.answers[0], uuid)) << s.answers[0];
    } else {
      EXPECT_EQ(s.answers[0].size(), 7u);
    }
  } else if (s.task == "passkey") {
    ASSERT_EQ(s.answers.size(), 1u);
    EXPECT_EQ(s.answers[0].size(), 5u);
    EXPECT_EQ(count_of(in, "The pass key is " + s.answers[0] + ". Remember it. " + s.answers[0] +
                               " is the pass key."),
              1u);
  } else if (s.task == "vt") {
    ASSERT_EQ(s.answers.size(), 5u);
    const std::string value = s.answer_prefix.substr(s.answer_prefix.find("the value ") + 10, 5);
    EXPECT_EQ(count_of(in, "VAR " + s.answers[0] + " = " + value), 1u);
    for (size_t i = 1; i < s.answers.size(); ++i) {
      const size_t at = in.find("VAR " + s.answers[i] + " = VAR " + s.answers[i - 1]);
      ASSERT_NE(at, std::string::npos) << s.answers[i];
      EXPECT_GT(at, in.find("VAR " + s.answers[i - 1] + " = "));  // the chain reads forwards
    }
    EXPECT_NE(in.find("Question: Find all variables that are assigned the value " + value),
              std::string::npos);
  } else if (s.task == "cwe") {
    ASSERT_EQ(s.answers.size(), 10u);
    const std::string start = "Memorize the ones that appear most often.\n";
    const size_t begin = in.rfind(start) + start.size();
    const size_t end = in.rfind("\nQuestion:");
    const std::map<std::string, int> counts = numbered_list_counts(in.substr(begin, end - begin));
    int min_common = 1 << 30, max_other = 0;
    for (const auto& [word, count] : counts) {
      if (std::find(s.answers.begin(), s.answers.end(), word) != s.answers.end()) {
        min_common = std::min(min_common, count);
      } else {
        max_other = std::max(max_other, count);
      }
    }
    for (const std::string& answer : s.answers) EXPECT_TRUE(counts.contains(answer)) << answer;
    EXPECT_GT(min_common, max_other);
    EXPECT_GT(counts.size(), 20u);
  } else if (s.task == "fwe") {
    ASSERT_EQ(s.answers.size(), 3u);
    const std::string start = "coded words. ";
    const size_t begin = in.find(start) + start.size();
    const size_t end = in.rfind("\nQuestion:");
    std::map<std::string, int> counts;
    std::istringstream words(in.substr(begin, end - begin));
    std::string w;
    while (words >> w) ++counts[w];
    EXPECT_GT(counts["..."], 0);
    counts.erase("...");
    std::vector<std::pair<int, std::string>> by_count;
    for (const auto& [word, count] : counts) by_count.emplace_back(count, word);
    std::sort(by_count.rbegin(), by_count.rend());
    ASSERT_GE(by_count.size(), 4u);
    for (size_t i = 0; i < 3; ++i) EXPECT_EQ(by_count[i].second, s.answers[i]) << i;
    EXPECT_GT(by_count[2].first, by_count[3].first);  // unambiguous
  } else {
    FAIL() << "unchecked task " << s.task;
  }
}

TEST(Tasks, AnswersAreInTheInputAndInputsFitTheBudget) {
  for (const TaskInfo& info : task_infos()) {
    if (skip_for_missing_texts(info)) continue;
    for (int32_t target : {1024, 2048, 4096}) {
      for (int32_t index : {0, 1}) {
        const TaskSample s =
            generate_task_sample(info.name, target, 11, index, texts(), bytes_over_4);
        SCOPED_TRACE(::testing::Message()
                     << info.name << " target " << target << " index " << index);
        EXPECT_EQ(s.input_tokens, bytes_over_4(s.input));
        EXPECT_LE(s.input_tokens, target);
        EXPECT_GE(s.input_tokens, 0.85 * target);
        EXPECT_FALSE(s.answer_prefix.empty());
        check_answers_in_input(s);
      }
    }
  }
}

TEST(Tasks, WordBasedCounterAndFewCountCalls) {
  for (const TaskInfo& info : task_infos()) {
    if (skip_for_missing_texts(info)) continue;
    int calls = 0;
    const TokenCounter counter = [&](std::string_view s) {
      ++calls;
      return words_times_1_3(s);
    };
    const TaskSample s = generate_task_sample(info.name, 2048, 5, 2, texts(), counter);
    EXPECT_LE(s.input_tokens, 2048) << info.name;
    EXPECT_GE(s.input_tokens, 0.85 * 2048) << info.name;
    EXPECT_LE(calls, 15) << info.name;
    check_answers_in_input(s);
  }
}

TEST(Tasks, OneNeedleSitsAtItsDepth) {
  for (std::string_view task : {"niah_single_1", "niah_single_2", "niah_single_3",
                                "niah_multikey_2", "niah_multikey_3", "passkey"}) {
    if (skip_for_missing_texts(task_info(task))) continue;
    for (int32_t index = 0; index < 5; ++index) {
      const TaskSample s = generate_task_sample(task, 2048, 3, index, texts(), bytes_over_4);
      EXPECT_EQ(s.depth, 0.25 * index) << task;
      // The context runs from the end of the instruction line to the question's line.
      const size_t begin = s.input.find('\n') + 1;
      const size_t end = s.input.rfind('\n');
      const size_t at = s.input.find(s.answers[0]);
      ASSERT_NE(at, std::string::npos);
      const double depth = static_cast<double>(at - begin) / static_cast<double>(end - begin);
      EXPECT_NEAR(depth, s.depth, 0.1) << task << " index " << index;
    }
  }
  // Several needles: depths are spread, not clustered at one place.
  if (texts().austen.empty()) return;
  const TaskSample s = generate_task_sample("niah_multivalue", 4096, 3, 0, texts(), bytes_over_4);
  EXPECT_EQ(s.depth, -1.0);
  std::vector<size_t> at;
  for (const std::string& a : s.answers) at.push_back(s.input.find(a));
  std::sort(at.begin(), at.end());
  EXPECT_GT(at.back() - at.front(), s.input.size() / 10);
}

}  // namespace
}  // namespace kvc::eval
