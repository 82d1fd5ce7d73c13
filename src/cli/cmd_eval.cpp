// `kvc eval`: every KV policy at every budget on RULER-style long-context tasks and on
// teacher-forced real text, from one shared prefill per sample (src/eval/). Writes JSON lines
// (--out) for scripts/eval_report.py, and prints a summary table.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/common_options.h"
#include "eval/evaluator.h"
#include "eval/texts.h"
#include "util/error.h"
#include "util/files.h"

namespace kvc::cli {
namespace {

using nlohmann::json;

const std::vector<std::string> kDefaultPolicies = {
    "auto", "kvcompress", "streamingllm", "h2o", "snapkv", "pyramidkv", "ada-snapkv", "random"};

struct EvalOptions {
  ModelOptions model;
  CompressionOptions tuning;
  std::vector<std::string> tasks;  // empty: all
  std::vector<int32_t> lengths = {1024, 2048, 4096};
  int32_t samples = 4;
  uint64_t seed = 0;
  std::vector<std::string> policies = kDefaultPolicies;
  std::vector<int32_t> budgets = {64, 128, 256, 512};
  std::vector<int32_t> fidelity_lengths = {2048};
  int32_t fidelity_samples = 4;
  int32_t continuation = 128;
  bool quick = false;
  std::string out;
  bool json_summary = false;
  bool poison_kv = false;
  std::string kv_dtype = "f16";
  bool no_tasks = false;
  std::string tasks_file;     // users' tasks (eval/user_tasks.h)
  std::string fidelity_file;  // users' fidelity text
};

// Per (policy, budget): sums for the summary table.
struct Cell {
  std::map<std::string, std::pair<double, int>> task_scores;  // task -> (sum, count)
  double kvs_kept = 0, ratio = 0;
  int n_task = 0;
  double kl = 0, top1 = 0, nll = 0;
  int n_fid = 0;
};

using CellKey = std::pair<std::string, int32_t>;

json fork_json(const eval::ForkStats& f) {
  return {{"kvs_kept", f.kvs_kept},
          {"kvs_full", f.kvs_full},
          {"bytes_kept", f.bytes_kept},
          {"bytes_full", f.bytes_full},
          {"bytes_peak", f.bytes_peak},
          {"compression_ratio", f.kvs_kept > 0 ? static_cast<double>(f.kvs_full) / f.kvs_kept : 0.0},
          {"compress_seconds", f.compress_seconds}};
}

std::string format_duration(double s) {
  const auto t = static_cast<int64_t>(s);
  return t >= 3600 ? fmt::format("{}:{:02}:{:02}", t / 3600, t / 60 % 60, t % 60)
                   : fmt::format("{}:{:02}", t / 60, t % 60);
}

std::string command_line(int argc, char** argv) {
  std::string s = "kvc";
  for (int i = 1; i < argc; ++i) s += fmt::format(" {}", argv[i]);
  return s;
}

int g_argc = 0;
char** g_argv = nullptr;

void print_summary(std::FILE* out, const std::map<CellKey, Cell>& cells,
                   const std::vector<std::string>& tasks, const std::vector<std::string>& order,
                   const std::string& fidelity_text) {
  if (!tasks.empty()) {
    std::fprintf(out, "\nTask scores (x100, mean over samples and lengths)\n");
    std::string header = fmt::format("{:<16} {:>6}", "policy", "C");
    for (const std::string& t : tasks) header += fmt::format(" {:>9.9}", t);
    header += fmt::format(" {:>7} {:>9} {:>7}", "avg", "KVs kept", "ratio");
    std::fprintf(out, "%s\n", header.c_str());
    for (const std::string& p : order) {
      for (const auto& [key, cell] : cells) {
        if (key.first != p || cell.n_task == 0) continue;
        std::string line = fmt::format("{:<16} {:>6}", p, key.second == 0 ? "-" : std::to_string(key.second));
        double avg = 0;
        int n = 0;
        for (const std::string& t : tasks) {
          const auto it = cell.task_scores.find(t);
          const double v = it == cell.task_scores.end() ? 0 : 100.0 * it->second.first / it->second.second;
          line += fmt::format(" {:>9.1f}", v);
          avg += v;
          ++n;
        }
        line += fmt::format(" {:>7.1f} {:>9.0f} {:>6.1f}x", avg / n, cell.kvs_kept / cell.n_task,
                            cell.ratio / cell.n_task);
        std::fprintf(out, "%s\n", line.c_str());
      }
    }
  }
  bool any_fid = false;
  for (const auto& [key, cell] : cells) any_fid |= cell.n_fid > 0;
  if (!any_fid) return;
  std::fprintf(out, "\nFidelity on %s (teacher-forced continuation vs the full cache)\n",
               fidelity_text.c_str());
  std::fprintf(out, "%-16s %6s %9s %7s %8s %7s\n", "policy", "C", "KL", "top-1", "ppl", "ratio");
  for (const std::string& p : order) {
    for (const auto& [key, cell] : cells) {
      if (key.first != p || cell.n_fid == 0) continue;
      std::fprintf(out, "%-16s %6s %9.4f %6.1f%% %8.2f %6.1fx\n", p.c_str(),
                   key.second == 0 ? "-" : std::to_string(key.second).c_str(), cell.kl / cell.n_fid,
                   100.0 * cell.top1 / cell.n_fid, std::exp(cell.nll / cell.n_fid),
                   cell.ratio / std::max(1, cell.n_task + cell.n_fid));
    }
  }
}

json summary_json(const std::map<CellKey, Cell>& cells) {
  json rows = json::array();
  for (const auto& [key, cell] : cells) {
    json r = {{"policy", key.first}, {"budget", key.second}};
    if (cell.n_task > 0) {
      json scores = json::object();
      double avg = 0;
      for (const auto& [t, sc] : cell.task_scores) {
        scores[t] = sc.first / sc.second;
        avg += sc.first / sc.second;
      }
      r["task_scores"] = scores;
      r["average_score"] = avg / static_cast<double>(cell.task_scores.size());
      r["kvs_kept"] = cell.kvs_kept / cell.n_task;
    }
    if (cell.n_fid > 0) {
      r["kl"] = cell.kl / cell.n_fid;
      r["top1"] = cell.top1 / cell.n_fid;
      r["ppl"] = std::exp(cell.nll / cell.n_fid);
    }
    r["compression_ratio"] = cell.ratio / std::max(1, cell.n_task + cell.n_fid);
    rows.push_back(r);
  }
  return rows;
}

void run(EvalOptions o) {
  if (o.quick) {
    o.tasks = {"niah_single_1"};
    o.lengths = {1024};
    o.samples = 1;
    o.budgets = {64, 512};
    o.fidelity_lengths = {1024};
    o.fidelity_samples = 1;
  }
  if (o.no_tasks) {
    o.tasks.clear();
    o.tasks_file.clear();
  } else if (o.tasks.empty() && o.tasks_file.empty()) {
    for (const eval::TaskInfo& t : eval::task_infos()) o.tasks.emplace_back(t.name);
  }
  if (o.fidelity_samples == 0) o.fidelity_lengths.clear();
  for (const std::string& t : o.tasks) eval::task_info(t);  // bad names fail before any loading
  // Users' files are read and checked before the model loads.
  std::vector<eval::UserTask> user_tasks;
  if (!o.tasks_file.empty()) user_tasks = eval::load_tasks_file(o.tasks_file);
  eval::TextSources texts;
  if (!o.fidelity_file.empty()) {
    texts.fidelity_text = read_whole_file(o.fidelity_file, "fidelity text");
    texts.fidelity_source = o.fidelity_file;
    if (texts.fidelity_text.find_first_not_of(" \t\r\n") == std::string::npos) {
      fail("fidelity text '{}' is empty", o.fidelity_file);
    }
  }
  if (o.tasks.empty() && user_tasks.empty() && o.fidelity_lengths.empty()) {
    fail("nothing to evaluate: --no-tasks with --fidelity-samples 0");
  }

  const CompressionConfig base = policy_tuning_config(o.tuning);
  eval::EvalSettings s;
  s.tasks = o.tasks;
  s.user_tasks = user_tasks;
  s.lengths = o.lengths;
  s.samples = o.samples;
  s.seed = o.seed;
  for (const std::string& p : o.policies) {
    if (p == "full") continue;  // always run
    s.variants.push_back(eval::make_policy_variant(p, base, o.tuning.observation_window));
  }
  s.budgets = o.budgets;
  s.fidelity_samples = o.fidelity_samples;
  s.fidelity_lengths = o.fidelity_lengths;
  s.continuation = o.continuation;
  s.poison_kv = o.poison_kv;

  std::ofstream out;
  if (!o.out.empty()) {
    out.open(o.out, std::ios::binary | std::ios::trunc);
    if (!out) fail("cannot write '{}'", o.out);
  }
  const std::unique_ptr<Model> model = load_model(o.model);
  const ModelConfig& mc = model->config();
  s.kv_storage = kv_storage_type(o.kv_dtype, mc);
  texts.austen = eval::load_austen_novels();

  const auto write = [&](const json& j) {
    if (out.is_open()) {
      out << j.dump(-1, ' ', false, json::error_handler_t::replace) << "\n";
      out.flush();  // a long sweep keeps what it finished
    }
  };
  std::vector<std::string> order = {"full"};
  for (const eval::PolicyVariant& v : s.variants) order.push_back(v.name);
  const std::time_t now = std::time(nullptr);
  char date[16];
  std::strftime(date, sizeof date, "%Y-%m-%d", std::gmtime(&now));
  write({{"kind", "run"},
         {"model", std::filesystem::path(o.model.model_path).filename().string()},
         {"command", command_line(g_argc, g_argv)},
         {"n_layer", mc.n_layer},
         {"n_head_kv", mc.n_head_kv},
         {"tasks", s.tasks},
         {"tasks_file", o.tasks_file},
         {"fidelity_file", o.fidelity_file},
         {"lengths", s.lengths},
         {"policies", order},
         {"budgets", s.budgets},
         {"samples", s.samples},
         {"fidelity_lengths", s.fidelity_lengths},
         {"fidelity_samples", s.fidelity_samples},
         {"continuation", s.continuation},
         {"seed", s.seed},
         {"kv_dtype", o.kv_dtype},
         {"date", date}});

  std::map<CellKey, Cell> cells;
  const bool tty = isatty(STDERR_FILENO) != 0;
  const auto start = std::chrono::steady_clock::now();
  std::string last_sample;
  eval::EvalCallbacks cb;
  cb.on_task = [&](const eval::TaskRecord& r) {
    json j = {{"kind", "task"},       {"task", r.task},
              {"length", r.length},   {"sample", r.sample},
              {"prompt_tokens", r.prompt_tokens}, {"policy", r.policy},
              {"budget", r.budget},   {"score", r.score}, {"metric", r.metric},
              {"prediction", r.prediction}, {"answers", r.answers},
              {"depth", r.depth},     {"generated_tokens", r.generated_tokens},
              {"decode_seconds", r.decode_seconds}};
    j.update(fork_json(r.fork));
    write(j);
    if (r.policy.starts_with("kvcompress") && r.budget > 0) {
      write({{"kind", "retained"}, {"policy", r.policy}, {"budget", r.budget},
             {"length", r.length}, {"task", r.task}, {"sample", r.sample},
             {"n_layer", mc.n_layer}, {"n_head_kv", mc.n_head_kv},
             {"retained", r.fork.retained_per_row}});
    }
    Cell& c = cells[{r.policy, r.budget}];
    auto& ts = c.task_scores[r.task];
    ts.first += r.score;
    ts.second += 1;
    c.kvs_kept += static_cast<double>(r.fork.kvs_kept);
    c.ratio += static_cast<double>(r.fork.kvs_full) / std::max<int64_t>(1, r.fork.kvs_kept);
    ++c.n_task;
  };
  cb.on_fidelity = [&](const eval::FidelityRecord& r) {
    json j = {{"kind", "fidelity"}, {"length", r.length}, {"sample", r.sample},
              {"context_tokens", r.context_tokens},
              {"continuation_tokens", r.continuation_tokens}, {"policy", r.policy},
              {"budget", r.budget}, {"kl", r.kl}, {"top1", r.top1}, {"nll", r.nll},
              {"ppl", std::exp(r.nll)}};
    j.update(fork_json(r.fork));
    write(j);
    Cell& c = cells[{r.policy, r.budget}];
    c.kl += r.kl;
    c.top1 += r.top1;
    c.nll += r.nll;
    c.ratio += static_cast<double>(r.fork.kvs_full) / std::max<int64_t>(1, r.fork.kvs_kept);
    ++c.n_fid;
  };
  cb.on_progress = [&](int64_t done, int64_t total, const std::string& what) {
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double eta = done > 0 ? elapsed * static_cast<double>(total - done) / done : 0.0;
    constexpr int kWidth = 24;
    const auto filled = static_cast<int>(kWidth * done / std::max<int64_t>(1, total));
    const std::string bar = std::string(filled, '#') + std::string(kWidth - filled, '.');
    const std::string line = fmt::format("[kvc eval] [{}] {}/{} {} elapsed, {} left | {}", bar,
                                         done, total, format_duration(elapsed),
                                         format_duration(eta), what);
    if (tty) {
      std::fprintf(stderr, "\r\033[K%s", line.c_str());
      if (done == total) std::fprintf(stderr, "\n");
    } else if (what.ends_with("prefill") || done == total) {
      std::fprintf(stderr, "%s\n", line.c_str());  // one line per sample in logs
    }
    std::fflush(stderr);
  };
  eval::run_eval(*model, texts, s, cb);

  const json summary = summary_json(cells);
  write({{"kind", "summary"}, {"rows", summary}});
  if (o.json_summary) {
    std::cout << summary.dump(2) << "\n";
  } else {
    std::vector<std::string> columns = s.tasks;
    for (const eval::UserTask& t : s.user_tasks) {
      if (std::find(columns.begin(), columns.end(), t.name) == columns.end()) columns.push_back(t.name);
    }
    print_summary(stdout, cells, columns, order,
                  o.fidelity_file.empty() ? std::string("Austen text") : o.fidelity_file);
  }
  if (!o.out.empty()) std::fprintf(stderr, "[kvc eval] wrote %s\n", o.out.c_str());
}

}  // namespace

void register_eval(CLI::App& app) {
  auto o = std::make_shared<EvalOptions>();
  CLI::App* cmd = app.add_subcommand(
      "eval",
      "Compare KV policies at equal memory: long-context tasks (RULER recipes, haystacks of noise "
      "or Austen prose) and fidelity on Austen text, one shared prefill per sample");
  add_model_options(*cmd, o->model);
  std::string task_help = "Tasks to run, comma-separated (default: all):";
  for (const eval::TaskInfo& t : eval::task_infos()) {
    task_help += fmt::format("\n  {:<16} {}", t.name, t.description);
  }
  cmd->add_option("--tasks", o->tasks, task_help)->delimiter(',');
  cmd->add_flag("--no-tasks", o->no_tasks, "Run only the fidelity evaluation");
  cmd->add_option("--tasks-file", o->tasks_file,
                  "Your own tasks, JSON lines: {\"prompt\": ... | \"context\": ..., \"question\": ..., "
                  "\"answers\": [...], \"metric\": \"substring\"|\"exact\"|\"all\", \"chat\": true, "
                  "\"name\": ..., \"max_new_tokens\": N}; run instead of the built-in tasks unless "
                  "--tasks is given too");
  cmd->add_option("--fidelity-file", o->fidelity_file,
                  "Measure fidelity on this text file instead of Austen's novels (it must hold "
                  "the longest --fidelity-lengths plus --continuation tokens)");
  cmd->add_option("--lengths", o->lengths, "Task prompt lengths in tokens, comma-separated")
      ->delimiter(',')
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  cmd->add_option("--samples", o->samples, "Samples per (task, length)")
      ->check(CLI::Range(1, 100000))
      ->capture_default_str();
  cmd->add_option("--seed", o->seed, "Seed of the generated tasks")->capture_default_str();
  cmd->add_option("--policies", o->policies,
                  "Policies to compare with the full cache, comma-separated; also the "
                  "KV-Compress ablations kvcompress-l1, kvcompress-w32, kvcompress-full, "
                  "kvcompress-words (auto with the window of 8, no probe), "
                  "kvcompress-words-floor (+ a 0.2 x C floor per head)")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--budgets", o->budgets,
                  "Budgets C (mean KVs kept per layer x KV head), comma-separated")
      ->delimiter(',')
      ->check(CLI::Range(1, 1 << 24))
      ->capture_default_str();
  cmd->add_option("--fidelity-lengths", o->fidelity_lengths,
                  "Austen context lengths in tokens for the fidelity evaluation")
      ->delimiter(',')
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  cmd->add_option("--fidelity-samples", o->fidelity_samples,
                  "Fidelity samples per length (0: no fidelity evaluation)")
      ->check(CLI::Range(0, 100000))
      ->capture_default_str();
  cmd->add_option("--continuation", o->continuation,
                  "Teacher-forced tokens scored after each fidelity context")
      ->check(CLI::Range(1, 255))
      ->capture_default_str();
  cmd->add_flag("--quick", o->quick,
                "Smoke run (~1 minute): niah_single_1 at 1K, one sample, C in {64, 512}, "
                "fidelity at 1K; overrides the task, length, sample and budget options");
  cmd->add_option("-o,--out", o->out, "Write every record as JSON lines to this file "
                                      "(input of scripts/eval_report.py)");
  cmd->add_flag("--json", o->json_summary, "Print the summary as JSON instead of tables");
  cmd->add_flag("--poison-kv", o->poison_kv,
                "Fill freed and unused KV slots with NaN so any stray read shows (debugging)");
  add_kv_dtype_option(*cmd, o->kv_dtype);
  cmd->footer(cmd->get_footer() +
              "\nWith --kv-dtype other than f16, every setting (full included) stores its KVs "
              "that way and fidelity is measured against the f16 full cache.");
  add_policy_tuning_options(*cmd, o->tuning);
  cmd->callback([o] { run(*o); });
}

void set_eval_command_line(int argc, char** argv) {
  g_argc = argc;
  g_argv = argv;
}

}  // namespace kvc::cli
