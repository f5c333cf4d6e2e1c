#!/usr/bin/env bash
# Builds qkit (installing what it needs) and runs every test layer; exits non-zero if any
# test fails. This is the README's test command and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
BUILD_DIR=${QKIT_BUILD_DIR:-build}
echo "== C++ tests (ctest) =="
ctest --test-dir "$BUILD_DIR" --output-on-failure -j "$(nproc)"
