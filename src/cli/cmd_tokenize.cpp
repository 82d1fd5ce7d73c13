// `kvc tokenize`: token ids (and pieces) of a text, for debugging prompts and templates.
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli/commands.h"
#include "cli/common_options.h"

namespace kvc::cli {
namespace {

struct TokenizeOptions {
  ModelOptions model;
  std::string text;
  bool special = false;
  bool json = false;
};

void run_tokenize(const TokenizeOptions& o) {
  const std::unique_ptr<Model> model = load_model(o.model);
  std::string text = o.text;
  if (text == "-") {
    std::ostringstream in;
    in << std::cin.rdbuf();
    text = in.str();
  }
  const Tokenizer& tok = model->tokenizer();
  const std::vector<int32_t> ids = tok.encode(text, o.special);
  if (o.json) {
    nlohmann::json j;
    j["ids"] = ids;
    std::vector<std::string> pieces;
    for (int32_t id : ids) pieces.push_back(tok.token_to_piece(id));
    j["pieces"] = pieces;
    std::cout << j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    return;
  }
  for (int32_t id : ids) {
    std::cout << id << "\t'" << tok.token_to_piece(id) << "'\n";
  }
  std::cout << ids.size() << " tokens\n";
}

}  // namespace

void register_tokenize(CLI::App& app) {
  auto o = std::make_shared<TokenizeOptions>();
  CLI::App* cmd = app.add_subcommand("tokenize", "Print the token ids of a text");
  add_model_options(*cmd, o->model);
  cmd->add_option("text", o->text, "Text to tokenize ('-' reads stdin)")->required();
  cmd->add_flag("--special", o->special, "Parse special tokens such as <|im_start|> in the text");
  cmd->add_flag("--json", o->json, "Print JSON");
  cmd->callback([o] { run_tokenize(*o); });
}

}  // namespace kvc::cli
