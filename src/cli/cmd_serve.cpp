// `kvc serve`: the OpenAI-compatible server (src/server/). The socket is bound first, so
// /health answers 503 while the model loads; SIGINT/SIGTERM stop accepting, cancel what is in
// flight (streams end with finish_reason "abort" and [DONE]) and exit 0.
#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#include "cli/commands.h"
#include "cli/common_options.h"
#include "server/server.h"
#include "util/error.h"

namespace kvc::cli {
namespace {

struct ServeOptions {
  ModelOptions model;
  CacheOptions cache;
  CompressionOptions compression;
  server::ServerOptions server;
  double memory_fraction = 0.25;
  int32_t max_body_kib = 8192;
};

// MemAvailable from /proc/meminfo, in bytes (0 when unknown).
double available_memory_bytes() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  double kib = 0;
  std::string unit;
  while (in >> key >> kib >> unit) {
    if (key == "MemAvailable:") return kib * 1024.0;
  }
  return 0.0;
}

void run_serve(ServeOptions o) {
  const CompressionConfig compression = compression_config(o.compression);
  if (o.server.model_name.empty()) {
    o.server.model_name = std::filesystem::path(o.model.model_path).stem().string();
  }
  o.server.max_body_bytes = static_cast<size_t>(o.max_body_kib) * 1024;
  o.server.http_threads = std::max(o.server.http_threads, o.cache.max_running + 8);

  // Signals go to the waiting thread below, never to a worker.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  server::HttpServer http(o.server);
  const int32_t port = http.bind();
  std::thread listener([&] { http.listen(); });
  std::fprintf(stderr, "[kvc] listening on http://%s:%d (loading %s)\n", o.server.host.c_str(),
               port, o.model.model_path.c_str());
  std::fflush(stderr);

  std::unique_ptr<Model> model;
  std::unique_ptr<Engine> engine;
  try {
    model = load_model(o.model);
    CacheOptions cache = o.cache;
    if (cache.kv_budget_mib <= 0 && cache.kv_blocks <= 0) {
      const double available = available_memory_bytes();
      if (available <= 0) fail("cannot read MemAvailable; set --kv-budget");
      cache.kv_budget_mib = o.memory_fraction * available / (1 << 20);
      std::fprintf(stderr, "[kvc] KV budget: %.0f MiB = %.0f%% of the %.0f MiB available "
                   "(--kv-budget or --memory-fraction to change)\n",
                   cache.kv_budget_mib, 100 * o.memory_fraction, available / (1 << 20));
    }
    EngineConfig config = engine_config(cache, model->config());
    engine = std::make_unique<Engine>(*model, config);
  } catch (...) {
    http.stop();
    listener.join();
    throw;
  }
  const EngineConfig& ec = engine->config();
  const ModelConfig& mc = model->config();
  const double block_bytes = static_cast<double>(engine->cache().pool().block_bytes());
  std::fprintf(stderr,
               "[kvc] model %s: context %d, KV pool %d blocks (%.1f MiB; a full-context sequence "
               "takes %d), up to %d running, policy %s\n",
               o.server.model_name.c_str(), ec.max_context, ec.num_blocks,
               ec.num_blocks * block_bytes / (1 << 20),
               mc.n_layer * mc.n_head_kv * ((ec.max_context + ec.block_size - 1) / ec.block_size),
               ec.max_running, describe(compression).c_str());
  engine->start();
  http.set_ready(engine.get(), model.get(), compression);
  std::fprintf(stderr, "[kvc] ready%s\n", o.server.api_key.empty() ? "" : " (API key required)");
  std::fflush(stderr);

  int signal_number = 0;
  sigwait(&signals, &signal_number);
  std::fprintf(stderr, "[kvc] %s: shutting down\n", signal_number == SIGINT ? "SIGINT" : "SIGTERM");
  http.begin_shutdown();
  engine->stop(/*cancel_in_flight=*/true);
  http.stop();
  listener.join();
  const EngineMetrics m = engine->metrics();
  std::fprintf(stderr, "[kvc] served %lld requests, %lld prompt + %lld generated tokens\n",
               static_cast<long long>(m.requests_finished), static_cast<long long>(m.prompt_tokens),
               static_cast<long long>(m.generated_tokens));
}

}  // namespace

void register_serve(CLI::App& app) {
  auto o = std::make_shared<ServeOptions>();
  CLI::App* cmd = app.add_subcommand("serve", "OpenAI-compatible HTTP server (completions, chat, "
                                              "streaming, /metrics)");
  add_model_options(*cmd, o->model);
  add_cache_options(*cmd, o->cache);
  add_compression_options(*cmd, o->compression);
  const char* group = "Server";
  cmd->add_option("--host", o->server.host, "Address to bind (loopback by default)")
      ->capture_default_str()
      ->group(group);
  cmd->add_option("--port", o->server.port, "Port (0: any free port, printed at start)")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str()
      ->group(group);
  cmd->add_option("--api-key", o->server.api_key,
                  "Require 'Authorization: Bearer KEY' on every route but /health")
      ->envname("KVC_API_KEY")
      ->group(group);
  cmd->add_option("--alias", o->server.model_name,
                  "Model id clients send as \"model\" (default: the GGUF file name)")
      ->group(group);
  cmd->add_option("--memory-fraction", o->memory_fraction,
                  "Without --kv-budget/--kv-blocks: the KV pool takes this fraction of the "
                  "memory available at start")
      ->check(CLI::Range(0.01, 0.9))
      ->capture_default_str()
      ->group(group);
  cmd->add_option("--timeout", o->server.request_timeout_seconds,
                  "Seconds a request may take (socket reads and writes, and generation)")
      ->check(CLI::Range(1, 86400))
      ->capture_default_str()
      ->group(group);
  cmd->add_option("--max-body-kib", o->max_body_kib, "Largest request body accepted (KiB)")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str()
      ->group(group);
  cmd->add_option("--http-threads", o->server.http_threads,
                  "Connections served at once (at least --max-running + 8)")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str()
      ->group(group);
  cmd->callback([o] { run_serve(*o); });
}

}  // namespace kvc::cli
