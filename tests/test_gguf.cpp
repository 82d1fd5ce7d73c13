// GGUF reader: valid files parse; every kind of malformed file gets a clear error, never a crash.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <string>

#include "gguf/gguf.h"
#include "gguf_builder.h"
#include "util/error.h"

namespace kvc {
namespace {

using test_support::GgufBuilder;

std::vector<uint8_t> f32_bytes(const std::vector<float>& v) {
  std::vector<uint8_t> out(v.size() * 4);
  std::memcpy(out.data(), v.data(), out.size());
  return out;
}

GgufBuilder sample_builder() {
  GgufBuilder b;
  b.add_string("general.architecture", "llama");
  b.add_u32("llama.block_count", 2);
  b.add_f32("llama.rope.freq_base", 10000.0f);
  b.add_bool("tokenizer.ggml.add_bos_token", true);
  b.add_string_array("tokenizer.ggml.tokens", {"a", "b", "<s>"});
  b.add_i32_array("tokenizer.ggml.token_type", {1, 1, 3});
  b.add_tensor("w", TensorType::F32, {4, 2}, f32_bytes({1, 2, 3, 4, 5, 6, 7, 8}));
  b.add_tensor("q", TensorType::Q8_0, {32, 1}, std::vector<uint8_t>(34, 1));
  return b;
}

// Expects parsing to throw kvc::Error whose message contains `needle`.
void expect_error(const std::vector<uint8_t>& bytes, const std::string& needle) {
  try {
    GgufFile::parse(bytes, "test.gguf");
    FAIL() << "expected an error containing '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << "one line: " << e.what();
  }
}

TEST(Gguf, ParsesEveryFieldOfAValidFile) {
  const std::vector<uint8_t> bytes = sample_builder().build();
  const GgufFile f = GgufFile::parse(bytes, "test.gguf");
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.get_string("general.architecture"), "llama");
  EXPECT_EQ(f.get_uint("llama.block_count"), 2u);
  EXPECT_EQ(f.get_int("llama.block_count"), 2);
  EXPECT_FLOAT_EQ(*f.get_float("llama.rope.freq_base"), 10000.0f);
  EXPECT_EQ(f.get_bool("tokenizer.ggml.add_bos_token"), true);
  const auto tokens = f.get_string_array("tokenizer.ggml.tokens");
  ASSERT_TRUE(tokens);
  EXPECT_EQ(*tokens, (std::vector<std::string_view>{"a", "b", "<s>"}));
  EXPECT_EQ(f.get_int_array("tokenizer.ggml.token_type"), (std::vector<int64_t>{1, 1, 3}));
  EXPECT_FALSE(f.get_string("missing"));
  EXPECT_THROW(f.get_string("llama.block_count"), Error);  // present with another type
  EXPECT_THROW(f.get_uint("general.architecture"), Error);

  ASSERT_EQ(f.tensors().size(), 2u);
  const GgufTensorInfo* w = f.find_tensor("w");
  ASSERT_NE(w, nullptr);
  EXPECT_EQ(w->type, TensorType::F32);
  EXPECT_EQ(w->dims, (std::vector<int64_t>{4, 2}));
  EXPECT_EQ(w->rows(), 2);
  EXPECT_EQ(w->bytes, 32u);
  float values[8];
  std::memcpy(values, w->data, sizeof(values));
  EXPECT_EQ(values[7], 8.0f);
  const GgufTensorInfo* q = f.find_tensor("q");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->bytes, 34u);
  EXPECT_EQ(q->offset % 32, 0u);
}

TEST(Gguf, EveryTruncationIsRejectedCleanly) {
  const std::vector<uint8_t> bytes = sample_builder().build();
  // Every prefix shorter than the whole file must fail with an error, not crash or succeed
  // (the last tensor's data ends exactly at the end of the file).
  for (size_t n = 0; n < bytes.size(); ++n) {
    const std::vector<uint8_t> prefix(bytes.begin(), bytes.begin() + static_cast<long>(n));
    EXPECT_THROW(GgufFile::parse(prefix, "truncated.gguf"), Error) << "prefix " << n;
  }
  EXPECT_NO_THROW(GgufFile::parse(bytes, "whole.gguf"));
}

TEST(Gguf, BadMagicAndVersion) {
  std::vector<uint8_t> bytes = sample_builder().build();
  bytes[0] = 'X';
  expect_error(bytes, "bad magic");
  expect_error(GgufBuilder(1).build(), "unsupported GGUF version 1");
  expect_error(GgufBuilder(4).build(), "unsupported GGUF version 4");
}

TEST(Gguf, AbsurdCounts) {
  std::vector<uint8_t> bytes = GgufBuilder().build();
  const uint64_t huge = ~0ull;
  std::memcpy(bytes.data() + 8, &huge, 8);  // tensor count
  expect_error(bytes, "absurd tensor count");
  bytes = GgufBuilder().build();
  std::memcpy(bytes.data() + 16, &huge, 8);  // metadata count
  expect_error(bytes, "absurd metadata count");
  // A plausible count with nothing behind it: runs out of bytes.
  bytes = GgufBuilder().build();
  const uint64_t many = 1000;
  std::memcpy(bytes.data() + 16, &many, 8);
  expect_error(bytes, "needs");
}

TEST(Gguf, AbsurdStringAndArrayLengths) {
  GgufBuilder b;
  b.add_string("k", "value");
  std::vector<uint8_t> bytes = b.build();
  // key length field sits right after the header
  const uint64_t huge = 1ull << 62;
  std::memcpy(bytes.data() + GgufBuilder::kHeaderBytes, &huge, 8);
  expect_error(bytes, "absurd length");

  GgufBuilder a;
  a.add_string_array("arr", {"x", "y"});
  bytes = a.build();
  // header(24) + key(8 + 3) + type(4) + element type(4) -> array count
  std::memcpy(bytes.data() + GgufBuilder::kHeaderBytes + 8 + 3 + 4 + 4, &huge, 8);
  expect_error(bytes, "absurd length");

  GgufBuilder n;
  n.add_i32_array("ints", {1, 2, 3});
  bytes = n.build();
  const uint64_t overflow = (~0ull / 4) + 2;  // count * 4 overflows 64 bits
  std::memcpy(bytes.data() + GgufBuilder::kHeaderBytes + 8 + 4 + 4 + 4, &overflow, 8);
  expect_error(bytes, "absurd length");
}

TEST(Gguf, UnknownValueAndTensorTypes) {
  GgufBuilder b;
  b.add_u32("k", 7);
  std::vector<uint8_t> bytes = b.build();
  const uint32_t bad_type = 99;
  std::memcpy(bytes.data() + GgufBuilder::kHeaderBytes + 8 + 1, &bad_type, 4);
  expect_error(bytes, "unknown value type 99");

  for (uint32_t id : {4u, 5u, 31u, 99u, 0xffffffffu}) {
    GgufBuilder t;
    t.add_tensor("x", TensorType::F32, {4}, std::vector<uint8_t>(16));
    bytes = t.build();
    // header + name(8 + 1) + n_dims(4) + dim(8) -> type
    std::memcpy(bytes.data() + GgufBuilder::kHeaderBytes + 8 + 1 + 4 + 8, &id, 4);
    expect_error(bytes, "unknown type id");
  }
}

TEST(Gguf, InvalidDimensionsAndOffsets) {
  {  // zero dimension
    GgufBuilder b;
    b.add_tensor("x", TensorType::F32, {0}, {});
    expect_error(b.build(), "invalid dimension 0");
  }
  {  // product of dims overflows
    GgufBuilder b;
    b.add_tensor("x", TensorType::F32, {1ll << 40, 1ll << 40}, {});
    expect_error(b.build(), "invalid dimension");
  }
  {  // too many dims
    GgufBuilder b;
    b.add_tensor("x", TensorType::F32, {1, 1, 1, 1, 1}, std::vector<uint8_t>(4));
    expect_error(b.build(), "5 dimensions");
  }
  {  // row not a multiple of the block size
    GgufBuilder b;
    b.add_tensor("x", TensorType::Q8_0, {31}, std::vector<uint8_t>(34));
    expect_error(b.build(), "not a multiple");
  }
  {  // data claims more bytes than the file has
    GgufBuilder b;
    b.add_tensor("x", TensorType::F32, {1024}, std::vector<uint8_t>(16));
    expect_error(b.build(), "runs past end of file");
  }
  {  // misaligned offset
    GgufBuilder b;
    b.add_tensor("x", TensorType::F32, {4}, std::vector<uint8_t>(16));
    std::vector<uint8_t> bytes = b.build();
    const uint64_t offset = 3;
    std::memcpy(bytes.data() + GgufBuilder::kHeaderBytes + 8 + 1 + 4 + 8 + 4, &offset, 8);
    expect_error(bytes, "not aligned");
  }
  {  // huge offset: offset + size must not wrap around
    GgufBuilder b;
    b.add_tensor("x", TensorType::F32, {4}, std::vector<uint8_t>(16));
    std::vector<uint8_t> bytes = b.build();
    const uint64_t offset = ~0ull - 31;
    std::memcpy(bytes.data() + GgufBuilder::kHeaderBytes + 8 + 1 + 4 + 8 + 4, &offset, 8);
    expect_error(bytes, "past end of file");
  }
}

TEST(Gguf, DuplicatesAndBadAlignment) {
  {
    GgufBuilder b;
    b.add_u32("k", 1);
    b.add_u32("k", 2);
    expect_error(b.build(), "duplicate metadata key 'k'");
  }
  {
    GgufBuilder b;
    b.add_tensor("x", TensorType::F32, {4}, std::vector<uint8_t>(16));
    b.add_tensor("x", TensorType::F32, {4}, std::vector<uint8_t>(16));
    expect_error(b.build(), "duplicate tensor name 'x'");
  }
  {
    GgufBuilder b;
    b.add_u32("general.alignment", 24);
    expect_error(b.build(), "power-of-two");
  }
  {
    GgufBuilder b;
    b.add_bool("flag", true);
    std::vector<uint8_t> bytes = b.build();
    bytes[GgufBuilder::kHeaderBytes + 8 + 4 + 4] = 7;  // after key "flag" and type: must be 0 or 1
    expect_error(bytes, "invalid bool");
  }
}

TEST(Gguf, RandomCorruptionNeverCrashes) {
  const std::vector<uint8_t> good = sample_builder().build();
  uint64_t state = 12345;
  auto next = [&] {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return state >> 33;
  };
  int rejected = 0;
  for (int trial = 0; trial < 20000; ++trial) {
    std::vector<uint8_t> bytes = good;
    const int flips = 1 + static_cast<int>(next() % 4);
    for (int i = 0; i < flips; ++i) bytes[next() % bytes.size()] = static_cast<uint8_t>(next());
    try {
      const GgufFile f = GgufFile::parse(bytes, "fuzz.gguf");
      for (const GgufTensorInfo& t : f.tensors()) {  // every view must lie inside the buffer
        ASSERT_GE(t.data, bytes.data());
        ASSERT_LE(t.data + t.bytes, bytes.data() + bytes.size());
      }
    } catch (const Error&) {
      ++rejected;
    }
  }
  EXPECT_GT(rejected, 1000);  // corruption of lengths/types must actually be caught
}

TEST(Gguf, OpenReportsMissingAndNonRegularFiles) {
  EXPECT_THROW(GgufFile::open("/nonexistent/model.gguf"), Error);
  EXPECT_THROW(GgufFile::open("/tmp"), Error);
  const std::string path = ::testing::TempDir() + "/empty.gguf";
  { std::ofstream(path, std::ios::binary); }
  expect_error({}, "needs 4 bytes");
  EXPECT_THROW(GgufFile::open(path), Error);
}

TEST(Gguf, OpensTheRealModel) {
  const std::string path = KVC_MODEL_DIR "/SmolLM2-135M-Instruct.Q4_1.gguf";
  if (!std::ifstream(path)) GTEST_SKIP() << "model not downloaded: run scripts/setup.sh";
  const GgufFile f = GgufFile::open(path);
  EXPECT_EQ(f.get_string("general.architecture"), "llama");
  EXPECT_EQ(f.tensors().size(), 272u);
  EXPECT_EQ(f.find_tensor("token_embd.weight")->type, TensorType::Q8_0);
  EXPECT_EQ(f.find_tensor("blk.0.attn_q.weight")->type, TensorType::Q4_1);
}

}  // namespace
}  // namespace kvc
