// The packed matmul (kernels/packed_weights.h): the scalar reference kernel against exact
// arithmetic, every x86 kernel set against the reference bit for bit, and the matmul built on
// them against the double-precision reference and against itself under any token batching.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu_features.h"
#include "kernels/matmul.h"
#include "kernels/packed_layout.h"
#include "kernels/packed_weights.h"
#include "kernels/quant.h"
#include "kernel_set_cases.h"
#include "quant_test_data.h"
#include "util/fp16.h"

namespace kvc {
namespace {

using namespace kvc::test_support;

constexpr TensorType kPackedTypes[] = {TensorType::Q4_0, TensorType::Q4_1, TensorType::Q8_0};

struct Matrix {
  TensorType type;
  int64_t rows, cols;
  Bytes data;
  WeightMatrix view() const { return WeightMatrix{type, rows, cols, data.data(), nullptr}; }
};

Matrix random_matrix(TensorType type, int64_t rows, int64_t cols, std::mt19937& rng) {
  Matrix m{type, rows, cols, {}};
  for (int64_t r = 0; r < rows; ++r) {
    const Bytes row = random_row(type, cols, rng);
    m.data.insert(m.data.end(), row.begin(), row.end());
  }
  return m;
}

// Every quant byte set to `byte` (scales kept): 0x00, 0xFF and 0x80 reach the extremes of
// every format (nibbles 0 and 15; int8 0, -1 and -128).
void fill_quants(Matrix& m, uint8_t byte) {
  const size_t block = type_traits(m.type).block_bytes;
  const size_t scales = m.type == TensorType::Q4_1 ? 4 : 2;
  for (size_t at = 0; at < m.data.size(); at += block) {
    std::memset(m.data.data() + at + scales, byte, block - scales);
  }
}

// n tokens of random activations, one row of cols after another; with extreme_every = k, every
// token t with t % k == 1 is +-1 instead (+-127 after quantization: the largest products).
std::vector<float> random_tokens(int64_t n, int64_t cols, std::mt19937& rng,
                                 int extreme_every = 0) {
  std::vector<float> x;
  for (int64_t t = 0; t < n; ++t) {
    auto row = random_activations(cols, rng);
    if (extreme_every > 0 && t % extreme_every == 1) {
      for (int64_t c = 0; c < cols; ++c) row[c] = (c % 3 == 0) ? -1.0f : 1.0f;
    }
    x.insert(x.end(), row.begin(), row.end());
  }
  return x;
}

// random_matrix with, for fill 0, 1, 2, every quant byte 0x00, 0xFF or 0x80 (fill -1: random).
Matrix random_matrix_filled(TensorType type, int64_t rows, int64_t cols, int fill,
                            std::mt19937& rng) {
  Matrix m = random_matrix(type, rows, cols, rng);
  if (fill >= 0) fill_quants(m, fill == 0 ? 0x00 : fill == 1 ? 0xFF : 0x80);
  return m;
}

// Quantized activations in the kernels' arrays, as packed_matmul prepares them.
struct Activations {
  int64_t n_tokens, cols, n_blocks;
  std::vector<int8_t> q;
  std::vector<float> d, s;
  std::vector<int32_t> sum;
};

Activations quantize(TensorType weight_type, const std::vector<float>& x, int64_t n_tokens,
                     int64_t cols) {
  const TensorType dot_type = type_traits(weight_type).dot_type;
  const int64_t nb = cols / 32;
  Activations a{n_tokens, cols, nb, std::vector<int8_t>(n_tokens * cols),
                std::vector<float>(n_tokens * nb), std::vector<float>(n_tokens * nb),
                std::vector<int32_t>(n_tokens * nb)};
  Bytes row(row_bytes(dot_type, cols));
  for (int64_t t = 0; t < n_tokens; ++t) {
    reference::quantize_row_for_dot(dot_type, x.data() + t * cols, row.data(), cols);
    const size_t block = type_traits(dot_type).block_bytes, qs = dot_type == TensorType::Q8_1 ? 4 : 2;
    for (int64_t b = 0; b < nb; ++b) {
      const uint8_t* blk = row.data() + b * block;
      uint16_t h;
      std::memcpy(&h, blk, 2);
      a.d[t * nb + b] = fp16_to_float(h);
      if (dot_type == TensorType::Q8_1) {
        std::memcpy(&h, blk + 2, 2);
        a.s[t * nb + b] = fp16_to_float(h);
      }
      int32_t total = 0;
      for (int i = 0; i < 32; ++i) {
        const auto v = static_cast<int8_t>(blk[qs + i]);
        a.q[t * cols + b * 32 + i] = v;
        total += v;
      }
      a.sum[t * nb + b] = total;
    }
  }
  return a;
}

// One kernel call per (group, chunk of `chunk` tokens) over the whole matrix.
std::vector<float> run_kernel(cpu::PackedGemmFn kernel, const PackedWeights& p,
                              const Activations& a, int chunk) {
  EXPECT_TRUE(kernel != nullptr);
  std::vector<float> y(a.n_tokens * p.rows, NAN);
  for (int64_t g = 0; g < p.n_groups; ++g) {
    for (int64_t t0 = 0; t0 < a.n_tokens; t0 += chunk) {
      cpu::PackedGemmArgs args{};
      args.group = p.group(g);
      args.n_blocks = p.n_blocks;
      args.n_tokens = static_cast<int>(std::min<int64_t>(chunk, a.n_tokens - t0));
      args.n_rows = static_cast<int>(std::min<int64_t>(16, p.rows - 16 * g));
      args.q = a.q.data() + t0 * a.cols;
      args.q_stride = a.cols;
      args.d = a.d.data() + t0 * a.n_blocks;
      args.s = a.s.data() + t0 * a.n_blocks;
      args.sum = a.sum.data() + t0 * a.n_blocks;
      args.scale_stride = a.n_blocks;
      args.y = y.data() + t0 * p.rows + 16 * g;
      args.y_stride = p.rows;
      kernel(args);
    }
  }
  return y;
}

// Exact value of each (token, row) output in double, and the sum of |terms| as its error scale.
void exact(const Matrix& m, const Activations& a, int64_t t, int64_t r, double& value,
           double& scale) {
  std::vector<float> w(m.cols);
  reference::dequantize_row(m.type, m.data.data() + r * row_bytes(m.type, m.cols), w.data(), m.cols);
  value = 0.0;
  scale = 0.0;
  for (int64_t b = 0; b < a.n_blocks; ++b) {
    for (int i = 0; i < 32; ++i) {
      const int64_t c = b * 32 + i;
      double wq = w[c];
      if (m.type == TensorType::Q4_1) {  // the min goes through s, as in the kernels
        uint16_t h;
        std::memcpy(&h, m.data.data() + r * row_bytes(m.type, m.cols) + b * 20 + 2, 2);
        wq -= fp16_to_float(h);
      }
      const double term = wq * a.q[t * a.cols + c] * a.d[t * a.n_blocks + b];
      value += term;
      scale += std::fabs(term);
    }
    if (m.type == TensorType::Q4_1) {
      uint16_t h;
      std::memcpy(&h, m.data.data() + r * row_bytes(m.type, m.cols) + b * 20 + 2, 2);
      const double term = static_cast<double>(fp16_to_float(h)) * a.s[t * a.n_blocks + b];
      value += term;
      scale += std::fabs(term);
    }
  }
}

struct Shape {
  int64_t rows, cols, tokens;
};
// Partial last groups (37, 200 rows), one block, odd block counts, 1..9 tokens.
constexpr Shape kShapes[] = {{16, 32, 1}, {37, 96, 5}, {200, 576, 9}, {48, 160, 4}, {16, 1536, 2}};

TEST(PackedGemm, ReferenceKernelIsExactArithmetic) {
  std::mt19937 rng(5);
  for (TensorType type : kPackedTypes) {
    for (const Shape& sh : kShapes) {
      SCOPED_TRACE(std::string(type_traits(type).name) + " " + std::to_string(sh.rows) + "x" +
                   std::to_string(sh.cols));
      const Matrix m = random_matrix(type, sh.rows, sh.cols, rng);
      const auto p = pack_weights(m.view());
      ASSERT_NE(p, nullptr);
      const std::vector<float> x = random_tokens(sh.tokens, sh.cols, rng);
      const Activations a = quantize(type, x, sh.tokens, sh.cols);
      const auto y = run_kernel(reference::packed_gemm_kernel(*packed_format(type)), *p, a, 4);
      for (int64_t t = 0; t < sh.tokens; ++t) {
        for (int64_t r = 0; r < sh.rows; ++r) {
          double value, scale;
          exact(m, a, t, r, value, scale);
          ASSERT_NEAR(y[t * sh.rows + r], value, 1e-5 * scale + 1e-30) << "t=" << t << " r=" << r;
        }
      }
    }
  }
}

using PackedKernelSetTest = KernelSetFixture;

TEST_P(PackedKernelSetTest, MatchesReferenceBitForBit) {
  std::mt19937 rng(17);
  for (TensorType type : kPackedTypes) {
    const cpu::PackedFormat format = *packed_format(type);
    const cpu::PackedGemmFn kernel = set().packed_gemm(format);
    ASSERT_NE(kernel, nullptr);
    for (const Shape& sh : kShapes) {
      for (int fill = -1; fill < 3; ++fill) {  // random quants, then 0x00, 0xFF, 0x80 everywhere
        SCOPED_TRACE(std::string(type_traits(type).name) + " " + std::to_string(sh.rows) + "x" +
                     std::to_string(sh.cols) + " fill " + std::to_string(fill));
        const Matrix m = random_matrix_filled(type, sh.rows, sh.cols, fill, rng);
        const auto p = pack_weights(m.view());
        const std::vector<float> x = random_tokens(sh.tokens, sh.cols, rng, 2);
        const Activations a = quantize(type, x, sh.tokens, sh.cols);
        const auto expected = run_kernel(reference::packed_gemm_kernel(format), *p, a, 4);
        for (int chunk = 1; chunk <= packed::kMaxTokens; ++chunk) {
          const auto got = run_kernel(kernel, *p, a, chunk);
          ASSERT_EQ(std::memcmp(got.data(), expected.data(), got.size() * sizeof(float)), 0)
              << "chunk " << chunk;
        }
      }
    }
  }
}

// The AMX tile kernels, 16 tokens a call, against the reference bit for bit: random and extreme
// quants, partial groups, one block to 48 blocks (run only where the CPU and OS allow AMX).
TEST(PackedGemm, AmxTilesMatchReferenceBitForBit) {
  if (cpu_best_kernel_isa() < KernelIsa::kAmx) GTEST_SKIP() << "needs AMX (and the OS's leave)";
  constexpr Shape kTileShapes[] = {{16, 32, 16}, {37, 96, 32}, {200, 576, 16}, {16, 1536, 48}};
  std::mt19937 rng(29);
  for (TensorType type : kPackedTypes) {
    const cpu::PackedFormat format = *packed_format(type);
    const cpu::PackedGemmFn kernel = packed_tile_gemm_kernel(format);
    ASSERT_NE(kernel, nullptr);
    for (const Shape& sh : kTileShapes) {
      for (int fill = -1; fill < 3; ++fill) {
        SCOPED_TRACE(std::string(type_traits(type).name) + " " + std::to_string(sh.rows) + "x" +
                     std::to_string(sh.cols) + " fill " + std::to_string(fill));
        const Matrix m = random_matrix_filled(type, sh.rows, sh.cols, fill, rng);
        const auto p = pack_weights(m.view());
        const std::vector<float> x = random_tokens(sh.tokens, sh.cols, rng, 3);
        const Activations a = quantize(type, x, sh.tokens, sh.cols);
        const auto expected = run_kernel(reference::packed_gemm_kernel(format), *p, a, 4);
        const auto got = run_kernel(kernel, *p, a, 16);
        ASSERT_EQ(std::memcmp(got.data(), expected.data(), got.size() * sizeof(float)), 0);
      }
    }
  }
}

// matmul() with tiles (whole groups of 16 tokens, the rest 4 at a time) gives the bits it gives
// without them, on every thread count's split.
TEST(PackedGemm, MatmulOnTilesGivesTheVnniBits) {
  if (cpu_best_kernel_isa() < KernelIsa::kAmx) GTEST_SKIP() << "needs AMX (and the OS's leave)";
  std::mt19937 rng(31);
  for (TensorType type : kPackedTypes) {
    SCOPED_TRACE(type_traits(type).name);
    const int64_t rows = 200, cols = 576, n = 37;  // two tiles of 16 and five tokens more
    Matrix m = random_matrix(type, rows, cols, rng);
    WeightMatrix w = m.view();
    w.packed = pack_weights(w);
    const std::vector<float> x = random_tokens(n, cols, rng);
    MatmulScratch scratch;
    std::vector<float> tiles(n * rows), vnni(n * rows);
    ASSERT_NE(packed_tile_gemm_kernel(w.packed->format), nullptr);
    matmul(w, x.data(), cols, n, tiles.data(), rows, scratch);
    limit_kernel_isa(KernelIsa::kAvx512Vnni);
    EXPECT_EQ(packed_tile_gemm_kernel(w.packed->format), nullptr);
    matmul(w, x.data(), cols, n, vnni.data(), rows, scratch);
    force_scalar_kernels(false);
    ASSERT_EQ(std::memcmp(tiles.data(), vnni.data(), tiles.size() * sizeof(float)), 0);
  }
}

INSTANTIATE_TEST_SUITE_P(Sets, PackedKernelSetTest, ::testing::ValuesIn(kKernelSets),
                         kernel_set_test_name);

// matmul() on a packed matrix: the row-at-a-time path's result up to float rounding (both
// quantize the activations the same way), the same bits for a token however many tokens one
// call takes, and the same bits on the scalar kernels.
TEST(PackedGemm, MatmulMatchesRowKernelsAndDoesNotDependOnBatching) {
  std::mt19937 rng(23);
  for (TensorType type : kPackedTypes) {
    SCOPED_TRACE(type_traits(type).name);
    const int64_t rows = 100, cols = 576, n = 11;
    Matrix m = random_matrix(type, rows, cols, rng);
    WeightMatrix w = m.view();
    w.packed = pack_weights(w);
    const std::vector<float> x = random_tokens(n, cols, rng);
    MatmulScratch scratch;
    std::vector<float> all(n * rows), rowwise(n * rows), magnitude(n * rows), scalar(n * rows);
    matmul(w, x.data(), cols, n, all.data(), rows, scratch);
    matmul(m.view(), x.data(), cols, n, rowwise.data(), rows, scratch);
    std::vector<float> wr(cols);
    for (int64_t r = 0; r < rows; ++r) {
      reference::dequantize_row(type, m.data.data() + r * row_bytes(type, cols), wr.data(), cols);
      for (int64_t t = 0; t < n; ++t) {
        double sum = 0.0;
        for (int64_t c = 0; c < cols; ++c) sum += std::fabs(wr[c] * x[t * cols + c]);
        magnitude[t * rows + r] = static_cast<float>(sum);
      }
    }
    for (int64_t i = 0; i < n * rows; ++i) {
      ASSERT_NEAR(all[i], rowwise[i], 1e-5 * magnitude[i]) << i;
    }
    for (int64_t t = 0; t < n; ++t) {
      std::vector<float> one(rows);
      matmul(w, x.data() + t * cols, cols, 1, one.data(), rows, scratch);
      ASSERT_EQ(std::memcmp(one.data(), all.data() + t * rows, rows * sizeof(float)), 0) << t;
    }
    force_scalar_kernels(true);
    matmul(w, x.data(), cols, n, scalar.data(), rows, scratch);
    force_scalar_kernels(false);
    ASSERT_EQ(std::memcmp(scalar.data(), all.data(), all.size() * sizeof(float)), 0);
  }
}

// Matrices of one input in one call (q, k, v; gate, up): the bits of one matmul each, whether
// they fuse (all packed alike, odd row counts included) or not (a K-quant among them).
TEST(PackedGemm, SharedInputMatmulGivesTheSeparateBits) {
  std::mt19937 rng(37);
  const int64_t cols = 768, n = 21;  // a K-quant row length too
  const std::vector<float> x = random_tokens(n, cols, rng);
  for (const std::vector<TensorType>& types :
       {std::vector<TensorType>{TensorType::Q4_1, TensorType::Q4_1, TensorType::Q4_1},
        std::vector<TensorType>{TensorType::Q8_0, TensorType::Q8_0},
        std::vector<TensorType>{TensorType::Q4_0, TensorType::Q4_K, TensorType::Q4_0},
        std::vector<TensorType>{TensorType::Q4_0, TensorType::Q8_0}}) {
    std::vector<Matrix> ms;
    std::vector<WeightMatrix> ws;
    const int64_t rows[] = {768, 37, 200};
    for (size_t i = 0; i < types.size(); ++i) {
      ms.push_back(random_matrix(types[i], rows[i], cols, rng));
    }
    for (const Matrix& m : ms) {
      ws.push_back(m.view());
      ws.back().packed = pack_weights(ws.back());
    }
    MatmulScratch scratch;
    std::vector<std::vector<float>> together(ws.size()), apart(ws.size());
    std::vector<MatmulOutput> outs;
    for (size_t i = 0; i < ws.size(); ++i) {
      together[i].assign(n * ws[i].rows, NAN);
      apart[i].assign(n * ws[i].rows, NAN);
      outs.push_back(MatmulOutput{&ws[i], together[i].data(), ws[i].rows});
    }
    matmul_shared_input(outs, x.data(), cols, n, scratch);
    for (size_t i = 0; i < ws.size(); ++i) {
      SCOPED_TRACE(std::string(type_traits(types[i]).name) + " matrix " + std::to_string(i));
      matmul(ws[i], x.data(), cols, n, apart[i].data(), ws[i].rows, scratch);
      ASSERT_EQ(
          std::memcmp(together[i].data(), apart[i].data(), apart[i].size() * sizeof(float)), 0);
    }
  }
}

// The packed copy keeps every byte of the file's rows: rebuilt rows equal the file's (odd
// block counts and a padded last group included), so lookups from it (the token embedding)
// dequantize to the file's bits, and the copy takes no more bytes than the file.
TEST(PackedGemm, PackedCopyKeepsTheFilesRowsAndSize) {
  std::mt19937 rng(11);
  for (TensorType type : kPackedTypes) {
    for (const auto [rows, cols] : {std::pair<int64_t, int64_t>{37, 96}, {16, 64}, {5, 32}}) {
      const Matrix m = random_matrix(type, rows, cols, rng);
      WeightMatrix w = m.view();
      w.packed = pack_weights(w);
      ASSERT_NE(w.packed, nullptr);
      const size_t stride = w.row_stride();
      const int64_t padded_rows = (rows + packed::kGroupRows - 1) / packed::kGroupRows *
                                  packed::kGroupRows;
      const int64_t pairs = (cols / 32 + 1) / 2;  // a half-used unit holds a whole unit's bytes
      const size_t bound = type == TensorType::Q4_1
                               ? stride * static_cast<size_t>(padded_rows)
                               : static_cast<size_t>(padded_rows) * 2 * pairs * stride /
                                     static_cast<size_t>(cols / 32);
      EXPECT_EQ(w.packed->bytes(), bound) << type_traits(type).name << " " << rows << "x" << cols;
      std::vector<uint8_t> rebuilt(stride);
      std::vector<float> from_file(static_cast<size_t>(cols)), from_packed(from_file.size());
      for (int64_t r = 0; r < rows; ++r) {
        packed_row_bytes(*w.packed, r, rebuilt.data());
        ASSERT_EQ(std::memcmp(rebuilt.data(), m.data.data() + r * stride, stride), 0)
            << type_traits(type).name << " " << rows << "x" << cols << " row " << r;
        dequantize_row(type, m.data.data() + r * stride, from_file.data(), cols);
        dequantize_weight_row(w, r, from_packed.data());
        ASSERT_EQ(std::memcmp(from_file.data(), from_packed.data(), cols * sizeof(float)), 0);
      }
    }
  }
}

TEST(PackedGemm, OnlyLegacyTypesPack) {
  std::mt19937 rng(3);
  for (TensorType type : {TensorType::Q4_K, TensorType::Q6_K, TensorType::F16, TensorType::Q5_0}) {
    const Matrix m = random_matrix(type, 16, 256, rng);
    EXPECT_EQ(pack_weights(m.view()), nullptr) << type_traits(type).name;
  }
}

}  // namespace
}  // namespace kvc
