#include "kernels/packed_weights.h"

#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>

#include "kernels/block_layouts.h"
#include "kernels/cpu/packed_gemm_amx.h"
#include "kernels/packed_layout.h"
#include "kernels/quant.h"
#include "util/error.h"
#include "util/fp16.h"

namespace kvc {
namespace {

using namespace kvc::blocks;
using cpu::PackedFormat;

size_t group_bytes(PackedFormat format, int64_t n_blocks) {
  switch (format) {
    case PackedFormat::kQ4_0: return packed::group_bytes<PackedFormat::kQ4_0>(n_blocks);
    case PackedFormat::kQ4_1: return packed::group_bytes<PackedFormat::kQ4_1>(n_blocks);
    case PackedFormat::kQ8_0: return packed::group_bytes<PackedFormat::kQ8_0>(n_blocks);
  }
  KVC_ASSERT(false);
  return 0;
}

// Element i (0..31) of a Q4_0/Q4_1 block: low nibbles first, then high nibbles (ggml's order).
template <typename Block>
uint8_t nibble(const Block& b, int i) {
  return i < 16 ? b.qs[i] & 0x0F : b.qs[i - 16] >> 4;
}

// Block b of rows r0 .. r0 + 15 (rows past `rows` stay zero) into its group (zeroed).
template <PackedFormat F, typename Block>
void pack_block(const WeightMatrix& w, int64_t r0, int64_t b, uint8_t* group) {
  uint16_t* scales = packed::block_scales<F>(group, b);
  uint8_t* qs = packed::block_quants<F>(group, b);
  for (int r = 0; r < packed::kGroupRows && r0 + r < w.rows; ++r) {
    const auto* row = reinterpret_cast<const Block*>(w.data + static_cast<size_t>(r0 + r) * w.row_stride());
    const Block& blk = row[b];
    scales[r] = blk.d;
    if constexpr (packed::kHasMin<F>) scales[packed::kGroupRows + r] = blk.m;
    for (int i = 0; i < kQK; ++i) {
      if constexpr (F == PackedFormat::kQ8_0) {
        qs[packed::kChunkBytes * (i / 4) + 4 * r + i % 4] = static_cast<uint8_t>(blk.qs[i]);
      } else {
        const int j = i / 8, within = i % 8;
        uint8_t& byte = qs[packed::kChunkBytes * j + 4 * r + within % 4];
        byte |= static_cast<uint8_t>(nibble(blk, i) << (within < 4 ? 0 : 4));
      }
    }
  }
}

template <PackedFormat F, typename Block>
void pack_all(const WeightMatrix& w, PackedWeights& p) {
#pragma omp parallel for schedule(static)
  for (int64_t g = 0; g < p.n_groups; ++g) {
    uint8_t* group = p.storage.get() + static_cast<size_t>(g) * p.group_bytes;
    for (int64_t b = 0; b < p.n_blocks; ++b) {
      pack_block<F, Block>(w, g * packed::kGroupRows, b, group);
    }
  }
}

// pack_block backwards: the file's bytes of one row.
template <PackedFormat F, typename Block>
void unpack_row(const PackedWeights& p, int64_t row, uint8_t* out) {
  const uint8_t* group = p.group(row / packed::kGroupRows);
  const auto r = static_cast<int>(row % packed::kGroupRows);
  auto* blocks = reinterpret_cast<Block*>(out);
  for (int64_t b = 0; b < p.n_blocks; ++b) {
    const uint16_t* scales = packed::block_scales<F>(group, b);
    const uint8_t* qs = packed::block_quants<F>(group, b);
    Block& blk = blocks[b];
    blk.d = scales[r];
    if constexpr (packed::kHasMin<F>) blk.m = scales[packed::kGroupRows + r];
    if constexpr (F == PackedFormat::kQ8_0) {
      for (int i = 0; i < kQK; ++i) {
        blk.qs[i] = static_cast<int8_t>(qs[packed::kChunkBytes * (i / 4) + 4 * r + i % 4]);
      }
    } else {
      std::memset(blk.qs, 0, sizeof(blk.qs));
      for (int i = 0; i < kQK; ++i) {
        const int j = i / 8, within = i % 8;
        const uint8_t byte = qs[packed::kChunkBytes * j + 4 * r + within % 4];
        const auto value = static_cast<uint8_t>(within < 4 ? byte & 0x0F : byte >> 4);
        blk.qs[i % 16] |= static_cast<uint8_t>(value << (i < 16 ? 0 : 4));  // nibble()'s order
      }
    }
  }
}

}  // namespace

void PackedWeights::Free::operator()(uint8_t* p) const { std::free(p); }

std::optional<cpu::PackedFormat> packed_format(TensorType type) {
  switch (type) {
    case TensorType::Q4_0: return PackedFormat::kQ4_0;
    case TensorType::Q4_1: return PackedFormat::kQ4_1;
    case TensorType::Q8_0: return PackedFormat::kQ8_0;
    default: return std::nullopt;
  }
}

std::shared_ptr<const PackedWeights> pack_weights(const WeightMatrix& w) {
  const std::optional<PackedFormat> format = packed_format(w.type);
  if (!format) return nullptr;
  KVC_ASSERT(w.cols % kQK == 0 && w.rows > 0);
  auto p = std::make_shared<PackedWeights>();
  p->format = *format;
  p->dot_type = type_traits(w.type).dot_type;
  p->rows = w.rows;
  p->cols = w.cols;
  p->n_blocks = w.cols / kQK;
  p->n_groups = (w.rows + packed::kGroupRows - 1) / packed::kGroupRows;
  p->group_bytes = group_bytes(*format, p->n_blocks);
  void* memory = std::aligned_alloc(64, (p->bytes() + 63) / 64 * 64);
  if (memory == nullptr) throw std::bad_alloc();
  p->storage.reset(static_cast<uint8_t*>(memory));
  std::memset(memory, 0, p->bytes());
  switch (*format) {
    case PackedFormat::kQ4_0: pack_all<PackedFormat::kQ4_0, BlockQ4_0>(w, *p); break;
    case PackedFormat::kQ4_1: pack_all<PackedFormat::kQ4_1, BlockQ4_1>(w, *p); break;
    case PackedFormat::kQ8_0: pack_all<PackedFormat::kQ8_0, BlockQ8_0>(w, *p); break;
  }
  return p;
}

void packed_row_bytes(const PackedWeights& w, int64_t row, uint8_t* out) {
  KVC_ASSERT(row >= 0 && row < w.rows);
  switch (w.format) {
    case PackedFormat::kQ4_0: return unpack_row<PackedFormat::kQ4_0, BlockQ4_0>(w, row, out);
    case PackedFormat::kQ4_1: return unpack_row<PackedFormat::kQ4_1, BlockQ4_1>(w, row, out);
    case PackedFormat::kQ8_0: return unpack_row<PackedFormat::kQ8_0, BlockQ8_0>(w, row, out);
  }
}

void packed_matmul(std::span<const PackedOutput> outputs, const float* x, int64_t x_stride,
                   int64_t n_tokens, MatmulScratch& scratch) {
  KVC_ASSERT(!outputs.empty() && outputs.size() <= kMaxPackedOutputs);
  const PackedWeights& w = *outputs[0].w;
  int64_t group_end[kMaxPackedOutputs];  // the shared loop's groups, matrix by matrix
  int64_t n_groups = 0;
  for (size_t i = 0; i < outputs.size(); ++i) {
    const PackedWeights& wi = *outputs[i].w;
    KVC_ASSERT(wi.cols == w.cols && wi.dot_type == w.dot_type && wi.format == w.format);
    n_groups += wi.n_groups;
    group_end[i] = n_groups;
  }
  // Scratch: the activations quantized to the dot type, then split into the kernels' arrays:
  // quants [n_tokens][cols], and per block the scale d, Q8_1's s and the quants' sum.
  const size_t act_stride = row_bytes(w.dot_type, w.cols);
  const auto nb = static_cast<size_t>(w.n_blocks);
  const auto nt = static_cast<size_t>(n_tokens);
  const size_t act_bytes = (act_stride * nt + 63) / 64 * 64;
  const size_t q_bytes = (static_cast<size_t>(w.cols) * nt + 63) / 64 * 64;
  const size_t scale_bytes = nb * nt * sizeof(float);
  uint8_t* base = scratch.reserve(act_bytes + q_bytes + 3 * scale_bytes);
  uint8_t* act = base;
  auto* q = reinterpret_cast<int8_t*>(base + act_bytes);
  auto* d = reinterpret_cast<float*>(base + act_bytes + q_bytes);
  float* s = d + nb * nt;
  auto* sum = reinterpret_cast<int32_t*>(s + nb * nt);
  const bool with_s = w.dot_type == TensorType::Q8_1;
  const cpu::PackedGemmFn kernel = packed_gemm_kernel(w.format);
  // Whole groups of 16 tokens on the tiles where there are tiles, the rest 4 at a time.
  const cpu::PackedGemmFn tile_kernel = packed_tile_gemm_kernel(w.format);
  const int64_t tiled = tile_kernel ? n_tokens / amx::kTileTokens * amx::kTileTokens : 0;

#pragma omp parallel
  {
#pragma omp for schedule(static)
    for (int64_t t = 0; t < n_tokens; ++t) {
      uint8_t* a = act + static_cast<size_t>(t) * act_stride;
      quantize_row_for_dot(w.dot_type, x + t * x_stride, a, w.cols);
      for (size_t b = 0; b < nb; ++b) {
        const int8_t* qs;
        const size_t k = static_cast<size_t>(t) * nb + b;
        if (with_s) {
          const auto& blk = reinterpret_cast<const BlockQ8_1*>(a)[b];
          d[k] = fp16_to_float(blk.d);
          s[k] = fp16_to_float(blk.s);
          qs = blk.qs;
        } else {
          const auto& blk = reinterpret_cast<const BlockQ8_0*>(a)[b];
          d[k] = fp16_to_float(blk.d);
          s[k] = 0.0f;
          qs = blk.qs;
        }
        int32_t total = 0;
        for (int i = 0; i < kQK; ++i) total += qs[i];
        sum[k] = total;
        std::memcpy(q + static_cast<size_t>(t) * static_cast<size_t>(w.cols) + kQK * b, qs, kQK);
      }
    }
#pragma omp for schedule(static)
    for (int64_t flat = 0; flat < n_groups; ++flat) {
      size_t m = 0;
      while (flat >= group_end[m]) ++m;
      const PackedOutput& out = outputs[m];
      const int64_t g = flat - (group_end[m] - out.w->n_groups);
      cpu::PackedGemmArgs args{};
      args.group = out.w->group(g);
      args.n_blocks = w.n_blocks;
      args.n_rows = static_cast<int>(
          std::min<int64_t>(packed::kGroupRows, out.w->rows - g * packed::kGroupRows));
      args.q_stride = w.cols;
      args.scale_stride = w.n_blocks;
      args.y_stride = out.y_stride;
      for (int64_t t0 = 0; t0 < n_tokens; t0 += args.n_tokens) {
        const bool on_tiles = t0 < tiled;
        args.n_tokens = static_cast<int>(
            on_tiles ? tiled : std::min<int64_t>(packed::kMaxTokens, n_tokens - t0));
        args.q = q + t0 * w.cols;
        const int64_t k0 = t0 * w.n_blocks;
        args.d = d + k0;
        args.s = s + k0;
        args.sum = sum + k0;
        args.y = out.y + t0 * out.y_stride + g * packed::kGroupRows;
        (on_tiles ? tile_kernel : kernel)(args);
      }
    }
  }
}

void packed_matmul(const PackedWeights& w, const float* x, int64_t x_stride, int64_t n_tokens,
                   float* y, int64_t y_stride, MatmulScratch& scratch) {
  const PackedOutput out{&w, y, y_stride};
  packed_matmul({&out, 1}, x, x_stride, n_tokens, scratch);
}

}  // namespace kvc
