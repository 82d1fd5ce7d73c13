#include "server/openai_request.h"

#include <cmath>

#include "model/tokenizer/chat_template.h"
#include "server/api_error.h"
#include "util/error.h"

namespace kvc::server {
namespace {

using nlohmann::json;

[[noreturn]] void bad(const std::string& param, const std::string& message) {
  throw ApiError(400, message, param, "invalid_value");
}

const json* field(const json& body, const char* key) {
  const auto it = body.find(key);
  if (it == body.end() || it->is_null()) return nullptr;
  return &*it;
}

bool get_bool(const json& body, const char* key, bool fallback) {
  const json* v = field(body, key);
  if (v == nullptr) return fallback;
  if (!v->is_boolean()) bad(key, fmt::format("'{}' must be a boolean", key));
  return v->get<bool>();
}

double get_number(const json& body, const char* key, double fallback, double lo, double hi) {
  const json* v = field(body, key);
  if (v == nullptr) return fallback;
  if (!v->is_number()) bad(key, fmt::format("'{}' must be a number", key));
  const double x = v->get<double>();
  if (!std::isfinite(x) || x < lo || x > hi) {
    bad(key, fmt::format("'{}' must be in [{}, {}], got {}", key, lo, hi, x));
  }
  return x;
}

int64_t get_int(const json& body, const char* key, int64_t fallback, int64_t lo, int64_t hi) {
  const json* v = field(body, key);
  if (v == nullptr) return fallback;
  if (!v->is_number_integer() && !v->is_number_unsigned()) {
    bad(key, fmt::format("'{}' must be an integer", key));
  }
  if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
    bad(key, fmt::format("'{}' is out of range", key));
  }
  const int64_t x = v->get<int64_t>();
  if (x < lo || x > hi) bad(key, fmt::format("'{}' must be in [{}, {}], got {}", key, lo, hi, x));
  return x;
}

std::string text_content(const json& content, const std::string& param) {
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array()) bad(param, "message content must be a string or an array of parts");
  std::string text;
  for (const json& part : content) {
    if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") ||
        !part["text"].is_string()) {
      bad(param, "only {\"type\": \"text\", \"text\": ...} content parts are supported");
    }
    text += part["text"].get<std::string>();
  }
  return text;
}

std::vector<int32_t> chat_prompt(const json& body, const Model& model) {
  const json* messages = field(body, "messages");
  if (messages == nullptr) bad("messages", "'messages' is required");
  if (!messages->is_array()) bad("messages", "'messages' must be an array");
  if (messages->empty()) bad("messages", "'messages' must not be empty");
  std::vector<ChatMessage> chat;
  for (size_t i = 0; i < messages->size(); ++i) {
    const json& m = (*messages)[i];
    const std::string param = fmt::format("messages[{}]", i);
    if (!m.is_object()) bad(param, "each message must be an object");
    const json* role = field(m, "role");
    if (role == nullptr || !role->is_string()) bad(param + ".role", "a message needs a string 'role'");
    std::string r = role->get<std::string>();
    if (r == "developer") r = "system";
    if (r != "system" && r != "user" && r != "assistant") {
      bad(param + ".role", fmt::format("unsupported role '{}' (system, user, assistant)", r));
    }
    const json* content = field(m, "content");
    if (content == nullptr) bad(param + ".content", "a message needs 'content'");
    chat.push_back({r, text_content(*content, param + ".content")});
  }
  const Tokenizer& tok = model.tokenizer();
  std::string text;
  try {
    text = apply_chat_template(model.chat_template(), chat, true);
  } catch (const Error& e) {
    throw ApiError(400, e.what(), "messages", "unsupported_chat_template");
  }
  std::vector<int32_t> ids;
  if (tok.add_bos() && tok.bos() >= 0) ids.push_back(tok.bos());
  const std::vector<int32_t> body_ids = tok.encode(text, true);
  ids.insert(ids.end(), body_ids.begin(), body_ids.end());
  return ids;
}

std::vector<int32_t> completion_prompt(const json& body, const Model& model) {
  const json* prompt = field(body, "prompt");
  if (prompt == nullptr) bad("prompt", "'prompt' is required");
  const Tokenizer& tok = model.tokenizer();
  const int32_t n_vocab = model.config().n_vocab;
  std::vector<int32_t> ids;
  const auto text_prompt = [&](const std::string& text) {
    if (text.empty()) bad("prompt", "'prompt' is empty");
    if (tok.add_bos() && tok.bos() >= 0) ids.push_back(tok.bos());
    const std::vector<int32_t> body_ids = tok.encode(text, true);
    ids.insert(ids.end(), body_ids.begin(), body_ids.end());
  };
  if (prompt->is_string()) {
    text_prompt(prompt->get<std::string>());
  } else if (prompt->is_array()) {
    if (prompt->empty()) bad("prompt", "'prompt' is empty");
    if ((*prompt)[0].is_string()) {
      if (prompt->size() != 1) bad("prompt", "one prompt per request (n = 1)");
      text_prompt((*prompt)[0].get<std::string>());
    } else {
      for (const json& t : *prompt) {
        if (!t.is_number_integer()) {
          bad("prompt", "'prompt' must be a string, [string] or an array of token ids");
        }
        const int64_t id = t.get<int64_t>();
        if (id < 0 || id >= n_vocab) bad("prompt", fmt::format("token id {} is out of range", id));
        ids.push_back(static_cast<int32_t>(id));
      }
    }
  } else {
    bad("prompt", "'prompt' must be a string, [string] or an array of token ids");
  }
  return ids;
}

CompressionConfig compression_of(const json& body, const CompressionConfig& defaults) {
  CompressionConfig c = defaults;
  if (const json* policy = field(body, "kv_policy")) {
    if (!policy->is_string()) bad("kv_policy", "'kv_policy' must be a string");
    try {
      c.word_spans = false;  // a named policy runs as named; "auto" sets its own settings
      c.planner.marginal_error = false;
      c.tail_probe = false;
      c.observation_window = kPaperObservationWindow;
      set_policy(c, policy->get<std::string>());
    } catch (const Error& e) {
      bad("kv_policy", e.what());
    }
    c.metric = MetricAccumulation::kSquared;
    c.full_observation = false;
    apply_policy_defaults(c);
  }
  const bool has_c = field(body, "max_cache_tokens") != nullptr;
  const bool has_rate = field(body, "compression_rate") != nullptr;
  if (has_c && has_rate) {
    bad("compression_rate", "give 'max_cache_tokens' or 'compression_rate', not both");
  }
  if (has_c) {
    c.budget = CacheBudget{CacheBudget::kMaxCacheTokens,
                           static_cast<double>(get_int(body, "max_cache_tokens", 0, 1, 1 << 24)),
                           c.budget.min_cache};
  }
  if (has_rate) {
    c.budget = CacheBudget{CacheBudget::kCompressionRate,
                           get_number(body, "compression_rate", 1.0, 1.0, 1e6), c.budget.min_cache};
  }
  c.planner.protected_window = static_cast<int32_t>(
      get_int(body, "protected_window", c.planner.protected_window, 0, 1 << 24));
  c.compress_chunk = static_cast<int32_t>(
      get_int(body, "compress_chunk", c.compress_chunk, 0, 1 << 24));
  c.chunk_budget_factor =
      get_number(body, "chunk_budget_factor", c.chunk_budget_factor, 1.0, 1e6);
  c.planner.marginal_error = get_bool(body, "marginal_error", c.planner.marginal_error);
  if (get_bool(body, "compress_once", false)) {
    c.continual = false;
    c.interval = 0;
  }
  if ((has_c || has_rate) && !c.compresses()) {
    if (field(body, "kv_policy") != nullptr) {
      bad("kv_policy", "a budget needs a compressing 'kv_policy', not full");
    }
    set_policy(c, kAutoPolicy);  // a budget without a policy: the recommended setting
    c.metric = MetricAccumulation::kSquared;
    c.full_observation = false;
  }
  if (field(body, "tail_probe") != nullptr) {
    c.tail_probe = get_bool(body, "tail_probe", c.tail_probe);
    if (c.tail_probe && c.compress_chunk == 0) {
      bad("tail_probe", "'tail_probe' previews the prompt's end for the passes between prefill "
                        "chunks: set 'compress_chunk' too");
    }
  }
  if (c.planner.marginal_error && !marginal_error_applies(c)) {
    bad("marginal_error", fmt::format("'marginal_error' applies to kv_policy kvcompress and auto "
                                      "only, not {}", policy_info(c.policy).name));
  }
  if (chunk_shorter_than_window(c)) {
    bad("compress_chunk",
        fmt::format("'compress_chunk' {} is shorter than the policy's observation window of {} "
                    "queries (auto observes with {}, the other policies with {})",
                    c.compress_chunk, c.observation_window, kAutoObservationWindow,
                    kPaperObservationWindow));
  }
  try {
    validate_compression_config(c);
  } catch (const Error& e) {
    bad("kv_policy", e.what());
  }
  return c;
}

}  // namespace

CompletionJob parse_completion_request(const json& body, bool chat, const Model& model,
                                       const ParseLimits& limits) {
  if (!body.is_object()) throw ApiError(400, "the request body must be a JSON object");
  if (const json* m = field(body, "model")) {
    if (!m->is_string()) bad("model", "'model' must be a string");
    if (m->get<std::string>() != limits.model_name) {
      throw ApiError(404, fmt::format("the model '{}' does not exist; this server serves '{}'",
                                      m->get<std::string>(), limits.model_name),
                     "model", "model_not_found");
    }
  }
  if (get_int(body, "n", 1, 1, 1 << 20) != 1) bad("n", "only n = 1 is supported");
  if (get_bool(body, "echo", false)) bad("echo", "'echo' is not supported");
  if (const json* lp = field(body, "logprobs")) {
    if (!(lp->is_boolean() && !lp->get<bool>())) bad("logprobs", "'logprobs' is not supported");
  }
  CompletionJob job;
  job.chat = chat;
  job.prompt = chat ? chat_prompt(body, model) : completion_prompt(body, model);
  const auto n_prompt = static_cast<int32_t>(job.prompt.size());
  if (n_prompt >= limits.max_context) {
    throw ApiError(400,
                   fmt::format("the prompt has {} tokens; this server's context holds {}",
                               n_prompt, limits.max_context),
                   chat ? "messages" : "prompt", "context_length_exceeded");
  }
  const char* max_key = chat && field(body, "max_completion_tokens") ? "max_completion_tokens"
                                                                    : "max_tokens";
  const int32_t room = limits.max_context - n_prompt;
  // Completions default to OpenAI's 16 tokens; chat runs until end of turn or the context.
  job.max_tokens = static_cast<int32_t>(
      get_int(body, max_key, chat ? room : 16, 1, limits.max_context));
  job.max_tokens = std::min(job.max_tokens, room);
  job.sampling.temperature =
      static_cast<float>(get_number(body, "temperature", 1.0, 0.0, 2.0));
  job.sampling.top_p = static_cast<float>(get_number(body, "top_p", 1.0, 0.0, 1.0));
  job.sampling.top_k = static_cast<int32_t>(get_int(body, "top_k", 0, 0, 1 << 20));
  job.sampling.seed = static_cast<uint64_t>(get_int(body, "seed", 0, INT64_MIN, INT64_MAX));
  // Penalties over the sequence's last repeat_last_n tokens (engine/sampler.h): OpenAI's two,
  // and llama-server's repeat_penalty / repeat_last_n.
  job.sampling.presence_penalty =
      static_cast<float>(get_number(body, "presence_penalty", 0.0, -2.0, 2.0));
  job.sampling.frequency_penalty =
      static_cast<float>(get_number(body, "frequency_penalty", 0.0, -2.0, 2.0));
  job.sampling.repeat_penalty =
      static_cast<float>(get_number(body, "repeat_penalty", 1.0, 0.01, 100.0));
  job.sampling.repeat_last_n =
      static_cast<int32_t>(get_int(body, "repeat_last_n", 64, -1, 1 << 20));
  job.stream = get_bool(body, "stream", false);
  if (const json* so = field(body, "stream_options")) {
    if (!so->is_object()) bad("stream_options", "'stream_options' must be an object");
    job.include_usage = get_bool(*so, "include_usage", false);
  }
  if (const json* stop = field(body, "stop")) {
    const auto add = [&](const json& s) {
      if (!s.is_string() || s.get<std::string>().empty()) {
        bad("stop", "'stop' must be a non-empty string or an array of them");
      }
      job.stop.push_back(s.get<std::string>());
    };
    if (stop->is_array()) {
      if (stop->size() > 4) bad("stop", "at most 4 stop sequences");
      for (const json& s : *stop) add(s);
    } else {
      add(*stop);
    }
  }
  job.compression = compression_of(body, limits.default_compression);
  job.kv_details = get_bool(body, "kv_details", false);
  job.ignore_eos = get_bool(body, "ignore_eos", false);
  return job;
}

}  // namespace kvc::server
