// Scalar bookkeeping shared by the x86 attention kernels (paged_attention_avx2.cpp,
// paged_attention_avx512.cpp, paged_attention_decode_avx512.cpp). Like x86_shared_helpers.h it
// has no include guard, opens no namespace and includes nothing: each kernel source includes it
// INSIDE its own namespace, after kernels/paged_attention.h and kernels/quant.h, so every
// instruction set keeps its own copies of these inline functions and the linker can never hand
// an AVX-512 copy to AVX2 code.

// The largest position among the tile's queries.
inline int32_t tile_max_position(const GroupQueries& queries) {
  int32_t max_qpos = queries.positions[0];
  for (int32_t t = 0; t < queries.n_query; ++t) {
    max_qpos = queries.positions[t] > max_qpos ? queries.positions[t] : max_qpos;
  }
  return max_qpos;
}

// Pool slots of row slots [c0, c0 + nc) into slot[0, nc), nc >= 1: one division per chunk
// (the block and offset of slot c0), then stepped; a division per slot costs more than the
// rest of a decode chunk's bookkeeping.
inline void resolve_chunk_slots(const PagedKvPool& pool, const PagedHeadRow& row, int32_t c0,
                                int32_t nc, int64_t* slot) {
  const int32_t bs = pool.block_size;
  int32_t block = c0 / bs, off = c0 % bs;
  int64_t first = static_cast<int64_t>(row.block_table[block]) * bs;
  for (int32_t j = 0; j < nc; ++j, ++off) {
    if (off == bs) {
      off = 0;
      first = static_cast<int64_t>(row.block_table[++block]) * bs;
    }
    slot[j] = first + off;
  }
}

// resolve_chunk_slots, and the slots' positions into kpos[0, chunk) (INT32_MAX for the
// padding j >= nc, so it is hidden from every query); returns the smallest position of the
// chunk.
inline int32_t resolve_tile_chunk(const PagedKvPool& pool, const PagedHeadRow& row, int32_t c0,
                                  int32_t nc, int32_t chunk, int64_t* slot, int32_t* kpos) {
  resolve_chunk_slots(pool, row, c0, nc, slot);
  int32_t min_kpos = INT32_MAX;
  for (int32_t j = 0; j < nc; ++j) {
    kpos[j] = pool.positions[slot[j]];
    min_kpos = kpos[j] < min_kpos ? kpos[j] : min_kpos;
  }
  for (int32_t j = nc; j < chunk; ++j) kpos[j] = INT32_MAX;
  return min_kpos;
}

// Runs attend(tile, out_tile) over consecutive tiles of at most tile_tokens queries.
template <typename Attend>
inline void for_each_query_tile(const GroupQueries& queries, int32_t tile_tokens, float* out,
                                int64_t out_stride, Attend attend) {
  for (int32_t t0 = 0; t0 < queries.n_query; t0 += tile_tokens) {
    GroupQueries tile = queries;
    tile.q = queries.q + t0 * queries.q_stride;
    tile.positions = queries.positions + t0;
    tile.n_query = queries.n_query - t0 < tile_tokens ? queries.n_query - t0 : tile_tokens;
    attend(tile, out + t0 * out_stride);
  }
}

// ---- Decode kernels (paged_attention_decode in both x86 builds) ----
//
// Both builds do the same float operations in the same order per result, so a token's
// attention has the same bits on AVX2 and AVX-512 CPUs:
//   score_j  = scale * R(a), a[l] (l < 16) = the FMA chain over c = 0 .. d/16 - 1 of
//              q[16c + l] * k_j[16c + l], the first product a plain multiply;
//   R(a)     = h3[0] + h3[1], h3[l] = h2[l] + h2[l + 2], h2[l] = h1[l] + h1[l + 4],
//              h1[l] = a[l] + a[l + 8] (the 16-lane tree, kept pairwise in both builds);
//   e_j      = exp(score_j - max) by the shared polynomial (0 when hidden);
//   sum      = R(b), b[l] = the sum, in slot order, of e_j over the range's slots j = l mod 16;
//   acc[i]   = the FMA chain over the range's slots in order of e_j * v_j[i], skipping slots
//              whose e is 0 for every head of the group.

constexpr int32_t kDecodeChunk = 16;     // slots per step: one 16-lane vector of scores
constexpr int32_t kMaxDecodeGroup = 8;   // larger groups: the reference
constexpr int32_t kPrefetchAhead = 128;   // slots between a row's prefetch and its use
constexpr int32_t kPrefetchLines = 3;     // cache lines prefetched per block run

// On a q8_0 cache the scores are int8 dot products instead (both builds, same bits):
//   the query of each head is quantized as the cache stores K (ggml's block_q8_0 per 32 values,
//   by the reference quantizer, so every build gets the same bytes): quants qq_b, scales dq_b;
//   isum_jb  = the exact int32 dot of qq_b and k_j's quants of block b;
//   score_j  = scale * f_j, f_j = the FMA chain over blocks b = 0 .. d/32 - 1 of
//              float(isum_jb) * (dk_jb * dq_b), the first product a plain multiply;
// and the values are int16-weighted integer sums, per chunk of kValueChunk slots from begin:
//   w_jb     = e_j * dv_jb (0 where e_j is 0), dv_jb the scale of v_j's block b;
//   E_b      = the largest biased float exponent among the chunk's |w_jb|;
//   P_jb     = round-to-nearest-even(w_jb * 2^(140 - E_b)), so max P_jb is in [2^13, 2^14];
//   acc[i]  += float(the exact int32 sum over the chunk's slots of P_jb * qv_j[i]) * 2^(E_b - 140)
//              (one FMA per chunk), i in block b; chunks in order. A chunk whose E_b < 14
//              (every |w| < 2^-113) adds 0, and one with a NaN or infinite w adds NaN.
// Each weight is off by at most 2^-14 of its chunk's largest, far below q8_0's own rounding of
// V (half a step of 1/127 of its block's largest), and a value costs half a float FMA: the
// int16 pairs of two slots meet in one multiply-add (vpdpwssd or vpmaddwd), with no
// int8-to-float conversion or scale multiply per value. E_b and P_jb (q8_weight_scale) are
// integer and exactly rounded float operations, so every build gets the same weights.
constexpr int32_t kQ8BlockBytes = 34;  // fp16 scale + 32 int8 quants
constexpr int32_t kValueChunk = 32;    // 32 * 2^14 * 128 < 2^31: the int32 sums never overflow
struct Q8WeightScale {
  float to_int;    // 2^(140 - E)
  float to_float;  // 2^(E - 140)
};
// (Floats from their bits by memcpy: no std:: template is instantiated in kernel code.)
inline float float_of_bits(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}
inline Q8WeightScale q8_weight_scale(uint32_t top) {
  if (top < 14) return {0.0f, 0.0f};
  if (top == 255) return {1.0f, float_of_bits(0x7fc00000u)};  // a quiet NaN
  return {float_of_bits((267u - top) << 23), float_of_bits((top - 13u) << 23)};
}

// One chunk's int16 weights (each build packs the pairs in its own lane order) and scales.
struct Q8ValueWeights {
  alignas(64) int32_t pairs[kMaxDecodeGroup][256 / 32][kValueChunk];
  float to_float[kMaxDecodeGroup][256 / 32];  // 2^(E - 140), 0 or NaN
};

// One chunk's V rows (rows j >= nc: a zero row, never the pool) and their block scales. The
// value passes fetch a chunk ahead: loading 16 halves as a vector right after storing them
// one by one stalls on store forwarding.
struct Q8ValueChunk {
  int32_t c0 = 0, nc = 0;
  const uint8_t* rows[kValueChunk];
  alignas(64) uint16_t scales[256 / 32][kValueChunk];
};

inline void fetch_q8_0_value_chunk(const PagedKvPool& pool, const PagedHeadRow& row,
                                   int32_t begin, int32_t c0, int32_t nc, Q8ValueChunk* chunk) {
  static const uint8_t kZeroRow[kQ8BlockBytes * (256 / 32)] = {};
  const int32_t nb = pool.head_dim / 32;
  int64_t slot[kValueChunk];
  resolve_chunk_slots(pool, row, begin + c0, nc, slot);
  chunk->c0 = c0;
  chunk->nc = nc;
  for (int32_t j = 0; j < kValueChunk; ++j) {
    const uint8_t* r =
        j < nc ? static_cast<const uint8_t*>(pool.v) + slot[j] * pool.row_bytes : kZeroRow;
    chunk->rows[j] = r;
    for (int32_t b = 0; b < nb; ++b) std::memcpy(&chunk->scales[b][j], r + kQ8BlockBytes * b, 2);
  }
}

// qs [d] the quants and dq [d / 32] the scales (as floats) of one head's query q [d].
inline void quantize_query_q8_0(const float* q, int32_t d, int8_t* qs, float* dq) {
  uint8_t blocks[kQ8BlockBytes * 8];  // d <= 256
  ::kvc::reference::quantize_row_for_dot(TensorType::Q8_0, q, blocks, d);
  for (int32_t b = 0; b < d / 32; ++b) {
    uint16_t h;
    std::memcpy(&h, blocks + kQ8BlockBytes * b, sizeof(h));
    dq[b] = simd::half_to_float(h);
    std::memcpy(qs + 32 * b, blocks + kQ8BlockBytes * b + 2, 32);
  }
}

// Every head's query of one decode call quantized (quantize_query_q8_0), kept per thread: the
// parts of one split row come with the same query, and the same floats always give the same
// quants, so reusing them is exact.
struct QuantizedQueries {
  int32_t floats = 0;                                   // group * d of the kept query; 0: none
  alignas(64) float q[kMaxDecodeGroup * 256];           // the query the quants are of
  alignas(64) int8_t qs[kMaxDecodeGroup][256 + 64];     // per head, rows 64-byte aligned
  float dq[kMaxDecodeGroup][256 / 32];
};

inline const QuantizedQueries& quantized_queries_q8_0(const float* q, int32_t group, int32_t d) {
  thread_local QuantizedQueries kept;
  const int32_t floats = group * d;
  if (kept.floats != floats ||
      std::memcmp(kept.q, q, sizeof(float) * static_cast<size_t>(floats)) != 0) {
    std::memcpy(kept.q, q, sizeof(float) * static_cast<size_t>(floats));
    for (int32_t g = 0; g < group; ++g) {
      quantize_query_q8_0(q + static_cast<int64_t>(g) * d, d, kept.qs[g], kept.dq[g]);
      std::memset(kept.qs[g] + d, 0, 32);
    }
    kept.floats = floats;
  }
  return kept;
}

// The quants (kq: kDecodeChunk rows of kq_stride >= d bytes) and scales (kd [d / 32,
// kDecodeChunk]) of the chunk's nc q8_0 K rows; rows j >= nc are zero (hidden lanes) and never
// read from the pool. Bytes d .. kq_stride of a row are left as they are.
inline void gather_q8_0_rows(const PagedKvPool& pool, const int64_t* slot, int32_t nc,
                             int8_t* kq, int32_t kq_stride, uint16_t* kd) {
  const int32_t d = pool.head_dim, nb = d / 32;
  for (int32_t j = 0; j < kDecodeChunk; ++j) {
    if (j >= nc) {
      std::memset(kq + j * kq_stride, 0, static_cast<size_t>(d));
      for (int32_t b = 0; b < nb; ++b) kd[b * kDecodeChunk + j] = 0;
      continue;
    }
    const uint8_t* row = static_cast<const uint8_t*>(pool.k) + slot[j] * pool.row_bytes;
    for (int32_t b = 0; b < nb; ++b) {
      std::memcpy(kq + j * kq_stride + 32 * b, row + kQ8BlockBytes * b + 2, 32);
      std::memcpy(kd + b * kDecodeChunk + j, row + kQ8BlockBytes * b, sizeof(uint16_t));
    }
  }
}

// f.template operator()<G>() with G = group, 1 .. kMaxDecodeGroup (callers checked the group).
template <typename F>
inline void with_decode_group(int32_t group, F&& f) {
  switch (group) {
    case 1: return f.template operator()<1>();
    case 2: return f.template operator()<2>();
    case 3: return f.template operator()<3>();
    case 4: return f.template operator()<4>();
    case 5: return f.template operator()<5>();
    case 6: return f.template operator()<6>();
    case 7: return f.template operator()<7>();
    default: return f.template operator()<8>();
  }
}

// f.template operator()<S>() with S = storage: the decode passes are compiled once per KV
// storage type, so no per-load switch remains in their inner loops.
template <typename F>
inline void with_kv_storage(KvStorageType storage, F&& f) {
  switch (storage) {
    case KvStorageType::kF16: return f.template operator()<KvStorageType::kF16>();
    case KvStorageType::kF32: return f.template operator()<KvStorageType::kF32>();
    case KvStorageType::kQ8_0: return f.template operator()<KvStorageType::kQ8_0>();
  }
}

// R(b) above, for the 16 lane sums b.
inline float tree_sum16(const float* b) {
  float h1[8], h2[4];
  for (int l = 0; l < 8; ++l) h1[l] = b[l] + b[l + 8];
  for (int l = 0; l < 4; ++l) h2[l] = h1[l] + h1[l + 4];
  return (h2[0] + h2[2]) + (h2[1] + h2[3]);
}

// Prefetches the start of the K (or V) rows and the positions of row slots [s0, s0 + count)
// clipped to the row: within a block the slots' rows are contiguous, one run of cache lines
// per block, and its first kPrefetchLines lines are enough for the L2 streamer to fetch the
// rest (prefetching every line measured 9-16% slower on 8K decode rows, docs/performance.md).
inline void prefetch_row_slots(const PagedKvPool& pool, const PagedHeadRow& row, const void* base,
                               int32_t s0, int32_t count, int32_t end) {
  const int32_t bs = pool.block_size;
  const int32_t stop = s0 + count < end ? s0 + count : end;
  for (int32_t s = s0; s < stop;) {
    const int32_t off = s % bs;
    const int32_t run = bs - off < stop - s ? bs - off : stop - s;
    const int64_t first = static_cast<int64_t>(row.block_table[s / bs]) * bs + off;
    const char* p = static_cast<const char*>(base) + first * pool.row_bytes;
    const int64_t bytes = run * pool.row_bytes;
    for (int64_t o = 0; o < bytes && o < 64 * kPrefetchLines; o += 64) {
      _mm_prefetch(p + o, _MM_HINT_T1);
    }
    _mm_prefetch(reinterpret_cast<const char*>(pool.positions + first), _MM_HINT_T1);
    s += run;
  }
}

// ---- The decode passes' chunk loops (each build's pass is the loop body) ----

// body(c0, nc, slot, kpos) for row slots [begin, end) in chunks of kDecodeChunk (the scores
// passes): the K rows kPrefetchAhead slots ahead prefetched, the chunk's pool slots and
// positions resolved (resolve_tile_chunk; kpos 64-byte aligned).
template <typename Body>
inline void for_each_score_chunk(const PagedKvPool& pool, const PagedHeadRow& row,
                                 int32_t begin, int32_t end, Body&& body) {
  alignas(64) int32_t kpos[kDecodeChunk];
  int64_t slot[kDecodeChunk];
  const int32_t n = end - begin;
  for (int32_t c0 = 0; c0 < n; c0 += kDecodeChunk) {
    const int32_t nc = n - c0 < kDecodeChunk ? n - c0 : kDecodeChunk;
    prefetch_row_slots(pool, row, pool.k, begin + c0 + kPrefetchAhead, kDecodeChunk, end);
    resolve_tile_chunk(pool, row, begin + c0, nc, kDecodeChunk, slot, kpos);
    body(c0, nc, static_cast<const int64_t*>(slot), static_cast<const int32_t*>(kpos));
  }
}

// body(c0, nc, live, slot) for the chunks of kDecodeChunk row slots (the float values passes)
// with a live slot, live = live_slots(c0, nc) their bit mask (the build's own): the V rows
// prefetched ahead, the pool slots resolved for the chunks that run.
template <typename LiveSlots, typename Body>
inline void for_each_value_chunk(const PagedKvPool& pool, const PagedHeadRow& row,
                                 int32_t begin, int32_t end, LiveSlots&& live_slots,
                                 Body&& body) {
  int64_t slot[kDecodeChunk];
  const int32_t n = end - begin;
  for (int32_t c0 = 0; c0 < n; c0 += kDecodeChunk) {
    const int32_t nc = n - c0 < kDecodeChunk ? n - c0 : kDecodeChunk;
    prefetch_row_slots(pool, row, pool.v, begin + c0 + kPrefetchAhead, kDecodeChunk, end);
    const uint32_t live = live_slots(c0, nc);
    if (live == 0) continue;
    resolve_chunk_slots(pool, row, begin + c0, nc, slot);
    body(c0, nc, live, static_cast<const int64_t*>(slot));
  }
}

// body(chunk) for the chunks of kValueChunk row slots (the q8_0 values passes) with a live
// slot (live_slots(c0, nc) for nc <= kDecodeChunk, the build's own), each chunk fetched one
// ahead (Q8ValueChunk: its scales are stored a chunk before they are loaded), the V rows
// prefetched ahead.
template <typename LiveSlots, typename Body>
inline void for_each_q8_0_value_chunk(const PagedKvPool& pool, const PagedHeadRow& row,
                                      int32_t begin, int32_t end, LiveSlots&& live_slots,
                                      Body&& body) {
  const int32_t n = end - begin;
  const auto count = [n](int32_t c0) { return n - c0 < kValueChunk ? n - c0 : kValueChunk; };
  Q8ValueChunk chunks[2];
  if (n > 0) fetch_q8_0_value_chunk(pool, row, begin, 0, count(0), &chunks[0]);
  for (int32_t c0 = 0, at = 0; c0 < n; c0 += kValueChunk, at ^= 1) {
    const Q8ValueChunk& chunk = chunks[at];
    prefetch_row_slots(pool, row, pool.v, begin + c0 + kPrefetchAhead, kValueChunk, end);
    const int32_t next = c0 + kValueChunk;
    if (next < n) fetch_q8_0_value_chunk(pool, row, begin, next, count(next), &chunks[at ^ 1]);
    uint32_t live = live_slots(c0, chunk.nc < kDecodeChunk ? chunk.nc : kDecodeChunk);
    if (chunk.nc > kDecodeChunk) {
      live |= live_slots(c0 + kDecodeChunk, chunk.nc - kDecodeChunk) << kDecodeChunk;
    }
    if (live != 0) body(chunk);
  }
}
