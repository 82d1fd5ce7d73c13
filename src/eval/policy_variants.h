// The named compression settings `kvc eval` compares: every KvPolicy by its CLI name, plus the
// KV-Compress ablations of the paper. The budget C is set per run.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "compress/compressor.h"

namespace kvc::eval {

struct PolicyVariant {
  std::string name;          // "full", "kvcompress", "kvcompress-l1", "snapkv", ...
  CompressionConfig config;  // the policy's defaults (apply_policy_defaults) + base options
};

// Every KvPolicy by its CLI name, plus the KV-Compress ablations of the paper:
//   kvcompress-l1    L1 metric instead of L2 (squared attention)
//   kvcompress-w32   observation window of 32 queries instead of 8
//   kvcompress-full  full observation (every query observes KVs >= observation_buffer older)
//   kvcompress-words word spans with the paper's window of 8 (`auto` without the tail probe
//                    before `auto` took a window of 32)
//   kvcompress-words-floor  word spans and a per-head floor of 0.2 x C inside the global order
// and any compressing name with the suffix ':chunkN' (e.g. auto:chunk512): the same setting
// compressing during prefill every N prompt tokens (its own prefill, not the shared one).
// `base` carries the shared options (protected window, sinks, seeds, ...); observation_window
// > 0 replaces every setting's own window (8; auto and kvcompress-w32: 32). Throws kvc::Error
// listing the valid names.
PolicyVariant make_policy_variant(std::string_view name, const CompressionConfig& base,
                                  int32_t observation_window = 0);
std::string policy_variant_names();

// `variant` at C = budget KVs per head row (full: unchanged).
CompressionConfig with_budget(const PolicyVariant& variant, int32_t budget);

}  // namespace kvc::eval
