// A loaded model: the mapped GGUF file, its validated config, weight views and tokenizer.
// Immutable after load; shared read-only by every forward pass.
#pragma once

#include <memory>
#include <string>

#include "gguf/gguf.h"
#include "model/model_config.h"
#include "model/model_weights.h"
#include "model/tokenizer/tokenizer.h"

namespace kvc {

class Model {
 public:
  // Opens, validates and binds everything; throws kvc::Error with a one-line reason.
  static std::unique_ptr<Model> load(const std::string& path);

  const GgufFile& file() const { return file_; }
  const ModelConfig& config() const { return config_; }
  const ModelWeights& weights() const { return weights_; }
  const Tokenizer& tokenizer() const { return tokenizer_; }
  // The GGUF's chat template text (tokenizer.chat_template), empty when absent.
  std::string_view chat_template() const { return chat_template_; }

 private:
  Model(GgufFile file, ModelConfig config, ModelWeights weights, Tokenizer tokenizer);

  GgufFile file_;
  ModelConfig config_;
  ModelWeights weights_;
  Tokenizer tokenizer_;
  std::string chat_template_;
};

}  // namespace kvc
