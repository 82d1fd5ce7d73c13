// kvc: one binary, one subcommand per job.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>

#include "cli/commands.h"
#include "util/error.h"

int main(int argc, char** argv) {
  CLI::App app{
      "kvcompress: LLM inference with a paged, per-head compressible KV cache (KV-Compress)",
      "kvc"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "kvc 0.1.0");
  kvc::cli::register_generate(app);
  kvc::cli::register_info(app);
  kvc::cli::register_tokenize(app);
  kvc::cli::register_bench(app);
  kvc::cli::register_eval(app);
  kvc::cli::register_serve(app);
  kvc::cli::set_eval_command_line(argc, argv);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const kvc::Error& e) {
    std::fprintf(stderr, "kvc: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kvc: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
