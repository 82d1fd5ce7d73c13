// Tokenizer tests against independent references:
//   - tests/golden/tokenizer_smollm2.json: llama.cpp's ids for SmolLM2 (scripts/golden/
//     make_tokenizer_golden.py), needs the model in KVC_MODEL_DIR (skipped when absent);
//   - tests/data/ggml-vocab-*.gguf.inp/.out: Hugging Face tokenizers' ids shipped with llama.cpp
//     for its vocab-only GGUFs (starcoder = SmolLM's pre-tokenizer family, gpt-2);
//   - hand-written expectations for chat templates, errors and a tiny synthetic vocabulary.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <sstream>

#include "gguf/gguf.h"
#include "model/tokenizer/chat_template.h"
#include "model/tokenizer/pretokenizer.h"
#include "model/tokenizer/tokenizer.h"
#include "util/error.h"

namespace kvc {
namespace {

const std::string kModelPath = KVC_MODEL_DIR "/SmolLM2-135M-Instruct.Q4_1.gguf";
const std::string kGoldenPath = KVC_SOURCE_DIR "/tests/golden/tokenizer_smollm2.json";
const std::string kDataDir = KVC_SOURCE_DIR "/tests/data";

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::ostringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

std::string from_hex(const std::string& hex) {
  std::string bytes;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    bytes.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  }
  return bytes;
}

// SmolLM2's tokenizer and chat template, loaded once for the suite.
class SmolLM2Tokenizer : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!std::filesystem::exists(kModelPath)) return;
    GgufFile file = GgufFile::open(kModelPath);
    tokenizer_ = new Tokenizer(Tokenizer::from_gguf(file));
    chat_template_ = new std::string(file.get_string("tokenizer.chat_template").value_or(""));
  }
  static void TearDownTestSuite() {
    delete tokenizer_;
    delete chat_template_;
  }
  void SetUp() override {
    if (tokenizer_ == nullptr) GTEST_SKIP() << "model not found: " << kModelPath;
  }
  static inline Tokenizer* tokenizer_ = nullptr;
  static inline std::string* chat_template_ = nullptr;
};

TEST_F(SmolLM2Tokenizer, MatchesLlamaCppGolden) {
  const nlohmann::json golden = nlohmann::json::parse(read_file(kGoldenPath));
  ASSERT_GE(golden["cases"].size(), 40u);
  for (const auto& c : golden["cases"]) {
    const bool hex = c.contains("text_hex");
    const std::string text = hex ? from_hex(c["text_hex"]) : c["text"].get<std::string>();
    const std::string detokenized =
        hex ? from_hex(c["detokenized_hex"]) : c["detokenized"].get<std::string>();
    const bool parse_special = c["parse_special"];
    SCOPED_TRACE("text: '" + text.substr(0, 60) + "' parse_special=" + std::to_string(parse_special));

    const std::vector<int32_t> ids = tokenizer_->encode(text, parse_special);
    EXPECT_EQ(ids, c["ids"].get<std::vector<int32_t>>());
    EXPECT_EQ(tokenizer_->decode(ids), detokenized);
    if (!hex) {
      EXPECT_EQ(tokenizer_->decode(ids), text);  // valid UTF-8 round-trips exactly
    }
  }
}

TEST_F(SmolLM2Tokenizer, Metadata) {
  EXPECT_EQ(tokenizer_->vocab_size(), 49152);
  EXPECT_EQ(tokenizer_->bos(), 1);
  EXPECT_EQ(tokenizer_->eos(), 2);
  EXPECT_EQ(tokenizer_->eot(), 2);  // <|im_end|>
  EXPECT_FALSE(tokenizer_->add_bos());
  EXPECT_EQ(tokenizer_->pre_name(), "smollm");
  EXPECT_TRUE(tokenizer_->is_control(1));
  EXPECT_FALSE(tokenizer_->is_control(905));
  EXPECT_TRUE(tokenizer_->is_end_of_generation(2));
  EXPECT_TRUE(tokenizer_->is_end_of_generation(0));  // <|endoftext|>
  EXPECT_FALSE(tokenizer_->is_end_of_generation(1));
  EXPECT_EQ(tokenizer_->token_to_piece(905), " world");  // 'Ġworld'
  EXPECT_EQ(tokenizer_->token_to_piece(1), "<|im_start|>");
  EXPECT_THROW(tokenizer_->token_to_piece(49152), Error);
  const std::vector<int32_t> ids = {1, 905, 2};
  EXPECT_EQ(tokenizer_->decode(ids, /*render_special=*/false), " world");
}

TEST_F(SmolLM2Tokenizer, ControlTokensNeedParseSpecial) {
  EXPECT_EQ(tokenizer_->encode("<|im_start|>", true), std::vector<int32_t>{1});
  const std::vector<int32_t> plain = tokenizer_->encode("<|im_start|>", false);
  EXPECT_GT(plain.size(), 1u);
  EXPECT_EQ(tokenizer_->decode(plain), "<|im_start|>");
}

TEST_F(SmolLM2Tokenizer, LongInputsRoundTrip) {
  // One 20k-character word and a 100k-space run: exercises the heap-based merge and the regex
  // engine's backtracking limits; quadratic code would take minutes here.
  for (const std::string& text : {std::string(20000, 'a'), std::string(100000, ' '),
                                  std::string(5000, '7') + "x" + std::string(3000, '\n')}) {
    EXPECT_EQ(tokenizer_->decode(tokenizer_->encode(text, false)), text);
  }
}

TEST_F(SmolLM2Tokenizer, ChatTemplateSmolLM2) {
  const std::vector<ChatMessage> chat = {{"user", "What is 2+2?"}, {"assistant", "4."}};
  EXPECT_EQ(apply_chat_template(*chat_template_, chat, /*add_generation_prompt=*/false),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
            "Face<|im_end|>\n"
            "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
            "<|im_start|>assistant\n4.<|im_end|>\n");

  const std::vector<ChatMessage> with_system = {{"system", "Be brief."}, {"user", "Hi"}};
  const std::string prompt = apply_chat_template(*chat_template_, with_system, true);
  EXPECT_EQ(prompt,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\n");
  const std::vector<int32_t> ids = tokenizer_->encode(prompt, true);
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(ids.front(), 1);
  EXPECT_EQ(tokenizer_->decode(ids), prompt);
}

TEST(ChatTemplate, PlainChatMLAndLlama3) {
  const std::vector<ChatMessage> chat = {{"user", "  Hello  "}, {"assistant", "Hi!"}};
  const std::string chatml =
      "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
      "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}";
  EXPECT_EQ(chatml_default_system_message(chatml), "");
  EXPECT_EQ(apply_chat_template(chatml, chat, true),
            "<|im_start|>user\n  Hello  <|im_end|>\n<|im_start|>assistant\nHi!<|im_end|>\n"
            "<|im_start|>assistant\n");

  const std::string llama3 =
      "{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
      "'<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}";
  EXPECT_EQ(apply_chat_template(llama3, chat, true),
            "<|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\nHi!<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

TEST(ChatTemplate, QwenStyleEscapedDefaultSystem) {
  const std::string qwen =
      "{%- if messages[0]['role'] != 'system' %}{{- '<|im_start|>system\\nYou are Qwen, created "
      "by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}{%- endif %}";
  EXPECT_EQ(chatml_default_system_message(qwen),
            "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.");
}

// Qwen2.5's real template opens a system turn without a literal in its tools branch first; the
// literal default comes later and must still be found.
TEST(ChatTemplate, QwenStyleDefaultSystemAfterToolsBranch) {
  const std::string qwen =
      "{%- if tools %}{{- '<|im_start|>system\\n' }}{%- if messages[0]['role'] == 'system' %}"
      "{{- messages[0]['content'] }}{%- endif %}{{- '<|im_end|>\\n' }}{%- else %}"
      "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + "
      "messages[0]['content'] + '<|im_end|>\\n' }}{%- else %}{{- '<|im_start|>system\\nYou are "
      "Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}{%- endif %}"
      "{%- endif %}";
  EXPECT_EQ(chatml_default_system_message(qwen),
            "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.");
  const std::vector<ChatMessage> chat = {{"user", "Hi"}};
  EXPECT_EQ(apply_chat_template(qwen, chat, true),
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
            "assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
}

TEST(ChatTemplate, UnsupportedThrows) {
  const std::vector<ChatMessage> chat = {{"user", "Hi"}};
  EXPECT_THROW(apply_chat_template("[INST] {{ message['content'] }} [/INST]", chat, true), Error);
  EXPECT_THROW(apply_chat_template("", chat, true), Error);
}

// llama.cpp's tests/test-tokenizer-0 format: inputs separated by "\n__ggml_vocab_test__\n",
// one line of space-separated ids per input in .out.
void check_vocab_test_vectors(const std::string& name) {
  const std::string base = kDataDir + "/ggml-vocab-" + name + ".gguf";
  GgufFile file = GgufFile::open(base);
  const Tokenizer tokenizer = Tokenizer::from_gguf(file);

  const std::string inputs = read_file(base + ".inp");
  const std::string sep = "\n__ggml_vocab_test__\n";
  std::vector<std::string> texts;
  for (size_t pos = 0; pos < inputs.size();) {
    const size_t next = inputs.find(sep, pos);
    texts.push_back(inputs.substr(pos, next == std::string::npos ? std::string::npos : next - pos));
    if (next == std::string::npos) break;
    pos = next + sep.size();
  }
  std::ifstream out(base + ".out");
  std::vector<std::vector<int32_t>> expected;
  for (std::string line; std::getline(out, line);) {
    std::istringstream ids(line);
    expected.emplace_back(std::istream_iterator<int32_t>(ids), std::istream_iterator<int32_t>());
  }
  ASSERT_EQ(texts.size(), expected.size());
  ASSERT_GE(texts.size(), 30u);
  for (size_t i = 0; i < texts.size(); ++i) {
    SCOPED_TRACE(name + " case " + std::to_string(i) + ": '" + texts[i] + "'");
    const std::vector<int32_t> ids = tokenizer.encode(texts[i], /*parse_special=*/false);
    EXPECT_EQ(ids, expected[i]);
    EXPECT_EQ(tokenizer.decode(ids), texts[i]);
  }
}

TEST(VocabTestVectors, StarCoder) { check_vocab_test_vectors("starcoder"); }
TEST(VocabTestVectors, Gpt2) { check_vocab_test_vectors("gpt-2"); }

// A five-token vocabulary: merge order, ties and the byte fallback, checked by hand.
TokenizerSpec tiny_spec() {
  TokenizerSpec spec;
  spec.pre = "gpt-2";
  spec.tokens = {"a", "b", "aa", "ab", "aab", "<s>"};
  spec.types = {TokenType::NORMAL, TokenType::NORMAL, TokenType::NORMAL, TokenType::NORMAL,
                TokenType::NORMAL, TokenType::CONTROL};
  spec.merges = {"a b", "a a", "a ab"};
  spec.bos = 5;
  spec.eos = 5;
  return spec;
}

TEST(TinyVocab, MergesByRankThenLeftmost) {
  const Tokenizer tok = Tokenizer::from_spec(tiny_spec());
  EXPECT_EQ(tok.encode("ab", false), (std::vector<int32_t>{3}));
  EXPECT_EQ(tok.encode("aab", false), (std::vector<int32_t>{4}));  // a+b first, then a+ab
  EXPECT_EQ(tok.encode("aaa", false), (std::vector<int32_t>{2, 0}));  // leftmost pair first
  EXPECT_EQ(tok.encode("aaaa", false), (std::vector<int32_t>{2, 2}));
  EXPECT_EQ(tok.encode("a<s>b", true), (std::vector<int32_t>{0, 5, 1}));
  EXPECT_EQ(tok.encode("c", false), std::vector<int32_t>{});  // no id for 'c': dropped like llama.cpp
}

TEST(TokenizerErrors, RejectsBadVocabularies) {
  EXPECT_THROW(find_pretokenizer_scheme("no-such-pre"), Error);
  EXPECT_EQ(find_pretokenizer_scheme("smollm").name, "starcoder");
  EXPECT_EQ(find_pretokenizer_scheme("llama-bpe").regexes.size(), 1u);
  EXPECT_TRUE(find_pretokenizer_scheme("llama-bpe").ignore_merges);
  EXPECT_EQ(find_pretokenizer_scheme("").name, "default");

  auto expect_error = [](TokenizerSpec spec, const std::string& fragment) {
    try {
      Tokenizer::from_spec(std::move(spec));
      ADD_FAILURE() << "no error, expected one mentioning '" << fragment << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
  };
  TokenizerSpec spec = tiny_spec();
  spec.pre = "no-such-pre";
  expect_error(spec, "unknown pre-tokenizer 'no-such-pre'");
  spec = tiny_spec();
  spec.model = "llama";
  expect_error(spec, "unsupported tokenizer.ggml.model 'llama'");
  spec = tiny_spec();
  spec.types.pop_back();
  expect_error(spec, "token types");
  spec = tiny_spec();
  spec.bos = 6;
  expect_error(spec, "bos token id 6");
  spec = tiny_spec();
  spec.tokens[2] = "a";
  expect_error(spec, "same text");
  spec = tiny_spec();
  spec.merges.push_back("ab");
  expect_error(spec, "no space");
}

}  // namespace
}  // namespace kvc
