#include "model/forward.h"

#include <omp.h>

#include <algorithm>
#include <cmath>

#include "kernels/ops.h"
#include "kernels/quant.h"
#include "util/error.h"

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
  positions_.resize(T);
  attn_scratch_.resize(static_cast<size_t>(omp_get_max_threads()) * c.group_size() *
                       static_cast<size_t>(max_context));
}

std::span<const float> ForwardPass::run(PagedKvCache& cache, SequenceId seq,
                                        std::span<const int32_t> tokens, int32_t start_pos,
                                        const ForwardOptions& options) {
  KVC_ASSERT(!tokens.empty());
  KVC_ASSERT(cache.can_append(seq, static_cast<int32_t>(tokens.size())));
  KVC_ASSERT(options.logits == LogitsFor::kLastToken ||
             tokens.size() <= static_cast<size_t>(max_batch_tokens_));
  KVC_ASSERT(options.metric == MetricAccumulation::kNone || tokens.size() == 1);
  for (int32_t t : tokens) KVC_ASSERT(t >= 0 && t < config_.n_vocab);
  for (size_t begin = 0; begin < tokens.size(); begin += max_batch_tokens_) {
    const size_t n = std::min(tokens.size() - begin, static_cast<size_t>(max_batch_tokens_));
    const bool last = begin + n == tokens.size();
    run_chunk(cache, seq, tokens.subspan(begin, n), start_pos + static_cast<int32_t>(begin),
              options, last);
    if (options.progress) options.progress(static_cast<int64_t>(begin + n), tokens.size());
  }
  const size_t rows = options.logits == LogitsFor::kLastToken ? 1 : tokens.size();
  return {logits_.data(), rows * static_cast<size_t>(config_.n_vocab)};
}

void ForwardPass::run_chunk(PagedKvCache& cache, SequenceId seq, std::span<const int32_t> tokens,
                            int32_t start_pos, const ForwardOptions& options, bool want_logits) {
  const ModelConfig& c = config_;
  const ModelWeights& w = model_.weights();
  const auto T = static_cast<int32_t>(tokens.size());
  const int64_t E = c.n_embd;
  const int64_t q_dim = static_cast<int64_t>(c.n_head) * c.head_dim;
  const int64_t kv_dim = static_cast<int64_t>(c.n_head_kv) * c.head_dim;

  const size_t embd_row = w.token_embd.row_stride();
  for (int32_t t = 0; t < T; ++t) {
    dequantize_row(w.token_embd.type, w.token_embd.data + static_cast<size_t>(tokens[t]) * embd_row,
                   x_.data() + t * E, E);
    positions_[t] = start_pos + t;
  }

  for (int32_t layer = 0; layer < c.n_layer; ++layer) {
    const LayerWeights& l = w.layers[static_cast<size_t>(layer)];
    for (int32_t t = 0; t < T; ++t) {
      rms_norm(x_.data() + t * E, l.attn_norm.data(), xn_.data() + t * E, E, c.rms_eps);
    }
    matmul(l.wq, xn_.data(), E, T, q_.data(), q_dim, matmul_scratch_);
    matmul(l.wk, xn_.data(), E, T, k_.data(), kv_dim, matmul_scratch_);
    matmul(l.wv, xn_.data(), E, T, v_.data(), kv_dim, matmul_scratch_);
    for (int32_t t = 0; t < T; ++t) {
      if (c.qkv_bias) {
        add_inplace(q_.data() + t * q_dim, l.bq.data(), q_dim);
        add_inplace(k_.data() + t * kv_dim, l.bk.data(), kv_dim);
        add_inplace(v_.data() + t * kv_dim, l.bv.data(), kv_dim);
      }
      apply_rope(q_.data() + t * q_dim, c.n_head, c.head_dim, c.rope_dims, positions_[t],
                 inv_freq_.data(), c.rope_style);
      apply_rope(k_.data() + t * kv_dim, c.n_head_kv, c.head_dim, c.rope_dims, positions_[t],
                 inv_freq_.data(), c.rope_style);
    }
    for (int32_t h = 0; h < c.n_head_kv; ++h) {
      cache.append(seq, layer, h, k_.data() + static_cast<int64_t>(h) * c.head_dim, kv_dim,
                   v_.data() + static_cast<int64_t>(h) * c.head_dim, kv_dim, positions_.data(), T);
    }
    attention(cache, seq, layer, T, options);
    matmul(l.wo, attn_.data(), q_dim, T, proj_.data(), E, matmul_scratch_);
    for (int32_t t = 0; t < T; ++t) add_inplace(x_.data() + t * E, proj_.data() + t * E, E);

    for (int32_t t = 0; t < T; ++t) {
      rms_norm(x_.data() + t * E, l.ffn_norm.data(), xn_.data() + t * E, E, c.rms_eps);
    }
    matmul(l.w_gate, xn_.data(), E, T, gate_.data(), c.n_ff, matmul_scratch_);
    matmul(l.w_up, xn_.data(), E, T, up_.data(), c.n_ff, matmul_scratch_);
    silu_mul(gate_.data(), up_.data(), static_cast<int64_t>(T) * c.n_ff);
    matmul(l.w_down, gate_.data(), c.n_ff, T, proj_.data(), E, matmul_scratch_);
    for (int32_t t = 0; t < T; ++t) add_inplace(x_.data() + t * E, proj_.data() + t * E, E);
  }

  if (!want_logits) return;
  const int32_t first = options.logits == LogitsFor::kLastToken ? T - 1 : 0;
  const int32_t n_out = T - first;
  for (int32_t t = first; t < T; ++t) {
    rms_norm(x_.data() + t * E, w.output_norm.data(), xn_.data() + (t - first) * E, E, c.rms_eps);
  }
  logits_.resize(static_cast<size_t>(n_out) * c.n_vocab);
  matmul(w.output, xn_.data(), E, n_out, logits_.data(), c.n_vocab, matmul_scratch_);
}

void ForwardPass::clear_observation(int32_t n_observers) {
  KVC_ASSERT(n_observers >= 1);
  n_observers_ = n_observers;
  observation_.assign(static_cast<size_t>(n_observers) * config_.n_layer * config_.n_head *
                          max_context_,
                      0.0f);
}

ObservationScores ForwardPass::observation(int32_t observer) const {
  KVC_ASSERT(observer >= 0 && observer < n_observers_);
  const size_t per_observer = static_cast<size_t>(config_.n_layer) * config_.n_head * max_context_;
  return ObservationScores{observation_.data() + observer * per_observer, config_.n_layer,
                           config_.n_head, max_context_};
}

bool ForwardPass::observes(const ObservationOptions& o, int32_t position) {
  if (o.kind == MetricAccumulation::kNone) return false;
  return o.full || position > o.last_position - o.window;
}

void ForwardPass::attention(PagedKvCache& cache, SequenceId seq, int32_t layer, int32_t n_tokens,
                            const ForwardOptions& options) {
  const ModelConfig& c = config_;
  const int32_t group = c.group_size();
  const int64_t q_dim = static_cast<int64_t>(c.n_head) * c.head_dim;
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  const PagedKvPool pool = cache.pool().view();
  const size_t scratch_per_thread = static_cast<size_t>(group) * max_context_;
  const std::vector<ObservationOptions>& observers = options.observers;
  const auto observed = [&](int32_t position) {
    return std::any_of(observers.begin(), observers.end(),
                       [&](const ObservationOptions& o) { return observes(o, position); });
  };

  // Tokens [0, first_observer) only attend; [first_observer, n_tokens) also record what they
  // see. Positions rise within a chunk and every observer's set is a suffix of the positions,
  // so the union is a suffix too.
  int32_t first_observer = n_tokens;
  while (first_observer > 0 && observed(positions_[first_observer - 1])) --first_observer;
  // clear_observation(observers.size()) must come first.
  if (first_observer < n_tokens) {
    KVC_ASSERT(n_observers_ == static_cast<int32_t>(observers.size()));
  }
  const size_t per_observer = static_cast<size_t>(c.n_layer) * c.n_head * max_context_;

  const auto attend = [&](int32_t t, int32_t h, float* scratch) {
    const PagedHeadRow row = cache.row_view(seq, layer, h);
    KVC_ASSERT(row.length <= max_context_);
    GroupQueries queries;
    queries.q = q_.data() + t * q_dim + static_cast<int64_t>(h) * group * c.head_dim;
    queries.q_stride = q_dim;
    queries.positions = positions_.data() + t;
    queries.n_query = 1;
    queries.group = group;
    paged_attention(pool, row, queries, scale, options.metric,
                    attn_.data() + t * q_dim + static_cast<int64_t>(h) * group * c.head_dim, q_dim,
                    scratch);
    return row;
  };

  // Tokens that only attend run in query tiles (each K/V slot converted once per tile), one
  // task per (tile, KV head), latest tiles first: they see the most KVs, so dynamic scheduling
  // balances the causal triangle. Tiles shrink when there would be under two tasks per thread.
  // Single-token decode steps always take the per-query kernel: metric accumulation needs it
  // (tiles do not accumulate), and one kernel for every decode step keeps a full cache and a
  // compressed cache that kept everything bit-identical (tests/test_eval_quick.cpp).
  const bool tiled = options.metric == MetricAccumulation::kNone && n_tokens > 1;
  const int64_t tasks_wanted = 2LL * omp_get_max_threads();
  const auto tile = static_cast<int32_t>(std::clamp<int64_t>(
      (static_cast<int64_t>(first_observer) * c.n_head_kv + tasks_wanted - 1) / tasks_wanted, 1,
      kMaxQueryTile));
  const int32_t n_tiles = tiled ? (first_observer + tile - 1) / tile : first_observer;
  const auto attend_tile = [&](int32_t tile_index, int32_t h) {
    const int32_t t0 = tile_index * tile;
    const PagedHeadRow row = cache.row_view(seq, layer, h);
    const int64_t head_offset = static_cast<int64_t>(h) * group * c.head_dim;
    GroupQueries queries;
    queries.q = q_.data() + t0 * q_dim + head_offset;
    queries.q_stride = q_dim;
    queries.positions = positions_.data() + t0;
    queries.n_query = std::min(tile, first_observer - t0);
    queries.group = group;
    paged_attention_tiled(pool, row, queries, scale, attn_.data() + t0 * q_dim + head_offset,
                          q_dim);
  };

  const int64_t n_items = static_cast<int64_t>(n_tiles) * c.n_head_kv;
#pragma omp parallel
  {
    float* scratch = attn_scratch_.data() + omp_get_thread_num() * scratch_per_thread;
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < n_items; ++item) {
      const auto index = static_cast<int32_t>(n_tiles - 1 - item / c.n_head_kv);
      const auto h = static_cast<int32_t>(item % c.n_head_kv);
      if (tiled) {
        attend_tile(index, h);
      } else {
        attend(index, h, scratch);
      }
    }
    // Observers: one KV head per thread, queries in order, so each head's sums have one writer.
#pragma omp for schedule(dynamic, 1)
    for (int32_t h = 0; h < c.n_head_kv; ++h) {
      for (int32_t t = first_observer; t < n_tokens; ++t) {
        const PagedHeadRow row = attend(t, h, scratch);
        for (size_t o = 0; o < observers.size(); ++o) {
          const ObservationOptions& obs = observers[o];
          if (!observes(obs, positions_[t])) continue;
          for (int32_t g = 0; g < group; ++g) {
            const float* p = scratch + static_cast<int64_t>(g) * row.length;
            float* sums = observation_.data() + o * per_observer +
                          (static_cast<int64_t>(layer) * c.n_head + h * group + g) * max_context_;
            for (int32_t s = 0; s < row.length; ++s) {
              if (obs.full) {
                const int64_t slot = static_cast<int64_t>(row.block_table[s / pool.block_size]) *
                                         pool.block_size + s % pool.block_size;
                if (pool.positions[slot] > positions_[t] - obs.buffer) continue;
              }
              sums[s] += obs.kind == MetricAccumulation::kSquared ? p[s] * p[s] : p[s];
            }
          }
        }
      }
    }
  }
}

}  // namespace kvc
