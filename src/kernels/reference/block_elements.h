// Private to src/kernels/reference: the integer quant of element l of each block type,
// written for clarity rather than speed. These accessors *are* the layout specification
// that the SIMD kernels (which unpack 32 elements at a time) are tested against.
#pragma once

#include <cstdint>
#include <cstring>

#include "kernels/block_layouts.h"

namespace kvc::reference {

inline uint32_t load_qh(const uint8_t* qh) {
  uint32_t bits;
  std::memcpy(&bits, qh, sizeof(bits));  // little-endian uint32, as ggml stores it
  return bits;
}

// 4-bit quant of element j (0..31) of a legacy block: low nibbles of qs[0..15] hold elements
// 0..15, high nibbles elements 16..31.
inline int nibble(const uint8_t* qs, int j) {
  return j < blocks::kQK / 2 ? (qs[j] & 0xF) : (qs[j - blocks::kQK / 2] >> 4);
}

// 5-bit quant of element j: its nibble plus bit j of qh as the fifth bit.
inline int five_bits(const uint8_t* qs, uint32_t qh, int j) {
  return nibble(qs, j) | static_cast<int>(((qh >> j) & 1u) << 4);
}

// Q4_K element l (0..255), in 0..15: sub-block s = l / 32; sub-blocks 2p and 2p+1 share
// qs[32p .. 32p+31], low nibbles for 2p, high nibbles for 2p+1.
inline int q4_k_quant(const blocks::BlockQ4_K& b, int l) {
  const int sub = l / 32, pos = l % 32;
  const uint8_t byte = b.qs[(sub / 2) * 32 + pos];
  return (sub % 2 == 0) ? (byte & 0xF) : (byte >> 4);
}

// Q5_K element l, in 0..31: as Q4_K plus bit s (the sub-block index) of qh[l % 32].
inline int q5_k_quant(const blocks::BlockQ5_K& b, int l) {
  const int sub = l / 32, pos = l % 32;
  const uint8_t byte = b.qs[(sub / 2) * 32 + pos];
  const int low = (sub % 2 == 0) ? (byte & 0xF) : (byte >> 4);
  return low | (((b.qh[pos] >> sub) & 1) << 4);
}

// Q6_K element l, in 0..63 (the value is this minus 32). Per 128-element half h: ql[64h ..
// 64h+63] and qh[32h .. 32h+31]; element 32k + i of the half (k = 0..3, i = 0..31) takes the
// low (k < 2) or high (k >= 2) nibble of ql[64h + 32(k % 2) + i] and bits 2k, 2k+1 of
// qh[32h + i]. Its scale is scales[l / 16].
inline int q6_k_quant(const blocks::BlockQ6_K& b, int l) {
  const int half = l / 128, k = (l % 128) / 32, i = l % 32;
  const uint8_t low_byte = b.ql[64 * half + 32 * (k % 2) + i];
  const int low = k < 2 ? (low_byte & 0xF) : (low_byte >> 4);
  const int high = (b.qh[32 * half + i] >> (2 * k)) & 3;
  return low | (high << 4);
}

}  // namespace kvc::reference
