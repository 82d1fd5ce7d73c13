#!/usr/bin/env bash
# Creates .venv with the independent reference (PyPI llama-cpp-python, which compiles llama.cpp
# from source: ~15 minutes on 2 cores) plus gguf/numpy/matplotlib. Needed only to regenerate
# golden files (scripts/golden/) and to benchmark against llama.cpp; never by the engine or CI.
set -euo pipefail
cd "$(dirname "$0")/.."
# Not GGML_NATIVE=ON: on a CPU with AMX, -march=native turns on llama.cpp's AMX matmuls, which
# die with SIGILL (exit 132) at their first tileloadd (llama.cpp PR #26954; see
# scripts/bench_vs_llamacpp.sh). Name the instruction sets from /proc/cpuinfo instead.
flags="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
flags+=" -DLLAVA_BUILD=OFF"
if grep -qw avx512bw /proc/cpuinfo && grep -qw avx512vl /proc/cpuinfo; then
  flags+=" -DGGML_AVX512=ON"
  if grep -qw avx512_vnni /proc/cpuinfo; then flags+=" -DGGML_AVX512_VNNI=ON"; fi
fi
stamp=.venv/llama_cpp_cmake_args  # what the installed llama.cpp was built with
if [[ -x .venv/bin/python && "$(cat "$stamp" 2>/dev/null)" == "$flags" ]] &&
   .venv/bin/python -c "import llama_cpp, gguf, numpy, matplotlib" 2>/dev/null; then
  echo "[setup_reference] .venv ready"; exit 0
fi
python3 -m venv .venv
.venv/bin/pip install --quiet numpy gguf matplotlib
CMAKE_ARGS="$flags" .venv/bin/pip install --quiet --no-cache-dir --force-reinstall \
  llama-cpp-python==0.3.36
echo "$flags" > "$stamp"
echo "[setup_reference] .venv ready"
