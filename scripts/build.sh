#!/usr/bin/env bash
# Installs the Debian packages qkit needs (if missing) and builds everything into build/.
# Extra CMake arguments are passed through, e.g. scripts/build.sh -DQKIT_BUILD_BENCH=OFF
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
BUILD_DIR=${QKIT_BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
cmake --build "$BUILD_DIR" -j "$(nproc)"
