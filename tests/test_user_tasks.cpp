// Users' own tasks and fidelity text for `kvc eval` (eval/user_tasks.h): parsing with errors
// that name the line, the three metrics, and a run on SmolLM2 where a policy that keeps every
// KV answers exactly as the full cache does and fidelity comes from the user's text.
#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include "eval/evaluator.h"
#include "eval/user_tasks.h"
#include "util/error.h"

namespace kvc::eval {
namespace {

std::string error_of(std::string_view text) {
  try {
    parse_tasks(text, "t.jsonl");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(UserTasks, ParsesBothShapesWithDefaults) {
  const auto tasks = parse_tasks(
      "{\"prompt\": \"What is 2+2?\", \"answers\": [\"4\", \"four\"]}\n"
      "\n"
      "{\"context\": \"The key is 7.\", \"question\": \"What is the key?\", \"answers\": \"7\", "
      "\"metric\": \"exact\", \"chat\": false, \"name\": \"keys\", \"max_new_tokens\": 5}\n",
      "t.jsonl");
  ASSERT_EQ(tasks.size(), 2u);
  EXPECT_EQ(tasks[0].line, 1);
  EXPECT_EQ(tasks[0].name, "user");
  EXPECT_TRUE(tasks[0].chat);
  EXPECT_EQ(tasks[0].metric, AnswerMetric::kSubstring);
  EXPECT_EQ(tasks[0].answers, (std::vector<std::string>{"4", "four"}));
  EXPECT_EQ(tasks[0].max_new_tokens, 32);
  EXPECT_EQ(tasks[1].line, 3);  // the blank line counts
  EXPECT_EQ(tasks[1].input, "The key is 7.\n\nWhat is the key?");
  EXPECT_EQ(tasks[1].metric, AnswerMetric::kExact);
  EXPECT_FALSE(tasks[1].chat);
  EXPECT_EQ(tasks[1].name, "keys");
  EXPECT_EQ(tasks[1].max_new_tokens, 5);
}

TEST(UserTasks, EveryMalformedLineIsAnErrorNamingIt) {
  const std::string ok = "{\"prompt\": \"p\", \"answers\": [\"a\"]}\n";
  const std::pair<std::string, std::string> cases[] = {
      {"", "no tasks"},
      {"\n  \n", "no tasks"},
      {ok + "not json\n", "t.jsonl:2: not JSON"},
      {ok + "[1, 2]\n", "t.jsonl:2: expected a JSON object"},
      {ok + ok + "{\"answers\": [\"a\"]}\n", "t.jsonl:3: give either 'prompt'"},
      {"{\"prompt\": \"p\"}\n", "t.jsonl:1: missing 'answers'"},
      {"{\"prompt\": \"p\", \"answers\": []}\n", "non-empty array"},
      {"{\"prompt\": \"p\", \"answers\": [3]}\n", "must hold strings"},
      {"{\"prompt\": \"p\", \"answers\": [\" \"]}\n", "an answer is empty"},
      {"{\"prompt\": 5, \"answers\": [\"a\"]}\n", "'prompt' must be a string"},
      {"{\"prompt\": \"  \", \"answers\": [\"a\"]}\n", "the prompt is empty"},
      {"{\"context\": \"c\", \"answers\": [\"a\"]}\n", "go together"},
      {"{\"prompt\": \"p\", \"context\": \"c\", \"question\": \"q\", \"answers\": [\"a\"]}\n",
       "give either"},
      {"{\"prompt\": \"p\", \"answers\": [\"a\"], \"metric\": \"fuzzy\"}\n", "unknown metric 'fuzzy'"},
      {"{\"prompt\": \"p\", \"answers\": [\"a\"], \"chat\": \"yes\"}\n", "'chat' must be true or false"},
      {"{\"prompt\": \"p\", \"answers\": [\"a\"], \"max_new_tokens\": 0}\n", "max_new_tokens"},
      {"{\"prompt\": \"p\", \"answers\": [\"a\"], \"answer\": \"a\"}\n", "unknown field 'answer'"},
  };
  for (const auto& [text, expected] : cases) {
    SCOPED_TRACE(text);
    EXPECT_NE(error_of(text).find(expected), std::string::npos) << error_of(text);
  }
}

TEST(UserTasks, Metrics) {
  const std::vector<std::string> answers = {"Paris", "Lyon"};
  EXPECT_EQ(score_answer(AnswerMetric::kSubstring, "It is paris.", answers), 1.0);
  EXPECT_EQ(score_answer(AnswerMetric::kSubstring, "It is Rome.", answers), 0.0);
  EXPECT_EQ(score_answer(AnswerMetric::kAll, "Paris, then Lyon", answers), 1.0);
  EXPECT_EQ(score_answer(AnswerMetric::kAll, "Paris only", answers), 0.5);
  EXPECT_EQ(score_answer(AnswerMetric::kExact, "  Paris\n", answers), 1.0);
  EXPECT_EQ(score_answer(AnswerMetric::kExact, "Paris.", answers), 0.0);
  EXPECT_EQ(score_answer(AnswerMetric::kExact, "paris", answers), 0.0);
}

TEST(UserTasks, MissingFileIsAnError) {
  EXPECT_THROW(load_tasks_file("/nonexistent/tasks.jsonl"), Error);
}

class UserTasksOnModel : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string path = KVC_MODEL_DIR "/SmolLM2-135M-Instruct.Q4_1.gguf";
    if (std::ifstream(path)) model_ = Model::load(path).release();
  }
  static void TearDownTestSuite() { delete model_; }
  void SetUp() override {
    if (model_ == nullptr) GTEST_SKIP() << "model not downloaded: run scripts/setup.sh";
  }
  static Model* model_;
};
Model* UserTasksOnModel::model_ = nullptr;

std::string passage() {
  std::string text;
  for (int i = 0; i < 40; ++i) {
    text += "The archive room on floor " + std::to_string(i + 2) +
            " keeps the letters of the old harbour company in grey boxes. ";
  }
  return text;
}

TEST_F(UserTasksOnModel, KeepAllAnswersAsTheFullCacheAndFidelityReadsTheUsersText) {
  EvalSettings s;
  s.user_tasks = parse_tasks(
      "{\"context\": \"" + passage() + " The secret code is 4711.\", \"question\": \"What is the "
      "secret code?\", \"answers\": [\"4711\"], \"name\": \"code\"}\n"
      "{\"prompt\": \"The capital of France is\", \"answers\": \"Paris\", \"chat\": false, "
      "\"max_new_tokens\": 8}\n",
      "mine.jsonl");
  s.variants.push_back(make_policy_variant("kvcompress", CompressionConfig{}));
  s.budgets = {4096, 16};
  s.fidelity_lengths = {256};
  s.fidelity_samples = 1;
  s.continuation = 16;
  s.poison_kv = true;
  TextSources texts;
  texts.fidelity_text = passage() + passage();
  texts.fidelity_source = "mine.txt";
  std::vector<TaskRecord> tasks;
  std::vector<FidelityRecord> fidelity;
  EvalCallbacks cb;
  cb.on_task = [&](const TaskRecord& r) { tasks.push_back(r); };
  cb.on_fidelity = [&](const FidelityRecord& r) { fidelity.push_back(r); };
  run_eval(*model_, texts, s, cb);
  ASSERT_EQ(tasks.size(), 6u);  // 2 tasks x (full, C=4096, C=16)
  for (size_t i = 0; i < tasks.size(); i += 3) {
    const TaskRecord& full = tasks[i];
    EXPECT_EQ(full.policy, "full");
    EXPECT_EQ(full.metric, "substring");
    EXPECT_EQ(tasks[i + 1].budget, 4096);
    EXPECT_EQ(tasks[i + 1].prediction, full.prediction);  // kept everything: same answer
    EXPECT_EQ(tasks[i + 1].score, full.score);
    EXPECT_EQ(full.length, full.prompt_tokens);
  }
  EXPECT_LT(tasks[2].fork.kvs_kept, tasks[0].fork.kvs_kept);  // the long prompt was compressed
  EXPECT_EQ(tasks[0].task, "code");
  EXPECT_EQ(tasks[3].task, "user");
  EXPECT_EQ(tasks[3].score, 1.0) << tasks[3].prediction;  // raw completion of an easy fact
  ASSERT_EQ(fidelity.size(), 3u);
  EXPECT_EQ(fidelity[1].kl, 0.0);
  EXPECT_GT(fidelity[2].kl, 0.0);

  texts.fidelity_text = "Too short.";
  s.user_tasks.clear();
  try {
    run_eval(*model_, texts, s, cb);
    FAIL() << "a fidelity text shorter than the context must be refused";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("mine.txt"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace kvc::eval
