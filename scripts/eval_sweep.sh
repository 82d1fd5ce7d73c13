#!/usr/bin/env bash
# The full `kvc eval` comparison (not part of CI): every policy at C in {64, 128, 256, 512} on the
# RULER-style tasks and on Austen fidelity, then the report (docs/results.md + PNG plots).
#   scripts/eval_sweep.sh [OUT.jsonl] [extra kvc eval flags...]
# Defaults below are what docs/results.md was generated with; pass flags to override them
# (later flags win), e.g. --lengths 1024,2048,4096 --samples 4.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-results/eval_smollm2.jsonl}"
shift || true
mkdir -p "$(dirname "$out")"
[ -x build/release/kvc ] || { echo "build first: scripts/setup.sh" >&2; exit 1; }
build/release/kvc eval -t 2 --lengths 1024,2048 --samples 2 --fidelity-lengths 2048 \
  --fidelity-samples 2 \
  --policies kvcompress,streamingllm,h2o,snapkv,pyramidkv,ada-snapkv,random,kvcompress-l1 \
  --out "$out" "$@"
python=python3
[ -x .venv/bin/python ] && python=.venv/bin/python
if ! "$python" -c 'import matplotlib, numpy' 2>/dev/null; then
  echo "plots need matplotlib + numpy: scripts/setup_reference.sh creates .venv with them" >&2
  exit 1
fi
"$python" scripts/eval_report.py "$out" --out-dir docs/img --markdown docs/results.md
