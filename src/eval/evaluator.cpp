#include "eval/evaluator.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "model/tokenizer/chat_template.h"
#include "engine/sampler.h"
#include "util/error.h"
#include "util/timing.h"

namespace kvc::eval {
namespace {

constexpr int32_t kPromptOverhead = 96;  // chat template + answer prefix beyond the task input

// log(sum(exp(x))) over a row, in double.
double log_sum_exp(std::span<const float> x) {
  const double m = *std::max_element(x.begin(), x.end());
  double s = 0.0;
  for (float v : x) s += std::exp(static_cast<double>(v) - m);
  return m + std::log(s);
}

// The variants run per sample: full first, then every compressing variant at every budget.
struct Setting {
  const PolicyVariant* variant;
  int32_t budget;
};

void validate(const Model& model, const EvalSettings& s) {
  const int32_t ctx = model.config().n_ctx_train;
  for (const std::string& t : s.tasks) task_info(t);  // throws on unknown names
  if (!s.tasks.empty() && s.lengths.empty()) fail("no task lengths given");
  for (int32_t len : s.tasks.empty() ? std::vector<int32_t>{} : s.lengths) {
    if (len < 256) fail("task length {} is too short (at least 256 tokens)", len);
    if (len + kPromptOverhead + 128 > ctx) {
      fail("task length {} does not fit the model's context of {} tokens", len, ctx);
    }
  }
  if (s.samples < 1) fail("--samples must be >= 1");
  if (s.fidelity_samples < 0) fail("--fidelity-samples must be >= 0");
  if (s.continuation < 1 || s.continuation > 255) {
    fail("--continuation must be in [1, 255], got {}", s.continuation);
  }
  for (int32_t len : s.fidelity_lengths) {
    if (len < 16) fail("fidelity length {} is too short (at least 16 tokens)", len);
    if (len + s.continuation + 2 > ctx) {
      fail("fidelity length {} + {} continuation tokens do not fit the model's context of {}",
           len, s.continuation, ctx);
    }
  }
  if (s.budgets.empty() && !s.variants.empty()) fail("no budgets given");
  for (int32_t b : s.budgets) {
    if (b < 1) fail("budget {} must be >= 1 KV per head row", b);
  }
  for (const PolicyVariant& v : s.variants) {
    if (!v.config.compresses()) fail("'full' is always evaluated; list only compressing policies");
  }
}

}  // namespace

LogitComparison compare_logits(std::span<const float> reference, std::span<const float> candidate,
                               int32_t target) {
  KVC_ASSERT(reference.size() == candidate.size() && !reference.empty());
  KVC_ASSERT(target >= 0 && static_cast<size_t>(target) < reference.size());
  const double lse_r = log_sum_exp(reference);
  const double lse_c = log_sum_exp(candidate);
  LogitComparison c;
  for (size_t i = 0; i < reference.size(); ++i) {
    const double lr = reference[i] - lse_r;
    const double lc = candidate[i] - lse_c;
    c.kl += std::exp(lr) * (lr - lc);
  }
  c.kl = std::max(0.0, c.kl);  // rounding can leave -1e-12 for identical rows
  c.same_top1 = argmax(reference) == argmax(candidate);
  c.nll = lse_c - candidate[static_cast<size_t>(target)];
  return c;
}

std::vector<int32_t> fidelity_tokens(const Model& model, const TextSources& texts,
                                     int32_t context, int32_t continuation, int32_t sample,
                                     uint64_t seed) {
  if (texts.austen.empty()) fail("fidelity needs the Austen novels (r-cran-janeaustenr)");
  const std::string& novel = texts.austen[static_cast<size_t>(sample) % texts.austen.size()];
  // A start spread over the first 70% of the novel, different per sample and seed, moved to
  // the next paragraph so the context begins with whole text.
  const double frac = std::fmod(0.05 + 0.29 * (sample / static_cast<int32_t>(texts.austen.size())) +
                                    0.137 * static_cast<double>(seed % 1000),
                                0.7);
  size_t start = static_cast<size_t>(frac * static_cast<double>(novel.size()));
  const size_t para = novel.find("\n\n", start);
  start = para == std::string::npos ? start : para + 2;
  const Tokenizer& tok = model.tokenizer();
  const int32_t want = context + continuation + 1;
  std::vector<int32_t> tokens;
  if (tok.add_bos()) tokens.push_back(tok.bos());
  // ~4 characters per token in English prose; take generously and cut.
  const size_t chars = static_cast<size_t>(want) * 8;
  if (start + chars > novel.size()) start = novel.size() > chars ? novel.size() - chars : 0;
  const std::vector<int32_t> ids = tok.encode(std::string_view(novel).substr(start, chars), false);
  tokens.insert(tokens.end(), ids.begin(), ids.end());
  if (static_cast<int32_t>(tokens.size()) < want) {
    fail("the novel is too short for {} fidelity tokens", want);
  }
  tokens.resize(static_cast<size_t>(want));
  return tokens;
}

void run_eval(const Model& model, const TextSources& texts, const EvalSettings& settings,
              const EvalCallbacks& callbacks) {
  validate(model, settings);
  const Tokenizer& tok = model.tokenizer();
  const std::vector<int32_t> stop_tokens = tok.end_of_generation_ids();

  const PolicyVariant full = make_policy_variant("full", settings.variants.empty()
                                                             ? CompressionConfig{}
                                                             : settings.variants[0].config);
  std::vector<Setting> runs{{&full, 0}};
  for (const PolicyVariant& v : settings.variants) {
    for (int32_t b : settings.budgets) runs.push_back({&v, b});
  }

  int32_t max_context = 0;
  if (!settings.tasks.empty()) {
    for (int32_t len : settings.lengths) {
      max_context = std::max(max_context, len + kPromptOverhead + 128);
    }
  }
  for (int32_t len : settings.fidelity_lengths) {
    max_context = std::max(max_context, len + settings.continuation + 2);
  }
  max_context = std::min(max_context, model.config().n_ctx_train);
  if (max_context == 0) return;  // nothing to run
  SharedPrefill shared(model, max_context, settings.variants, settings.poison_kv);

  const int64_t n_task_samples = static_cast<int64_t>(settings.tasks.size()) *
                                 static_cast<int64_t>(settings.lengths.size()) * settings.samples;
  const int64_t n_fidelity_samples =
      static_cast<int64_t>(settings.fidelity_lengths.size()) * settings.fidelity_samples;
  const int64_t total = (n_task_samples + n_fidelity_samples) * static_cast<int64_t>(runs.size());
  int64_t done = 0;
  const auto progress = [&](const std::string& what) {
    if (callbacks.on_progress) callbacks.on_progress(done, total, what);
  };
  const auto setting_name = [](const Setting& r) {
    return r.budget == 0 ? r.variant->name : fmt::format("{} C={}", r.variant->name, r.budget);
  };

  const std::string_view chat_template = model.chat_template();
  const TokenCounter count = [&](std::string_view text) {
    return static_cast<int64_t>(tok.encode(text, false).size());
  };
  for (const std::string& task : settings.tasks) {
    for (int32_t length : settings.lengths) {
      for (int32_t i = 0; i < settings.samples; ++i) {
        const TaskSample sample = generate_task_sample(task, length, settings.seed, i, texts, count);
        const ChatMessage user{"user", sample.input};
        const std::string text =
            apply_chat_template(chat_template, std::span(&user, 1), true) + sample.answer_prefix;
        const std::vector<int32_t> prompt = tok.encode(text, true);
        const std::string label = fmt::format("{} {} #{}", task, length, i);
        progress(label + " prefill");
        const int32_t first = argmax(shared.prefill(prompt));
        for (const Setting& r : runs) {
          progress(fmt::format("{} {}", label, setting_name(r)));
          TaskRecord rec;
          const SequenceId fork = shared.fork(*r.variant, r.budget, &rec.fork);
          const auto start = std::chrono::steady_clock::now();
          const std::vector<int32_t> out =
              shared.greedy(fork, first, sample.max_new_tokens, stop_tokens);
          rec.decode_seconds = seconds_since(start);
          shared.release(fork);
          rec.task = task;
          rec.length = length;
          rec.sample = i;
          rec.prompt_tokens = static_cast<int32_t>(prompt.size());
          rec.policy = r.variant->name;
          rec.budget = r.budget;
          rec.prediction = tok.decode(out, false);
          rec.answers = sample.answers;
          rec.score = string_match_all(rec.prediction, rec.answers);
          rec.depth = sample.depth;
          rec.generated_tokens = static_cast<int32_t>(out.size());
          ++done;
          if (callbacks.on_task) callbacks.on_task(rec);
        }
      }
    }
  }

  const int32_t n_vocab = model.config().n_vocab;
  std::vector<float> reference;
  for (int32_t length : settings.fidelity_lengths) {
    for (int32_t i = 0; i < settings.fidelity_samples; ++i) {
      const std::vector<int32_t> tokens =
          fidelity_tokens(model, texts, length, settings.continuation, i, settings.seed);
      const std::span<const int32_t> context(tokens.data(), static_cast<size_t>(length));
      const std::span<const int32_t> forced(tokens.data() + length,
                                            static_cast<size_t>(settings.continuation));
      const std::string label = fmt::format("fidelity {} #{}", length, i);
      progress(label + " prefill");
      shared.prefill(context);
      for (const Setting& r : runs) {
        progress(fmt::format("{} {}", label, setting_name(r)));
        FidelityRecord rec;
        const SequenceId fork = shared.fork(*r.variant, r.budget, &rec.fork);
        const std::span<const float> logits = shared.score(fork, forced);
        if (r.budget == 0) reference.assign(logits.begin(), logits.end());
        for (int32_t t = 0; t < settings.continuation; ++t) {
          const size_t row = static_cast<size_t>(t) * n_vocab;
          const LogitComparison c =
              compare_logits(std::span(reference).subspan(row, n_vocab),
                             logits.subspan(row, n_vocab), tokens[length + t + 1]);
          rec.kl += c.kl;
          rec.top1 += c.same_top1 ? 1.0 : 0.0;
          rec.nll += c.nll;
        }
        shared.release(fork);
        rec.kl /= settings.continuation;
        rec.top1 /= settings.continuation;
        rec.nll /= settings.continuation;
        rec.length = length;
        rec.sample = i;
        rec.context_tokens = length;
        rec.continuation_tokens = settings.continuation;
        rec.policy = r.variant->name;
        rec.budget = r.budget;
        ++done;
        if (callbacks.on_fidelity) callbacks.on_fidelity(rec);
      }
    }
  }
  progress("done");
}

}  // namespace kvc::eval
