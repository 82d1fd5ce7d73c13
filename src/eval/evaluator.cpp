#include "eval/evaluator.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <memory>

#include "model/tokenizer/chat_template.h"
#include "engine/engine.h"
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

namespace {

// A window of the user's fidelity text (its tokens `ids`, without BOS): starts spread over the
// text by the golden ratio (per sample and seed), so samples differ whenever the text is longer
// than one window.
std::vector<int32_t> user_fidelity_window(const Tokenizer& tok, std::span<const int32_t> ids,
                                          const std::string& source, int32_t want, int32_t sample,
                                          uint64_t seed) {
  const int32_t bos = tok.add_bos() ? 1 : 0;
  const auto have = static_cast<int64_t>(ids.size());
  if (have + bos < want) {
    fail("fidelity text '{}' has {} tokens; a context plus continuation needs {}", source, have,
         want - bos);
  }
  const int64_t room = have + bos - want + 1;  // possible starts
  const double frac = std::fmod(0.6180339887 * sample + 0.137 * static_cast<double>(seed % 1000), 1.0);
  const auto start = static_cast<size_t>(std::min<int64_t>(room - 1, static_cast<int64_t>(frac * room)));
  std::vector<int32_t> tokens;
  if (bos) tokens.push_back(tok.bos());
  tokens.insert(tokens.end(), ids.begin() + static_cast<std::ptrdiff_t>(start),
                ids.begin() + static_cast<std::ptrdiff_t>(start + (want - bos)));
  return tokens;
}

}  // namespace

std::vector<int32_t> fidelity_tokens(const Model& model, const TextSources& texts,
                                     int32_t context, int32_t continuation, int32_t sample,
                                     uint64_t seed) {
  if (!texts.fidelity_text.empty()) {
    const Tokenizer& tok = model.tokenizer();
    return user_fidelity_window(tok, tok.encode(texts.fidelity_text, false), texts.fidelity_source,
                                context + continuation + 1, sample, seed);
  }
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

namespace {

// The observations every setting reads, each once (a prefill records them all).
std::vector<ObservationOptions> observers_of(std::span<const PolicyVariant> variants) {
  std::vector<ObservationOptions> out;
  for (const PolicyVariant& v : variants) {
    const CompressionConfig& c = v.config;
    if (c.compresses_during_prefill()) continue;  // prefills on its own
    for (const ObservationOptions& o : observations_read(c)) {
      const bool known = std::any_of(out.begin(), out.end(), [&](const ObservationOptions& x) {
        return same_observer(x, o);
      });
      if (!known) out.push_back(o);
    }
  }
  return out;
}

// own_prefill: the setting prefilled on its own (compression during prefill), so its peak is
// its own; a fork's peak includes the uncompressed prefill it was copied from.
ForkStats fork_stats(const RequestResult& r, const ModelConfig& mc, int32_t block_size,
                     size_t block_bytes, bool own_prefill) {
  const RequestStats& st = r.stats;
  const int64_t rows = static_cast<int64_t>(mc.n_layer) * mc.n_head_kv;
  ForkStats f;
  f.kvs_full = rows * st.prompt_tokens;
  f.bytes_full = static_cast<size_t>(rows * ((st.prompt_tokens + block_size - 1) / block_size)) *
                 block_bytes;
  f.retained_per_row = st.retained_after_prompt;
  f.compress_seconds = st.compress_seconds;
  if (st.compressions > 0) {
    f.kvs_kept = st.prefill_compression.kvs_after;
    f.bytes_kept = static_cast<size_t>(st.prefill_compression.blocks_after) * block_bytes;
  } else {
    f.kvs_kept = f.kvs_full;
    f.bytes_kept = f.bytes_full;
  }
  f.bytes_peak = own_prefill ? st.kv_bytes_peak : std::max(st.kv_bytes_peak, f.bytes_full);
  return f;
}

}  // namespace

void run_eval(const Model& model, const TextSources& texts, const EvalSettings& settings,
              const EvalCallbacks& callbacks) {
  validate(model, settings);
  const Tokenizer& tok = model.tokenizer();
  const ModelConfig& mc = model.config();
  // The user's fidelity text, tokenized once for every sample and checked before anything runs.
  std::vector<int32_t> user_text;
  if (!texts.fidelity_text.empty() && settings.fidelity_samples > 0 &&
      !settings.fidelity_lengths.empty()) {
    user_text = tok.encode(texts.fidelity_text, false);
    const int32_t longest =
        *std::max_element(settings.fidelity_lengths.begin(), settings.fidelity_lengths.end());
    const size_t have = user_text.size() + (tok.add_bos() ? 1 : 0);
    const auto need = static_cast<size_t>(longest + settings.continuation + 1);
    if (have < need) {
      fail("fidelity text '{}' has {} tokens; --fidelity-lengths {} with --continuation {} needs {}",
           texts.fidelity_source, have, longest, settings.continuation, need);
    }
  }
  const std::vector<int32_t> stop_tokens = tok.end_of_generation_ids();

  const PolicyVariant full = make_policy_variant("full", settings.variants.empty()
                                                             ? CompressionConfig{}
                                                             : settings.variants[0].config);
  std::vector<Setting> runs{{&full, 0}};
  for (const PolicyVariant& v : settings.variants) {
    for (int32_t b : settings.budgets) runs.push_back({&v, b});
  }

  // Users' tasks: prompts built and checked against the context before anything runs.
  const std::string_view chat_template = model.chat_template();
  std::vector<std::vector<int32_t>> user_prompts;
  int32_t max_context = 0;
  for (const UserTask& t : settings.user_tasks) {
    std::string text = t.input;
    if (t.chat) {
      const ChatMessage user{"user", t.input};
      text = apply_chat_template(chat_template, std::span(&user, 1), true);
    }
    user_prompts.push_back(tok.encode(text, true));
    const auto need = static_cast<int64_t>(user_prompts.back().size()) + t.max_new_tokens + 2;
    if (need > mc.n_ctx_train) {
      fail("tasks file line {}: the prompt has {} tokens; with max_new_tokens {} it exceeds the "
           "model's context of {}", t.line, user_prompts.back().size(), t.max_new_tokens,
           mc.n_ctx_train);
    }
    max_context = std::max(max_context, static_cast<int32_t>(need));
  }
  if (!settings.tasks.empty()) {
    for (int32_t len : settings.lengths) {
      max_context = std::max(max_context, len + kPromptOverhead + 128);
    }
  }
  for (int32_t len : settings.fidelity_lengths) {
    max_context = std::max(max_context, len + settings.continuation + 2);
  }
  max_context = std::min(max_context, mc.n_ctx_train);
  if (max_context == 0) return;  // nothing to run
  // The pool holds the held prefill, the settings' copies as they are made (each full-size
  // until its compression runs) and the compressed ones decoding side by side.
  constexpr int32_t kBlockSize = 16;
  constexpr int64_t kContextsInPool = 8;
  const int64_t per_context = static_cast<int64_t>(mc.n_layer) * mc.n_head_kv *
                              ((max_context + kBlockSize - 1) / kBlockSize);
  if (per_context * kContextsInPool > INT32_MAX) {
    fail("context {} is too long for one KV pool", max_context);
  }
  EngineConfig engine_config;
  engine_config.max_context = max_context;
  engine_config.block_size = kBlockSize;
  engine_config.num_blocks = static_cast<int32_t>(per_context * kContextsInPool);
  engine_config.poison_freed = settings.poison_kv;
  engine_config.kv_storage = settings.kv_storage;
  Engine engine(model, engine_config);
  // The f16 reference of fidelity runs when the settings store KVs otherwise: one full context.
  std::unique_ptr<Engine> f16_engine;
  const bool f16_reference =
      settings.kv_storage != KvStorageType::kF16 && settings.fidelity_samples > 0 &&
      !settings.fidelity_lengths.empty();
  if (f16_reference) {
    EngineConfig f16_config = engine_config;
    f16_config.kv_storage = KvStorageType::kF16;
    f16_config.num_blocks = static_cast<int32_t>(per_context);
    f16_engine = std::make_unique<Engine>(model, f16_config);
  }
  const size_t block_bytes = engine.cache().pool().block_bytes();
  const std::vector<ObservationOptions> observers = observers_of(settings.variants);

  const int64_t n_task_samples = static_cast<int64_t>(settings.tasks.size()) *
                                     static_cast<int64_t>(settings.lengths.size()) * settings.samples +
                                 static_cast<int64_t>(settings.user_tasks.size());
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
  // A setting starts from the shared prefill (a fork), or with compression during prefill
  // from a prefill of its own.
  const auto start_setting = [&](RequestId base, const std::vector<int32_t>& prompt,
                                 Request r) {
    if (r.compression.compresses_during_prefill()) {
      r.prompt = prompt;
      engine.submit(std::move(r));
    } else {
      engine.fork(base, std::move(r));
    }
  };
  // The shared prefill: held, recording every setting's observation.
  const auto prefill = [&](std::vector<int32_t> prompt) {
    Request base;
    base.prompt = std::move(prompt);
    base.max_tokens = 0;
    base.hold = true;
    base.extra_observers = observers;
    const RequestId id = engine.submit(std::move(base));
    engine.run_until_idle();
    return id;
  };

  // One task sample: the shared prefill, then every setting decodes its answer side by side.
  struct TaskJob {
    std::string task;
    int32_t length = 0;  // requested length (built-in) or the prompt's tokens (users' tasks)
    int32_t sample = 0;
    std::vector<int32_t> prompt;
    std::vector<std::string> answers;
    int32_t max_new_tokens = 32;
    AnswerMetric metric = AnswerMetric::kAll;
    double depth = -1.0;
  };
  const auto run_task = [&](const TaskJob& job) {
    const std::string label = fmt::format("{} {} #{}", job.task, job.length, job.sample);
    progress(label + " prefill");
    const RequestId base = prefill(job.prompt);
    std::vector<TaskRecord> records(runs.size());
    for (size_t k = 0; k < runs.size(); ++k) {
      const Setting& r = runs[k];
      Request fork;
      fork.compression = with_budget(*r.variant, r.budget);
      fork.max_tokens = job.max_new_tokens;
      fork.stop_tokens = stop_tokens;
      fork.on_finish = [&, k](const RequestResult& result) {
        TaskRecord& rec = records[k];
        rec.fork = fork_stats(result, mc, kBlockSize, block_bytes,
                                    runs[k].variant->config.compresses_during_prefill());
        rec.decode_seconds = result.stats.decode_seconds;
        rec.prediction = tok.decode(result.tokens, false);
        rec.generated_tokens = static_cast<int32_t>(result.tokens.size());
        ++done;
        progress(fmt::format("{} {}", label, setting_name(runs[k])));
      };
      start_setting(base, job.prompt, std::move(fork));
    }
    engine.run_until_idle();
    engine.release(base);
    for (size_t k = 0; k < runs.size(); ++k) {
      TaskRecord& rec = records[k];
      rec.task = job.task;
      rec.length = job.length;
      rec.sample = job.sample;
      rec.prompt_tokens = static_cast<int32_t>(job.prompt.size());
      rec.policy = runs[k].variant->name;
      rec.budget = runs[k].budget;
      rec.answers = job.answers;
      rec.metric = answer_metric_name(job.metric);
      rec.score = score_answer(job.metric, rec.prediction, rec.answers);
      rec.depth = job.depth;
      if (callbacks.on_task) callbacks.on_task(rec);
    }
  };

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
        run_task({task, length, i, tok.encode(text, true), sample.answers, sample.max_new_tokens,
                  AnswerMetric::kAll, sample.depth});
      }
    }
  }
  std::map<std::string, int32_t> user_counts;  // samples per user task name
  for (size_t i = 0; i < settings.user_tasks.size(); ++i) {
    const UserTask& t = settings.user_tasks[i];
    const auto n = static_cast<int32_t>(user_prompts[i].size());
    run_task({t.name, n, user_counts[t.name]++, user_prompts[i], t.answers, t.max_new_tokens,
              t.metric, -1.0});
  }

  const int32_t n_vocab = mc.n_vocab;
  std::vector<float> reference;
  for (int32_t length : settings.fidelity_lengths) {
    for (int32_t i = 0; i < settings.fidelity_samples; ++i) {
      const std::vector<int32_t> tokens =
          user_text.empty()
              ? fidelity_tokens(model, texts, length, settings.continuation, i, settings.seed)
              : user_fidelity_window(tok, user_text, texts.fidelity_source,
                                     length + settings.continuation + 1, i, settings.seed);
      const std::vector<int32_t> context(tokens.begin(), tokens.begin() + length);
      const std::vector<int32_t> forced(tokens.begin() + length,
                                        tokens.begin() + length + settings.continuation);
      const std::string label = fmt::format("fidelity {} #{}", length, i);
      progress(label + " prefill");
      const RequestId base = prefill(context);
      std::vector<FidelityRecord> records(runs.size());
      // The full cache first: its distributions are the reference of every other setting.
      reference.assign(static_cast<size_t>(settings.continuation) * n_vocab, 0.0f);
      if (f16_reference) {  // ... the f16 full cache's, then 'full' is compared like the rest
        Request r;
        r.prompt = context;
        r.max_tokens = 0;
        r.forced_tokens = forced;
        r.on_forced_logits = [&](std::span<const float> logits, int32_t first) {
          std::copy(logits.begin(), logits.end(), reference.begin() + first * n_vocab);
        };
        f16_engine->submit(std::move(r));
        f16_engine->run_until_idle();
      }
      for (size_t k = 0; k < runs.size(); ++k) {
        const Setting& r = runs[k];
        Request fork;
        fork.compression = with_budget(*r.variant, r.budget);
        fork.max_tokens = 0;
        fork.forced_tokens = forced;
        fork.on_forced_logits = [&, k](std::span<const float> logits, int32_t first) {
          const auto rows = static_cast<int32_t>(logits.size() / n_vocab);
          if (k == 0 && !f16_reference) {
            std::copy(logits.begin(), logits.end(), reference.begin() + first * n_vocab);
            return;
          }
          FidelityRecord& rec = records[k];
          for (int32_t j = 0; j < rows; ++j) {
            const int32_t t = first + j;
            const LogitComparison c = compare_logits(
                std::span(reference).subspan(static_cast<size_t>(t) * n_vocab, n_vocab),
                logits.subspan(static_cast<size_t>(j) * n_vocab, n_vocab), tokens[length + t + 1]);
            rec.kl += c.kl;
            rec.top1 += c.same_top1 ? 1.0 : 0.0;
            rec.nll += c.nll;
          }
        };
        fork.on_finish = [&, k](const RequestResult& result) {
          records[k].fork = fork_stats(result, mc, kBlockSize, block_bytes,
                                    runs[k].variant->config.compresses_during_prefill());
          ++done;
          progress(fmt::format("{} {}", label, setting_name(runs[k])));
        };
        start_setting(base, context, std::move(fork));
        // The reference must be complete before any other setting compares with it.
        if (k == 0) engine.run_until_idle();
      }
      engine.run_until_idle();
      engine.release(base);
      // The full cache compared with itself (it is the reference unless f16_reference).
      for (int32_t t = 0; t < settings.continuation && !f16_reference; ++t) {
        const auto row = std::span(reference).subspan(static_cast<size_t>(t) * n_vocab, n_vocab);
        const LogitComparison c = compare_logits(row, row, tokens[length + t + 1]);
        records[0].kl += c.kl;
        records[0].top1 += c.same_top1 ? 1.0 : 0.0;
        records[0].nll += c.nll;
      }
      for (size_t k = 0; k < runs.size(); ++k) {
        FidelityRecord& rec = records[k];
        rec.kl /= settings.continuation;
        rec.top1 /= settings.continuation;
        rec.nll /= settings.continuation;
        rec.length = length;
        rec.sample = i;
        rec.context_tokens = length;
        rec.continuation_tokens = settings.continuation;
        rec.policy = runs[k].variant->name;
        rec.budget = runs[k].budget;
        if (callbacks.on_fidelity) callbacks.on_fidelity(rec);
      }
    }
  }
  engine.run_until_idle();  // frees the last released prefill
  progress("done");
}

}  // namespace kvc::eval
