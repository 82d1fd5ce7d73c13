// What a step does to each sequence: admission (a fresh cache sequence, or a fork's copy), the
// batched forward pass and its logits, the end of the prompt (metrics and compression),
// sampling and stop rules, and the end of a request. The scheduling decisions are in
// scheduler.cpp, the entry points and the loop in engine.cpp.
#include <algorithm>

#include "compress/prefill_metrics.h"
#include "engine/engine.h"
#include "engine/sequence.h"
#include "engine/word_spans.h"
#include "util/error.h"
#include "util/timing.h"

namespace kvc {
namespace {

using Clock = std::chrono::steady_clock;

// The prompt's first tokens the tail probe runs before its last ones: the attention sinks
// (StreamingLLM, Xiao et al. 2023: four initial tokens hold the attention a model puts there),
// so the probe's queries are computed as they are in the whole prompt, which has them.
constexpr int32_t kProbeSinks = 4;

// The index of the observer equal to `o` in `observers`, or -1.
int32_t find_observer(const std::vector<ObservationOptions>& observers,
                      const ObservationOptions& o) {
  for (size_t i = 0; i < observers.size(); ++i) {
    if (same_observer(observers[i], o)) return static_cast<int32_t>(i);
  }
  return -1;
}

}  // namespace

bool same_observer(const ObservationOptions& a, const ObservationOptions& b) {
  return a.kind == b.kind && a.full == b.full &&
         (a.full ? a.buffer == b.buffer : a.window == b.window);
}

std::vector<ObservationOptions> observations_read(const CompressionConfig& c) {
  if (!c.compresses() || policy_info(c.policy).metric == MetricAccumulation::kNone) return {};
  std::vector<ObservationOptions> out{ObservationOptions{
      c.metric, c.observation_window, -1, c.full_observation, c.observation_buffer}};
  if (c.policy == KvPolicy::kKvCompress && c.planner.marginal_error &&
      c.metric != MetricAccumulation::kAbsolute) {
    ObservationOptions mass = out[0];
    mass.kind = MetricAccumulation::kAbsolute;
    out.push_back(mass);
  }
  return out;
}

void Engine::start_sequence(Sequence& s) {
  const ModelConfig& mc = model_.config();
  s.phase = Sequence::Phase::kRunning;
  s.was_scheduled = false;
  if (s.parent >= 0) {
    // A fork: a copy of the parent's KVs, last logits and observations; its compression runs
    // now, on the copy (advance -> post_prefill).
    const Sequence& p = *held_.at(s.parent);
    s.cache_seq = cache_.copy_sequence(p.cache_seq);
    KVC_ASSERT(s.cache_seq >= 0);  // admit() checked the free blocks
    s.n_computed = p.n_computed;
    s.compress_at = s.prompt_len;
    s.logits = p.logits;
    s.observers = p.observers;  // post_prefill reads the parent's observation itself
    const std::vector<ObservationOptions> own = observations_read(s.compression);
    std::vector<int32_t> found;
    for (const ObservationOptions& o : own) {
      found.push_back(find_observer(s.observers, o));
      if (found.back() < 0) {
        fail("fork: the parent did not record the observation policy {} reads",
             policy_info(s.compression.policy).name);
      }
    }
    s.policy_observer = found.empty() ? -1 : found[0];
    s.mass_observer = found.size() > 1 ? found[1] : -1;
    s.scheduled = Clock::now();
    s.was_scheduled = true;
    return;
  }
  s.cache_seq = cache_.add_sequence();
  s.n_computed = 0;
  s.prompt_done = false;
  s.forced_done = 0;
  s.observers.clear();
  s.policy_observer = -1;
  s.mass_observer = -1;
  // With compression during prefill the policy's window observes the end of each chunk.
  s.compress_at = s.compression.compresses_during_prefill()
                      ? std::min(s.prompt_len, s.compression.compress_chunk)
                      : s.prompt_len;
  const std::vector<ObservationOptions> own = observations_read(s.compression);
  for (ObservationOptions o : own) {
    o.last_position = s.compress_at - 1;
    s.observers.push_back(o);
  }
  s.policy_observer = own.empty() ? -1 : 0;
  s.mass_observer = own.size() > 1 ? 1 : -1;
  for (ObservationOptions o : s.request.extra_observers) {
    o.last_position = s.prompt_len - 1;
    s.observers.push_back(o);
  }
  if (!s.observers.empty()) {
    s.observation.assign(s.observers.size() * mc.n_layer * mc.n_head *
                             static_cast<size_t>(s.prompt_len),
                         0.0f);
  }
  s.probe_tokens.clear();
  s.probe_done = 0;
  s.probe_queries.clear();
  s.probe_positions.clear();
  if (s.compression.tail_probe && s.compression.compresses_during_prefill() &&
      s.prompt_len > s.compression.compress_chunk) {
    // The probe is one chunk: the prompt's first tokens (the attention sinks its queries would
    // otherwise lack), then its last ones; so it fits the prompt's peak of blocks. Its observers
    // are the final pass's (the last observation_window queries).
    const int32_t chunk = s.compression.compress_chunk;
    const int32_t sinks = std::min(kProbeSinks, chunk - s.compression.observation_window);
    for (int32_t i = 0; i < sinks; ++i) s.probe_tokens.push_back(i);
    for (int32_t i = s.prompt_len - chunk + sinks; i < s.prompt_len; ++i) {
      s.probe_tokens.push_back(i);
    }
    const int32_t n = std::min(s.compression.observation_window, s.compression.compress_chunk);
    for (int32_t p = s.prompt_len - n; p < s.prompt_len; ++p) s.probe_positions.push_back(p);
    s.probe_queries.assign(static_cast<size_t>(mc.n_layer) * n * mc.n_head * mc.head_dim, 0.0f);
  }
  s.prefill_blocks = prefill_blocks(s.compression, s.prompt_len);
  update_reservation(s);
}

void Engine::end_probe(Sequence& s) {
  // The probe's KVs go (the prompt runs from its start); its captured queries stay.
  cache_.remove_sequence(s.cache_seq);
  s.cache_seq = cache_.add_sequence();
  s.probe_tokens.clear();
  update_reservation(s);
}

void Engine::observe_probe(Sequence& s) {
  const ModelConfig& mc = model_.config();
  std::vector<PagedHeadRow> rows;
  for (int32_t l = 0; l < mc.n_layer; ++l) {
    for (int32_t h = 0; h < mc.n_head_kv; ++h) rows.push_back(cache_.row_view(s.cache_seq, l, h));
  }
  const size_t per_observer = static_cast<size_t>(mc.n_layer) * mc.n_head * s.prompt_len;
  for (const int32_t o : {s.policy_observer, s.mass_observer}) {
    if (o < 0) continue;
    forward_.observe(cache_.pool().view(), rows, s.probe_queries.data(),
                     s.probe_positions.data(), static_cast<int32_t>(s.probe_positions.size()),
                     s.observers[static_cast<size_t>(o)].kind,
                     s.observation.data() + static_cast<size_t>(o) * per_observer, s.prompt_len);
  }
}

void Engine::update_reservation(Sequence& s) {
  s.reserved_blocks = s.prompt_done || s.parent >= 0
                          ? 0
                          : std::max<int64_t>(
                                0, s.prefill_blocks - cache_.owned_blocks(s.cache_seq));
}

void Engine::run_batch(const std::vector<StepEntry>& entries) {
  const ModelConfig& mc = model_.config();
  const int32_t rows_per_seq = mc.n_layer * mc.n_head_kv;
  batch_.clear();
  for (const StepEntry& e : entries) {
    Sequence& s = *e.seq;
    if (!s.was_scheduled) {
      s.was_scheduled = true;
      s.scheduled = Clock::now();
      s.stats.queue_seconds = std::chrono::duration<double>(s.scheduled - s.submitted).count();
    }
    cache_.grow(s.cache_seq, e.n_tokens);
    update_reservation(s);
    BatchSequence b;
    b.first_token = batch_.n_tokens();
    b.n_tokens = e.n_tokens;
    b.row_offset = static_cast<int32_t>(batch_.rows.size());
    b.per_query = s.decoding();
    b.metric = b.per_query && s.compression.compresses() ? s.compression.metric
                                                          : MetricAccumulation::kNone;
    b.accumulate_mass = s.compression.planner.marginal_error;
    if (s.probing()) {
      b.captured = s.probe_queries.data();
      b.capture_from = s.probe_positions.front();
      b.n_capture = static_cast<int32_t>(s.probe_positions.size());
    } else if (!s.prompt_done && !s.observers.empty()) {
      b.observers = s.observers.data();
      b.n_observers = static_cast<int32_t>(s.observers.size());
      b.observation = s.observation.data();
      b.observation_stride = s.prompt_len;
    }
    for (int32_t l = 0; l < mc.n_layer; ++l) {
      for (int32_t h = 0; h < mc.n_head_kv; ++h) {
        batch_.rows.push_back(cache_.row_view(s.cache_seq, l, h));
      }
    }
    const bool forced = s.prompt_done && s.n_computed < s.forced_end();
    const bool probing = s.probing();
    for (int32_t j = 0; j < e.n_tokens; ++j) {
      const int32_t i = probing ? s.probe_tokens[static_cast<size_t>(s.probe_done + j)]
                                : s.n_computed + j;
      batch_.tokens.push_back(s.tokens[static_cast<size_t>(i)]);
      batch_.positions.push_back(i);
      // Logits: every forced token; otherwise the newest known token, once its prompt (and
      // teacher forcing) is done, since that is where sampling continues; none for the probe.
      const bool newest = i + 1 == static_cast<int32_t>(s.tokens.size()) &&
                          (s.prompt_done || s.request.forced_tokens.empty()) && !probing;
      batch_.want_logits.push_back(forced || newest ? 1 : 0);
    }
    batch_.sequences.push_back(b);
  }
  KVC_ASSERT(static_cast<int32_t>(batch_.rows.size()) ==
             rows_per_seq * static_cast<int32_t>(entries.size()));

  metrics_.peak_blocks_used =
      std::max<int64_t>(metrics_.peak_blocks_used, cache_.pool().used_blocks());
  const auto start = Clock::now();
  const std::span<const float> logits = forward_.run(cache_.pool().view(), batch_);
  const double forward_seconds = seconds_since(start);
  metrics_.forward_seconds += forward_seconds;
  metrics_.attention_seconds = forward_.attention_seconds();

  const auto n_vocab = static_cast<size_t>(mc.n_vocab);
  size_t row = 0;
  for (size_t i = 0; i < entries.size(); ++i) {
    Sequence& s = *entries[i].seq;
    const BatchSequence& b = batch_.sequences[i];
    const bool forced = s.prompt_done && s.n_computed < s.forced_end();
    size_t first_row = row;
    for (int32_t t = b.first_token; t < b.first_token + b.n_tokens; ++t) row += batch_.want_logits[t];
    const size_t rows = row - first_row;
    if (forced && rows > 0) {
      if (s.request.on_forced_logits) {
        s.request.on_forced_logits(logits.subspan(first_row * n_vocab, rows * n_vocab),
                                   s.forced_done);
      }
      s.forced_done += static_cast<int32_t>(rows);
    }
    if (rows > 0) {
      const auto last = logits.subspan((row - 1) * n_vocab, n_vocab);
      s.logits.assign(last.begin(), last.end());
    }
    s.stats.kv_bytes_peak = std::max(s.stats.kv_bytes_peak, cache_.bytes_owned(s.cache_seq));
    if (s.probing()) {
      s.probe_done += b.n_tokens;
    } else {
      if (!s.prompt_done) metrics_.prompt_tokens += b.n_tokens;
      s.n_computed += b.n_tokens;
    }
    if (!s.prompt_done && s.request.on_prefill_progress) {
      const auto [done, total] = s.prefill_progress();
      s.request.on_prefill_progress(done, total);
    }
  }
  int64_t decode_tokens = 0;
  for (const BatchSequence& b : batch_.sequences) decode_tokens += b.per_query ? b.n_tokens : 0;
  metrics_.peak_batch = std::max(metrics_.peak_batch, decode_tokens);
  metrics_.decode_tokens += decode_tokens;
  metrics_.decode_steps += decode_tokens > 0 ? 1 : 0;
  if (decode_tokens == batch_.n_tokens()) {
    metrics_.decode_only_seconds += forward_seconds;
    metrics_.decode_only_tokens += decode_tokens;
  }
}

CompressionResult Engine::compress(Sequence& s, int64_t max_blocks, bool pressure,
                                   bool between_chunks) {
  // A compression rate applies to the tokens seen so far (the prompt, or its chunks so far).
  const int64_t tokens = s.prompt_done ? s.prompt_len : s.n_computed;
  CompressionConfig config = s.compression;
  if (between_chunks) config.budget = config.chunk_budget();
  const CompressionResult r = compress_sequence(cache_, s.cache_seq, tokens, config, max_blocks);
  ++s.stats.compressions;
  s.stats.compress_seconds += r.plan_seconds + r.compact_seconds;
  ++metrics_.compressions;
  if (pressure) ++metrics_.pressure_compressions;
  metrics_.kvs_evicted += r.kvs_before - r.kvs_after;
  metrics_.compress_seconds += r.plan_seconds + r.compact_seconds;
  return r;
}

void Engine::write_observed_metrics(Sequence& s, bool final_pass) {
  if (s.policy_observer < 0) return;
  const ModelConfig& mc = model_.config();
  const size_t per_observer = static_cast<size_t>(mc.n_layer) * mc.n_head * s.prompt_len;
  // A fork reads its parent's observation (held, and admitted in this same step).
  const std::vector<float>& observation =
      s.parent >= 0 ? held_.at(s.parent)->observation : s.observation;
  KVC_ASSERT(observation.size() >= (s.policy_observer + 1) * per_observer);
  const ObservationScores scores{observation.data() + s.policy_observer * per_observer,
                                 mc.n_layer, mc.n_head, s.prompt_len};
  // Word spans are a property of the prompt: computed once, by the sequence that owns it
  // (a fork reads its parent's, as it reads the parent's observation).
  Sequence& owner = s.parent >= 0 ? *held_.at(s.parent) : s;
  if (s.compression.word_spans && owner.word_spans.empty()) {
    owner.word_spans = prompt_word_spans(model_.tokenizer(), owner.request.prompt);
  }
  const MetricMerge merge = s.compression.full_observation ? MetricMerge::kAdd
                            : final_pass                   ? MetricMerge::kReplace
                                                           : MetricMerge::kMax;
  write_prefill_metrics(
      cache_, s.cache_seq, scores, s.compression.group_size,
      s.compression.full_observation ? 1 : s.compression.pool_kernel,
      s.compression.word_spans ? std::span<const int32_t>(owner.word_spans) : std::span<const int32_t>(),
      merge, s.compression.pool_successors ? PoolReach::kSuccessors : PoolReach::kBothSides);
  // The KVs' attention mass, for the marginal-error rule that reads it: L1 sums (the policy's
  // own when its metric is L1, observations_read).
  if (s.compression.planner.marginal_error) {
    const int32_t mass_from = s.mass_observer >= 0 ? s.mass_observer : s.policy_observer;
    const ObservationScores mass{observation.data() + mass_from * per_observer, mc.n_layer,
                                 mc.n_head, s.prompt_len};
    write_prefill_mass(cache_, s.cache_seq, mass, s.compression.group_size, merge);
  }
}

void Engine::compress_prefill_chunk(Sequence& s) {
  if (!s.probe_positions.empty()) observe_probe(s);
  write_observed_metrics(s);
  compress(s, INT64_MAX, false, true);
  // The observation is slot-indexed and compaction moved slots: the next chunk starts afresh
  // (its scores meet the metric this pass left, docs/design.md §5).
  std::fill(s.observation.begin(), s.observation.end(), 0.0f);
  s.compress_at = std::min(s.prompt_len, s.n_computed + s.compression.compress_chunk);
  for (const int32_t o : {s.policy_observer, s.mass_observer}) {
    if (o >= 0) s.observers[static_cast<size_t>(o)].last_position = s.compress_at - 1;
  }
  update_reservation(s);
}

void Engine::post_prefill(Sequence& s) {
  const ModelConfig& mc = model_.config();
  s.prompt_done = true;
  s.reserved_blocks = 0;
  if (s.parent < 0) {
    s.stats.prefill_seconds = seconds_since(s.scheduled);
  }
  if (s.compression.compresses()) {
    const int64_t rows = static_cast<int64_t>(mc.n_layer) * mc.n_head_kv;
    write_observed_metrics(s, true);
    CompressionResult r = compress(s, INT64_MAX, false);
    if (s.compression.compresses_during_prefill()) {
      // Report against the uncompressed prompt, not the last chunk.
      r.kvs_before = rows * s.prompt_len;
      r.blocks_before = rows * ((s.prompt_len + config_.block_size - 1) / config_.block_size);
    }
    s.stats.prefill_compression = r;
  }
  s.stats.retained_after_prompt.clear();
  for (int32_t l = 0; l < mc.n_layer; ++l) {
    for (int32_t h = 0; h < mc.n_head_kv; ++h) {
      s.stats.retained_after_prompt.push_back(cache_.row(s.cache_seq, l, h).length);
    }
  }
  // A held request keeps its observations for its forks.
  if (!s.request.hold) {
    s.observation.clear();
    s.observation.shrink_to_fit();
  }
  if (!s.request.forced_tokens.empty()) {
    s.tokens.insert(s.tokens.end(), s.request.forced_tokens.begin(),
                    s.request.forced_tokens.end());
  }
}

void Engine::advance(Sequence& s) {
  if (s.phase != Sequence::Phase::kRunning) return;
  if (s.probing()) {
    if (s.chunk_left() == 0) end_probe(s);
    return;
  }
  if (!s.prompt_done && s.n_computed == s.prompt_len) {
    post_prefill(s);
  } else if (!s.prompt_done && s.n_computed == s.compress_at) {
    compress_prefill_chunk(s);
  }
  if (s.n_computed < static_cast<int32_t>(s.tokens.size())) return;  // more to compute
  if (s.n_generated >= s.request.max_tokens) {
    finish(s, FinishReason::kMaxTokens);
    return;
  }
  const int32_t token = s.sampler.sample(s.logits, s.tokens);
  s.tokens.push_back(token);
  ++s.n_generated;
  ++metrics_.generated_tokens;
  if (s.n_generated == 1) {
    s.first_token = Clock::now();
    s.stats.first_token_seconds = std::chrono::duration<double>(s.first_token - s.submitted).count();
  }
  const std::vector<int32_t>& stops = s.request.stop_tokens;
  if (s.request.on_token && !s.request.on_token(token)) {
    finish(s, FinishReason::kCancelled);
  } else if (std::find(stops.begin(), stops.end(), token) != stops.end()) {
    finish(s, FinishReason::kStopToken);
  } else if (s.n_generated >= s.request.max_tokens) {
    finish(s, FinishReason::kMaxTokens);
  } else if (static_cast<int32_t>(s.tokens.size()) > config_.max_context) {
    finish(s, FinishReason::kContextFull);
  } else {
    const int32_t interval = s.compression.interval;
    const int32_t steps = s.n_generated - 1;
    if (s.compression.compresses() && interval > 0 && steps > 0 && steps % interval == 0) {
      compress(s, INT64_MAX, false);
    }
  }
}

void Engine::finish(Sequence& s, FinishReason reason) {
  if (s.phase == Sequence::Phase::kFinished) return;
  const ModelConfig& mc = model_.config();
  s.finish = reason;
  RequestResult result;
  result.id = s.id;
  result.finish = reason;
  result.tokens.assign(s.tokens.end() - s.n_generated, s.tokens.end());
  s.stats.generated_tokens = s.n_generated;
  if (s.n_generated > 0) s.stats.decode_seconds = seconds_since(s.first_token);
  if (s.cache_seq >= 0) {
    s.stats.kv_retained = cache_.retained_kvs(s.cache_seq);
    s.stats.kv_bytes = cache_.bytes_owned(s.cache_seq);
    const int64_t rows = static_cast<int64_t>(mc.n_layer) * mc.n_head_kv;
    const int64_t blocks_per_row = (s.n_computed + config_.block_size - 1) / config_.block_size;
    s.stats.full_cache_bytes =
        static_cast<size_t>(rows * blocks_per_row) * cache_.pool().block_bytes();
    s.stats.retained_per_row.clear();
    for (int32_t l = 0; l < mc.n_layer; ++l) {
      for (int32_t h = 0; h < mc.n_head_kv; ++h) {
        s.stats.retained_per_row.push_back(cache_.row(s.cache_seq, l, h).length);
      }
    }
  }
  const bool hold = s.request.hold && s.cache_seq >= 0 && reason != FinishReason::kCancelled &&
                    reason != FinishReason::kShutdown;
  if (s.cache_seq >= 0 && !hold) {
    cache_.remove_sequence(s.cache_seq);
    s.cache_seq = -1;
  }
  s.reserved_blocks = 0;
  s.phase = Sequence::Phase::kFinished;
  result.stats = s.stats;
  ++metrics_.requests_finished;
  hold_admission_ = false;  // a request finished: memory pressure may have eased
  if (s.request.on_finish) s.request.on_finish(result);
}

}  // namespace kvc
