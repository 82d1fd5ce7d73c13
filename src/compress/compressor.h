// One compression pass over one sequence: policy (plan which KVs go) then mechanism (compact
// the rows and free their trailing blocks). Runs between model steps only.
//
// When compression runs (docs/design.md §5) is the engine's decision; this file only says how.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "compress/baseline_planners.h"
#include "compress/budget.h"
#include "compress/kv_policy.h"
#include "compress/kvcompress_planner.h"
#include "kernels/paged_attention.h"
#include "kv/paged_kv_cache.h"

namespace kvc {

// Observing queries of the prefill window metric: the paper's runs (and every named policy)
// use 8; `auto` uses 32, which covers a chat prompt's whole question and not only the
// template's generation prompt that fills most of the last 8 (docs/quality.md, "A wider
// observation window").
inline constexpr int32_t kPaperObservationWindow = 8;
inline constexpr int32_t kAutoObservationWindow = 32;

struct CompressionConfig {
  KvPolicy policy = KvPolicy::kFull;
  CacheBudget budget{CacheBudget::kMaxCacheTokens, 128.0, 128};
  PlannerOptions planner;          // protected window and sinks of every policy but streamingllm
  MetricAccumulation metric = MetricAccumulation::kSquared;  // L2 (default) or L1 (kAbsolute)
  int32_t observation_window = kPaperObservationWindow;  // KVC-w: the last w queries observe
  bool full_observation = false;   // KVC-full: every query observes KVs >= buffer older
  int32_t observation_buffer = 10;
  int32_t pool_kernel = 7;         // max-pool of the window metric (1: none); full: none
  // Word spans: every prompt token scores the best pooled score of the whitespace-delimited
  // span it belongs to (a number, an identifier, a word split into pieces), so a span the
  // observing queries point at is kept or evicted whole (docs/design.md §2).
  bool word_spans = false;
  bool pool_successors = false;    // the pool lends a score to the next k/2 positions only
  // Compression during prefill (docs/design.md §5): every `compress_chunk` prompt tokens the
  // chunk's last observation_window queries observe and the sequence is compressed back to
  // its budget, so a prompt only needs the budget plus one chunk of KV memory. 0: compress
  // once, after the whole prompt (the paper's method).
  int32_t compress_chunk = 0;
  // Between chunks, compress to this many times the budget instead of the budget itself; the
  // pass after the prompt's last chunk, whose observing queries see the prompt's end (usually
  // the question), still compresses to the budget. A prompt then needs factor x budget + one
  // chunk of KV memory, and the final pass chooses among factor x more candidates: KVs that
  // only the question makes important have factor x the chance to still be there.
  double chunk_budget_factor = 1.0;
  // The tail probe (docs/design.md §5): before a chunked prefill, the prompt's last chunk runs
  // alone at its own positions and its last observation_window queries are kept (its KVs are
  // dropped); every pass between chunks then also lets those queries observe, so a KV that the
  // prompt's end (usually the question) attends to is kept before the question's chunk runs.
  // Costs one extra chunk of prefill; no extra KV memory (the probe fits the prompt's peak).
  // Applies with compress_chunk only (a no-op otherwise); `auto` turns it on.
  bool tail_probe = false;
  bool continual = true;           // compress when a decode step would run out of blocks
  int32_t interval = 0;            // also compress every `interval` decode steps (0: never)
  // Baselines (compress/baseline_planners.h):
  int32_t streaming_sinks = 4;     // attention sinks of streamingllm (its default 4) and random
  uint64_t random_seed = 0;        // random policy
  double ada_safeguard = 0.2;      // ada-snapkv: per-head floor, fraction of the mean head budget
  // SnapKV/PyramidKV reference code repeats KVs per query head under GQA, so its budget C
  // keeps group_size * C KVs per KV head; set to reproduce the paper's equal-C tables.
  bool charge_repeated_kvs = false;
  int32_t group_size = 1;          // query heads per KV head (the engine sets it from the model)

  bool compresses() const { return policy != KvPolicy::kFull; }
  bool compresses_during_prefill() const { return compresses() && compress_chunk > 0; }
  // The budget of a pass between prefill chunks: `budget` scaled by chunk_budget_factor.
  CacheBudget chunk_budget() const;
};

// Throws kvc::Error naming the bad option (values come from the CLI or requests). h2o, snapkv,
// pyramidkv and ada-snapkv read L1 attention (their papers use probabilities): they require
// metric == kAbsolute. streamingllm and random read no metric (the engine still needs one set
// to run its prefill pass, so a metric is required for every compressing policy).
void validate_compression_config(const CompressionConfig& config);
// Compression during prefill whose chunk cannot hold the observing window's queries (an error
// validate_compression_config reports).
inline bool chunk_shorter_than_window(const CompressionConfig& c) {
  return c.compress_chunk > 0 && !c.full_observation && c.compress_chunk < c.observation_window;
}

// The marginal-error rule (PlannerOptions::marginal_error) is KV-Compress's (kvcompress and
// auto); every other policy has its own eviction rule. validate_compression_config rejects it
// elsewhere; the server asks first, to name the request field.
inline bool marginal_error_applies(const CompressionConfig& config) {
  return config.policy == KvPolicy::kKvCompress;
}

// Fills in what the policy needs, before validation (the CLI calls it after parsing):
//   h2o, snapkv, pyramidkv, ada-snapkv: metric = L1 (kAbsolute);
//   h2o also full_observation = true: H2O accumulates the attention of every query (prefill and
//   decode), not a pooled window;
//   every other policy: unchanged.
void apply_policy_defaults(CompressionConfig& config);

std::string describe(const CompressionConfig& config);

// `--kv-policy auto` (and `kv_policy: "auto"`), the recommended setting, and what a budget
// without a policy name runs: KV-Compress with word spans. Chosen by measurement
// (docs/quality.md, "The recommended setting"); `kvcompress` stays the paper's method as published.
inline constexpr std::string_view kAutoPolicy = "auto";
// Sets config.policy from a policy name or "auto" (which also sets word_spans). Throws
// kvc::Error listing the valid names.
void set_policy(CompressionConfig& config, std::string_view name);
// "auto, full, kvcompress, ..." (help texts and errors).
std::string policy_names_with_auto();

struct CompressionResult {
  int64_t blocks_before = 0;
  int64_t blocks_after = 0;
  int64_t kvs_before = 0;
  int64_t kvs_after = 0;
  double plan_seconds = 0.0;
  double compact_seconds = 0.0;
};

// The plan of config.policy for `seq` (reads the cache only). budget_target: target_blocks()
// of the budget; max_blocks: a hard cap (forced passes). Full: an empty plan.
EvictionPlan plan_eviction(const PagedKvCache& cache, SequenceId seq, int64_t budget_target,
                           const CompressionConfig& config, int64_t max_blocks = INT64_MAX);

// Brings `seq` down to the budget (no-op when it already fits; a uniform baseline fits when it
// holds at most L*H*C_row/bs blocks, see baseline_planners.h), and to at most `max_blocks`
// blocks when that is lower (a forced pass that must free room for the next step). prompt_len
// feeds the compression-rate form of the budget. The metrics must be current (prefill metrics
// written, decode metrics accumulated by the attention kernel).
CompressionResult compress_sequence(PagedKvCache& cache, SequenceId seq, int64_t prompt_len,
                                    const CompressionConfig& config,
                                    int64_t max_blocks = INT64_MAX);

}  // namespace kvc
