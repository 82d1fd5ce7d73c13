#!/usr/bin/env bash
# Creates .venv with the independent reference (PyPI llama-cpp-python, which compiles llama.cpp
# from source: ~15 minutes on 2 cores) plus gguf/numpy/matplotlib. Needed only to regenerate
# golden files (scripts/golden/) and to benchmark against llama.cpp; never by the engine or CI.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -x .venv/bin/python ]] && .venv/bin/python -c "import llama_cpp, gguf, numpy, matplotlib" 2>/dev/null; then
  echo "[setup_reference] .venv ready"; exit 0
fi
python3 -m venv .venv
.venv/bin/pip install --quiet numpy gguf matplotlib
CMAKE_ARGS="-DGGML_NATIVE=ON" .venv/bin/pip install --quiet llama-cpp-python==0.3.36
echo "[setup_reference] .venv ready"
