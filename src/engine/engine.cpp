#include "engine/engine.h"

#include <omp.h>

#include <algorithm>
#include <cstring>

#include "compress/prefill_metrics.h"
#include "engine/sequence.h"
#include "util/error.h"
#include "util/timing.h"

namespace kvc {
namespace {

using Clock = std::chrono::steady_clock;

bool same_observer(const ObservationOptions& a, const ObservationOptions& b) {
  return a.kind == b.kind && a.full == b.full &&
         (a.full ? a.buffer == b.buffer : a.window == b.window);
}

// The observation a policy reads after prefill, or kNone for policies that read no metric.
ObservationOptions policy_observer(const CompressionConfig& c, int32_t last_position) {
  if (!c.compresses() || policy_info(c.policy).metric == MetricAccumulation::kNone) return {};
  return ObservationOptions{c.metric, c.observation_window, last_position, c.full_observation,
                            c.observation_buffer};
}

}  // namespace

const char* finish_reason_name(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStopToken: return "stop_token";
    case FinishReason::kMaxTokens: return "max_tokens";
    case FinishReason::kContextFull: return "context_full";
    case FinishReason::kCancelled: return "cancelled";
    case FinishReason::kShutdown: return "shutdown";
  }
  return "unknown";
}

const char* openai_finish_reason(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStopToken: return "stop";
    case FinishReason::kMaxTokens:
    case FinishReason::kContextFull: return "length";
    case FinishReason::kCancelled:
    case FinishReason::kShutdown: return "abort";
  }
  return "stop";
}

double RequestStats::prefill_tokens_per_second() const {
  return prefill_seconds > 0 ? prompt_tokens / prefill_seconds : 0.0;
}

double RequestStats::decode_tokens_per_second() const {
  const int32_t steps = generated_tokens > 0 ? generated_tokens - 1 : 0;
  return decode_seconds > 0 ? steps / decode_seconds : 0.0;
}

EngineConfig resolve_engine_config(const ModelConfig& model, EngineConfig config) {
  if (config.max_context <= 0) config.max_context = model.n_ctx_train;
  if (config.num_blocks <= 0) {
    const int64_t per_row = (config.max_context + config.block_size - 1) / config.block_size;
    config.num_blocks = static_cast<int32_t>(per_row * model.n_layer * model.n_head_kv);
  }
  if (config.threads <= 0) config.threads = omp_get_max_threads();
  config.max_running = std::clamp(config.max_running, 1, config.max_batch_tokens);
  return config;
}

Engine::Engine(const Model& model, const EngineConfig& config)
    : model_(model),
      config_(resolve_engine_config(model.config(), config)),
      cache_(KvCacheConfig{model.config().n_layer, model.config().n_head_kv,
                           model.config().head_dim, config_.block_size, config_.num_blocks,
                           config_.kv_storage, config_.poison_freed}),
      forward_(model, config_.max_batch_tokens, config_.max_context),
      inbox_(std::make_unique<Inbox>()) {
  metrics_.blocks_total = cache_.pool().num_blocks();
  update_shared_metrics();
}

Engine::~Engine() { stop(true); }

void Engine::validate(const Request& r) const {
  const ModelConfig& mc = model_.config();
  const auto n = static_cast<int64_t>(r.prompt.size());
  if (n == 0) fail("the prompt is empty");
  for (int32_t t : r.prompt) {
    if (t < 0 || t >= mc.n_vocab) fail("prompt token id {} is outside the vocabulary", t);
  }
  for (int32_t t : r.forced_tokens) {
    if (t < 0 || t >= mc.n_vocab) fail("forced token id {} is outside the vocabulary", t);
  }
  if (n + static_cast<int64_t>(r.forced_tokens.size()) >= config_.max_context) {
    fail("the prompt has {} tokens; the context holds {} (raise --ctx)", n, config_.max_context);
  }
  if (r.max_tokens < 0) fail("max_tokens must be >= 0, got {}", r.max_tokens);
  validate_compression_config(r.compression);
  const int64_t rows = static_cast<int64_t>(mc.n_layer) * mc.n_head_kv;
  const int64_t needed = rows * ((n + config_.block_size - 1) / config_.block_size);
  if (needed > cache_.pool().num_blocks()) {
    fail("the prompt needs {} KV blocks before compression; the budget has {} (raise "
         "--kv-budget)",
         needed, cache_.pool().num_blocks());
  }
}

RequestId Engine::submit(Request request) {
  CompressionConfig compression = request.compression;
  compression.group_size = model_.config().group_size();
  request.compression = compression;
  validate(request);
  auto s = std::make_unique<Sequence>();
  s->request = std::move(request);
  s->compression = compression;
  s->submitted = Clock::now();
  std::lock_guard lock(inbox_->mutex);
  s->id = inbox_->next_id++;
  const RequestId id = s->id;
  inbox_->submitted.push_back(std::move(s));
  inbox_->wake.notify_all();
  return id;
}

RequestId Engine::fork(RequestId parent, Request request) {
  request.compression.group_size = model_.config().group_size();
  validate_compression_config(request.compression);
  auto s = std::make_unique<Sequence>();
  s->compression = request.compression;
  s->request = std::move(request);
  s->parent = parent;
  s->submitted = Clock::now();
  std::lock_guard lock(inbox_->mutex);
  s->id = inbox_->next_id++;
  const RequestId id = s->id;
  inbox_->submitted.push_back(std::move(s));
  inbox_->wake.notify_all();
  return id;
}

void Engine::cancel(RequestId id) {
  std::lock_guard lock(inbox_->mutex);
  inbox_->cancelled.push_back(id);
  inbox_->wake.notify_all();
}

void Engine::release(RequestId held) {
  std::lock_guard lock(inbox_->mutex);
  inbox_->released.push_back(held);
  inbox_->wake.notify_all();
}

void Engine::absorb_inbox() {
  std::vector<std::unique_ptr<Sequence>> submitted;
  std::vector<RequestId> cancelled, released;
  {
    std::lock_guard lock(inbox_->mutex);
    submitted.swap(inbox_->submitted);
    cancelled.swap(inbox_->cancelled);
    released.swap(inbox_->released);
  }
  for (RequestId id : released) {
    const auto it = held_.find(id);
    if (it == held_.end()) continue;
    cache_.remove_sequence(it->second->cache_seq);
    held_.erase(it);
  }
  for (std::unique_ptr<Sequence>& s : submitted) {
    if (s->parent >= 0) {
      const auto parent = held_.find(s->parent);
      KVC_ASSERT(parent != held_.end() && "fork of a request that is not held");
      const Sequence& p = *parent->second;
      s->tokens = p.tokens;
      s->prompt_len = p.prompt_len;
      s->request.prompt = p.request.prompt;
    } else {
      s->tokens = s->request.prompt;
      s->prompt_len = static_cast<int32_t>(s->tokens.size());
    }
    s->sampler = Sampler(s->request.sampling);
    s->stats.prompt_tokens = s->prompt_len;
    s->arrival = next_arrival_++;
    waiting_.push_back(s.get());
    sequences_[s->id] = std::move(s);
  }
  for (RequestId id : cancelled) {
    const auto it = sequences_.find(id);
    if (it != sequences_.end()) it->second->cancel_requested = true;
  }
  for (auto& [id, s] : sequences_) {
    if (s->cancel_requested && s->phase != Sequence::Phase::kFinished) {
      finish(*s, FinishReason::kCancelled);
    }
  }
  erase_finished();
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
    s.logits = p.logits;
    s.observers = p.observers;  // post_prefill reads the parent's observation itself
    const ObservationOptions own = policy_observer(s.compression, s.prompt_len - 1);
    s.policy_observer = -1;
    for (size_t i = 0; i < s.observers.size() && own.kind != MetricAccumulation::kNone; ++i) {
      if (same_observer(s.observers[i], own)) s.policy_observer = static_cast<int32_t>(i);
    }
    if (own.kind != MetricAccumulation::kNone && s.policy_observer < 0) {
      fail("fork: the parent did not record the observation policy {} reads",
           policy_info(s.compression.policy).name);
    }
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
  const ObservationOptions own = policy_observer(s.compression, s.prompt_len - 1);
  if (own.kind != MetricAccumulation::kNone) {
    s.policy_observer = 0;
    s.observers.push_back(own);
  }
  for (ObservationOptions o : s.request.extra_observers) {
    o.last_position = s.prompt_len - 1;
    s.observers.push_back(o);
  }
  if (!s.observers.empty()) {
    s.observation.assign(s.observers.size() * mc.n_layer * mc.n_head *
                             static_cast<size_t>(s.prompt_len),
                         0.0f);
  }
  s.reserved_blocks = cache_.blocks_needed(s.cache_seq, s.prompt_len);
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
    const int64_t owned_before = cache_.owned_blocks(s.cache_seq);
    cache_.grow(s.cache_seq, e.n_tokens);
    if (s.reserved_blocks > 0) {
      s.reserved_blocks = std::max<int64_t>(
          0, s.reserved_blocks - (cache_.owned_blocks(s.cache_seq) - owned_before));
    }
    BatchSequence b;
    b.first_token = batch_.n_tokens();
    b.n_tokens = e.n_tokens;
    b.row_offset = static_cast<int32_t>(batch_.rows.size());
    b.per_query = s.decoding();
    b.metric = b.per_query && s.compression.compresses() ? s.compression.metric
                                                          : MetricAccumulation::kNone;
    if (!s.prompt_done && !s.observers.empty()) {
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
    const int32_t end = s.n_computed + e.n_tokens;
    const bool forced = s.prompt_done && s.n_computed < s.forced_end();
    for (int32_t i = s.n_computed; i < end; ++i) {
      batch_.tokens.push_back(s.tokens[static_cast<size_t>(i)]);
      batch_.positions.push_back(i);
      // Logits: every forced token; otherwise the newest known token, once its prompt (and
      // teacher forcing) is done, since that is where sampling continues.
      const bool newest = i + 1 == static_cast<int32_t>(s.tokens.size()) &&
                          (s.prompt_done || s.request.forced_tokens.empty());
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
    if (!s.prompt_done) metrics_.prompt_tokens += b.n_tokens;
    s.n_computed += b.n_tokens;
    if (!s.prompt_done && s.request.on_prefill_progress) {
      s.request.on_prefill_progress(s.n_computed, s.prompt_len);
    }
    s.stats.kv_bytes_peak = std::max(s.stats.kv_bytes_peak, cache_.bytes_owned(s.cache_seq));
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

void Engine::compress(Sequence& s, int64_t max_blocks, bool pressure) {
  const CompressionResult r =
      compress_sequence(cache_, s.cache_seq, s.prompt_len, s.compression, max_blocks);
  ++s.stats.compressions;
  s.stats.compress_seconds += r.plan_seconds + r.compact_seconds;
  if (s.stats.compressions == 1) s.stats.prefill_compression = r;
  ++metrics_.compressions;
  if (pressure) ++metrics_.pressure_compressions;
  metrics_.kvs_evicted += r.kvs_before - r.kvs_after;
  metrics_.compress_seconds += r.plan_seconds + r.compact_seconds;
}

void Engine::post_prefill(Sequence& s) {
  const ModelConfig& mc = model_.config();
  s.prompt_done = true;
  s.reserved_blocks = 0;
  if (s.parent < 0) {
    s.stats.prefill_seconds = seconds_since(s.scheduled);
  }
  if (s.compression.compresses()) {
    if (s.policy_observer >= 0) {
      const size_t per_observer = static_cast<size_t>(mc.n_layer) * mc.n_head * s.prompt_len;
      // A fork reads its parent's observation (held, and admitted in this same step).
      const std::vector<float>& observation =
          s.parent >= 0 ? held_.at(s.parent)->observation : s.observation;
      KVC_ASSERT(observation.size() >= (s.policy_observer + 1) * per_observer);
      const ObservationScores scores{observation.data() + s.policy_observer * per_observer,
                                     mc.n_layer, mc.n_head, s.prompt_len};
      write_prefill_metrics(cache_, s.cache_seq, scores, s.compression.group_size,
                            s.compression.full_observation ? 1 : s.compression.pool_kernel);
    }
    compress(s, INT64_MAX, false);
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
  if (!s.prompt_done && s.n_computed == s.prompt_len) post_prefill(s);
  if (s.n_computed < static_cast<int32_t>(s.tokens.size())) return;  // more to compute
  if (s.n_generated >= s.request.max_tokens) {
    finish(s, FinishReason::kMaxTokens);
    return;
  }
  const int32_t token = s.sampler.sample(s.logits);
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

void Engine::erase_finished() {
  const auto finished = [](const Sequence* s) { return s->phase == Sequence::Phase::kFinished; };
  running_.erase(std::remove_if(running_.begin(), running_.end(), finished), running_.end());
  waiting_.erase(std::remove_if(waiting_.begin(), waiting_.end(), finished), waiting_.end());
  for (auto it = sequences_.begin(); it != sequences_.end();) {
    if (it->second->phase != Sequence::Phase::kFinished) {
      ++it;
      continue;
    }
    if (it->second->cache_seq >= 0) held_[it->first] = std::move(it->second);
    it = sequences_.erase(it);
  }
}

bool Engine::step() {
  const auto start = Clock::now();
  absorb_inbox();
  if (running_.empty() && waiting_.empty()) {
    update_shared_metrics();
    return false;
  }
  const int64_t finished_before = metrics_.requests_finished;
  const std::vector<StepEntry> entries = schedule();
  bool progressed = !entries.empty();
  if (!entries.empty()) {
    run_batch(entries);
    for (const StepEntry& e : entries) advance(*e.seq);
    ++metrics_.steps;
  }
  // Forks admitted this step compress and sample without a forward pass of their own.
  for (Sequence* s : running_) {
    if (s->phase == Sequence::Phase::kRunning && s->parent >= 0 && !s->prompt_done) {
      advance(*s);
      progressed = true;
    }
  }
  if (!progressed && metrics_.requests_finished == finished_before) {
    // Nothing could run: the pool is taken by held sequences or by requests that cannot grow.
    // End one request rather than spin (the newest running one, else the first waiting one).
    Sequence* stuck = nullptr;
    for (auto it = running_.rbegin(); it != running_.rend() && stuck == nullptr; ++it) {
      if ((*it)->phase == Sequence::Phase::kRunning) stuck = *it;
    }
    if (stuck == nullptr && !waiting_.empty()) stuck = waiting_.front();
    if (stuck != nullptr) finish(*stuck, FinishReason::kContextFull);
  }
  erase_finished();
  metrics_.step_seconds += seconds_since(start);
  update_shared_metrics();
  return true;
}

void Engine::run_until_idle() {
  while (step()) {
  }
}

void Engine::start() {
  KVC_ASSERT(!thread_.joinable());
  thread_ = std::thread([this] {
    omp_set_num_threads(config_.threads);
    for (;;) {
      const bool worked = step();
      std::unique_lock lock(inbox_->mutex);
      if (inbox_->stopping && (inbox_->cancel_on_stop || !worked)) break;
      if (worked) continue;
      inbox_->wake.wait(lock, [&] {
        return inbox_->stopping || !inbox_->submitted.empty() || !inbox_->cancelled.empty() ||
               !inbox_->released.empty();
      });
      if (inbox_->stopping && inbox_->submitted.empty()) break;
    }
    // Stopping: drain or cancel what is left.
    bool cancel_all = false;
    {
      std::lock_guard lock(inbox_->mutex);
      cancel_all = inbox_->cancel_on_stop;
    }
    if (cancel_all) {
      absorb_inbox();
      for (auto& [id, s] : sequences_) finish(*s, FinishReason::kShutdown);
      erase_finished();
    } else {
      run_until_idle();
    }
    update_shared_metrics();
  });
}

void Engine::stop(bool cancel_in_flight) {
  {
    std::lock_guard lock(inbox_->mutex);
    inbox_->stopping = true;
    inbox_->cancel_on_stop = cancel_in_flight;
    inbox_->wake.notify_all();
  }
  if (thread_.joinable()) thread_.join();
}

void Engine::update_shared_metrics() {
  metrics_.running = static_cast<int64_t>(running_.size());
  metrics_.waiting = static_cast<int64_t>(waiting_.size());
  metrics_.blocks_used = cache_.pool().used_blocks();
  metrics_.blocks_free = cache_.pool().free_blocks();
  metrics_.kv_retained = 0;
  metrics_.kv_full = 0;
  const ModelConfig& mc = model_.config();
  for (const Sequence* s : running_) {
    if (s->cache_seq < 0) continue;
    metrics_.kv_retained += cache_.retained_kvs(s->cache_seq);
    metrics_.kv_full += static_cast<int64_t>(mc.n_layer) * mc.n_head_kv * s->n_computed;
  }
  std::lock_guard lock(metrics_mutex_);
  shared_metrics_ = metrics_;
}

EngineMetrics Engine::metrics() const {
  std::lock_guard lock(metrics_mutex_);
  return shared_metrics_;
}

std::span<const float> Engine::held_logits(RequestId held) const {
  const auto it = held_.find(held);
  KVC_ASSERT(it != held_.end());
  return it->second->logits;
}

}  // namespace kvc
