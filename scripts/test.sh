#!/usr/bin/env bash
# Sets up (packages, model, build) and runs the whole test suite. This is what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# Serially: the model tests use every core themselves (OpenMP); running them side by side
# oversubscribes the cores and every barrier then waits for a descheduled thread.
ctest --preset release
