#include "eval/user_tasks.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <sstream>

#include "eval/tasks.h"
#include "util/error.h"
#include "util/files.h"

namespace kvc::eval {
namespace {

using nlohmann::json;

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
  return out;
}

std::string_view trim(std::string_view s) {
  const auto space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; };
  while (!s.empty() && space(s.front())) s.remove_prefix(1);
  while (!s.empty() && space(s.back())) s.remove_suffix(1);
  return s;
}

std::string string_field(const json& j, const char* key, const std::string& where) {
  const json& v = j.at(key);
  if (!v.is_string()) fail("{}: '{}' must be a string", where, key);
  return v.get<std::string>();
}

UserTask parse_line(const json& j, int32_t line, const std::string& where) {
  if (!j.is_object()) fail("{}: expected a JSON object", where);
  static const char* const kKnown[] = {"prompt", "context", "question", "answers", "metric",
                                       "chat", "name", "max_new_tokens"};
  for (const auto& [key, value] : j.items()) {
    if (std::find(std::begin(kKnown), std::end(kKnown), key) == std::end(kKnown)) {
      fail("{}: unknown field '{}' (known: prompt, context, question, answers, metric, chat, "
           "name, max_new_tokens)", where, key);
    }
  }
  UserTask t;
  t.line = line;
  const bool has_prompt = j.contains("prompt");
  const bool has_context = j.contains("context") || j.contains("question");
  if (has_prompt == has_context) {
    fail("{}: give either 'prompt' or both 'context' and 'question'", where);
  }
  if (has_prompt) {
    t.input = string_field(j, "prompt", where);
  } else {
    if (!j.contains("context") || !j.contains("question")) {
      fail("{}: 'context' and 'question' go together", where);
    }
    t.input = string_field(j, "context", where) + "\n\n" + string_field(j, "question", where);
  }
  if (trim(t.input).empty()) fail("{}: the prompt is empty", where);
  if (!j.contains("answers")) fail("{}: missing 'answers'", where);
  const json& a = j.at("answers");
  if (a.is_string()) {
    t.answers.push_back(a.get<std::string>());
  } else if (a.is_array() && !a.empty()) {
    for (const json& x : a) {
      if (!x.is_string()) fail("{}: 'answers' must hold strings", where);
      t.answers.push_back(x.get<std::string>());
    }
  } else {
    fail("{}: 'answers' must be a string or a non-empty array of strings", where);
  }
  for (const std::string& s : t.answers) {
    if (trim(s).empty()) fail("{}: an answer is empty", where);
  }
  if (j.contains("metric")) {
    const std::string m = string_field(j, "metric", where);
    if (m == "substring") t.metric = AnswerMetric::kSubstring;
    else if (m == "exact") t.metric = AnswerMetric::kExact;
    else if (m == "all") t.metric = AnswerMetric::kAll;
    else fail("{}: unknown metric '{}' (substring, exact, all)", where, m);
  }
  if (j.contains("chat")) {
    if (!j.at("chat").is_boolean()) fail("{}: 'chat' must be true or false", where);
    t.chat = j.at("chat").get<bool>();
  }
  if (j.contains("name")) {
    t.name = string_field(j, "name", where);
    if (trim(t.name).empty()) fail("{}: 'name' is empty", where);
  }
  size_t longest = 0;
  for (const std::string& s : t.answers) longest = std::max(longest, s.size());
  t.max_new_tokens = std::max<int32_t>(32, static_cast<int32_t>(longest / 2) + 16);
  if (j.contains("max_new_tokens")) {
    const json& m = j.at("max_new_tokens");
    if (!m.is_number_integer() || m.get<int64_t>() < 1 || m.get<int64_t>() > 4096) {
      fail("{}: 'max_new_tokens' must be an integer in [1, 4096]", where);
    }
    t.max_new_tokens = m.get<int32_t>();
  }
  return t;
}

}  // namespace

std::string_view answer_metric_name(AnswerMetric m) {
  switch (m) {
    case AnswerMetric::kSubstring: return "substring";
    case AnswerMetric::kExact: return "exact";
    case AnswerMetric::kAll: return "all";
  }
  return "?";
}

std::vector<UserTask> parse_tasks(std::string_view text, const std::string& source) {
  std::vector<UserTask> tasks;
  std::istringstream in{std::string(text)};
  std::string line;
  int32_t number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (trim(line).empty()) continue;
    const std::string where = fmt::format("{}:{}", source, number);
    json j;
    try {
      j = json::parse(line);
    } catch (const json::parse_error& e) {
      fail("{}: not JSON ({})", where, e.what());
    }
    tasks.push_back(parse_line(j, number, where));
  }
  if (tasks.empty()) fail("{}: no tasks (the file is empty)", source);
  return tasks;
}

std::vector<UserTask> load_tasks_file(const std::string& path) {
  return parse_tasks(read_whole_file(path, "tasks file"), path);
}

double score_answer(AnswerMetric metric, std::string_view prediction,
                    std::span<const std::string> answers) {
  switch (metric) {
    case AnswerMetric::kAll:
      return string_match_all(prediction, answers);
    case AnswerMetric::kSubstring: {
      const std::string p = lower(prediction);
      for (const std::string& a : answers) {
        if (p.find(lower(a)) != std::string::npos) return 1.0;
      }
      return 0.0;
    }
    case AnswerMetric::kExact: {
      const std::string_view p = trim(prediction);
      for (const std::string& a : answers) {
        if (p == trim(a)) return 1.0;
      }
      return 0.0;
    }
  }
  return 0.0;
}

}  // namespace kvc::eval
