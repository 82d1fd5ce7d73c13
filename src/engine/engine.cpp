#include "engine/engine.h"

#include <omp.h>

#include <algorithm>

#include "engine/sequence.h"
#include "util/error.h"
#include "util/timing.h"

namespace kvc {
namespace {

using Clock = std::chrono::steady_clock;

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
  if (kv_row_bytes(config.kv_storage, model.head_dim) == 0) {
    fail("KV storage q8_0 needs head_dim to be a multiple of 32; this model's is {}",
         model.head_dim);
  }
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
  const bool chunked = r.compression.compresses_during_prefill();
  const int32_t chunk = r.compression.compress_chunk;
  if (chunked && (r.hold || !r.extra_observers.empty())) {
    fail("compression during prefill (compress_chunk) cannot hold a sequence for forks");
  }
  const int64_t needed = prefill_blocks(r.compression, n);
  if (needed > cache_.pool().num_blocks()) {
    if (chunked && n > chunk) {
      fail("the prompt needs {} KV blocks (its budget plus one chunk of {} tokens on every head "
           "row); the pool has {} (raise --kv-budget or lower the chunk, compress_chunk)",
           needed, chunk, cache_.pool().num_blocks());
    }
    fail("the prompt needs {} KV blocks before compression; the budget has {} (raise "
         "--kv-budget{})",
         needed, cache_.pool().num_blocks(),
         r.compression.compresses()
             ? ", or compress during prefill: --compress-chunk, \"compress_chunk\" in a request"
             : "");
  }
}

RequestId Engine::submit(Request request) {
  request.compression.group_size = model_.config().group_size();
  validate(request);
  return enqueue(std::move(request), -1);
}

RequestId Engine::fork(RequestId parent, Request request) {
  request.compression.group_size = model_.config().group_size();
  validate_compression_config(request.compression);
  if (request.compression.compresses_during_prefill()) {
    fail("a fork starts from a finished prefill: compression during prefill needs a request "
         "of its own");
  }
  return enqueue(std::move(request), parent);
}

RequestId Engine::enqueue(Request request, RequestId parent) {
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
