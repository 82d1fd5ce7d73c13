// The engine's scheduling rule (stated in full in engine.h): decode tokens first, making room
// for them by compressing before preempting; then admission; then prefill chunks in what is
// left of the step's token budget.
#include <algorithm>

#include "compress/budget.h"
#include "engine/engine.h"
#include "engine/sequence.h"
#include "util/error.h"

namespace kvc {

int64_t Engine::prefill_blocks(const CompressionConfig& c, int64_t prompt_len) const {
  const ModelConfig& mc = model_.config();
  const int64_t rows = static_cast<int64_t>(mc.n_layer) * mc.n_head_kv;
  const int64_t bs = config_.block_size;
  const int64_t uncompressed = rows * ((prompt_len + bs - 1) / bs);
  if (!c.compresses_during_prefill() || prompt_len <= c.compress_chunk) {
    return uncompressed;
  }
  // After each chunk's compression a sequence owns at most its chunk budget then (<= that
  // budget at the prompt's end: C never shrinks as the prompt grows; >= the final budget),
  // unless the KVs no policy evicts (protected window and sinks of every row) need more; the
  // next chunk adds at most ceil(chunk / bs) blocks to each row.
  const int64_t budget = target_blocks(c.chunk_budget(), prompt_len, cache_, -1);
  const int64_t kept =
      c.planner.protected_window + std::max(c.planner.sink_tokens, c.streaming_sinks);
  const int64_t floor = rows * ((kept + bs - 1) / bs);
  const int64_t chunk = rows * ((c.compress_chunk + bs - 1) / bs);
  return std::min(uncompressed, std::max(budget, floor) + chunk);
}

int64_t Engine::admission_blocks(const Sequence& s) const {
  if (s.parent >= 0) return cache_.owned_blocks(held_.at(s.parent)->cache_seq);  // its copy
  // The prompt and any generated tokens it replays after a preemption, uncompressed, or the
  // prompt's peak with compression during prefill plus the replayed tokens.
  const ModelConfig& mc = model_.config();
  const int64_t rows = static_cast<int64_t>(mc.n_layer) * mc.n_head_kv;
  const int64_t bs = config_.block_size;
  const auto n = static_cast<int64_t>(s.tokens.size());
  const int64_t uncompressed = rows * ((n + bs - 1) / bs);
  if (!s.compression.compresses_during_prefill()) return uncompressed;
  const int64_t replay = n - s.prompt_len;
  return std::min(uncompressed,
                  prefill_blocks(s.compression, s.prompt_len) + rows * ((replay + bs - 1) / bs));
}

int64_t Engine::unreserved_free_blocks() const {
  int64_t reserved = 0;
  for (const Sequence* s : running_) reserved += s->reserved_blocks;
  return cache_.pool().free_blocks() - reserved;
}

bool Engine::make_room_for_decode() {
  const auto decoders = [&] {
    std::vector<Sequence*> d;
    for (Sequence* s : running_) {
      if (s->phase == Sequence::Phase::kRunning && s->decoding() &&
          s->n_computed < static_cast<int32_t>(s->tokens.size())) {
        d.push_back(s);
      }
    }
    return d;
  };
  const auto shortfall = [&] {
    int64_t need = 0;
    for (const Sequence* s : decoders()) need += cache_.blocks_needed(s->cache_seq, 1);
    return need - unreserved_free_blocks();
  };
  int64_t short_by = shortfall();
  if (short_by <= 0) return true;

  // 1. Compress before preempting: the sequences that may compress further share the
  // shortfall in proportion to the blocks they own (each gives up the same fraction). Freeing
  // a row's partly filled tail block leaves the row ending at a block boundary, so it needs a
  // new block for the next token: when the exact shares did not make room, a second pass also
  // frees one block per head row of each sequence, which holds the next block_size tokens even
  // if every row then ends at a boundary.
  std::vector<Sequence*> compressible;
  for (Sequence* s : decoders()) {
    if (s->compression.compresses() && s->compression.continual) compressible.push_back(s);
  }
  const int64_t rows_per_seq =
      static_cast<int64_t>(model_.config().n_layer) * model_.config().n_head_kv;
  for (int32_t pass = 0; pass < 2 && short_by > 0 && !compressible.empty(); ++pass) {
    int64_t owned_total = 0;
    for (const Sequence* s : compressible) owned_total += cache_.owned_blocks(s->cache_seq);
    for (Sequence* s : compressible) {
      const int64_t owned = cache_.owned_blocks(s->cache_seq);
      const int64_t share = (short_by * owned + owned_total - 1) / owned_total;
      compress(*s, owned - share - (pass == 1 ? rows_per_seq : 0), /*pressure=*/true);
    }
    hold_admission_ = true;
    short_by = shortfall();
  }

  // 2. Preempt the newest request (recomputed later) until the rest fits; a lone sequence
  // that still cannot grow ends with kContextFull.
  while (short_by > 0) {
    Sequence* victim = nullptr;
    int32_t live = 0;
    for (Sequence* s : running_) {
      if (s->phase != Sequence::Phase::kRunning) continue;
      ++live;
      const bool preemptible = s->parent < 0 && s->request.forced_tokens.empty();
      if (preemptible && (victim == nullptr || s->arrival > victim->arrival)) victim = s;
    }
    if (victim == nullptr || live <= 1) {
      for (Sequence* s : decoders()) {
        if (cache_.blocks_needed(s->cache_seq, 1) > 0) finish(*s, FinishReason::kContextFull);
      }
      return false;
    }
    preempt(*victim);
    hold_admission_ = true;
    short_by = shortfall();
  }
  return true;
}

void Engine::preempt(Sequence& s) {
  cache_.remove_sequence(s.cache_seq);
  s.cache_seq = -1;
  s.phase = Sequence::Phase::kWaiting;
  s.n_computed = 0;
  s.prompt_done = false;
  s.reserved_blocks = 0;
  s.observation.clear();
  s.probe_tokens.clear();  // start_sequence probes again
  ++s.stats.preemptions;
  ++metrics_.preemptions;
  running_.erase(std::find(running_.begin(), running_.end(), &s));
  // Preempted newest first and each pushed to the front: the queue keeps arrival order.
  waiting_.push_front(&s);
}

void Engine::admit() {
  if (running_.empty()) hold_admission_ = false;
  if (hold_admission_) return;
  int64_t decode_need = 0;
  for (const Sequence* s : running_) {
    if (s->phase == Sequence::Phase::kRunning && s->decoding()) {
      decode_need += cache_.blocks_needed(s->cache_seq, 1);
    }
  }
  while (!waiting_.empty() && static_cast<int32_t>(running_.size()) < config_.max_running) {
    Sequence& s = *waiting_.front();
    // first come, first served
    if (admission_blocks(s) > unreserved_free_blocks() - decode_need) break;
    waiting_.pop_front();
    start_sequence(s);
    running_.push_back(&s);
  }
}

std::vector<Engine::StepEntry> Engine::schedule() {
  make_room_for_decode();
  admit();
  std::vector<StepEntry> entries;
  int32_t budget = config_.max_batch_tokens;
  int64_t decode_need = 0;
  for (Sequence* s : running_) {
    if (s->phase != Sequence::Phase::kRunning || !s->decoding()) continue;
    if (s->n_computed >= static_cast<int32_t>(s->tokens.size())) continue;
    entries.push_back({s, 1});
    decode_need += cache_.blocks_needed(s->cache_seq, 1);
    --budget;
  }
  KVC_ASSERT(budget >= 0);  // max_running <= max_batch_tokens
  for (Sequence* s : running_) {
    if (budget == 0) break;
    if (s->phase != Sequence::Phase::kRunning || s->decoding()) continue;
    if (s->parent >= 0 && !s->prompt_done) continue;  // a fork compresses before it runs
    int32_t n = std::min(s->chunk_left(), budget);
    if (n <= 0) continue;
    // A prompt chunk fits its reservation (prefill_blocks() is its peak); teacher-forced tokens
    // have none: take what the free blocks allow.
    const int64_t avail = (s->prompt_done ? 0 : s->reserved_blocks) +
                          std::max<int64_t>(0, unreserved_free_blocks() - decode_need);
    while (n > 0 && cache_.blocks_needed(s->cache_seq, n) > avail) n /= 2;
    if (n == 0) continue;
    decode_need += std::max<int64_t>(
        0, cache_.blocks_needed(s->cache_seq, n) - (s->prompt_done ? 0 : s->reserved_blocks));
    entries.push_back({s, n});
    budget -= n;
  }
  return entries;
}

}  // namespace kvc
