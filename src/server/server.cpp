#include "server/server.h"

#include <httplib.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>

#include "server/api_error.h"
#include "server/server_context.h"
#include "util/error.h"

namespace kvc::server {
namespace {

using nlohmann::json;

int64_t unix_time() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

void send_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(body.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
}

void send_error(httplib::Response& res, const ApiError& e) { send_json(res, e.status, error_body(e)); }

}  // namespace

bool constant_time_equal(const std::string& a, const std::string& b) {
  // Every byte of the longer string is compared, so the time depends on lengths only.
  const size_t n = std::max(a.size(), b.size());
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    const unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff |= x ^ y;
  }
  return diff == 0;
}

HttpServer::HttpServer(ServerOptions options)
    : http_(std::make_unique<httplib::Server>()),
      context_(std::make_unique<ServerContext>()),
      options_(std::move(options)) {
  const int32_t threads = std::max(4, options_.http_threads);
  http_->new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  http_->set_payload_max_length(options_.max_body_bytes);
  http_->set_read_timeout(options_.request_timeout_seconds, 0);
  http_->set_write_timeout(options_.request_timeout_seconds, 0);
  context_->request_timeout_seconds = options_.request_timeout_seconds;
  routes();
}

HttpServer::~HttpServer() { stop(); }

int32_t HttpServer::bind() {
  int port = options_.port;
  if (port == 0) {
    port = http_->bind_to_any_port(options_.host);
  } else if (!http_->bind_to_port(options_.host, port)) {
    port = -1;
  }
  if (port < 0) fail("cannot listen on {}:{}", options_.host, options_.port);
  return port;
}

void HttpServer::listen() { http_->listen_after_bind(); }

void HttpServer::stop() {
  if (http_ && http_->is_running()) http_->stop();
}

void HttpServer::set_ready(Engine* engine, const Model* model,
                           const CompressionConfig& default_compression) {
  context_->engine = engine;
  context_->model = model;
  context_->limits.model_name = options_.model_name;
  context_->limits.max_context = engine->config().max_context;
  context_->limits.default_compression = default_compression;
  ready_ = true;
}

void HttpServer::routes() {
  httplib::Server& http = *http_;
  ServerContext& ctx = *context_;

  // Authentication before routing: every route but /health.
  http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (options_.api_key.empty() || req.path == "/health") {
      return httplib::Server::HandlerResponse::Unhandled;
    }
    const std::string header = req.get_header_value("Authorization");
    const std::string prefix = "Bearer ";
    const bool ok = header.size() > prefix.size() && header.compare(0, prefix.size(), prefix) == 0 &&
                    constant_time_equal(header.substr(prefix.size()), options_.api_key);
    if (ok) return httplib::Server::HandlerResponse::Unhandled;
    send_error(res, ApiError(401, "a valid API key is required (Authorization: Bearer <key>)",
                             "", "invalid_api_key", "authentication_error"));
    return httplib::Server::HandlerResponse::Handled;
  });
  http.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    const std::string message =
        res.status == 404   ? fmt::format("no route {} {}", req.method, req.path)
        : res.status == 413 ? std::string("the request body is too large")
        : res.status == 405 ? fmt::format("{} is not allowed on {}", req.method, req.path)
                            : fmt::format("HTTP {}", res.status);
    send_json(res, res.status, error_body(message, "invalid_request_error", "", ""));
  });
  http.set_exception_handler(
      [](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
        std::string message = "internal error";
        try {
          if (ep) std::rethrow_exception(ep);
        } catch (const std::exception& e) {
          message = e.what();
        } catch (...) {
        }
        send_json(res, 500, error_body(message, "server_error", "", ""));
      });

  http.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    if (!ready_) {
      send_json(res, 503, {{"status", "loading"}});
    } else {
      send_json(res, 200, {{"status", shutting_down_ ? "shutting_down" : "ok"}});
    }
  });
  const auto not_ready = [this](httplib::Response& res) {
    if (!ready_) {
      send_error(res, ApiError(503, "the model is loading", "", "loading", "unavailable"));
      return true;
    }
    if (shutting_down_) {
      send_error(res, ApiError(503, "the server is shutting down", "", "shutting_down",
                               "unavailable"));
      return true;
    }
    return false;
  };

  http.Get("/v1/models", [this, &ctx, not_ready](const httplib::Request&, httplib::Response& res) {
    if (not_ready(res)) return;
    const ModelConfig& mc = ctx.model->config();
    json model{{"id", options_.model_name},
               {"object", "model"},
               {"created", unix_time()},
               {"owned_by", "kvcompress"},
               {"meta",
                {{"architecture", mc.arch_name},
                 {"n_ctx", ctx.limits.max_context},
                 {"n_layer", mc.n_layer},
                 {"n_head_kv", mc.n_head_kv},
                 {"kv_blocks", ctx.engine->config().num_blocks},
                 {"kv_block_size", ctx.engine->config().block_size}}}};
    send_json(res, 200, {{"object", "list"}, {"data", json::array({model})}});
  });

  http.Get("/metrics", [this, &ctx, not_ready](const httplib::Request&, httplib::Response& res) {
    if (not_ready(res)) return;
    res.set_content(render_metrics(ctx.engine->metrics(), ctx.histograms, options_.model_name),
                    "text/plain; version=0.0.4");
  });

  const auto completion = [this, &ctx, not_ready](bool chat) {
    return [this, &ctx, not_ready, chat](const httplib::Request& req, httplib::Response& res) {
      if (not_ready(res)) return;
      try {
        json body;
        try {
          body = json::parse(req.body);
        } catch (const json::exception& e) {
          throw ApiError(400, fmt::format("the body is not valid JSON: {}", e.what()), "",
                         "invalid_json");
        }
        const CompletionJob job = parse_completion_request(body, chat, *ctx.model, ctx.limits);
        serve_completion(ctx, job, res);
      } catch (const ApiError& e) {
        send_error(res, e);
      }
    };
  };
  http.Post("/v1/completions", completion(false));
  http.Post("/v1/chat/completions", completion(true));
}

}  // namespace kvc::server
