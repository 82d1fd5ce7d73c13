// `kvc serve`: an OpenAI-compatible HTTP server over one Engine (cpp-httplib).
//
// HTTP threads only parse, enqueue and wait: each request becomes an engine Request whose
// callbacks (run on the engine's thread) push tokens into a RequestStream; the handler reads
// the stream, turns tokens into text (TextAssembler) and writes the response, or server-sent
// events as they come. No model work ever runs on an HTTP thread.
//
// Routes: POST /v1/completions, POST /v1/chat/completions (JSON or SSE), GET /v1/models,
// GET /health (503 until the model is loaded), GET /metrics (Prometheus). With an API key,
// every route but /health needs "Authorization: Bearer <key>" (constant-time compare).
// Errors are OpenAI's {"error": {...}} with a 4xx status; nothing a client sends can stop the
// server. A streaming client that disconnects cancels its request (its blocks are freed at
// the engine's next step).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "engine/engine.h"
#include "server/openai_request.h"
#include "server/prometheus.h"

namespace httplib {
class Server;
}

namespace kvc::server {

struct ServerContext;

struct ServerOptions {
  std::string host = "127.0.0.1";
  int32_t port = 8080;                    // 0: any free port (tests)
  std::string api_key;                    // empty: no authentication
  std::string model_name;                 // the id clients send as "model"
  size_t max_body_bytes = 8u << 20;
  int32_t request_timeout_seconds = 600;  // socket reads/writes and one request's generation
  int32_t http_threads = 64;              // concurrent connections served
};

class HttpServer {
 public:
  explicit HttpServer(ServerOptions options);
  ~HttpServer();

  // Binds the socket; returns the port (useful with port 0). Throws kvc::Error on failure.
  int32_t bind();
  // Serves until stop(); call after bind(), usually on a thread of its own.
  void listen();
  // Until then every route but /health answers 503.
  void set_ready(Engine* engine, const Model* model, const CompressionConfig& default_compression);
  // New completions get 503; in-flight ones continue.
  void begin_shutdown() { shutting_down_ = true; }
  void stop();

 private:
  void routes();
  std::unique_ptr<httplib::Server> http_;
  std::unique_ptr<ServerContext> context_;
  ServerOptions options_;
  std::atomic<bool> ready_{false};
  std::atomic<bool> shutting_down_{false};
};

// Constant-time equality of a presented credential with the expected one.
bool constant_time_equal(const std::string& a, const std::string& b);

}  // namespace kvc::server
