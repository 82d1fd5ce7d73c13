// A plain record handed from the forward pass (producer) to the compression policies (consumer):
// what the prompt's observing queries saw of each KV, per query head, before any policy turns it
// into an eviction metric.
#pragma once

#include <cstdint>

namespace kvc {

// Raw observation sums: scores[layer][query head][slot] = sum over observing queries of p or
// p^2, slots in the head row's logical order. Valid for rows as long as nothing moved them.
struct ObservationScores {
  const float* data = nullptr;  // [n_layer, n_head, stride]
  int32_t n_layer = 0;
  int32_t n_head = 0;
  int64_t stride = 0;           // >= every row length
  const float* head(int32_t layer, int32_t query_head) const {
    return data + (static_cast<int64_t>(layer) * n_head + query_head) * stride;
  }
};

}  // namespace kvc
