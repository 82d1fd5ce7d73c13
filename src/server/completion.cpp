// One completion request end to end on its HTTP thread: engine request in, JSON or SSE out.
#include <httplib.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>

#include "server/api_error.h"
#include "server/server_context.h"
#include "server/text_assembler.h"
#include "util/error.h"
#include "util/timing.h"

namespace kvc::server {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

// Tokens of one request, from the engine's thread to the HTTP thread that answers it.
class RequestStream {
 public:
  // Engine thread. Returns false once the reader has gone (the engine then cancels).
  bool push(int32_t token) {
    std::lock_guard lock(mutex_);
    tokens_.push_back(token);
    wake_.notify_all();
    return !abandoned_;
  }
  void finish(const RequestResult& result) {
    std::lock_guard lock(mutex_);
    result_ = result;
    finished_ = true;
    wake_.notify_all();
  }
  // HTTP thread: waits for tokens or the end (or the deadline) and moves the tokens into
  // `out`. Returns true when the request has finished and every token was taken.
  bool wait(std::vector<int32_t>& out, Clock::time_point deadline) {
    std::unique_lock lock(mutex_);
    wake_.wait_until(lock, deadline, [&] { return !tokens_.empty() || finished_; });
    out.assign(tokens_.begin(), tokens_.end());
    tokens_.clear();
    return finished_;
  }
  bool wait_finished(Clock::time_point deadline) {
    std::unique_lock lock(mutex_);
    return wake_.wait_until(lock, deadline, [&] { return finished_; });
  }
  void abandon() {
    std::lock_guard lock(mutex_);
    abandoned_ = true;
  }
  RequestResult result() {
    std::lock_guard lock(mutex_);
    return result_;
  }

 private:
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<int32_t> tokens_;
  bool finished_ = false;
  bool abandoned_ = false;
  RequestResult result_;
};

std::string new_id(const char* prefix) {
  static std::atomic<uint64_t> counter{0};
  const auto now = static_cast<uint64_t>(Clock::now().time_since_epoch().count());
  return fmt::format("{}-{:x}{:04x}", prefix, now & 0xffffffffffull, counter++ & 0xffff);
}

int64_t unix_time() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

json usage_json(const RequestResult& r) {
  return {{"prompt_tokens", r.stats.prompt_tokens},
          {"completion_tokens", r.stats.generated_tokens},
          {"total_tokens", r.stats.prompt_tokens + r.stats.generated_tokens}};
}

// What compression did for this request (a JSON extension of both routes).
json kv_json(const RequestResult& r, const CompletionJob& job, const ModelConfig& mc) {
  const RequestStats& s = r.stats;
  json j{{"policy", describe(job.compression)},
         {"kvs_kept", s.kv_retained},
         {"kv_bytes", s.kv_bytes},
         {"full_cache_bytes", s.full_cache_bytes},
         {"compression_ratio",
          s.kv_bytes > 0 ? static_cast<double>(s.full_cache_bytes) / s.kv_bytes : 1.0},
         {"compressions", s.compressions},
         {"preemptions", s.preemptions}};
  if (job.kv_details && !s.retained_per_row.empty()) {
    json rows = json::array();
    for (int32_t l = 0; l < mc.n_layer; ++l) {
      rows.push_back(std::vector<int32_t>(s.retained_per_row.begin() + l * mc.n_head_kv,
                                          s.retained_per_row.begin() + (l + 1) * mc.n_head_kv));
    }
    j["retained_per_layer_head"] = rows;
  }
  return j;
}

const char* finish_of(const RequestResult& r, bool stopped_by_string) {
  return stopped_by_string ? "stop" : openai_finish_reason(r.finish);
}

}  // namespace

void serve_completion(ServerContext& ctx, const CompletionJob& job, httplib::Response& res) {
  const Tokenizer& tok = ctx.model->tokenizer();
  auto stream = std::make_shared<RequestStream>();
  Request request;
  request.prompt = job.prompt;
  request.max_tokens = job.max_tokens;
  request.sampling = job.sampling;
  if (!job.ignore_eos) request.stop_tokens = tok.end_of_generation_ids();
  request.compression = job.compression;
  const auto submitted = Clock::now();
  // Engine thread: latency histograms and the stream; nothing blocking.
  auto last_token = std::make_shared<Clock::time_point>(submitted);
  request.on_token = [stream, last_token, &ctx, submitted](int32_t token) {
    const auto now = Clock::now();
    if (*last_token == submitted) {
      ctx.histograms.time_to_first_token.observe(
          std::chrono::duration<double>(now - submitted).count());
    } else {
      ctx.histograms.inter_token_latency.observe(
          std::chrono::duration<double>(now - *last_token).count());
    }
    *last_token = now;
    return stream->push(token);
  };
  request.on_finish = [stream, &ctx, submitted](const RequestResult& r) {
    ctx.histograms.request_latency.observe(seconds_since(submitted));
    stream->finish(r);
  };
  RequestId id = -1;
  try {
    id = ctx.engine->submit(std::move(request));
  } catch (const Error& e) {
    throw ApiError(400, e.what(), job.chat ? "messages" : "prompt", "request_not_servable");
  }
  const auto deadline = submitted + std::chrono::seconds(ctx.request_timeout_seconds);
  const std::string model_name = ctx.limits.model_name;
  const ModelConfig& mc = ctx.model->config();
  const std::string id_text = new_id(job.chat ? "chatcmpl" : "cmpl");
  const int64_t created = unix_time();

  if (!job.stream) {
    TextAssembler text(tok, job.stop);
    std::vector<int32_t> tokens;
    bool finished = false;
    while (!finished && Clock::now() < deadline) {
      finished = stream->wait(tokens, deadline);
      for (int32_t t : tokens) text.add(t);
      if (text.stopped() && !finished) {
        stream->abandon();
        ctx.engine->cancel(id);
        finished = stream->wait_finished(deadline);
      }
    }
    if (!finished) {
      stream->abandon();
      ctx.engine->cancel(id);
      stream->wait_finished(Clock::now() + std::chrono::seconds(30));
      throw ApiError(504, fmt::format("the request did not finish within {} s",
                                      ctx.request_timeout_seconds),
                     "", "timeout", "server_error");
    }
    text.flush();
    const RequestResult result = stream->result();
    json choice{{"index", 0}, {"finish_reason", finish_of(result, text.stopped())}};
    if (job.chat) {
      choice["message"] = {{"role", "assistant"}, {"content", text.text()}};
    } else {
      choice["text"] = text.text();
      choice["logprobs"] = nullptr;
    }
    const json body{{"id", id_text},
                    {"object", job.chat ? "chat.completion" : "text_completion"},
                    {"created", created},
                    {"model", model_name},
                    {"choices", json::array({choice})},
                    {"usage", usage_json(result)},
                    {"kv_compression", kv_json(result, job, mc)}};
    res.status = 200;
    res.set_content(dump(body), "application/json");
    return;
  }

  // Server-sent events in OpenAI's chunk format, then "data: [DONE]".
  const auto chunk = [=](const json& delta_or_text, const json& finish) {
    json choice{{"index", 0}, {"finish_reason", finish}};
    if (job.chat) {
      choice["delta"] = delta_or_text;
    } else {
      choice["text"] = delta_or_text;
      choice["logprobs"] = nullptr;
    }
    return json{{"id", id_text},
                {"object", job.chat ? "chat.completion.chunk" : "text_completion"},
                {"created", created},
                {"model", model_name},
                {"choices", json::array({choice})}};
  };
  auto engine = ctx.engine;
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [=, &tok](size_t, httplib::DataSink& sink) {
        const auto send = [&](const json& j) {
          const std::string event = "data: " + dump(j) + "\n\n";
          return sink.write(event.data(), event.size());
        };
        const auto gone = [&] {
          stream->abandon();
          engine->cancel(id);
          return false;
        };
        if (job.chat && !send(chunk(json{{"role", "assistant"}, {"content", ""}}, nullptr))) {
          return gone();
        }
        TextAssembler text(tok, job.stop);
        std::vector<int32_t> tokens;
        bool finished = false;
        bool timed_out = false;
        while (!finished) {
          if (Clock::now() >= deadline) {
            timed_out = true;
            break;
          }
          finished = stream->wait(tokens, deadline);
          std::string piece;
          for (int32_t t : tokens) piece += text.add(t);
          if (!piece.empty()) {
            const json delta = job.chat ? json{{"content", piece}} : json(piece);
            if (!send(chunk(delta, nullptr))) return gone();
          }
          if (text.stopped() && !finished) {
            stream->abandon();
            engine->cancel(id);
            finished = stream->wait_finished(deadline);
          }
          if (!sink.is_writable()) return gone();
        }
        if (timed_out) {
          stream->abandon();
          engine->cancel(id);
          stream->wait_finished(Clock::now() + std::chrono::seconds(30));
        }
        const std::string rest = text.flush();
        if (!rest.empty()) {
          if (!send(chunk(job.chat ? json{{"content", rest}} : json(rest), nullptr))) {
            return gone();
          }
        }
        const RequestResult result = stream->result();
        json last = chunk(job.chat ? json::object() : json(""),
                          timed_out ? "length" : finish_of(result, text.stopped()));
        last["kv_compression"] = kv_json(result, job, mc);
        if (!send(last)) return gone();
        if (job.include_usage) {
          json usage = chunk(json::object(), nullptr);
          usage["choices"] = json::array();
          usage["usage"] = usage_json(result);
          if (!send(usage)) return gone();
        }
        const std::string done = "data: [DONE]\n\n";
        sink.write(done.data(), done.size());
        sink.done();
        return true;
      },
      [stream, engine, id](bool success) {
        // The connection ended: if the request is still running, nobody reads it any more.
        if (!success) {
          stream->abandon();
          engine->cancel(id);
        }
      });
}

}  // namespace kvc::server
