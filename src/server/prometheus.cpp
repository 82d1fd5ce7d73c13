#include "server/prometheus.h"

#include <fmt/format.h>

namespace kvc::server {

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double value) {
  std::lock_guard lock(mutex_);
  size_t i = 0;
  while (i < bounds_.size() && value > bounds_[i]) ++i;
  ++counts_[i];
  sum_ += value;
  ++count_;
}

std::string Histogram::render(const std::string& name, const std::string& help) const {
  std::lock_guard lock(mutex_);
  std::string out = fmt::format("# HELP {} {}\n# TYPE {} histogram\n", name, help, name);
  uint64_t cumulative = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cumulative += counts_[i];
    out += fmt::format("{}_bucket{{le=\"{}\"}} {}\n", name, bounds_[i], cumulative);
  }
  cumulative += counts_.back();
  out += fmt::format("{}_bucket{{le=\"+Inf\"}} {}\n{}_sum {}\n{}_count {}\n", name, cumulative,
                     name, sum_, name, count_);
  return out;
}

std::string render_metrics(const EngineMetrics& m, const ServerHistograms& h,
                           const std::string& model_name) {
  std::string out;
  const auto metric = [&](const char* name, const char* type, const char* help, double value) {
    out += fmt::format("# HELP {} {}\n# TYPE {} {}\n{} {}\n", name, help, name, type, name, value);
  };
  out += fmt::format("# HELP kvc_model_info The model this server serves.\n"
                     "# TYPE kvc_model_info gauge\nkvc_model_info{{model=\"{}\"}} 1\n",
                     model_name);
  metric("kvc_requests_running", "gauge", "Requests admitted and not finished.", m.running);
  metric("kvc_requests_waiting", "gauge", "Requests queued for admission.", m.waiting);
  metric("kvc_kv_blocks_total", "gauge", "KV blocks in the pool.", m.blocks_total);
  metric("kvc_kv_blocks_used", "gauge", "KV blocks owned by sequences.", m.blocks_used);
  metric("kvc_kv_blocks_peak", "gauge", "Most KV blocks owned at once since start.",
         m.peak_blocks_used);
  metric("kvc_kv_blocks_free", "gauge", "KV blocks free.", m.blocks_free);
  metric("kvc_kv_retained", "gauge", "KVs held by running sequences.", m.kv_retained);
  metric("kvc_kv_compression_ratio", "gauge",
         "KVs a full cache would hold for the running sequences / KVs they hold.",
         m.kv_retained > 0 ? static_cast<double>(m.kv_full) / m.kv_retained : 1.0);
  metric("kvc_kv_evicted_total", "counter", "KVs evicted by compression.", m.kvs_evicted);
  metric("kvc_compressions_total", "counter", "Compression passes.", m.compressions);
  metric("kvc_pressure_compressions_total", "counter",
         "Compression passes forced by a full KV pool.", m.pressure_compressions);
  metric("kvc_preemptions_total", "counter", "Requests preempted (recomputed later).",
         m.preemptions);
  metric("kvc_requests_finished_total", "counter", "Requests finished.", m.requests_finished);
  metric("kvc_prompt_tokens_total", "counter", "Prompt tokens prefilled.", m.prompt_tokens);
  metric("kvc_generation_tokens_total", "counter", "Tokens generated.", m.generated_tokens);
  metric("kvc_engine_steps_total", "counter", "Engine steps.", m.steps);
  metric("kvc_engine_step_seconds_total", "counter", "Time in engine steps.", m.step_seconds);
  metric("kvc_engine_forward_seconds_total", "counter", "Time in the forward pass.",
         m.forward_seconds);
  metric("kvc_engine_peak_decode_batch", "gauge", "Most decode tokens in one step.",
         m.peak_batch);
  out += h.time_to_first_token.render("kvc_time_to_first_token_seconds",
                                      "Submission to first token.");
  out += h.inter_token_latency.render("kvc_inter_token_latency_seconds",
                                      "Time between consecutive tokens of a request.");
  out += h.request_latency.render("kvc_request_latency_seconds", "Submission to finish.");
  return out;
}

}  // namespace kvc::server
