#include "cli/kv_report.h"

#include <algorithm>

namespace kvc::cli {

void print_retained_heatmap(std::FILE* out, const std::vector<int32_t>& retained, int32_t n_layer,
                            int32_t n_head_kv, int32_t full) {
  static constexpr char kShades[] = " .:-=+*#%@";  // 10 levels, light to dark
  const int32_t top = std::max(1, *std::max_element(retained.begin(), retained.end()));
  std::fprintf(out,
               "[kvc] retained KVs per (layer, KV head): '%c' = 0 .. '%c' = %d (a full row: %d)\n",
               kShades[0], kShades[9], top, full);
  std::fprintf(out, "      layer ");
  for (int32_t l = 0; l < n_layer; ++l) std::fputc(l % 10 == 0 ? '0' + (l / 10) % 10 : ' ', out);
  std::fputc('\n', out);
  for (int32_t h = 0; h < n_head_kv; ++h) {
    int32_t lo = top, hi = 0;
    std::fprintf(out, "  kv head %2d |", h);
    for (int32_t l = 0; l < n_layer; ++l) {
      const int32_t n = retained[static_cast<size_t>(l) * n_head_kv + h];
      lo = std::min(lo, n);
      hi = std::max(hi, n);
      const int32_t level = std::clamp(n * 9 / top + (n > 0 && n * 9 < top ? 1 : 0), 0, 9);
      std::fputc(kShades[level], out);
    }
    std::fprintf(out, "|  min %d  max %d\n", lo, hi);
  }
}

nlohmann::json retained_json(const std::vector<int32_t>& retained, int32_t n_layer,
                             int32_t n_head_kv) {
  nlohmann::json rows = nlohmann::json::array();
  for (int32_t l = 0; l < n_layer; ++l) {
    rows.push_back(std::vector<int32_t>(retained.begin() + static_cast<long>(l) * n_head_kv,
                                        retained.begin() + static_cast<long>(l + 1) * n_head_kv));
  }
  return rows;
}

}  // namespace kvc::cli
