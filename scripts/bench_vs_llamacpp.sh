#!/usr/bin/env bash
# kvc against llama.cpp's own benchmark tools (llama-bench, llama-batched-bench) on the same
# GGUF, threads and sizes, interleaved over several rounds; prints a ratio table (or, with
# --json, one JSON object per row). llama.cpp is built once from the source distribution of
# PyPI llama-cpp-python==0.3.36 into .cache/ (ignored by git; ~10 minutes on 2 cores).
#
# Usage: scripts/bench_vs_llamacpp.sh [--isa avx2] [--json] [--save FILE.jsonl] [--rounds 3]
#            [--threads 2] [--model FILE]
#            [--cases pp512,pp2048,pp8192,tg@0,tg@2048,tg@8127,batch4,batch16]
#   --isa avx2 (first) compares both engines limited to AVX2 + FMA + F16C, as on a CPU without
#   AVX-512: llama.cpp built without its AVX-512 paths (a build of its own), kvc run with
#   --kernels avx2. Default: the best instruction sets this CPU has.
#   KVC_BIN picks another kvc binary (default build/release/kvc).
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=0.3.36
CACHE=.cache/llama.cpp-$VERSION

# GGML_NATIVE=ON (-march=native) died with SIGILL on a VM whose CPU flags promise more than the
# hypervisor runs; name the instruction sets instead, from what /proc/cpuinfo reports.
flags=(-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON)
isa=avx2
kvc_kernels=auto
if [[ "${1:-}" == "--isa" ]]; then
  [[ "${2:-}" == "avx2" ]] || { echo "bench_vs_llamacpp: --isa takes avx2" >&2; exit 2; }
  kvc_kernels=avx2
  shift 2
fi
if [[ $kvc_kernels == auto ]] && grep -qw avx512bw /proc/cpuinfo &&
   grep -qw avx512vl /proc/cpuinfo; then
  flags+=(-DGGML_AVX512=ON); isa=avx512
  if grep -qw avx512_vnni /proc/cpuinfo; then flags+=(-DGGML_AVX512_VNNI=ON); isa=avx512-vnni; fi
  # Not llama.cpp's AMX path (GGML_AMX_INT8): built here it dies with SIGILL at its first
  # tileloadd (tinygemm_kernel_amx, Q4_1), the tile configuration never loaded on that thread
  # (llama.cpp PR #26954); VNNI is its best working build on these machines.
fi
BUILD=$CACHE/build-$isa
if [[ ! -x $BUILD/bin/llama-bench || ! -x $BUILD/bin/llama-batched-bench ]]; then
  echo "[bench_vs_llamacpp] building llama-bench and llama-batched-bench ($isa) in $BUILD" >&2
  mkdir -p "$CACHE"
  if [[ ! -d $CACHE/src ]]; then
    python3 -m pip download --quiet --no-deps --no-binary :all: -d "$CACHE" "llama-cpp-python==$VERSION"
    mkdir -p "$CACHE/src"
    tar -xzf "$CACHE/llama_cpp_python-$VERSION.tar.gz" -C "$CACHE/src" --strip-components=1
  fi
  cmake -S "$CACHE/src/vendor/llama.cpp" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release "${flags[@]}" \
    -DLLAMA_CURL=OFF -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF \
    > "$BUILD.log" 2>&1 || { tail -20 "$BUILD.log" >&2; exit 1; }
  cmake --build "$BUILD" -j "$(nproc)" --target llama-bench llama-batched-bench >> "$BUILD.log" 2>&1 \
    || { tail -20 "$BUILD.log" >&2; exit 1; }
  echo "[bench_vs_llamacpp] built with: ${flags[*]}" >&2
fi
exec python3 scripts/bench_vs_llamacpp.py --llama-bin "$BUILD/bin" --llama-flags "${flags[*]}" \
  --kvc-kernels "$kvc_kernels" "$@"
