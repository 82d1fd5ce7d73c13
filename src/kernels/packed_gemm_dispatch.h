// The format dispatch every packed-kernel set shares (scalar reference, AVX2, AVX-512 builds).
//
// No include guard, no includes, no namespace on purpose (as cpu/x86_shared_helpers.h): each
// kernel source includes it once, INSIDE its own namespace, after defining
//   template <cpu::PackedFormat F> void gemm(const cpu::PackedGemmArgs& args);
// so every instruction set gets its own copy and the linker never merges them.

cpu::PackedGemmFn packed_gemm_kernel(cpu::PackedFormat format) {
  switch (format) {
    case cpu::PackedFormat::kQ4_0: return gemm<cpu::PackedFormat::kQ4_0>;
    case cpu::PackedFormat::kQ4_1: return gemm<cpu::PackedFormat::kQ4_1>;
    case cpu::PackedFormat::kQ8_0: return gemm<cpu::PackedFormat::kQ8_0>;
  }
  return nullptr;
}
