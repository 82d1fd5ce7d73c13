#!/usr/bin/env bash
# Prefill and decode throughput of kvc and llama.cpp on the same model, prompt and thread count,
# in one run (machines are noisy: compare within a run). Prints a Markdown table.
# Usage: scripts/bench_vs_llamacpp.sh [threads=2] [prompt_tokens=512] [gen_tokens=128] [model]
#   model defaults to SmolLM2-135M-Instruct Q4_1; KVC_BIN picks another kvc binary.
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${1:-2}; PROMPT=${2:-512}; GEN=${3:-128}
MODEL=${4:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
KVC=${KVC_BIN:-build/release/kvc}
PY=${KVC_REFERENCE_PYTHON:-.venv/bin/python}
[[ -x $PY ]] || { echo "run scripts/setup_reference.sh first (or set KVC_REFERENCE_PYTHON)" >&2; exit 1; }
kvc=$("$KVC" bench -m "$MODEL" -t "$THREADS" --prompt-tokens "$PROMPT" --gen-tokens "$GEN" --repeat 3 --json)
ref=$("$PY" scripts/bench_llamacpp.py "$MODEL" --threads "$THREADS" --prompt-tokens "$PROMPT" --gen-tokens "$GEN" --repeat 3)
python3 - "$kvc" "$ref" <<'PY'
import json, sys
k, r = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"| engine | prefill tok/s ({k['prompt_tokens']} tokens) | decode tok/s ({k['gen_tokens']} tokens) |")
print("|---|---|---|")
for e in (k, r):
    print(f"| {e['engine']} | {e['prefill_tokens_per_second']:.1f} | {e['decode_tokens_per_second']:.1f} |")
print(f"| kvc / llama.cpp | {k['prefill_tokens_per_second']/r['prefill_tokens_per_second']:.2f}x "
      f"| {k['decode_tokens_per_second']/r['decode_tokens_per_second']:.2f}x |")
PY
