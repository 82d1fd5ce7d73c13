// GET /metrics in Prometheus' text exposition format: the engine's gauges and counters
// (EngineMetrics) and the server's latency histograms.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "engine/engine.h"

namespace kvc::server {

// A cumulative histogram with fixed upper bounds (seconds). Thread-safe.
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double value);
  // "# HELP", "# TYPE" and the _bucket / _sum / _count lines.
  std::string render(const std::string& name, const std::string& help) const;

 private:
  mutable std::mutex mutex_;
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // [bounds + 1], the last is +Inf
  double sum_ = 0.0;
  uint64_t count_ = 0;
};

struct ServerHistograms {
  Histogram time_to_first_token{{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120}};
  Histogram inter_token_latency{{0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.25, 0.5, 1, 2.5}};
  Histogram request_latency{{0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}};
};

std::string render_metrics(const EngineMetrics& m, const ServerHistograms& h,
                           const std::string& model_name);

}  // namespace kvc::server
