// `kvc eval`: long-context tasks and fidelity on real text, every policy at every budget from
// one shared prefill per sample. The prompt runs through the engine once, held, recording in
// the same pass every observation any setting reads (window L2, window L1, full L1, ...); each
// setting is then an engine fork of it: a copy of the prefilled sequence, compressed exactly as
// the engine compresses after prefill, decoded (tasks) or teacher-forced (fidelity) side by
// side with the other settings in batched steps. A fork's first token comes from the
// uncompressed prefill's logits, as for every request.
//
// Tasks (eval/tasks.h): RULER's synthetic recipes over the Debian texts. The prompt is the
// model's chat template around the task input, then RULER's answer prefix; the answer is
// decoded greedily until end of turn or the task's token limit and scored by string match.
//
// Fidelity: a context of `length` tokens from an Austen novel, then `continuation` tokens of
// the same text teacher-forced over the compressed cache. Against the full f16 cache's
// distributions at the same positions: mean KL(full || policy), top-1 agreement, and the
// perplexity of the real continuation.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "eval/policy_variants.h"
#include "eval/tasks.h"
#include "eval/user_tasks.h"
#include "kernels/paged_attention.h"
#include "model/model.h"

namespace kvc::eval {

struct EvalSettings {
  std::vector<std::string> tasks;        // task names (eval/tasks.h); empty: no built-in task
  std::vector<UserTask> user_tasks;      // --tasks-file (eval/user_tasks.h), after the built-ins
  std::vector<int32_t> lengths;          // prompt lengths in tokens
  int32_t samples = 4;                   // per (task, length)
  uint64_t seed = 0;
  std::vector<PolicyVariant> variants;   // compressing settings (full is always run too)
  std::vector<int32_t> budgets;          // C: KVs per head row, averaged over rows
  int32_t fidelity_samples = 2;          // per fidelity length; 0: no fidelity runs
  std::vector<int32_t> fidelity_lengths; // context tokens
  int32_t continuation = 128;            // teacher-forced tokens scored
  bool poison_kv = false;
  // How every setting stores its KVs (kv/block_pool.h). With anything but f16, the fidelity
  // reference is the f16 full cache, prefilled and teacher-forced in an engine of its own, so
  // 'full' measures what the storage alone costs and every other setting what compression and
  // storage cost together.
  KvStorageType kv_storage = KvStorageType::kF16;
};

// What one setting kept, right after its compression.
struct ForkStats {
  int64_t kvs_kept = 0;           // KVs the fork holds after compression (all rows)
  int64_t kvs_full = 0;           // KVs of the uncompressed prefill
  size_t bytes_kept = 0;          // physical bytes of the fork's blocks after compression
  size_t bytes_full = 0;          // physical bytes of the uncompressed prefill's blocks
  // Most bytes the setting owns at once: the uncompressed prefill (which every setting without
  // compression during prefill needs first), or for a ':chunkN' setting its own peak.
  size_t bytes_peak = 0;
  double compress_seconds = 0.0;  // metric write + plan + compaction
  std::vector<int32_t> retained_per_row;  // [n_layer * n_head_kv] after compression
};

struct TaskRecord {
  std::string task;
  int32_t length = 0;  // requested
  int32_t sample = 0;
  int32_t prompt_tokens = 0;
  std::string policy;  // variant name
  int32_t budget = 0;  // 0 for full
  double score = 0.0;  // in [0, 1]: string_match_all for built-in tasks, else the line's metric
  std::string metric = "all";
  std::string prediction;
  std::vector<std::string> answers;
  double depth = -1.0;
  ForkStats fork;
  double decode_seconds = 0.0;
  int32_t generated_tokens = 0;
};

struct FidelityRecord {
  int32_t length = 0;
  int32_t sample = 0;
  int32_t context_tokens = 0;
  int32_t continuation_tokens = 0;
  std::string policy;
  int32_t budget = 0;
  double kl = 0.0;    // mean over positions of KL(full || policy), nats
  double top1 = 0.0;  // fraction of positions whose argmax equals the full cache's
  double nll = 0.0;   // mean negative log-likelihood of the real next token, nats
  ForkStats fork;
};

struct EvalCallbacks {
  std::function<void(const TaskRecord&)> on_task;
  std::function<void(const FidelityRecord&)> on_fidelity;
  // (units done, units total, what is running); a unit is one (sample, setting) pair.
  std::function<void(int64_t, int64_t, const std::string&)> on_progress;
};

// Validates the settings against the model (throws kvc::Error), then runs everything.
void run_eval(const Model& model, const TextSources& texts, const EvalSettings& settings,
              const EvalCallbacks& callbacks);

// The fidelity sample: `context` tokens of an Austen novel (or of texts.fidelity_text when
// set) followed by `continuation + 1` tokens of the same text (the first continuation token is
// predicted by the prefill and is not scored; the others are). Deterministic in (sample, seed).
std::vector<int32_t> fidelity_tokens(const Model& model, const TextSources& texts,
                                     int32_t context, int32_t continuation, int32_t sample,
                                     uint64_t seed);

// The summed-probability helpers behind FidelityRecord, exposed for tests. logits rows of n_vocab.
struct LogitComparison {
  double kl = 0.0;
  bool same_top1 = false;
  double nll = 0.0;
};
LogitComparison compare_logits(std::span<const float> reference, std::span<const float> candidate,
                               int32_t target);

}  // namespace kvc::eval
