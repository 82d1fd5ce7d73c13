#include "cli/bench_http.h"

#include <httplib.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "util/error.h"
#include "util/timing.h"

namespace kvc::cli {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

struct Sample {
  bool ok = false;
  std::string error;
  double ttft = 0;               // seconds, submit -> first content
  double latency = 0;            // seconds, submit -> end of stream
  std::vector<double> itl;       // gaps between content events
  int64_t output_tokens = 0;     // from usage (or content events when absent)
  int64_t prompt_tokens = 0;
};

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const double rank = p / 100.0 * (static_cast<double>(v.size()) - 1);
  const auto lo = static_cast<size_t>(std::floor(rank));
  const size_t hi = std::min(v.size() - 1, lo + 1);
  return v[lo] + (rank - static_cast<double>(lo)) * (v[hi] - v[lo]);
}

double mean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? 0 : s / static_cast<double>(v.size());
}

httplib::Headers headers_for(const HttpBenchOptions& h) {
  httplib::Headers headers{{"Content-Type", "application/json"}};
  if (!h.api_key.empty()) headers.emplace("Authorization", "Bearer " + h.api_key);
  return headers;
}

// One streamed completion; parses "data: ..." events as they arrive.
Sample run_one(const HttpBenchOptions& h, const json& body) {
  Sample s;
  httplib::Client client(h.url);
  client.set_read_timeout(3600, 0);
  client.set_write_timeout(600, 0);
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/completions";
  req.headers = headers_for(h);
  req.body = body.dump();
  std::string buffer;
  const auto start = Clock::now();
  auto last = start;
  int64_t content_events = 0;
  req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
    buffer.append(data, n);
    size_t end;
    while ((end = buffer.find("\n\n")) != std::string::npos) {
      const std::string event = buffer.substr(0, end);
      buffer.erase(0, end + 2);
      if (event.rfind("data: ", 0) != 0) continue;
      const std::string payload = event.substr(6);
      if (payload == "[DONE]") continue;
      const json j = json::parse(payload, nullptr, false);
      if (j.is_discarded()) continue;
      if (j.contains("usage") && j["usage"].is_object()) {
        s.output_tokens = j["usage"].value("completion_tokens", int64_t{0});
        s.prompt_tokens = j["usage"].value("prompt_tokens", int64_t{0});
      }
      if (!j.contains("choices") || j["choices"].empty()) continue;
      const std::string text = j["choices"][0].value("text", std::string());
      if (text.empty()) continue;
      const auto now = Clock::now();
      if (content_events == 0) {
        s.ttft = std::chrono::duration<double>(now - start).count();
      } else {
        s.itl.push_back(std::chrono::duration<double>(now - last).count());
      }
      last = now;
      ++content_events;
    }
    return true;
  };
  httplib::Response res;
  httplib::Error error = httplib::Error::Success;
  if (!client.send(req, res, error)) {
    s.error = httplib::to_string(error);
    return s;
  }
  if (res.status != 200) {
    s.error = fmt::format("HTTP {}: {}", res.status, res.body.substr(0, 300));
    return s;
  }
  s.latency = seconds_since(start);
  if (s.output_tokens == 0) s.output_tokens = content_events;
  s.ok = content_events > 0;
  if (!s.ok) s.error = "no tokens streamed";
  return s;
}

}  // namespace

void run_http_bench(const HttpBenchOptions& h, const ServingBenchOptions& o,
                    const std::string& policy, bool json_out) {
  if (o.num_prompts < 1 || o.output_len < 1) fail("--num-prompts and --output-len must be >= 1");
  std::string model = h.model;
  {
    httplib::Client probe(h.url);
    probe.set_read_timeout(30, 0);
    const auto res = probe.Get("/v1/models", headers_for(h));
    if (!res) fail("cannot reach {}: {}", h.url, httplib::to_string(res.error()));
    if (res->status != 200) fail("{}/v1/models answered HTTP {}: {}", h.url, res->status, res->body);
    const json models = json::parse(res->body, nullptr, false);
    if (model.empty()) {
      if (models.is_discarded() || !models.contains("data") || models["data"].empty()) {
        fail("{}/v1/models lists no model; pass --served-model", h.url);
      }
      model = models["data"][0].value("id", std::string());
    }
  }
  const bool tty = isatty(STDERR_FILENO) != 0;
  json rows = json::array();
  for (int32_t input_len : o.input_lens) {
    for (double rate : o.compression_rates) {
      std::vector<json> bodies;
      for (int32_t i = 0; i < o.num_prompts; ++i) {
        json b{{"model", model},
               // Ids below 10,000: every current vocabulary has them (SmolLM2 49K, Llama 3 128K, Qwen2.5
               // 151K entries), and the client need not load the model.
               {"prompt", synthetic_prompt(input_len, 10000,
                                           h.seed * 1000003 + static_cast<uint64_t>(i) + 1)},
               {"max_tokens", o.output_len},
               {"temperature", 0},
               {"stream", true},
               {"stream_options", {{"include_usage", true}}},
               {"ignore_eos", true}};
        if (h.send_compression) {
          b["kv_policy"] = rate > 1.0 ? (policy == "full" ? "kvcompress" : policy) : "full";
          if (rate > 1.0) b["compression_rate"] = rate;
        }
        bodies.push_back(std::move(b));
      }
      std::vector<double> arrivals(bodies.size(), 0.0);
      if (h.request_rate > 0) {
        std::mt19937_64 rng(h.seed);
        std::exponential_distribution<double> gap(h.request_rate);
        double t = 0;
        for (double& a : arrivals) {
          a = t;
          t += gap(rng);
        }
      }
      std::vector<Sample> samples(bodies.size());
      std::mutex progress_mutex;
      int32_t done = 0;
      const auto start = Clock::now();
      std::vector<std::thread> clients;
      for (size_t i = 0; i < bodies.size(); ++i) {
        clients.emplace_back([&, i] {
          std::this_thread::sleep_until(start + std::chrono::duration_cast<Clock::duration>(
                                                    std::chrono::duration<double>(arrivals[i])));
          samples[i] = run_one(h, bodies[i]);
          std::lock_guard lock(progress_mutex);
          ++done;
          if (tty || done == o.num_prompts) {
            std::fprintf(stderr, "%s[bench] %s L=%d rate %g: %d/%d requests, %.1f s%s",
                         tty ? "\r" : "", h.url.c_str(), input_len, rate, done, o.num_prompts,
                         seconds_since(start), done == o.num_prompts ? "\n" : "");
          }
        });
      }
      for (std::thread& t : clients) t.join();
      const double duration = seconds_since(start);
      std::vector<double> ttft, tpot, itl;
      int64_t out_tokens = 0, in_tokens = 0, failed = 0;
      std::string first_error;
      for (const Sample& s : samples) {
        if (!s.ok) {
          ++failed;
          if (first_error.empty()) first_error = s.error;
          continue;
        }
        ttft.push_back(s.ttft);
        if (s.output_tokens > 1) tpot.push_back((s.latency - s.ttft) / (s.output_tokens - 1));
        itl.insert(itl.end(), s.itl.begin(), s.itl.end());
        out_tokens += s.output_tokens;
        in_tokens += s.prompt_tokens > 0 ? s.prompt_tokens : input_len;
      }
      json row{{"url", h.url},
               {"model", model},
               {"input_len", input_len},
               {"output_len", o.output_len},
               {"num_prompts", o.num_prompts},
               {"request_rate", h.request_rate > 0 ? json(h.request_rate) : json("inf")},
               {"compression_rate", rate},
               {"completed", o.num_prompts - failed},
               {"failed", failed},
               {"seconds", duration},
               {"requests_per_second", (o.num_prompts - failed) / duration},
               {"output_tokens_per_second", out_tokens / duration},
               {"total_tokens_per_second", (out_tokens + in_tokens) / duration}};
      for (const auto& [name, v] : {std::pair{"ttft", &ttft}, {"tpot", &tpot}, {"itl", &itl}}) {
        row[fmt::format("mean_{}_ms", name)] = 1e3 * mean(*v);
        row[fmt::format("median_{}_ms", name)] = 1e3 * percentile(*v, 50);
        row[fmt::format("p99_{}_ms", name)] = 1e3 * percentile(*v, 99);
      }
      if (!first_error.empty()) row["first_error"] = first_error;
      rows.push_back(row);
    }
  }
  if (json_out) {
    for (const json& r : rows) std::cout << r.dump() << "\n";
    return;
  }
  std::printf("%s (%s): %d prompts x (L input + %d output tokens), request rate %s\n",
              h.url.c_str(), model.c_str(), o.num_prompts, o.output_len,
              h.request_rate > 0 ? fmt::format("{}/s", h.request_rate).c_str() : "inf");
  std::printf("%6s %6s %5s %8s %9s %9s %9s %9s %9s %9s %9s %9s\n", "L", "rate", "fail",
              "req/s", "output/s", "total/s", "TTFT med", "TTFT p99", "TPOT med", "TPOT p99",
              "ITL med", "ITL p99");
  for (const json& r : rows) {
    std::printf("%6d %6g %5lld %8.3f %9.1f %9.1f %8.0fms %8.0fms %8.1fms %8.1fms %8.1fms %8.1fms\n",
                r["input_len"].get<int32_t>(), r["compression_rate"].get<double>(),
                r["failed"].get<long long>(), r["requests_per_second"].get<double>(),
                r["output_tokens_per_second"].get<double>(),
                r["total_tokens_per_second"].get<double>(), r["median_ttft_ms"].get<double>(),
                r["p99_ttft_ms"].get<double>(), r["median_tpot_ms"].get<double>(),
                r["p99_tpot_ms"].get<double>(), r["median_itl_ms"].get<double>(),
                r["p99_itl_ms"].get<double>());
    if (r.contains("first_error")) {
      std::printf("       first error: %s\n", r["first_error"].get<std::string>().c_str());
    }
  }
}

}  // namespace kvc::cli
