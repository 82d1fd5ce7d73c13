// Cache budgets (policy, docs/design.md §3): how many blocks one sequence may keep.
//
// Every form is reduced to C, the mean number of KVs a head row may keep; the sequence then
// keeps at most T = ceil(C * n_layer * n_head_kv / block_size) blocks over all its rows. Rows
// are cut at block granularity, so once the planner has brought a sequence down to exactly T
// blocks its retained KVs R satisfy T*bs - (L*H)*(bs-1) <= R <= T*bs, i.e. within one block
// per row of C*L*H (see kvcompress_planner.h). A sequence already under T is left alone; the
// formula may also ask a sequence whose rows all hold <= C KVs to give up partly filled tails.
//
//   kMaxCacheTokens   value = C directly (a whole number >= 1).
//   kCompressionRate  value = cr >= 1: C = max(min_cache, floor((prompt_len / cr - 1) / bs) * bs)
//                     (the paper's mapping; min_cache = 128 in the paper).
//   kFractionKept     value = f in (0, 1]: C = f * (mean row length now), i.e. the sequence
//                     keeps ceil(ceil(f * retained_kvs) / bs) blocks. Rounding: KVs up, then
//                     blocks up. f = 1 exactly means "no compression": the target is the blocks
//                     already owned (the formula would otherwise drop partly filled tails).
//
// Budgets come from untrusted input (CLI, requests): validate_budget throws kvc::Error.
#pragma once

#include <cstdint>
#include <string>

#include "kv/paged_kv_cache.h"

namespace kvc {

struct CacheBudget {
  enum Kind { kMaxCacheTokens, kCompressionRate, kFractionKept };
  Kind kind = kMaxCacheTokens;
  double value = 0.0;       // C, cr or f depending on kind
  int32_t min_cache = 128;  // lower bound on C for kCompressionRate (>= 0)
};

// Throws kvc::Error naming the bad field when the budget is out of range or not finite.
void validate_budget(const CacheBudget& budget);

// Human-readable form for logs, e.g. "max_cache_tokens=256", "compression_rate=8 (min 128)".
std::string describe(const CacheBudget& budget);

// C for the sequence: mean KVs per head row it may keep (can be fractional for kFractionKept).
// prompt_len: tokens of the sequence's prompt (used by kCompressionRate only), >= 0.
double cache_tokens_per_row(const CacheBudget& budget, int64_t prompt_len,
                            const PagedKvCache& cache, SequenceId seq);

// Blocks the sequence may keep over all its rows (validates the budget first). The planner
// frees max(0, owned_blocks(seq) - target_blocks(...)) blocks.
int64_t target_blocks(const CacheBudget& budget, int64_t prompt_len, const PagedKvCache& cache,
                      SequenceId seq);

}  // namespace kvc
