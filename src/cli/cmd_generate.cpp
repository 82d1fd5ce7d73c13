// `kvc generate`: run one prompt through the model and stream the output.
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli/commands.h"
#include "cli/common_options.h"
#include "cli/kv_report.h"
#include "model/tokenizer/chat_template.h"
#include "util/error.h"

namespace kvc::cli {
namespace {

struct GenerateOptions {
  ModelOptions model;
  CacheOptions cache;
  CompressionOptions compression;
  std::string prompt;
  std::string prompt_file;
  bool chat = false;
  std::string system;
  int32_t max_tokens = 128;
  SamplingParams sampling;
  bool sampling_given = false;  // any of --temp/--top-k/--top-p on the command line
  bool json = false;
  bool ignore_eos = false;
};

std::string read_prompt(const GenerateOptions& o) {
  if (!o.prompt_file.empty()) {
    std::ifstream in(o.prompt_file, std::ios::binary);
    if (!in) fail("cannot read prompt file '{}'", o.prompt_file);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  }
  if (o.prompt == "-" || (o.prompt.empty() && isatty(STDIN_FILENO) == 0)) {
    std::ostringstream text;
    text << std::cin.rdbuf();
    return text.str();
  }
  if (o.prompt.empty()) fail("no prompt: pass --prompt TEXT, --file PATH, or pipe text to stdin");
  return o.prompt;
}

void run_generate(const GenerateOptions& o) {
  const CompressionConfig compression = compression_config(o.compression);
  const std::unique_ptr<Model> model = load_model(o.model);
  const Tokenizer& tok = model->tokenizer();
  const std::string text = read_prompt(o);

  Request request;
  if (o.chat) {
    std::vector<ChatMessage> messages;
    if (!o.system.empty()) messages.push_back({"system", o.system});
    messages.push_back({"user", text});
    request.prompt = tok.encode(apply_chat_template(model->chat_template(), messages, true), true);
  } else {
    if (tok.add_bos()) request.prompt.push_back(tok.bos());
    const std::vector<int32_t> ids = tok.encode(text, false);
    request.prompt.insert(request.prompt.end(), ids.begin(), ids.end());
  }
  request.max_tokens = o.max_tokens;
  request.compression = compression;
  if (isatty(STDERR_FILENO) != 0 && request.prompt.size() > 512) {
    // The total counts auto's tail probe too (the prompt's last tokens also run once to observe),
    // so the bar says how many of its tokens are the probe's.
    const auto prompt_len = static_cast<int64_t>(request.prompt.size());
    request.on_prefill_progress = [prompt_len](int64_t done, int64_t total) {
      std::string probe;
      if (total > prompt_len) {
        probe = fmt::format(", {} of them the tail probe's", total - prompt_len);
      }
      std::fprintf(stderr, "\r[kvc] prefill %lld/%lld tokens%s (%3.0f%%)%s",
                   static_cast<long long>(done), static_cast<long long>(total), probe.c_str(),
                   100.0 * static_cast<double>(done) / static_cast<double>(total),
                   done == total ? "\n" : "");
      std::fflush(stderr);
    };
  }
  request.sampling = o.sampling;
  if (o.chat && !o.sampling_given) {
    // llama.cpp's defaults for chat: greedy decoding of a small model loops on one phrase.
    request.sampling.temperature = 0.8f;
    request.sampling.top_k = 40;
    request.sampling.top_p = 0.95f;
  }
  if (!o.ignore_eos) request.stop_tokens = tok.end_of_generation_ids();

  request.on_token = [&](int32_t token) {
    if (!o.json && !tok.is_control(token)) {
      const std::string piece = tok.token_to_piece(token);
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
    }
    return true;
  };
  RequestResult result;
  request.on_finish = [&](const RequestResult& r) { result = r; };
  Engine engine(*model, engine_config(o.cache, model->config()));
  engine.submit(std::move(request));
  engine.run_until_idle();
  const RequestStats& stats = result.stats;

  const std::string output = tok.decode(result.tokens, false);
  const ModelConfig& mc = model->config();
  const double ratio = stats.kv_bytes > 0 ? static_cast<double>(stats.full_cache_bytes) / stats.kv_bytes : 0;
  if (o.json) {
    nlohmann::json j;
    j["model"] = o.model.model_path;
    j["text"] = output;
    j["prompt_tokens"] = stats.prompt_tokens;
    j["generated_tokens"] = stats.generated_tokens;
    j["tokens"] = result.tokens;
    j["stop_reason"] = finish_reason_name(result.finish);
    j["finish_reason"] = openai_finish_reason(result.finish);
    j["prefill_seconds"] = stats.prefill_seconds;
    j["decode_seconds"] = stats.decode_seconds;
    j["prefill_tokens_per_second"] = stats.prefill_tokens_per_second();
    j["decode_tokens_per_second"] = stats.decode_tokens_per_second();
    j["kv_policy"] = describe(compression);
    j["kv_retained"] = stats.kv_retained;
    j["kv_bytes"] = stats.kv_bytes;
    j["kv_bytes_peak"] = stats.kv_bytes_peak;
    j["full_cache_bytes"] = stats.full_cache_bytes;
    j["compression_ratio"] = ratio;
    j["compressions"] = stats.compressions;
    j["compress_seconds"] = stats.compress_seconds;
    j["retained_per_layer_head"] = retained_json(stats.retained_per_row, mc.n_layer, mc.n_head_kv);
    std::cout << j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    return;
  }
  std::printf("\n");
  std::fprintf(stderr,
               "\n[kvc] prefill: %d tokens in %.3f s (%.1f tok/s) | decode: %d tokens in %.3f s "
               "(%.1f tok/s) | stop: %s\n",
               stats.prompt_tokens, stats.prefill_seconds, stats.prefill_tokens_per_second(),
               stats.generated_tokens, stats.decode_seconds, stats.decode_tokens_per_second(),
               finish_reason_name(result.finish));
  std::fprintf(stderr,
               "[kvc] KV cache (%s): %lld KVs in %.2f MiB of blocks; a full cache would hold "
               "%.2f MiB (%.2fx); peak %.2f MiB; %d compression pass(es), %.1f ms\n",
               describe(compression).c_str(), static_cast<long long>(stats.kv_retained),
               stats.kv_bytes / 1048576.0, stats.full_cache_bytes / 1048576.0, ratio,
               stats.kv_bytes_peak / 1048576.0, stats.compressions, stats.compress_seconds * 1e3);
  if (compression.compresses()) {
    const int32_t full_row = stats.prompt_tokens + std::max(0, stats.generated_tokens - 1);
    print_retained_heatmap(stderr, stats.retained_per_row, mc.n_layer, mc.n_head_kv, full_row);
  }
}

}  // namespace

void register_generate(CLI::App& app) {
  auto o = std::make_shared<GenerateOptions>();
  CLI::App* cmd = app.add_subcommand("generate", "Generate text from a prompt (streams tokens)");
  add_model_options(*cmd, o->model);
  add_cache_options(*cmd, o->cache);
  add_compression_options(*cmd, o->compression);
  CLI::Option* prompt = cmd->add_option("-p,--prompt", o->prompt, "Prompt text ('-' reads stdin)");
  cmd->add_option("-f,--file", o->prompt_file, "Read the prompt from a file")
      ->check(CLI::ExistingFile)
      ->excludes(prompt);
  cmd->add_flag("--chat", o->chat, "Wrap the prompt as a user message in the model's chat template");
  cmd->add_option("--system", o->system, "System message for --chat (default: the template's)");
  cmd->add_option("-n,--max-tokens", o->max_tokens, "Maximum tokens to generate")
      ->check(CLI::Range(1, 1 << 24))
      ->capture_default_str();
  const char* sampling = "Sampling (default: greedy; with --chat: --temp 0.8 --top-k 40 --top-p 0.95)";
  CLI::Option* temp =
      cmd->add_option("--temp,--temperature", o->sampling.temperature,
                      "Sampling temperature (0: greedy)")
          ->check(CLI::Range(0.0f, 100.0f))
          ->group(sampling);
  CLI::Option* top_k = cmd->add_option("--top-k", o->sampling.top_k,
                                       "Keep the k most likely tokens (0: all)")
                           ->check(CLI::Range(0, 1 << 24))
                           ->group(sampling);
  CLI::Option* top_p = cmd->add_option("--top-p", o->sampling.top_p, "Nucleus sampling mass (1: off)")
                           ->check(CLI::Range(0.0f, 1.0f))
                           ->group(sampling);
  cmd->add_option("--seed", o->sampling.seed, "Random seed for sampling (runs are reproducible)")
      ->capture_default_str()
      ->group(sampling);
  cmd->add_option("--repeat-penalty", o->sampling.repeat_penalty,
                  "Penalize tokens in the last --repeat-last-n: a logit > 0 divided by it, one "
                  "<= 0 multiplied (1: off)")
      ->check(CLI::Range(0.01f, 100.0f))
      ->capture_default_str()
      ->group(sampling);
  cmd->add_option("--repeat-last-n", o->sampling.repeat_last_n,
                  "Tokens the penalties look back over, prompt included (0: none, -1: all)")
      ->check(CLI::Range(-1, 1 << 24))
      ->capture_default_str()
      ->group(sampling);
  cmd->add_option("--presence-penalty", o->sampling.presence_penalty,
                  "Subtract this from the logit of every token in that window (0: off)")
      ->check(CLI::Range(-2.0f, 2.0f))
      ->capture_default_str()
      ->group(sampling);
  cmd->add_option("--frequency-penalty", o->sampling.frequency_penalty,
                  "Subtract this times its count in that window from a token's logit (0: off)")
      ->check(CLI::Range(-2.0f, 2.0f))
      ->capture_default_str()
      ->group(sampling);
  cmd->add_flag("--ignore-eos", o->ignore_eos, "Keep generating past end-of-sequence tokens");
  cmd->add_flag("--json", o->json, "Print one JSON object (text, tokens, timings) instead of streaming");
  cmd->callback([o, temp, top_k, top_p] {
    o->sampling_given = temp->count() + top_k->count() + top_p->count() > 0;
    run_generate(*o);
  });
}

}  // namespace kvc::cli
