// Scalar bookkeeping shared by the x86 query-tiled attention kernels (paged_attention_avx2.cpp,
// paged_attention_avx512.cpp). Like x86_shared_helpers.h it has no include guard, opens no
// namespace and includes nothing: each kernel source includes it INSIDE its own namespace,
// after kernels/paged_attention.h, so every instruction set keeps its own copies of these
// inline functions and the linker can never hand an AVX-512 copy to AVX2 code.

// The largest position among the tile's queries.
inline int32_t tile_max_position(const GroupQueries& queries) {
  int32_t max_qpos = queries.positions[0];
  for (int32_t t = 0; t < queries.n_query; ++t) {
    max_qpos = queries.positions[t] > max_qpos ? queries.positions[t] : max_qpos;
  }
  return max_qpos;
}

// Pool slots and positions of row slots [c0, c0 + nc) into slot[0, nc) and kpos[0, chunk)
// (INT32_MAX for the padding j >= nc, so it is hidden from every query); returns the smallest
// position of the chunk.
inline int32_t resolve_tile_chunk(const PagedKvPool& pool, const PagedHeadRow& row, int32_t c0,
                                  int32_t nc, int32_t chunk, int64_t* slot, int32_t* kpos) {
  const int32_t bs = pool.block_size;
  int32_t min_kpos = INT32_MAX;
  for (int32_t j = 0; j < chunk; ++j) {
    kpos[j] = INT32_MAX;
    if (j >= nc) continue;
    const int32_t s = c0 + j;
    slot[j] = static_cast<int64_t>(row.block_table[s / bs]) * bs + s % bs;
    kpos[j] = pool.positions[slot[j]];
    min_kpos = kpos[j] < min_kpos ? kpos[j] : min_kpos;
  }
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

// R(b) above, for the 16 lane sums b.
inline float tree_sum16(const float* b) {
  float h1[8], h2[4];
  for (int l = 0; l < 8; ++l) h1[l] = b[l] + b[l + 8];
  for (int l = 0; l < 4; ++l) h2[l] = h1[l] + h1[l + 4];
  return (h2[0] + h2[2]) + (h2[1] + h2[3]);
}

// Prefetches the K (or V) rows and positions of row slots [s0, s0 + count) clipped to the
// row: within a block the slots' rows are contiguous, so one run of cache lines per block.
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
    for (int64_t o = 0; o < bytes; o += 64) _mm_prefetch(p + o, _MM_HINT_T1);
    _mm_prefetch(p + bytes - 1, _MM_HINT_T1);
    _mm_prefetch(reinterpret_cast<const char*>(pool.positions + first), _MM_HINT_T1);
    s += run;
  }
}
