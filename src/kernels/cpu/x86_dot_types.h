// The per-type dot kernels that are the same code for every x86 kernel set: legacy types
// through dot_legacy, Q4_K/Q5_K through dot_k_with_mins, and the one- and four-token entry
// points. Like x86_shared_helpers.h, no include guard, no includes, no namespace: each
// vec_dot_*.cpp includes it inside its anonymous namespace, after its own dot_legacy and
// dot_k_with_mins, its float kernel dot_float with the loads widen_f32 / widen_f16 / widen_bf16,
// and its Q6_KDot (which differ per set), and then exports the lookups below as vec_dot_kernel /
// vec_dot_4_kernel.

// Float weights against F32 activations: rows<kTokens> as dot_float.
struct F32Dot {
  template <int kTokens>
  static void rows(int64_t n, const void* vw, const void* va, size_t stride, float* out) {
    const auto* w = static_cast<const float*>(vw);
    dot_float<kTokens>(
        n, va, stride, [w](int64_t i) { return widen_f32(w + i); },
        [w](int64_t i) { return w[i]; }, out);
  }
};

struct F16Dot {
  template <int kTokens>
  static void rows(int64_t n, const void* vw, const void* va, size_t stride, float* out) {
    const auto* w = static_cast<const uint16_t*>(vw);
    dot_float<kTokens>(
        n, va, stride, [w](int64_t i) { return widen_f16(w + i); },
        [w](int64_t i) { return half_to_float(w[i]); }, out);
  }
};

struct BF16Dot {
  template <int kTokens>
  static void rows(int64_t n, const void* vw, const void* va, size_t stride, float* out) {
    const auto* w = static_cast<const uint16_t*>(vw);
    dot_float<kTokens>(
        n, va, stride, [w](int64_t i) { return widen_bf16(w + i); },
        [w](int64_t i) { return bf16_to_float(w[i]); }, out);
  }
};

// One struct per legacy type: rows<kTokens>(n, w, a, stride, out) as dot_legacy.
struct Q4_0Dot {
  template <int kTokens>
  static void rows(int64_t n, const void* vw, const void* va, size_t stride, float* out) {
    const auto* w = static_cast<const BlockQ4_0*>(vw);  // [n / 32]
    dot_legacy<kTokens, true, BlockQ4_0, BlockQ8_0>(n / kQK, w, va, stride, [w](int64_t i) {
      return _mm256_sub_epi8(unpack_nibbles_32(w[i].qs), _mm256_set1_epi8(8));
    }, out);
  }
};

struct Q4_1Dot {
  template <int kTokens>
  static void rows(int64_t n, const void* vw, const void* va, size_t stride, float* out) {
    const auto* w = static_cast<const BlockQ4_1*>(vw);
    dot_legacy<kTokens, false, BlockQ4_1, BlockQ8_1>(
        n / kQK, w, va, stride, [w](int64_t i) { return unpack_nibbles_32(w[i].qs); }, out);
  }
};

struct Q5_0Dot {
  template <int kTokens>
  static void rows(int64_t n, const void* vw, const void* va, size_t stride, float* out) {
    const auto* w = static_cast<const BlockQ5_0*>(vw);
    dot_legacy<kTokens, true, BlockQ5_0, BlockQ8_0>(n / kQK, w, va, stride, [w](int64_t i) {
      // (nibble | bit << 4) - 16 as a signed byte: the nibble with 0xF0 or-ed in where bit = 0.
      const __m256i high = _mm256_andnot_si256(bits_to_bytes_32(load_u32(w[i].qh)),
                                               _mm256_set1_epi8(static_cast<char>(0xF0)));
      return _mm256_or_si256(unpack_nibbles_32(w[i].qs), high);
    }, out);
  }
};

struct Q5_1Dot {
  template <int kTokens>
  static void rows(int64_t n, const void* vw, const void* va, size_t stride, float* out) {
    const auto* w = static_cast<const BlockQ5_1*>(vw);
    dot_legacy<kTokens, false, BlockQ5_1, BlockQ8_1>(n / kQK, w, va, stride, [w](int64_t i) {
      const __m256i high =
          _mm256_and_si256(bits_to_bytes_32(load_u32(w[i].qh)), _mm256_set1_epi8(0x10));
      return _mm256_or_si256(unpack_nibbles_32(w[i].qs), high);
    }, out);
  }
};

struct Q8_0Dot {
  template <int kTokens>
  static void rows(int64_t n, const void* vw, const void* va, size_t stride, float* out) {
    const auto* w = static_cast<const BlockQ8_0*>(vw);
    dot_legacy<kTokens, true, BlockQ8_0, BlockQ8_0>(
        n / kQK, w, va, stride, [w](int64_t i) { return load_256(w[i].qs); }, out);
  }
};

template <typename Dot>
float dot_one(int64_t n, const void* w, const void* a) {
  float out;
  Dot::template rows<1>(n, w, a, 0, &out);
  return out;
}

template <typename Dot>
void dot_four(int64_t n, const void* w, const void* a, size_t stride, float* out) {
  Dot::template rows<4>(n, w, a, stride, out);
}

struct Q4_KDot {
  template <int kTokens>
  static void rows(int64_t n, const void* vw, const void* va, size_t stride, float* out) {
    const auto* w = static_cast<const BlockQ4_K*>(vw);
    dot_k_with_mins<kTokens>(n, w, va, stride,
                             [w](int64_t i, int pair, __m256i& lo, __m256i& hi) {
                               unpack_q4_k_pair(w[i].qs, pair, lo, hi);
                             }, out);
  }
};

struct Q5_KDot {
  template <int kTokens>
  static void rows(int64_t n, const void* vw, const void* va, size_t stride, float* out) {
    const auto* w = static_cast<const BlockQ5_K*>(vw);
    dot_k_with_mins<kTokens>(n, w, va, stride,
                             [w](int64_t i, int pair, __m256i& lo, __m256i& hi) {
                               unpack_q5_k_pair(w[i].qs, w[i].qh, pair, lo, hi);
                             }, out);
  }
};

// ---- per-type lookups ---------------------------------------------------------------------

cpu::VecDotFn lookup_vec_dot(TensorType weight_type) {
  switch (weight_type) {
    case TensorType::F32:
      return dot_one<F32Dot>;
    case TensorType::F16:
      return dot_one<F16Dot>;
    case TensorType::BF16:
      return dot_one<BF16Dot>;
    case TensorType::Q4_0:
      return dot_one<Q4_0Dot>;
    case TensorType::Q4_1:
      return dot_one<Q4_1Dot>;
    case TensorType::Q5_0:
      return dot_one<Q5_0Dot>;
    case TensorType::Q5_1:
      return dot_one<Q5_1Dot>;
    case TensorType::Q8_0:
      return dot_one<Q8_0Dot>;
    case TensorType::Q4_K:
      return dot_one<Q4_KDot>;
    case TensorType::Q5_K:
      return dot_one<Q5_KDot>;
    case TensorType::Q6_K:
      return dot_one<Q6_KDot>;
    default:
      return nullptr;
  }
}

cpu::VecDot4Fn lookup_vec_dot_4(TensorType weight_type) {
  switch (weight_type) {
    case TensorType::F32:
      return dot_four<F32Dot>;
    case TensorType::F16:
      return dot_four<F16Dot>;
    case TensorType::BF16:
      return dot_four<BF16Dot>;
    case TensorType::Q4_0:
      return dot_four<Q4_0Dot>;
    case TensorType::Q4_1:
      return dot_four<Q4_1Dot>;
    case TensorType::Q5_0:
      return dot_four<Q5_0Dot>;
    case TensorType::Q5_1:
      return dot_four<Q5_1Dot>;
    case TensorType::Q8_0:
      return dot_four<Q8_0Dot>;
    case TensorType::Q4_K:
      return dot_four<Q4_KDot>;
    case TensorType::Q5_K:
      return dot_four<Q5_KDot>;
    case TensorType::Q6_K:
      return dot_four<Q6_KDot>;
    default:
      return nullptr;
  }
}
