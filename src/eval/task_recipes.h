// Internal to eval/: the recipe of each task family, called by generate_task_sample
// (eval/tasks.cpp) after it has validated the request. Not part of the public interface.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "eval/length_fit.h"
#include "eval/rng.h"
#include "eval/tasks.h"

namespace kvc::eval {

// A validated request, with the helpers every recipe needs.
struct TaskRequest {
  const TaskInfo& info;
  int32_t target_tokens;
  uint64_t seed;
  int32_t index;
  const TextSources& texts;
  const TokenCounter& count_tokens;

  // Independent random streams of this sample, one per purpose, so that what one part draws
  // never shifts another (e.g. the haystack's filler never changes the needle's key).
  Rng rng(uint64_t stream) const;

  // Fits build(n) to the target (eval/length_fit.h) and fills the sample's common fields.
  TaskSample finish(int64_t min_units, int64_t max_units,
                    const std::function<std::string(int64_t)>& build, std::string answer_prefix,
                    std::vector<std::string> answers, double depth) const;
};

// Random streams by purpose.
inline constexpr uint64_t kStreamNeedles = 0;   // keys, values, queries, depths, vocabulary order
inline constexpr uint64_t kStreamHaystack = 1;  // where the Austen run starts, filler needles
inline constexpr uint64_t kStreamExample = 2;   // the solved example of vt and cwe
inline constexpr uint64_t kStreamShuffle = 3;   // per-build shuffles (re-seeded for every n)

std::string random_digits(Rng& rng, int digits);  // no leading zero
std::string random_uuid(Rng& rng);                // version 4 layout, 8-4-4-4-12 lowercase hex
double one_needle_depth(int32_t index);           // {0, .25, .5, .75, 1}[index % 5]

TaskSample generate_niah(const TaskRequest& request);     // niah_*
TaskSample generate_passkey(const TaskRequest& request);  // passkey
TaskSample generate_vt(const TaskRequest& request);       // vt
TaskSample generate_cwe(const TaskRequest& request);      // cwe
TaskSample generate_fwe(const TaskRequest& request);      // fwe

}  // namespace kvc::eval
