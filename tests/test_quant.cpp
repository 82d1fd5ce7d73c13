// Tests of the tensor types and row kernels (kernels/types.h, kernels/quant.h, util/fp16.h).
//
// The scalar reference is checked against an independent float computation on dequantized
// data; the dispatched (AVX2) kernels are checked against the reference: dequantization and
// activation quantization bit for bit, dot products within a stated tolerance. Block layouts
// are written here from ggml's documentation (offsets of the fp16 scale fields), not taken
// from our structs, so a layout mistake cannot hide behind a shared definition.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu_features.h"
#include "kernels/quant.h"
#include "quant_test_data.h"
#include "kernels/types.h"
#include "util/fp16.h"

// Counts heap allocations so tests can assert that the row kernels never allocate.
namespace {
std::atomic<long> g_allocations{0};
}  // namespace

// GCC cannot see that this new and delete pair up (both use malloc/free) and warns.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
void* operator new(size_t size) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }
#pragma GCC diagnostic pop

namespace kvc {
namespace {

using namespace kvc::test_support;

// ---- type table ---------------------------------------------------------------------------

struct ExpectedType {
  TensorType type;
  uint32_t id;
  const char* name;
  int64_t block_elems;
  size_t block_bytes;
  bool weights_supported;
  TensorType dot_type;
};

// From ggml.h / ggml-common.h: ggml_type numbering and sizeof(block_*).
const ExpectedType kExpectedTypes[] = {
    {TensorType::F32, 0, "f32", 1, 4, true, TensorType::F32},
    {TensorType::F16, 1, "f16", 1, 2, true, TensorType::F32},
    {TensorType::Q4_0, 2, "q4_0", 32, 18, true, TensorType::Q8_0},
    {TensorType::Q4_1, 3, "q4_1", 32, 20, true, TensorType::Q8_1},
    {TensorType::Q5_0, 6, "q5_0", 32, 22, true, TensorType::Q8_0},
    {TensorType::Q5_1, 7, "q5_1", 32, 24, true, TensorType::Q8_1},
    {TensorType::Q8_0, 8, "q8_0", 32, 34, true, TensorType::Q8_0},
    {TensorType::Q8_1, 9, "q8_1", 32, 36, false, TensorType::Q8_1},
    {TensorType::Q2_K, 10, "q2_K", 256, 84, false, TensorType::Q8_K},
    {TensorType::Q3_K, 11, "q3_K", 256, 110, false, TensorType::Q8_K},
    {TensorType::Q4_K, 12, "q4_K", 256, 144, true, TensorType::Q8_K},
    {TensorType::Q5_K, 13, "q5_K", 256, 176, true, TensorType::Q8_K},
    {TensorType::Q6_K, 14, "q6_K", 256, 210, true, TensorType::Q8_K},
    {TensorType::Q8_K, 15, "q8_K", 256, 292, false, TensorType::Q8_K},
    {TensorType::BF16, 30, "bf16", 1, 2, true, TensorType::F32},
};

TEST(TypeTraits, MatchGgmlBlockSizes) {
  for (const ExpectedType& e : kExpectedTypes) {
    SCOPED_TRACE(e.name);
    EXPECT_EQ(static_cast<uint32_t>(e.type), e.id);
    const auto found = find_type_traits(e.id);
    ASSERT_TRUE(found.has_value());
    EXPECT_EQ(found->name, e.name);
    EXPECT_EQ(found->block_elems, e.block_elems);
    EXPECT_EQ(found->block_bytes, e.block_bytes);
    EXPECT_EQ(found->weights_supported, e.weights_supported);
    EXPECT_EQ(found->dot_type, e.dot_type);
    EXPECT_EQ(&type_traits(e.type), &type_traits(e.type));  // a stable reference
    EXPECT_EQ(type_traits(e.type).block_bytes, e.block_bytes);
    EXPECT_EQ(row_bytes(e.type, 0), 0u);
    EXPECT_EQ(row_bytes(e.type, 4096), static_cast<size_t>(4096 / e.block_elems) * e.block_bytes);
  }
}

TEST(TypeTraits, UnknownIdsAreNullopt) {
  for (uint32_t id : {4u, 5u, 16u, 17u, 29u, 31u, 39u, 99u, 0xffffffffu}) {
    EXPECT_FALSE(find_type_traits(id).has_value()) << id;
  }
}

TEST(TypeTraitsDeathTest, MisuseAsserts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(row_bytes(TensorType::Q4_0, 48), "assertion");
  std::vector<float> x(64, 1.0f);
  Bytes q(row_bytes(TensorType::Q8_0, 64));
  EXPECT_DEATH(vec_dot(TensorType::Q4_0, 48, q.data(), q.data()), "assertion");
  EXPECT_DEATH(vec_dot(TensorType::Q2_K, 256, q.data(), q.data()), "assertion");
  EXPECT_DEATH(quantize_row_for_dot(TensorType::Q4_0, x.data(), q.data(), 64), "assertion");
  EXPECT_DEATH(dequantize_row(TensorType::Q3_K, q.data(), x.data(), 256), "assertion");
}

// ---- dequantization -------------------------------------------------------------------------

TEST(Dequantize, DispatchedMatchesReferenceBitExact) {
  std::mt19937 rng(1);
  for (TensorType type : kWeightTypes) {
    for (int64_t n : row_lengths(type)) {
      SCOPED_TRACE(std::string(type_traits(type).name) + " n=" + std::to_string(n));
      const Bytes row = random_row(type, n, rng);
      const std::vector<float> expected = dequantized(type, row, n);
      std::vector<float> got(n, NAN);
      const long allocations = g_allocations.load();
      dequantize_row(type, row.data(), got.data(), n);
      EXPECT_EQ(g_allocations.load(), allocations) << "dequantize_row allocated";
      ASSERT_EQ(std::memcmp(got.data(), expected.data(), n * sizeof(float)), 0);
      for (float v : got) ASSERT_TRUE(std::isfinite(v));
    }
  }
}

// Hand-built blocks pin the element order and value formulas to ggml's.
TEST(Dequantize, KnownBlocks) {
  Bytes q4_0(18, 0);
  const uint16_t half = float_to_fp16(0.5f);
  std::memcpy(q4_0.data(), &half, 2);
  q4_0[2] = 0x3F;  // element 0 = 0xF, element 16 = 0x3
  std::vector<float> y(32);
  reference::dequantize_row(TensorType::Q4_0, q4_0.data(), y.data(), 32);
  EXPECT_EQ(y[0], (15 - 8) * 0.5f);
  EXPECT_EQ(y[16], (3 - 8) * 0.5f);
  EXPECT_EQ(y[1], -8 * 0.5f);

  Bytes q5_0(22, 0);
  std::memcpy(q5_0.data(), &half, 2);
  q5_0[2 + 2] = 0x01;  // qh bit 16 -> element 16 gets the fifth bit
  q5_0[6] = 0x21;      // element 0 = 1, element 16 = 2 | 16
  reference::dequantize_row(TensorType::Q5_0, q5_0.data(), y.data(), 32);
  EXPECT_EQ(y[0], (1 - 16) * 0.5f);
  EXPECT_EQ(y[16], (18 - 16) * 0.5f);

  // Q4_K: sub-block 5 (elements 160..191, high nibbles of qs[64..95]) with scale 33 and min 17
  // (6-bit values split between the nibbles of byte 9 and the top bits of bytes 1 and 5).
  Bytes q4_k(144, 0);
  const uint16_t one = float_to_fp16(1.0f), two = float_to_fp16(2.0f);
  std::memcpy(q4_k.data(), &one, 2);
  std::memcpy(q4_k.data() + 2, &two, 2);
  q4_k[4 + 9] = (17 & 0xF) << 4 | (33 & 0xF);
  q4_k[4 + 1] = (33 >> 4) << 6;
  q4_k[4 + 5] = (17 >> 4) << 6;
  q4_k[16 + 64] = 0x70;  // element 160 = 7
  std::vector<float> yk(256);
  reference::dequantize_row(TensorType::Q4_K, q4_k.data(), yk.data(), 256);
  EXPECT_EQ(yk[160], 33.0f * 7 - 2.0f * 17);
  EXPECT_EQ(yk[161], -2.0f * 17);
  EXPECT_EQ(yk[128], 0.0f);  // sub-block 4: scale 0, min 0
}

// ggml's dequantizers for the K-quants, restated in their own loop structure (walking
// pointers 64 elements at a time) rather than the reference's per-element accessors, so the
// two must agree on every layout detail.
void scale_min_k4(int j, const uint8_t* q, int& sc, int& m) {
  if (j < 4) {
    sc = q[j] & 63;
    m = q[j + 4] & 63;
  } else {
    sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

std::vector<float> ggml_style_dequantize(TensorType type, const Bytes& row, int64_t n) {
  std::vector<float> out;
  const size_t bb = type_traits(type).block_bytes;
  for (size_t b = 0; b < row.size() / bb; ++b) {
    const uint8_t* block = row.data() + b * bb;
    auto f16 = [&](size_t at) {
      uint16_t h;
      std::memcpy(&h, block + at, 2);
      return fp16_to_float(h);
    };
    if (type == TensorType::Q4_K || type == TensorType::Q5_K) {
      const float d = f16(0), dmin = f16(2);
      const uint8_t* scales = block + 4;
      const uint8_t* qh = block + 16;  // Q5_K only
      const uint8_t* q = block + (type == TensorType::Q4_K ? 16 : 48);
      int bit = 1;
      for (int j = 0, is = 0; j < 256; j += 64, is += 2, q += 32, bit <<= 2) {
        int sc, m;
        scale_min_k4(is, scales, sc, m);
        const float d1 = d * sc, m1 = dmin * m;
        scale_min_k4(is + 1, scales, sc, m);
        const float d2 = d * sc, m2 = dmin * m;
        const bool five = type == TensorType::Q5_K;
        for (int l = 0; l < 32; ++l)
          out.push_back(d1 * ((q[l] & 0xF) + (five && (qh[l] & bit) ? 16 : 0)) - m1);
        for (int l = 0; l < 32; ++l)
          out.push_back(d2 * ((q[l] >> 4) + (five && (qh[l] & (bit << 1)) ? 16 : 0)) - m2);
      }
    } else if (type == TensorType::Q6_K) {
      const float d = f16(208);
      const uint8_t* ql = block;
      const uint8_t* qh = block + 128;
      const auto* sc = reinterpret_cast<const int8_t*>(block + 192);
      for (int half = 0; half < 2; ++half, ql += 64, qh += 32, sc += 8) {
        float y[128];
        for (int l = 0; l < 32; ++l) {
          const int is = l / 16;
          y[l] = d * sc[is] * (((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32);
          y[l + 32] = d * sc[is + 2] * (((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32);
          y[l + 64] = d * sc[is + 4] * (((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
          y[l + 96] = d * sc[is + 6] * (((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
        }
        out.insert(out.end(), y, y + 128);
      }
    } else if (type == TensorType::Q4_1 || type == TensorType::Q5_1) {
      const float d = f16(0), m = f16(2);
      uint32_t qh = 0;
      if (type == TensorType::Q5_1) std::memcpy(&qh, block + 4, 4);
      const uint8_t* qs = block + (type == TensorType::Q4_1 ? 4 : 8);
      float y[32];
      for (int j = 0; j < 16; ++j) {
        const int hi0 = ((qh >> j) << 4) & 0x10, hi1 = (qh >> (j + 12)) & 0x10;
        y[j] = ((qs[j] & 0xF) | hi0) * d + m;
        y[j + 16] = ((qs[j] >> 4) | hi1) * d + m;
      }
      out.insert(out.end(), y, y + 32);
    }
  }
  EXPECT_EQ(static_cast<int64_t>(out.size()), n);
  return out;
}

TEST(Dequantize, ReferenceMatchesGgmlLoops) {
  std::mt19937 rng(6);
  for (TensorType type :
       {TensorType::Q4_1, TensorType::Q5_1, TensorType::Q4_K, TensorType::Q5_K, TensorType::Q6_K}) {
    SCOPED_TRACE(type_traits(type).name);
    const Bytes row = random_row(type, 1024, rng);
    EXPECT_EQ(dequantized(type, row, 1024), ggml_style_dequantize(type, row, 1024));
  }
}

// ---- activation quantization ----------------------------------------------------------------

TEST(QuantizeForDot, RoundTripBoundAndDispatchedBitExact) {
  std::mt19937 rng(2);
  for (const DotTypeCase& dt : kDotTypes) {
    const TypeTraits& traits = type_traits(dt.type);
    for (int64_t n : {256, 512, 4096}) {
      for (const std::vector<float>& x : activation_cases(n, rng)) {
        SCOPED_TRACE(std::string(traits.name) + " n=" + std::to_string(n));
        Bytes ref(row_bytes(dt.type, n)), got(row_bytes(dt.type, n), 0xAB);
        reference::quantize_row_for_dot(dt.type, x.data(), ref.data(), n);
        quantize_row_for_dot(dt.type, x.data(), got.data(), n);
        ASSERT_EQ(std::memcmp(ref.data(), got.data(), ref.size()), 0);

        std::vector<float> back(n);
        reference::dequantize_row(dt.type, ref.data(), back.data(), n);
        for (int64_t b = 0; b < n / traits.block_elems; ++b) {
          const uint8_t* block = ref.data() + b * traits.block_bytes;
          const float d = block_scale(dt.type, block);
          // Q8_0/Q8_1 quantize with the float scale and store it as fp16: up to 127 quanta
          // times the fp16 rounding of d (2^-11 relative) come on top of half a quantum.
          const float stored_error = dt.type == TensorType::Q8_K ? 0.0f : 127.0f * 0x1p-11f;
          const float bound = std::fabs(d) * (0.5f + stored_error) * (1.0f + 1e-5f) + 1e-30f;
          int sum = 0, amax_q = 0;
          for (int64_t j = 0; j < traits.block_elems; ++j) {
            const int64_t i = b * traits.block_elems + j;
            ASSERT_LE(std::fabs(x[i] - back[i]), bound) << "element " << i;
            const int q = static_cast<int8_t>(block[dt.qs_offset + j]);
            sum += q;
            amax_q = std::max(amax_q, std::abs(q));
          }
          if (d != 0.0f) {
            EXPECT_EQ(amax_q, 127);  // the largest element uses the full range
          }
          if (dt.type == TensorType::Q8_1) {  // s = fp16(d * sum(q)) with the float d
            float amax = 0.0f;
            for (int64_t j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[b * 32 + j]));
            uint16_t s;
            std::memcpy(&s, block + 2, 2);
            EXPECT_EQ(s, float_to_fp16(static_cast<float>(sum) * (amax / 127.0f)));
          }
          if (dt.type == TensorType::Q8_K) {
            for (int g = 0; g < 16; ++g) {
              int group = 0;
              for (int j = 0; j < 16; ++j) group += static_cast<int8_t>(block[4 + 16 * g + j]);
              int16_t bsum;
              std::memcpy(&bsum, block + 4 + 256 + 2 * g, 2);
              EXPECT_EQ(bsum, group);
            }
          }
        }
      }
    }
  }
}

TEST(QuantizeForDot, GgmlRoundingConventions) {
  std::vector<float> x(256, 0.0f);
  x[0] = 127.0f;  // scale 1
  x[1] = 2.5f;
  x[2] = -2.5f;
  x[3] = 3.5f;
  Bytes q8_0(row_bytes(TensorType::Q8_0, 256)), q8_k(row_bytes(TensorType::Q8_K, 256));
  quantize_row_for_dot(TensorType::Q8_0, x.data(), q8_0.data(), 256);
  quantize_row_for_dot(TensorType::Q8_K, x.data(), q8_k.data(), 256);
  // Q8_0: roundf, halves away from zero.
  EXPECT_EQ(static_cast<int8_t>(q8_0[2 + 1]), 3);
  EXPECT_EQ(static_cast<int8_t>(q8_0[2 + 2]), -3);
  // Q8_K: d = max / -127 = -1, q = nearest even of -x.
  float d;
  std::memcpy(&d, q8_k.data(), 4);
  EXPECT_EQ(d, -1.0f);
  EXPECT_EQ(static_cast<int8_t>(q8_k[4 + 0]), -127);
  EXPECT_EQ(static_cast<int8_t>(q8_k[4 + 1]), -2);
  EXPECT_EQ(static_cast<int8_t>(q8_k[4 + 2]), 2);
  EXPECT_EQ(static_cast<int8_t>(q8_k[4 + 3]), -4);
  // F32 is a plain copy.
  std::vector<float> copy(256);
  quantize_row_for_dot(TensorType::F32, x.data(), copy.data(), 256);
  EXPECT_EQ(copy, x);
}

// ---- dot products ---------------------------------------------------------------------------

TEST(VecDot, ReferenceMatchesFloatDotOfDequantized) {
  std::mt19937 rng(3);
  for (TensorType type : kWeightTypes) {
    for (int64_t n : row_lengths(type)) {
      SCOPED_TRACE(std::string(type_traits(type).name) + " n=" + std::to_string(n));
      const DotCase c = make_dot_case(type, n, rng);
      const float got = reference::vec_dot(type, n, c.weights.data(), c.activations.data());
      EXPECT_NEAR(got, c.expected, 1e-5 * c.magnitude + c.stored_sum_error + 1e-30);
    }
  }
}

TEST(VecDot, DispatchedMatchesReference) {
  std::mt19937 rng(4);
  for (TensorType type : kWeightTypes) {
    for (int64_t n : row_lengths(type)) {
      SCOPED_TRACE(std::string(type_traits(type).name) + " n=" + std::to_string(n));
      const DotCase c = make_dot_case(type, n, rng);
      const float expected = reference::vec_dot(type, n, c.weights.data(), c.activations.data());
      const long allocations = g_allocations.load();
      const float got = vec_dot(type, n, c.weights.data(), c.activations.data());
      EXPECT_EQ(g_allocations.load(), allocations) << "vec_dot allocated";
      // Only the float accumulation order differs (blocks and lanes summed in float).
      EXPECT_NEAR(got, expected, 1e-5 * c.magnitude + 1e-30);
    }
  }
}

TEST(VecDot, ForcedScalarUsesReference) {
  std::mt19937 rng(5);
  force_scalar_kernels(true);
  EXPECT_STREQ(cpu_kernel_isa(), "scalar");
  for (TensorType type : kWeightTypes) {
    const DotCase c = make_dot_case(type, 512, rng);
    EXPECT_EQ(vec_dot(type, 512, c.weights.data(), c.activations.data()),
              reference::vec_dot(type, 512, c.weights.data(), c.activations.data()));
  }
  force_scalar_kernels(false);
}

// ---- fp16 / bf16 helpers --------------------------------------------------------------------

bool is_fp16_nan(uint16_t h) { return (h & 0x7c00) == 0x7c00 && (h & 0x03ff) != 0; }

TEST(Fp16, RoundTripsEveryBitPattern) {
  for (uint32_t bits = 0; bits <= 0xffff; ++bits) {
    const auto h = static_cast<uint16_t>(bits);
    const float f = fp16_to_float(h);
    if (is_fp16_nan(h)) {
      EXPECT_TRUE(std::isnan(f)) << bits;
      EXPECT_TRUE(is_fp16_nan(float_to_fp16(f))) << bits;
    } else {
      EXPECT_EQ(float_to_fp16(f), h) << bits;
    }
  }
}

TEST(Fp16, RoundsToNearestEven) {
  EXPECT_EQ(float_to_fp16(1.0f), 0x3c00);
  EXPECT_EQ(float_to_fp16(-2.0f), 0xc000);
  EXPECT_EQ(float_to_fp16(0.1f), 0x2e66);
  EXPECT_EQ(float_to_fp16(1.0f + 0x1p-11f), 0x3c00);      // tie -> even (down)
  EXPECT_EQ(float_to_fp16(1.0f + 3 * 0x1p-11f), 0x3c02);  // tie -> even (up)
  EXPECT_EQ(float_to_fp16(1.0f + 0x1p-11f + 0x1p-20f), 0x3c01);
  EXPECT_EQ(float_to_fp16(65504.0f), 0x7bff);  // largest finite
  EXPECT_EQ(float_to_fp16(65519.0f), 0x7bff);
  EXPECT_EQ(float_to_fp16(65520.0f), 0x7c00);  // tie between 65504 and 65536 -> inf
  EXPECT_EQ(float_to_fp16(1e10f), 0x7c00);
  EXPECT_EQ(float_to_fp16(-INFINITY), 0xfc00);
  EXPECT_EQ(float_to_fp16(0x1p-24f), 0x0001);  // smallest subnormal
  EXPECT_EQ(float_to_fp16(0x1p-25f), 0x0000);  // tie -> even (zero)
  EXPECT_EQ(float_to_fp16(0x1p-25f * 1.001f), 0x0001);
  EXPECT_EQ(float_to_fp16(3 * 0x1p-25f), 0x0002);
  EXPECT_EQ(float_to_fp16(0x1p-14f), 0x0400);  // smallest normal
  EXPECT_EQ(float_to_fp16(-0.0f), 0x8000);
  EXPECT_TRUE(is_fp16_nan(float_to_fp16(NAN)));
  EXPECT_EQ(fp16_to_float(0x0001), 0x1p-24f);
  EXPECT_EQ(fp16_to_float(0x3555), 0.333251953125f);
}

TEST(Bf16, RoundTripsAndRounds) {
  for (uint32_t bits = 0; bits <= 0xffff; ++bits) {
    const auto b = static_cast<uint16_t>(bits);
    const float f = bf16_to_float(b);
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(f)))) << bits;
    } else {
      EXPECT_EQ(float_to_bf16(f), b) << bits;
    }
  }
  EXPECT_EQ(bf16_to_float(0x3f80), 1.0f);
  EXPECT_EQ(float_to_bf16(1.0f + 0x1p-8f), 0x3f80);      // tie -> even (down)
  EXPECT_EQ(float_to_bf16(1.0f + 3 * 0x1p-8f), 0x3f82);  // tie -> even (up)
  EXPECT_EQ(float_to_bf16(1.0f + 0x1p-8f + 0x1p-20f), 0x3f81);
  EXPECT_EQ(float_to_bf16(-3.0f), 0xc040);
  // A NaN whose payload sits only in the low 16 bits must not become infinity.
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(std::bit_cast<float>(0x7f800001u)))));
}

}  // namespace
}  // namespace kvc
