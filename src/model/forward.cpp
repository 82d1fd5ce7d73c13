#include "model/forward.h"

#include <omp.h>

#include <algorithm>
#include <cmath>

#include "kernels/ops.h"
#include "kernels/paged_kv_store.h"
#include "kernels/quant.h"
#include "util/error.h"
#include "util/timing.h"

namespace kvc {

ForwardPass::ForwardPass(const Model& model, int32_t max_batch_tokens, int32_t max_context)
    : model_(model), config_(model.config()), max_batch_tokens_(max_batch_tokens),
      max_context_(max_context) {
  KVC_ASSERT(max_batch_tokens > 0 && max_context > 0);
  const ModelConfig& c = config_;
  const size_t T = static_cast<size_t>(max_batch_tokens);
  const size_t q_dim = static_cast<size_t>(c.n_head) * c.head_dim;
  const size_t kv_dim = static_cast<size_t>(c.n_head_kv) * c.head_dim;
  inv_freq_.resize(static_cast<size_t>(c.rope_dims / 2));
  for (size_t i = 0; i < inv_freq_.size(); ++i) {
    inv_freq_[i] = static_cast<float>(
        std::pow(static_cast<double>(c.rope_theta), -2.0 * static_cast<double>(i) / c.rope_dims));
  }
  x_.resize(T * c.n_embd);
  xn_.resize(T * c.n_embd);
  q_.resize(T * q_dim);
  k_.resize(T * kv_dim);
  v_.resize(T * kv_dim);
  attn_.resize(T * q_dim);
  proj_.resize(T * c.n_embd);
  gate_.resize(T * c.n_ff);
  up_.resize(T * c.n_ff);
  rope_.resize(T * c.rope_dims);
  attn_scratch_.resize(static_cast<size_t>(omp_get_max_threads()) * c.group_size() *
                       static_cast<size_t>(max_context));
  observed_out_.resize(static_cast<size_t>(omp_get_max_threads()) * c.group_size() * c.head_dim);
}

std::span<const float> ForwardPass::run(const PagedKvPool& pool, const ForwardBatch& batch) {
  const ModelConfig& c = config_;
  const ModelWeights& w = model_.weights();
  const int32_t T = batch.n_tokens();
  KVC_ASSERT(T > 0 && T <= max_batch_tokens_);
  KVC_ASSERT(batch.positions.size() == batch.tokens.size() &&
             batch.want_logits.size() == batch.tokens.size());
  const int32_t rows_per_seq = c.n_layer * c.n_head_kv;
  for (const BatchSequence& s : batch.sequences) {
    KVC_ASSERT(s.n_tokens > 0 && s.first_token >= 0 && s.first_token + s.n_tokens <= T);
    KVC_ASSERT(s.row_offset >= 0 &&
               s.row_offset + rows_per_seq <= static_cast<int32_t>(batch.rows.size()));
    KVC_ASSERT(s.metric == MetricAccumulation::kNone || s.per_query);
    for (int32_t r = 0; r < rows_per_seq; ++r) {
      const PagedHeadRow& row = batch.rows[static_cast<size_t>(s.row_offset + r)];
      KVC_ASSERT(row.length >= s.n_tokens && row.length <= max_context_);
      KVC_ASSERT(s.n_observers == 0 || row.length <= s.observation_stride);
    }
  }
  for (int32_t t : batch.tokens) KVC_ASSERT(t >= 0 && t < c.n_vocab);
  work_ = plan_attention_work(batch, rows_per_seq, c.n_head_kv, omp_get_max_threads());

  const int64_t E = c.n_embd;
  const int64_t q_dim = static_cast<int64_t>(c.n_head) * c.head_dim;
  const int64_t kv_dim = static_cast<int64_t>(c.n_head_kv) * c.head_dim;
  // Per-token work runs on the worker threads once a step has enough tokens to share (a
  // prefill chunk): left on one thread it would keep the others waiting at the next matmul.
  // Each token's values are computed the same way either way, so bits never depend on it.
  const bool split_tokens = T >= kParallelTokens;
#pragma omp parallel for if (split_tokens)
  for (int32_t t = 0; t < T; ++t) {
    dequantize_weight_row(w.token_embd, batch.tokens[t], x_.data() + t * E);
    rope_angles(batch.positions[t], inv_freq_.data(), c.rope_dims,
                rope_.data() + static_cast<int64_t>(t) * c.rope_dims);
  }

  for (int32_t layer = 0; layer < c.n_layer; ++layer) {
    const LayerWeights& l = w.layers[static_cast<size_t>(layer)];
#pragma omp parallel for if (split_tokens)
    for (int32_t t = 0; t < T; ++t) {
      rms_norm(x_.data() + t * E, l.attn_norm.data(), xn_.data() + t * E, E, c.rms_eps);
    }
    const MatmulOutput qkv[] = {
        {&l.wq, q_.data(), q_dim}, {&l.wk, k_.data(), kv_dim}, {&l.wv, v_.data(), kv_dim}};
    matmul_shared_input(qkv, xn_.data(), E, T, matmul_scratch_);
#pragma omp parallel for if (split_tokens)
    for (int32_t t = 0; t < T; ++t) {
      if (c.qkv_bias) {
        add_inplace(q_.data() + t * q_dim, l.bq.data(), q_dim);
        add_inplace(k_.data() + t * kv_dim, l.bk.data(), kv_dim);
        add_inplace(v_.data() + t * kv_dim, l.bv.data(), kv_dim);
      }
      const float* rope = rope_.data() + static_cast<int64_t>(t) * c.rope_dims;
      apply_rope(q_.data() + t * q_dim, c.n_head, c.head_dim, c.rope_dims, rope, c.rope_style);
      apply_rope(k_.data() + t * kv_dim, c.n_head_kv, c.head_dim, c.rope_dims, rope,
                 c.rope_style);
    }
    for (const BatchSequence& s : batch.sequences) {
      if (s.captured == nullptr) continue;
      for (int32_t t = s.first_token; t < s.first_token + s.n_tokens; ++t) {
        const int32_t i = batch.positions[t] - s.capture_from;
        if (i < 0 || i >= s.n_capture) continue;
        std::copy_n(q_.data() + t * q_dim, q_dim,
                    s.captured + (static_cast<int64_t>(layer) * s.n_capture + i) * q_dim);
      }
    }
    const auto attention_start = std::chrono::steady_clock::now();
    const auto n_stores = static_cast<int32_t>(batch.sequences.size()) * c.n_head_kv;
#pragma omp parallel for if (split_tokens)
    for (int32_t i = 0; i < n_stores; ++i) {
      const BatchSequence& s = batch.sequences[static_cast<size_t>(i / c.n_head_kv)];
      const int32_t h = i % c.n_head_kv;
      const PagedHeadRow& row =
          batch.rows[static_cast<size_t>(s.row_offset + layer * c.n_head_kv + h)];
      const int64_t offset = s.first_token * kv_dim + static_cast<int64_t>(h) * c.head_dim;
      paged_kv_store(pool, row, row.length - s.n_tokens, k_.data() + offset, kv_dim,
                     v_.data() + offset, kv_dim, batch.positions.data() + s.first_token,
                     s.n_tokens);
    }
    attention(pool, batch, layer);
    attention_seconds_ += seconds_since(attention_start);
    matmul(l.wo, attn_.data(), q_dim, T, proj_.data(), E, matmul_scratch_);
#pragma omp parallel for if (split_tokens)
    for (int32_t t = 0; t < T; ++t) {
      add_inplace(x_.data() + t * E, proj_.data() + t * E, E);
      rms_norm(x_.data() + t * E, l.ffn_norm.data(), xn_.data() + t * E, E, c.rms_eps);
    }
    const MatmulOutput gate_up[] = {{&l.w_gate, gate_.data(), c.n_ff}, {&l.w_up, up_.data(), c.n_ff}};
    matmul_shared_input(gate_up, xn_.data(), E, T, matmul_scratch_);
#pragma omp parallel for if (split_tokens)
    for (int32_t t = 0; t < T; ++t) {
      silu_mul(gate_.data() + static_cast<int64_t>(t) * c.n_ff,
               up_.data() + static_cast<int64_t>(t) * c.n_ff, c.n_ff);
    }
    matmul(l.w_down, gate_.data(), c.n_ff, T, proj_.data(), E, matmul_scratch_);
#pragma omp parallel for if (split_tokens)
    for (int32_t t = 0; t < T; ++t) add_inplace(x_.data() + t * E, proj_.data() + t * E, E);
  }

  int32_t n_out = 0;
  for (int32_t t = 0; t < T; ++t) {
    if (batch.want_logits[t] == 0) continue;
    rms_norm(x_.data() + t * E, w.output_norm.data(), xn_.data() + n_out * E, E, c.rms_eps);
    ++n_out;
  }
  logits_.resize(static_cast<size_t>(n_out) * c.n_vocab);
  if (n_out > 0) {
    matmul(w.output, xn_.data(), E, n_out, logits_.data(), c.n_vocab, matmul_scratch_);
  }
  return {logits_.data(), logits_.size()};
}

namespace {

// An observer's record of one query head's probabilities p over a row's slots.
void add_probabilities(MetricAccumulation kind, const float* p, int32_t n, float* sums) {
  const bool squared = kind == MetricAccumulation::kSquared;
  for (int32_t i = 0; i < n; ++i) sums[i] += squared ? p[i] * p[i] : p[i];
}

}  // namespace

void ForwardPass::observe(const PagedKvPool& pool, std::span<const PagedHeadRow> rows,
                          const float* queries, const int32_t* positions, int32_t n_query,
                          MetricAccumulation kind, float* sums, int64_t stride) {
  const ModelConfig& c = config_;
  const int32_t group = c.group_size();
  const int64_t q_dim = static_cast<int64_t>(c.n_head) * c.head_dim;
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  const auto n_rows = static_cast<int32_t>(rows.size());
  KVC_ASSERT(n_rows == c.n_layer * c.n_head_kv && n_query >= 0);
  KVC_ASSERT(kind != MetricAccumulation::kNone);
  for (const PagedHeadRow& row : rows) {
    KVC_ASSERT(row.length <= stride && row.length <= max_context_);
  }
  PagedKvPool read_only = pool;  // the observed queries add nothing to the pool's metric
  read_only.metric = nullptr;
  read_only.mass = nullptr;
#pragma omp parallel
  {
    float* scratch =
        attn_scratch_.data() + static_cast<size_t>(omp_get_thread_num()) * group * max_context_;
    float* discard = observed_out_.data() + static_cast<size_t>(omp_get_thread_num()) * group *
                                                c.head_dim;
#pragma omp for schedule(dynamic, 1)
    for (int32_t r = 0; r < n_rows; ++r) {
      const int32_t layer = r / c.n_head_kv;
      const int32_t h = r % c.n_head_kv;
      const PagedHeadRow& row = rows[static_cast<size_t>(r)];
      GroupQueries q;
      q.q_stride = q_dim;
      q.n_query = 1;
      q.group = group;
      for (int32_t i = 0; i < n_query; ++i) {
        q.q = queries + (static_cast<int64_t>(layer) * n_query + i) * q_dim +
              static_cast<int64_t>(h) * group * c.head_dim;
        q.positions = positions + i;
        paged_attention(read_only, row, q, scale, MetricAccumulation::kNone, discard, q_dim,
                        scratch);
        for (int32_t g = 0; g < group; ++g) {
          const int64_t head = static_cast<int64_t>(layer) * c.n_head + h * group + g;
          add_probabilities(kind, scratch + static_cast<int64_t>(g) * row.length, row.length,
                            sums + head * stride);
        }
      }
    }
  }
}

void ForwardPass::attention(const PagedKvPool& pool, const ForwardBatch& batch, int32_t layer) {
  const ModelConfig& c = config_;
  const int32_t group = c.group_size();
  const int64_t q_dim = static_cast<int64_t>(c.n_head) * c.head_dim;
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  const size_t scratch_per_thread = static_cast<size_t>(group) * max_context_;

  // Tiled units: one pass over the row per tile (each K/V slot converted once per tile).
  // Per-query units: each token in order, accumulating the decode metric and recording the
  // observers; one unit covers all of a sequence's per-query tokens for this KV head, so every
  // row's metric and every observer's sums have one writer.
  const auto run_unit = [&](const AttentionWork& u, int32_t h, float* scratch, float* discard) {
    const BatchSequence& s = batch.sequences[static_cast<size_t>(u.sequence)];
    const PagedHeadRow& row =
        batch.rows[static_cast<size_t>(s.row_offset + layer * c.n_head_kv + h)];
    const int64_t head_offset = static_cast<int64_t>(h) * group * c.head_dim;
    GroupQueries queries;
    queries.q_stride = q_dim;
    queries.group = group;
    if (u.tiled) {
      queries.q = q_.data() + u.first * q_dim + head_offset;
      queries.positions = batch.positions.data() + u.first;
      queries.n_query = u.count;
      paged_attention_tiled(pool, row, queries, scale, attn_.data() + u.first * q_dim + head_offset,
                            q_dim);
      return;
    }
    queries.n_query = 1;
    PagedKvPool unit_pool = pool;
    if (!s.accumulate_mass) unit_pool.mass = nullptr;
    for (int32_t t = u.first; t < u.first + u.count; ++t) {
      queries.q = q_.data() + t * q_dim + head_offset;
      queries.positions = batch.positions.data() + t;
      // An observe-only unit's outputs come from the tiles; this pass is for the observers.
      paged_attention(unit_pool, row, queries, scale, s.metric,
                      u.observe_only ? discard : attn_.data() + t * q_dim + head_offset, q_dim,
                      scratch);
      for (int32_t o = 0; o < s.n_observers; ++o) {
        const ObservationOptions& obs = s.observers[o];
        if (!observes(obs, batch.positions[t])) continue;
        for (int32_t g = 0; g < group; ++g) {
          const float* p = scratch + static_cast<int64_t>(g) * row.length;
          float* sums = s.observation +
                        ((static_cast<int64_t>(o) * c.n_layer + layer) * c.n_head + h * group + g) *
                            s.observation_stride;
          if (!obs.full) {
            add_probabilities(obs.kind, p, row.length, sums);
            continue;
          }
          for (int32_t slot_index = 0; slot_index < row.length; ++slot_index) {
            const int64_t slot =
                static_cast<int64_t>(row.block_table[slot_index / pool.block_size]) *
                    pool.block_size + slot_index % pool.block_size;
            if (pool.positions[slot] > batch.positions[t] - obs.buffer) continue;
            const float pi = p[slot_index];
            sums[slot_index] += obs.kind == MetricAccumulation::kSquared ? pi * pi : pi;
          }
        }
      }
    }
  };

  // Items: one per (unit, KV head), or one per part of a split decode row; work_ is sorted by
  // cost, so the parallel loop still takes the longest work first.
  std::vector<AttentionItem>& items = items_;
  std::vector<DecodeSplit>& splits = splits_;
  items.clear();
  splits.clear();
  int32_t n_parts_total = 0;
  for (size_t u = 0; u < work_.size(); ++u) {
    const AttentionWork& w = work_[u];
    const BatchSequence& s = batch.sequences[static_cast<size_t>(w.sequence)];
    const bool splittable = !w.tiled && w.count == 1 && s.metric == MetricAccumulation::kNone &&
                            s.n_observers == 0;
    for (int32_t h = 0; h < c.n_head_kv; ++h) {
      const int32_t length =
          batch.rows[static_cast<size_t>(s.row_offset + layer * c.n_head_kv + h)].length;
      const int32_t n_parts = (length + kDecodeSplitSlots - 1) / kDecodeSplitSlots;
      if (!splittable || n_parts <= 1) {
        items.push_back({static_cast<int32_t>(u), h, -1, -1});
        continue;
      }
      const auto split = static_cast<int32_t>(splits.size());
      splits.push_back({static_cast<int32_t>(u), h, n_parts, n_parts_total});
      for (int32_t p = 0; p < n_parts; ++p) items.push_back({static_cast<int32_t>(u), h, p, split});
      n_parts_total += n_parts;
    }
  }
  const size_t per_part = static_cast<size_t>(group) * c.head_dim;
  if (part_acc_.size() < n_parts_total * per_part) {
    part_acc_.resize(n_parts_total * per_part);
    part_max_.resize(static_cast<size_t>(n_parts_total) * group);
    part_sum_.resize(static_cast<size_t>(n_parts_total) * group);
  }
  const auto run_part = [&](const AttentionItem& it, float* scratch) {
    const DecodeSplit& sp = splits[static_cast<size_t>(it.split)];
    const AttentionWork& u = work_[static_cast<size_t>(it.unit)];
    const BatchSequence& s = batch.sequences[static_cast<size_t>(u.sequence)];
    const PagedHeadRow& row =
        batch.rows[static_cast<size_t>(s.row_offset + layer * c.n_head_kv + it.head)];
    GroupQueries queries;
    queries.q = q_.data() + u.first * q_dim + static_cast<int64_t>(it.head) * group * c.head_dim;
    queries.q_stride = q_dim;
    queries.positions = batch.positions.data() + u.first;
    queries.n_query = 1;
    queries.group = group;
    const int32_t begin = it.part * kDecodeSplitSlots;
    const int32_t end = std::min(row.length, begin + kDecodeSplitSlots);
    const size_t p = static_cast<size_t>(sp.first_part + it.part);
    paged_attention_part(pool, row, queries, scale, begin, end, part_acc_.data() + p * per_part,
                         part_max_.data() + p * group, part_sum_.data() + p * group, scratch);
  };

  const auto n_items = static_cast<int64_t>(items.size());
  const auto n_splits = static_cast<int64_t>(splits.size());
#pragma omp parallel
  {
    float* scratch = attn_scratch_.data() + omp_get_thread_num() * scratch_per_thread;
    float* discard = observed_out_.data() + static_cast<size_t>(omp_get_thread_num()) * group *
                                                c.head_dim;
#pragma omp for schedule(dynamic, 1)
    for (int64_t i = 0; i < n_items; ++i) {
      const AttentionItem& it = items[static_cast<size_t>(i)];
      if (it.part < 0) {
        run_unit(work_[static_cast<size_t>(it.unit)], it.head, scratch, discard);
      } else {
        run_part(it, scratch);
      }
    }
    if (n_splits > 0) {
#pragma omp for schedule(static)
      for (int64_t i = 0; i < n_splits; ++i) {
        const DecodeSplit& sp = splits[static_cast<size_t>(i)];
        const AttentionWork& u = work_[static_cast<size_t>(sp.unit)];
        const size_t p = static_cast<size_t>(sp.first_part);
        merge_attention_parts(sp.n_parts, group, c.head_dim, part_acc_.data() + p * per_part,
                              part_max_.data() + p * group, part_sum_.data() + p * group,
                              attn_.data() + u.first * q_dim +
                                  static_cast<int64_t>(sp.head) * group * c.head_dim);
      }
    }
  }
}

}  // namespace kvc
