#!/usr/bin/env bash
# The main job: installs what qkit needs (Debian packages only), builds it (C++ core, CLI and the
# PyTorch extension python/qkit/_C.so), then runs the end-to-end demo (python/qkit/demo, see
# docs/demo.md): it trains a small conv net on scikit-learn's bundled digits, quantizes it with
# every calibration method and with QAT (STE, LSQ), exports ONNX and prints the results table.
#
#   scripts/run.sh [OUT_DIR] [demo options]     (OUT_DIR default out/demo; options: --help)
#
# Exit status: 0 when every target in the table is met, 1 when one is missed, 2 on bad input.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh -DQKIT_BUILD_BENCH=OFF -DQKIT_BUILD_TESTS=OFF
out=out/demo
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
  out=$1
  shift
fi
PYTHONPATH="$PWD/python${PYTHONPATH:+:$PYTHONPATH}" exec /usr/bin/python3 -m qkit.demo --out "$out" "$@"
