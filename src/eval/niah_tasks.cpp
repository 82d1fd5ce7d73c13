// Needle-in-a-haystack recipes (RULER's niah.py) and the classic pass key test.
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <set>

#include "eval/haystack.h"
#include "eval/task_recipes.h"
#include "eval/word_lists.h"
#include "util/error.h"

namespace kvc::eval {
namespace {

enum class Haystack { kNoise, kAusten, kNeedles };

struct NiahSpec {
  std::string_view name;
  Haystack haystack;
  bool uuid_keys;
  bool uuid_values;
  int keys;     // needles with distinct keys (RULER num_needle_k)
  int values;   // values per key (num_needle_v)
  int queries;  // keys asked for (num_needle_q)
};

constexpr std::array<NiahSpec, 8> kNiahSpecs = {{
    {"niah_single_1", Haystack::kNoise, false, false, 1, 1, 1},
    {"niah_single_2", Haystack::kAusten, false, false, 1, 1, 1},
    {"niah_single_3", Haystack::kAusten, false, true, 1, 1, 1},
    {"niah_multikey_1", Haystack::kAusten, false, false, 4, 1, 1},
    {"niah_multikey_2", Haystack::kNeedles, false, false, 1, 1, 1},
    {"niah_multikey_3", Haystack::kNeedles, true, true, 1, 1, 1},
    {"niah_multivalue", Haystack::kAusten, false, false, 1, 4, 1},
    {"niah_multiquery", Haystack::kAusten, false, false, 4, 1, 4},
}};

// RULER's depths for several needles: round(linspace(0, 100, 40)) percent.
std::vector<double> ruler_depths() {
  std::vector<double> depths;
  for (int i = 0; i < 40; ++i) depths.push_back(std::round(100.0 * i / 39.0) / 100.0);
  return depths;
}

// `count` distinct elements of [0, n) in draw order (partial Fisher-Yates).
std::vector<size_t> sample_without_replacement(Rng& rng, size_t n, size_t count) {
  KVC_ASSERT(count <= n);
  std::vector<size_t> all(n);
  for (size_t i = 0; i < n; ++i) all[i] = i;
  for (size_t i = 0; i < count; ++i) std::swap(all[i], all[i + rng.below(n - i)]);
  all.resize(count);
  return all;
}

std::string needle_sentence(std::string_view kind, std::string_view key, std::string_view value) {
  return fmt::format("One of the special magic {} for {} is: {}.", kind, key, value);
}

// Haystack units for n in [0, max_units]; Austen sentences are drawn once, filler needles
// are generated on demand so that build(n) is a prefix of build(n + 1).
class HaystackUnits {
 public:
  HaystackUnits(const TaskRequest& request, const NiahSpec& spec, std::set<std::string> used_keys)
      : spec_(spec), rng_(request.rng(kStreamHaystack)), used_keys_(std::move(used_keys)) {
    switch (spec.haystack) {
      case Haystack::kNoise:
        max_units_ = request.target_tokens;  // a unit has many tokens
        break;
      case Haystack::kAusten:
        // ~4-5 bytes per token for English prose; 10 leaves room for any sane tokenizer.
        units_ = austen_sentences(request.texts.austen, rng_,
                                  static_cast<size_t>(request.target_tokens) * 10 + 4096);
        max_units_ = static_cast<int64_t>(units_.size());
        break;
      case Haystack::kNeedles:
        // Half the key space keeps rejection sampling of fresh keys cheap.
        max_units_ = spec.uuid_keys ? int64_t{1} << 16 : static_cast<int64_t>(key_word_count() / 2);
        max_units_ = std::min<int64_t>(max_units_, request.target_tokens);
        break;
    }
  }

  int64_t max_units() const { return max_units_; }

  std::span<const std::string> first(int64_t n) {
    KVC_ASSERT(n >= 0 && n <= max_units_);
    if (spec_.haystack == Haystack::kNoise) {
      units_.resize(static_cast<size_t>(n), std::string(kNoiseSentence));
    }
    while (spec_.haystack == Haystack::kNeedles && static_cast<int64_t>(units_.size()) < n) {
      std::string key;
      do {
        key = spec_.uuid_keys ? random_uuid(rng_) : random_key_word(rng_);
      } while (!used_keys_.insert(key).second);
      const std::string value = spec_.uuid_values ? random_uuid(rng_) : random_digits(rng_, 7);
      units_.push_back(needle_sentence(spec_.uuid_values ? "uuids" : "numbers", key, value));
    }
    return std::span<const std::string>(units_).first(static_cast<size_t>(n));
  }

 private:
  const NiahSpec& spec_;
  Rng rng_;
  std::set<std::string> used_keys_;
  std::vector<std::string> units_;
  int64_t max_units_ = 0;
};

}  // namespace

TaskSample generate_niah(const TaskRequest& request) {
  const auto spec_it = std::find_if(kNiahSpecs.begin(), kNiahSpecs.end(),
                                    [&](const NiahSpec& s) { return s.name == request.info.name; });
  KVC_ASSERT(spec_it != kNiahSpecs.end());
  const NiahSpec& spec = *spec_it;
  Rng rng = request.rng(kStreamNeedles);

  // Keys, values and needles.
  const std::string_view kind = spec.uuid_values ? "uuids" : "numbers";
  std::set<std::string> used_keys, used_values;
  std::vector<std::string> keys;
  std::vector<std::vector<std::string>> values;
  std::vector<std::string> needles;
  for (int k = 0; k < spec.keys; ++k) {
    std::string key;
    do {
      key = spec.uuid_keys ? random_uuid(rng) : random_key_word(rng);
    } while (!used_keys.insert(key).second);
    keys.push_back(key);
    values.emplace_back();
    for (int v = 0; v < spec.values; ++v) {
      std::string value;
      do {
        value = spec.uuid_values ? random_uuid(rng) : random_digits(rng, 7);
      } while (!used_values.insert(value).second);
      needles.push_back(needle_sentence(kind, key, value));
      values.back().push_back(std::move(value));
    }
  }
  rng.shuffle(needles);

  // Queries and answers.
  const std::vector<size_t> queried = sample_without_replacement(
      rng, static_cast<size_t>(spec.keys), static_cast<size_t>(spec.queries));
  std::vector<std::string> answers;
  std::string query;
  for (size_t q = 0; q < queried.size(); ++q) {
    for (const std::string& v : values[queried[q]]) answers.push_back(v);
    if (q > 0) query += q + 1 == queried.size() ? ", and " : ", ";  // RULER's "a, b, and c"
    query += keys[queried[q]];
  }

  // Depths: one needle cycles through five depths; several take distinct RULER depths.
  std::vector<double> depths;
  double sample_depth = -1.0;
  if (needles.size() == 1) {
    sample_depth = one_needle_depth(request.index);
    depths.push_back(sample_depth);
  } else {
    const std::vector<double> all = ruler_depths();
    for (size_t i : sample_without_replacement(rng, all.size(), needles.size())) {
      depths.push_back(all[i]);
    }
    std::sort(depths.begin(), depths.end());
  }

  // RULER's wording: singular when exactly one value is asked for.
  const bool singular = spec.queries * spec.values == 1;
  const std::string item =
      singular ? std::string(kind.substr(0, kind.size() - 1)) : std::string(kind);
  const std::string head =
      singular ? fmt::format(
                     "A special magic {} is hidden within the following text. Make sure to "
                     "memorize it. I will quiz you about the {} afterwards.\n",
                     item, item)
               : fmt::format(
                     "Some special magic {} are hidden within the following text. Make "
                     "sure to memorize it. I will quiz you about the {} afterwards.\n",
                     item, item);
  const std::string question =
      singular
          ? fmt::format("\nWhat is the special magic {} for {} mentioned in the provided text?",
                        item, query)
          : fmt::format(
                "\nWhat are all the special magic {} for {} mentioned in the provided text?", item,
                query);
  std::string answer_prefix =
      fmt::format("The special magic {} for {} mentioned in the provided text {}", item, query,
                  singular ? "is" : "are");

  HaystackUnits haystack(request, spec, used_keys);
  const std::string_view separator = spec.haystack == Haystack::kAusten ? " " : "\n";
  auto build = [&](int64_t n) {
    const std::span<const std::string> units = haystack.first(n);
    const std::vector<size_t> at = insertion_boundaries(units, depths);
    return head + join_with_needles(units, needles, at, separator) + question;
  };
  return request.finish(1, haystack.max_units(), build, std::move(answer_prefix),
                        std::move(answers), sample_depth);
}

TaskSample generate_passkey(const TaskRequest& request) {
  Rng rng = request.rng(kStreamNeedles);
  const std::string key = random_digits(rng, 5);
  const std::vector<std::string> needle = {
      fmt::format("The pass key is {}. Remember it. {} is the pass key.", key, key)};
  const double depth = one_needle_depth(request.index);
  const std::vector<double> depths = {depth};
  std::vector<std::string> noise;
  auto build = [&](int64_t n) {
    noise.resize(static_cast<size_t>(n), std::string(kNoiseSentence));
    const std::vector<size_t> at = insertion_boundaries(noise, depths);
    return "There is an important info hidden inside a lot of irrelevant text. Find it and "
           "memorize them. I will quiz you about the important information there.\n" +
           join_with_needles(noise, needle, at, " ") + "\nWhat is the pass key?";
  };
  return request.finish(1, request.target_tokens, build, "The pass key is", {key}, depth);
}

}  // namespace kvc::eval
