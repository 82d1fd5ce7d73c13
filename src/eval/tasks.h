// RULER synthetic tasks (Hsieh et al. 2024, github.com/NVIDIA/RULER), generated
// deterministically at a requested length in tokens of the engine's tokenizer.
//
// A sample is a function of (task, target_tokens, seed, index) only: the random numbers come
// from eval/rng.h (no <random> distributions), so every platform produces the same text. The
// haystack size is the largest whose input has at most target_tokens tokens (eval/length_fit.h).
//
// Tasks, with RULER's settings (scripts/synthetic.yaml) and the haystack each uses:
//   niah_single_1    noise haystack, word key, 7-digit number            (one needle)
//   niah_single_2    Austen haystack, word key, 7-digit number           (one needle)
//   niah_single_3    Austen haystack, word key, UUID                     (one needle)
//   niah_multikey_1  Austen haystack, 4 keys: 1 queried, 3 distractors
//   niah_multikey_2  haystack of needles with other word keys            (one needle)
//   niah_multikey_3  haystack of needles, UUID keys and UUID values      (one needle)
//   niah_multivalue  Austen haystack, 4 values for one key (all 4 are answers)
//   niah_multiquery  Austen haystack, 4 keys queried at once (4 answers)
//   vt               variable tracking: one chain of 4 hops in the noise haystack, with a short
//                    solved example first; answers: the 5 variable names
//   cwe              common words extraction: 10 words repeated often in a numbered list, with
//                    a short solved example first; answers: the 10 words. Words come from
//                    Austen's vocabulary (~10.7K words), which caps inputs near 120K tokens
//   fwe              frequent words extraction: coded words with Zipf (alpha 2) counts; "..."
//                    is the most frequent and is noise; answers: the next 3
//   passkey          the classic pass key retrieval in the noise haystack (5-digit key)
// One-needle tasks place the needle at depth {0, 0.25, 0.5, 0.75, 1}[index % 5] (fraction of
// the context's bytes before it); multi-needle tasks draw distinct depths from RULER's 40.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace kvc::eval {

// Long texts, loaded once (eval/texts.h). Austen is needed by the tasks with an Austen haystack
// and by cwe, which draws its words from the novels (TaskInfo::uses_austen).
struct TextSources {
  std::vector<std::string> austen;  // the six novels (load_austen_novels)
  std::string jargon;               // the Jargon File (load_jargon); unused by these tasks
  // `kvc eval --fidelity-file`: the user's text replaces Austen in the fidelity samples.
  std::string fidelity_text;
  std::string fidelity_source;      // its file name, for errors
};

// Tokens of a text under the engine's tokenizer (no special tokens, no chat template).
using TokenCounter = std::function<int64_t(std::string_view)>;

struct TaskSample {
  std::string task;                  // task name, e.g. "niah_single_1"
  int32_t index = 0;                 // sample index within (task, length)
  int32_t target_tokens = 0;         // requested length
  std::string input;                 // the whole user message: instruction + context + question
  std::string answer_prefix;         // appended after the assistant turn starts (RULER's)
  std::vector<std::string> answers;  // references for string matching
  int32_t max_new_tokens = 32;
  double depth = -1.0;       // needle depth in [0,1] for one-needle tasks, else -1
  int64_t input_tokens = 0;  // count_tokens(input), <= target_tokens
};

struct TaskInfo {
  std::string_view name;
  std::string_view description;
  int32_t max_new_tokens;
  bool uses_austen;  // needs TextSources::austen (throws kvc::Error without it)
};

// All tasks, in a fixed order.
std::span<const TaskInfo> task_infos();
// Throws kvc::Error listing the valid names when `name` is unknown.
const TaskInfo& task_info(std::string_view name);

// Smallest target_tokens accepted; a task may need more (then generation throws).
inline constexpr int32_t kMinTargetTokens = 256;
inline constexpr int32_t kMaxTargetTokens = 1 << 20;

// Deterministic for a given (task, target_tokens, seed, index) on every platform. Throws
// kvc::Error for an unknown task, a target outside [kMinTargetTokens, kMaxTargetTokens] or too
// small for the task, a negative index, or missing Austen texts for a task that needs them.
// Calls count_tokens 2-15 times (mostly 3-9).
TaskSample generate_task_sample(std::string_view task, int32_t target_tokens, uint64_t seed,
                                int32_t index, const TextSources& texts,
                                const TokenCounter& count_tokens);

// RULER's string_match_all: mean over references of (the lower-cased reference is a substring
// of the lower-cased prediction), in [0, 1]; ASCII case folding; 0 for no references.
double string_match_all(std::string_view prediction, std::span<const std::string> references);

}  // namespace kvc::eval
