#!/usr/bin/env bash
# The main job: builds qkit (installing what it needs) and runs the example, which
# fake-quantizes a generated tensor under several specs and prints scale, zero point and SQNR.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh -DQKIT_BUILD_BENCH=OFF -DQKIT_BUILD_TESTS=OFF
"${QKIT_BUILD_DIR:-build}/tools/qkit_example" "$@"
