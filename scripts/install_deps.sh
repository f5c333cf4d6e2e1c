#!/usr/bin/env bash
# Installs everything qkit needs from Debian 12's archive (no other registry is used).
# Idempotent: when every package is already installed it does nothing (no network).
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config
  libhwy-dev            # Highway: portable SIMD with runtime dispatch
  libgtest-dev libgmock-dev googletest  # GoogleTest
  libbenchmark-dev      # Google Benchmark
  nlohmann-json3-dev    # JSON (observer state, CLI output)
  libcli11-dev          # CLI11 (the qkit command-line tool)
  python3 python3-numpy python3-pytest
  python3-torch libtorch-dev  # PyTorch 1.13 (CPU) for the front end
  python3-sklearn python3-tqdm python3-matplotlib python3-onnx  # the end-to-end demo
  clang libclang-rt-14-dev    # libFuzzer and sanitizer runtimes (reliability checks)
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install_deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

echo "install_deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
