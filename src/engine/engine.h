// The engine: one KV cache, one forward pass, one scheduler and one step loop for every client
// (kvc generate, bench, eval and serve).
//
// Scheduling rule (one step; engine/scheduler.cpp):
//   1. Decode first: every running sequence past its prompt contributes one token. If the KV
//      pool cannot hold those tokens, the compressing sequences are compressed further, the
//      shortfall shared in proportion to the blocks each owns (every one gives up the same
//      fraction of its memory; if compaction left rows needing a new block, a second pass
//      also frees one block per head row of each); new prefills are then held until a
//      running request finishes;
//      only if that is not enough is the newest request preempted (its blocks freed; it is
//      re-queued at the front and recomputed later: the prompt as a prefill, then its
//      generated tokens replayed one per step, so greedy output does not change).
//   2. Then prefill: waiting requests are admitted first come, first served while the running
//      count is below max_running and their prompt fits the unreserved free blocks (an
//      admitted prompt's blocks are reserved until it is prefilled and compressed).
//   3. Prefill chunks of admitted requests fill what is left of the step's token budget
//      (max_batch_tokens), mixed with the decode tokens in one forward pass.
//   4. After the step: a prompt that is done is compressed to its request's budget, sampling,
//      stop rules and interval compression run per sequence. With compression during prefill
//      (CompressionConfig::compress_chunk), a prompt is also compressed back to its budget
//      after each chunk, so it is admitted, reserved and checked against the pool for its
//      budget plus one chunk instead of its whole length (prefill_blocks()). With the tail
//      probe (CompressionConfig::tail_probe) the prompt's last chunk runs first, within that
//      same reservation; its KVs are dropped and its last queries observe every pass between
//      chunks (docs/design.md §5).
//
// Threads: submit(), fork(), cancel(), release() and metrics() may be called from any thread;
// step() and run_until_idle() only from one thread at a time (the engine thread after
// start()). All model work runs on the thread that steps, which drives the OpenMP pool.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "engine/request.h"
#include "kv/paged_kv_cache.h"
#include "model/forward.h"
#include "model/model.h"

namespace kvc {

struct EngineConfig {
  int32_t max_context = 0;        // per sequence: prompt + output tokens; 0: the model's
  int32_t max_batch_tokens = 256; // token budget of one step (decode tokens + prefill chunks)
  int32_t max_running = 64;       // sequences admitted at once (at most max_batch_tokens)
  int32_t block_size = 16;
  int32_t num_blocks = 0;         // KV pool; 0: one full context on every head row
  KvStorageType kv_storage = KvStorageType::kF16;
  bool poison_freed = false;      // NaN-fill free/dead KV slots (debugging, tests)
  int32_t threads = 0;            // OpenMP threads of the stepping thread; 0: current default
};

// Resolves zeros in `config` against the model (context length, blocks for a full context).
EngineConfig resolve_engine_config(const ModelConfig& model, EngineConfig config);

// What a compression setting's prefill must observe, last_position unset: [] for settings
// that read no metric, else the policy's observation, then the same queries' L1 sums when
// the marginal-error rule needs the KVs' attention mass and the policy's own sums are not
// L1 already (PlannerOptions::marginal_error).
std::vector<ObservationOptions> observations_read(const CompressionConfig& c);
// True when two observers record the same sums (last_position aside): one prefill's
// observation then serves both.
bool same_observer(const ObservationOptions& a, const ObservationOptions& b);

// Counters since start and the state now (a copy; safe from any thread).
struct EngineMetrics {
  int64_t running = 0;
  int64_t waiting = 0;
  int64_t blocks_total = 0;
  int64_t blocks_used = 0;
  int64_t blocks_free = 0;
  int64_t kv_retained = 0;         // KVs held by running sequences
  int64_t kv_full = 0;             // KVs a full cache would hold for the same sequences
  int64_t kvs_evicted = 0;         // by every compression pass
  int64_t compressions = 0;
  int64_t pressure_compressions = 0;  // passes forced by a full pool (step 1 above)
  int64_t preemptions = 0;
  int64_t requests_finished = 0;
  int64_t prompt_tokens = 0;       // prompt tokens prefilled (recomputation included)
  int64_t generated_tokens = 0;
  int64_t steps = 0;
  int64_t peak_batch = 0;          // most decode tokens in one step
  int64_t decode_tokens = 0;       // decode tokens over all steps
  int64_t decode_steps = 0;        // steps with at least one decode token
  int64_t peak_blocks_used = 0;    // most KV blocks owned at once (after a step's growth)
  double step_seconds = 0.0;       // total wall time in step()
  double forward_seconds = 0.0;    // of which the forward pass
  double attention_seconds = 0.0;  // of which paged attention (and KV stores)
  double compress_seconds = 0.0;   // of which compression
  // Steps that ran decode tokens only: their time and tokens (batched decode throughput).
  double decode_only_seconds = 0.0;
  int64_t decode_only_tokens = 0;
};

class Engine {
 public:
  Engine(const Model& model, const EngineConfig& config);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  const EngineConfig& config() const { return config_; }
  const Model& model() const { return model_; }

  // Queues a request. Throws kvc::Error when it can never run (empty prompt, prompt longer
  // than the context, a prompt that needs more blocks than the whole pool, bad compression
  // settings). Thread-safe.
  RequestId submit(Request request);
  // A request that starts from a copy of a held, finished request's sequence (its prompt, last
  // logits and observations) instead of a prefill: `kvc eval` runs every policy on one prefill.
  // The child's compression runs when it is admitted, on the copy. Release the parent only
  // after its forks have finished (asserted). Thread-safe.
  RequestId fork(RequestId parent, Request request);
  // Cancels a queued or running request (finish kCancelled; its blocks are freed at the next
  // step). Unknown or finished ids are ignored. Thread-safe.
  void cancel(RequestId id);
  // Frees a held request's sequence. Thread-safe.
  void release(RequestId held);

  // One scheduler step (at most one forward pass). Returns false when there is nothing to do.
  bool step();
  // Steps until every queued and running request has finished.
  void run_until_idle();

  // Runs the step loop on a thread of its own until stop(); requests then finish as they
  // would (drain) or with kShutdown (cancel_in_flight).
  void start();
  void stop(bool cancel_in_flight);

  EngineMetrics metrics() const;
  // The last logits of a held request, [n_vocab]. Only between steps on the stepping thread.
  std::span<const float> held_logits(RequestId held) const;
  // Only between steps on the stepping thread.
  const PagedKvCache& cache() const { return cache_; }

 private:
  struct Sequence;
  struct Inbox;
  struct StepEntry {
    Sequence* seq;
    int32_t n_tokens;
  };

  // engine.cpp: entry points, inbox, loop, metrics
  RequestId enqueue(Request request, RequestId parent);  // parent -1: not a fork
  void absorb_inbox();
  void validate(const Request& request) const;
  void erase_finished();
  void update_shared_metrics();
  // step.cpp: what a step does to each sequence
  void start_sequence(Sequence& s);  // admitted: cache sequence, reservation / fork copy
  void run_batch(const std::vector<StepEntry>& entries);
  void advance(Sequence& s);         // after a step: post-prefill, sampling, finish
  void post_prefill(Sequence& s);
  void compress_prefill_chunk(Sequence& s);
  void end_probe(Sequence& s);       // the tail probe ran: drop its KVs, keep its queries
  void observe_probe(Sequence& s);   // the probe's queries observe the rows before a pass
  // final_pass: the pass after the prompt's last token, whose window alone ranks the KVs
  // (MetricMerge::kReplace; a no-op difference without chunks, where every metric is 0).
  void write_observed_metrics(Sequence& s, bool final_pass = false);
  void update_reservation(Sequence& s);
  // between_chunks: a pass between prefill chunks, to CompressionConfig::chunk_budget().
  CompressionResult compress(Sequence& s, int64_t max_blocks, bool pressure,
                             bool between_chunks = false);
  void finish(Sequence& s, FinishReason reason);
  // scheduler.cpp: what runs in a step
  std::vector<StepEntry> schedule();
  bool make_room_for_decode();
  void preempt(Sequence& s);
  void admit();
  int64_t unreserved_free_blocks() const;
  // Most blocks a prompt of prompt_len tokens owns at once before its last compression: all of
  // it uncompressed; with compression during prefill at most the budget at the prompt's end
  // (or the KVs no policy evicts, when more) plus one chunk on every head row.
  int64_t prefill_blocks(const CompressionConfig& c, int64_t prompt_len) const;
  // Free blocks a waiting request needs to be admitted.
  int64_t admission_blocks(const Sequence& s) const;

  const Model& model_;
  EngineConfig config_;
  PagedKvCache cache_;
  ForwardPass forward_;
  ForwardBatch batch_;

  std::map<RequestId, std::unique_ptr<Sequence>> sequences_;  // every live request
  std::deque<Sequence*> waiting_;   // FCFS; preempted requests go to the front
  std::vector<Sequence*> running_;  // admission order
  std::map<RequestId, std::unique_ptr<Sequence>> held_;
  bool hold_admission_ = false;     // set under memory pressure, cleared when one finishes
  int64_t next_arrival_ = 0;

  std::unique_ptr<Inbox> inbox_;
  EngineMetrics metrics_;           // stepping thread's copy
  mutable std::mutex metrics_mutex_;
  EngineMetrics shared_metrics_;    // published after every step
  std::thread thread_;
};

}  // namespace kvc
