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
