// Shared by the golden tests (test_golden.cpp, test_golden_qwen2.cpp): compares our engine with
// llama.cpp's golden outputs (scripts/golden/make_*_golden.py) case by case.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <vector>

#include "engine/sampler.h"
#include "kv/paged_kv_cache.h"
#include "forward_helper.h"
#include "model/forward.h"
#include "model/tokenizer/tokenizer.h"

namespace kvc::test_support {

struct GoldenBounds {
  float max_logit_diff;   // max |ours - llama.cpp| over the reference's top 64
  float near_tie_margin;  // top-1 and greedy tokens must agree wherever the reference's top-2
                          // margin is at least this
};

struct GoldenCaseResult {
  float max_logit_diff = 0.0f;
  int32_t checked_positions = 0;  // decisive prompt positions compared
  int32_t greedy_compared = 0;    // decisive greedy steps compared
  int32_t final_argmax = -1;      // our top-1 at the final prompt position
};

// Our tokenizer gives llama.cpp's ids for every case.
inline void expect_token_ids_match(const nlohmann::json& golden, const Tokenizer& tokenizer) {
  for (const auto& c : golden["cases"]) {
    const std::vector<int32_t> expected = c["ids"].get<std::vector<int32_t>>();
    const std::vector<int32_t> ids =
        tokenizer.encode(c["text"].get<std::string>(), c["parse_special"].get<bool>());
    EXPECT_EQ(ids, expected) << "case " << c["name"];
  }
}

// Runs one case on a fresh sequence of `cache`: prefill in chunks that end exactly at the checked
// positions (top-1 compared where decisive), final logits within bounds, then the greedy
// continuation. The reference's token is fed back at every greedy step, so up to its first
// near-tie this is exactly free-running greedy decoding; after a near-tie, teacher forcing keeps
// both engines on the same prefix and every later decisive step is still compared.
// Prints the figures with `tag`; removes the sequence afterwards.
inline void run_golden_case(const nlohmann::json& c, PagedKvCache& cache, ForwardPass& forward,
                            const GoldenBounds& bounds, const char* tag, GoldenCaseResult* out) {
  const std::string name = c["name"].get<std::string>();
  const std::vector<int32_t> ids = c["ids"].get<std::vector<int32_t>>();
  const SequenceId seq = cache.add_sequence();
  GoldenCaseResult r;

  int32_t done = 0;
  std::span<const float> logits;
  for (const auto& p : c["positions"]) {
    const int32_t pos = p["position"].get<int32_t>();
    logits = run_tokens(forward, cache, seq, std::span(ids).subspan(done, pos + 1 - done), done);
    done = pos + 1;
    if (p["margin"].get<float>() < bounds.near_tie_margin) continue;
    ++r.checked_positions;
    EXPECT_EQ(argmax(logits), p["top1"].get<int32_t>())
        << "top-1 differs at position " << pos << " (reference margin " << p["margin"] << ")";
  }
  ASSERT_EQ(done, static_cast<int32_t>(ids.size()));

  for (const auto& t : c["final_top"]) {
    const float diff = std::fabs(logits[t["id"].get<size_t>()] - t["logit"].get<float>());
    r.max_logit_diff = std::max(r.max_logit_diff, diff);
  }
  EXPECT_LE(r.max_logit_diff, bounds.max_logit_diff);
  r.final_argmax = argmax(logits);
  std::printf("[%s] %-16s %5zu tokens  max|dlogit| over top-64: %.4f  top-1 identical at %d of "
              "%zu checked positions (others are near-ties)\n",
              tag, name.c_str(), ids.size(), r.max_logit_diff, r.checked_positions,
              c["positions"].size());

  int32_t position = static_cast<int32_t>(ids.size());
  int32_t first_near_tie = -1;
  for (const auto& g : c["greedy"]) {
    const int32_t expected = g["token"].get<int32_t>();
    const int32_t step = position - static_cast<int32_t>(ids.size());
    if (g["margin"].get<float>() >= bounds.near_tie_margin) {
      EXPECT_EQ(argmax(logits), expected) << "greedy step " << step;
      ++r.greedy_compared;
    } else if (first_near_tie < 0) {
      first_near_tie = step;
    }
    const int32_t next[1] = {expected};
    logits = run_tokens(forward, cache, seq, next, position++);
  }
  std::printf("[%s] %-16s greedy: %d of %zu steps decisive and identical; first near-tie at "
              "step %d\n",
              tag, name.c_str(), r.greedy_compared, c["greedy"].size(),
              first_near_tie < 0 ? static_cast<int32_t>(c["greedy"].size()) : first_near_tie);
  cache.remove_sequence(seq);
  cache.check_invariants();
  *out = r;
}

}  // namespace kvc::test_support
