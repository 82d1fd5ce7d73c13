#include "model/model.h"

#include "util/error.h"

namespace kvc {

Model::Model(GgufFile file, ModelConfig config, ModelWeights weights, Tokenizer tokenizer)
    : file_(std::move(file)),
      config_(std::move(config)),
      weights_(std::move(weights)),
      tokenizer_(std::move(tokenizer)) {
  chat_template_ = std::string(file_.get_string("tokenizer.chat_template").value_or(""));
}

std::unique_ptr<Model> Model::load(const std::string& path) {
  GgufFile file = GgufFile::open(path);
  ModelConfig config = ModelConfig::from_gguf(file);
  ModelWeights weights = ModelWeights::from_gguf(file, config);
  Tokenizer tokenizer = Tokenizer::from_gguf(file);
  if (tokenizer.vocab_size() != config.n_vocab) {
    fail("model: {}: tokenizer has {} tokens but token_embd has {} rows", path,
         tokenizer.vocab_size(), config.n_vocab);
  }
  return std::unique_ptr<Model>(
      new Model(std::move(file), std::move(config), std::move(weights), std::move(tokenizer)));
}

}  // namespace kvc
