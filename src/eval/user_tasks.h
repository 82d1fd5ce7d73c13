// Users' own tasks for `kvc eval --tasks-file FILE.jsonl`: one JSON object per line,
//
//   {"prompt": "...", "answers": ["..."], "metric": "substring", "chat": true}
//   {"context": "...", "question": "...", "answers": "one answer"}
//
// Fields: `prompt` (the whole input), or `context` and `question` (joined by a blank line);
// `answers` (a string or a non-empty array of strings); optional `metric` (below, default
// "substring"), `chat` (default true: the model's chat template around the input; false: the
// raw text after BOS), `name` (groups lines in the tables; default "user"), `max_new_tokens`
// (default: 16 more than the longest answer's characters / 2, at least 32). Any other field, a
// line that is not a JSON object, a missing or mistyped field is an error naming the line; blank
// lines are allowed. An empty file is an error.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace kvc::eval {

enum class AnswerMetric : uint8_t {
  kSubstring,  // 1 when any answer occurs in the prediction (ASCII case folded; RULER's part)
  kExact,      // 1 when the prediction, trimmed of surrounding whitespace, equals an answer
  kAll,        // fraction of the answers that occur in the prediction (RULER's all)
};
std::string_view answer_metric_name(AnswerMetric m);

struct UserTask {
  int32_t line = 0;         // 1-based line in the file
  std::string name = "user";
  std::string input;        // prompt, or context + "\n\n" + question
  bool chat = true;
  std::vector<std::string> answers;
  AnswerMetric metric = AnswerMetric::kSubstring;
  int32_t max_new_tokens = 32;
};

// Parses the whole file (throws kvc::Error "FILE:LINE: problem" on the first bad line).
std::vector<UserTask> load_tasks_file(const std::string& path);
// The same from text, `source` naming it in errors (tests).
std::vector<UserTask> parse_tasks(std::string_view text, const std::string& source);

// The score of a prediction under a metric, in [0, 1].
double score_answer(AnswerMetric metric, std::string_view prediction,
                    std::span<const std::string> answers);

}  // namespace kvc::eval
