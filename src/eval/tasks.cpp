#include "eval/tasks.h"

#include <fmt/format.h>

#include <array>

#include "eval/task_recipes.h"
#include "util/error.h"

namespace kvc::eval {
namespace {

constexpr std::array<TaskInfo, 12> kTasks = {{
    {"niah_single_1", "one needle (word key, 7-digit number) in a repeated noise haystack", 24,
     false},
    {"niah_single_2", "one needle (word key, 7-digit number) in Austen prose", 24, true},
    {"niah_single_3", "one needle (word key, UUID value) in Austen prose", 48, true},
    {"niah_multikey_1", "4 needles with different keys in Austen prose; one key is queried", 24,
     true},
    {"niah_multikey_2", "one needle in a haystack of needles with other word keys", 24, false},
    {"niah_multikey_3", "UUID key-value retrieval: one needle among needles with UUID keys", 48,
     false},
    {"niah_multivalue", "4 values of one key in Austen prose; all 4 are asked for", 64, true},
    {"niah_multiquery", "4 needles in Austen prose; all 4 keys are queried at once", 64, true},
    {"vt", "variable tracking: one chain of 4 hops in noise; name every variable of the value", 32,
     false},
    {"cwe", "common words extraction: the 10 most repeated words of a numbered list", 64, true},
    {"fwe", "frequent words extraction: the 3 most frequent coded words (Zipf, alpha 2)", 32,
     false},
    {"passkey", "pass key retrieval: a 5-digit key in repeated noise", 16, false},
}};

char ascii_lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

std::string ascii_lowercase(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = ascii_lower(c);
  return out;
}

}  // namespace

std::span<const TaskInfo> task_infos() { return kTasks; }

const TaskInfo& task_info(std::string_view name) {
  for (const TaskInfo& info : kTasks) {
    if (info.name == name) return info;
  }
  std::string names;
  for (const TaskInfo& info : kTasks) {
    if (!names.empty()) names += ", ";
    names += info.name;
  }
  fail("unknown task '{}' (valid tasks: {})", name, names);
}

Rng TaskRequest::rng(uint64_t stream) const {
  return Rng({seed, fnv1a64(info.name), static_cast<uint64_t>(target_tokens),
              static_cast<uint64_t>(index), stream});
}

TaskSample TaskRequest::finish(int64_t min_units, int64_t max_units,
                               const std::function<std::string(int64_t)>& build,
                               std::string answer_prefix, std::vector<std::string> answers,
                               double depth) const {
  FittedInput fitted =
      fit_units_to_tokens(info.name, target_tokens, min_units, max_units, build, count_tokens);
  TaskSample sample;
  sample.task = std::string(info.name);
  sample.index = index;
  sample.target_tokens = target_tokens;
  sample.input = std::move(fitted.input);
  sample.answer_prefix = std::move(answer_prefix);
  sample.answers = std::move(answers);
  sample.max_new_tokens = info.max_new_tokens;
  sample.depth = depth;
  sample.input_tokens = fitted.tokens;
  return sample;
}

std::string random_digits(Rng& rng, int digits) {
  KVC_ASSERT(digits >= 1 && digits <= 18);
  int64_t lo = 1;
  for (int i = 1; i < digits; ++i) lo *= 10;
  return std::to_string(rng.between(lo, lo * 10 - 1));
}

std::string random_uuid(Rng& rng) {
  uint8_t b[16];
  for (int half = 0; half < 2; ++half) {
    const uint64_t r = rng.next();
    for (int i = 0; i < 8; ++i) b[half * 8 + i] = static_cast<uint8_t>(r >> (8 * i));
  }
  b[6] = static_cast<uint8_t>((b[6] & 0x0F) | 0x40);  // version 4
  b[8] = static_cast<uint8_t>((b[8] & 0x3F) | 0x80);  // RFC 4122 variant
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(36);
  for (int i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out.push_back('-');
    out.push_back(kHex[b[i] >> 4]);
    out.push_back(kHex[b[i] & 0x0F]);
  }
  return out;
}

double one_needle_depth(int32_t index) {
  static constexpr double kDepths[] = {0.0, 0.25, 0.5, 0.75, 1.0};
  return kDepths[index % 5];
}

TaskSample generate_task_sample(std::string_view task, int32_t target_tokens, uint64_t seed,
                                int32_t index, const TextSources& texts,
                                const TokenCounter& count_tokens) {
  const TaskInfo& info = task_info(task);
  if (target_tokens < kMinTargetTokens || target_tokens > kMaxTargetTokens) {
    fail("task {}: target_tokens {} is out of range [{}, {}]", info.name, target_tokens,
         kMinTargetTokens, kMaxTargetTokens);
  }
  if (index < 0) fail("task {}: sample index must be >= 0, got {}", info.name, index);
  if (!count_tokens) fail("task {}: no token counter given", info.name);
  if (info.uses_austen && texts.austen.empty()) {
    fail(
        "task {} needs the Austen novels, which are not loaded (install the Debian package "
        "r-cran-janeaustenr; scripts/setup.sh does)",
        info.name);
  }
  const TaskRequest request{info, target_tokens, seed, index, texts, count_tokens};
  if (info.name.starts_with("niah_")) return generate_niah(request);
  if (info.name == "passkey") return generate_passkey(request);
  if (info.name == "vt") return generate_vt(request);
  if (info.name == "cwe") return generate_cwe(request);
  if (info.name == "fwe") return generate_fwe(request);
  fail("task {}: no generator", info.name);
}

double string_match_all(std::string_view prediction, std::span<const std::string> references) {
  if (references.empty()) return 0.0;
  const std::string haystack = ascii_lowercase(prediction);
  int matched = 0;
  for (const std::string& reference : references) {
    if (haystack.find(ascii_lowercase(reference)) != std::string::npos) ++matched;
  }
  return static_cast<double>(matched) / static_cast<double>(references.size());
}

}  // namespace kvc::eval
