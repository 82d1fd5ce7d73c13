// The memory-bandwidth bound of decoding, printed by `kvc bench` beside the measured decode
// speed: a decode token must at least stream every weight matrix it multiplies and every KV it
// attends to, so tokens/s <= copy bandwidth / (weight bytes + KV bytes per token).
#pragma once

#include <cstddef>
#include <cstdint>

#include "model/model.h"

namespace kvc::cli {

// STREAM-style copy bandwidth of this machine with the current OpenMP threads: the best of a
// few parallel memcpy passes over a buffer far larger than the caches, counting bytes read plus
// bytes written, per second.
double copy_bandwidth_bytes_per_second();

// Bytes one decode token reads at `context` KVs per head row: every layer matrix and the output
// matrix (once, even when tied to the embedding, of which it reads only one row otherwise), the
// norms, and context x n_layer x n_head_kv KVs of kv_bytes_per_kv (K and V) each.
double decode_bytes_per_token(const Model& model, double context, size_t kv_bytes_per_kv);

}  // namespace kvc::cli
