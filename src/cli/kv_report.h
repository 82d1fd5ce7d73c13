// Terminal and JSON views of how many KVs each (layer, KV head) row kept.
#pragma once

#include <cstdint>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <vector>

namespace kvc::cli {

// One line per KV head, one character per layer; darker = more KVs kept (scaled to the largest
// row); `full` is the length every row would have without eviction, printed for reference.
void print_retained_heatmap(std::FILE* out, const std::vector<int32_t>& retained, int32_t n_layer,
                            int32_t n_head_kv, int32_t full);

// [n_layer][n_head_kv] array.
nlohmann::json retained_json(const std::vector<int32_t>& retained, int32_t n_layer,
                             int32_t n_head_kv);

}  // namespace kvc::cli
