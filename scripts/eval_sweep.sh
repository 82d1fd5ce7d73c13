#!/usr/bin/env bash
# The full `kvc eval` comparison behind docs/results.md (not part of CI; ~50 minutes on 2 cores):
# 8 policies at C in {64, 128, 256, 512} on the 12 RULER-style tasks at 1K and 2K tokens
# (2 samples each) with fidelity at 2K, then fidelity at 4K (where C = 512 is 8x), then the report
# (docs/results.md + PNG plots in docs/img).
#   scripts/eval_sweep.sh [OUT_PREFIX] [extra kvc eval flags for both runs...]
# e.g. scripts/eval_sweep.sh results/eval_smollm2 --samples 4 -m models/other.gguf
set -euo pipefail
cd "$(dirname "$0")/.."
prefix="${1:-results/eval_smollm2}"
shift || true
mkdir -p "$(dirname "$prefix")"
[ -x build/release/kvc ] || { echo "build first: scripts/setup.sh" >&2; exit 1; }
python=python3
[ -x .venv/bin/python ] && python=.venv/bin/python
if ! "$python" -c 'import matplotlib, numpy' 2>/dev/null; then
  echo "the report needs matplotlib + numpy: scripts/setup_reference.sh creates .venv with them" >&2
  exit 1
fi
policies=kvcompress,streamingllm,h2o,snapkv,pyramidkv,ada-snapkv,random,kvcompress-l1
build/release/kvc eval -t 2 --lengths 1024,2048 --samples 2 --fidelity-lengths 2048 \
  --fidelity-samples 2 --policies "$policies" --out "$prefix.jsonl" "$@"
build/release/kvc eval -t 2 --no-tasks --fidelity-lengths 4096 --fidelity-samples 2 \
  --policies "$policies" --out "${prefix}_fidelity4k.jsonl" "$@"
"$python" scripts/eval_report.py "$prefix.jsonl" "${prefix}_fidelity4k.jsonl" \
  --out-dir docs/img --markdown docs/results.md
