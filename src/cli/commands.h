// Registration of `kvc` subcommands; each lives in its own cmd_*.cpp.
#pragma once

#include <CLI/CLI.hpp>

namespace kvc::cli {

void register_generate(CLI::App& app);
void register_info(CLI::App& app);
void register_tokenize(CLI::App& app);
void register_bench(CLI::App& app);
void register_eval(CLI::App& app);
void register_serve(CLI::App& app);
// The command line as typed, recorded in `kvc eval`'s output so results name their command.
void set_eval_command_line(int argc, char** argv);

}  // namespace kvc::cli
