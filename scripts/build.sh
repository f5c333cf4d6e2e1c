#!/usr/bin/env bash
# Installs the Debian packages qkit needs (if missing) and builds everything into build/.
# Extra CMake arguments are passed through, e.g. scripts/build.sh -DQKIT_BUILD_BENCH=OFF
# When the PyTorch extension is built (python/qkit/_C.so), a qkit.pth file pointing at this
# checkout's python/ directory is written into /usr/bin/python3's site directory, so that
# `import qkit` works from anywhere (set QKIT_NO_PTH=1 to skip; PYTHONPATH=python works too).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
BUILD_DIR=${QKIT_BUILD_DIR:-build}
# Every layer on by default (explicitly, so that options cached in an existing build/ by an
# earlier call with -D...=OFF do not silently drop the tests); later -D arguments override.
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DQKIT_BUILD_TESTS=ON \
  -DQKIT_BUILD_BENCH=ON -DQKIT_BUILD_CLI=ON "$@" >/dev/null
cmake --build "$BUILD_DIR" -j "$(nproc)"

if grep -q '^QKIT_BUILD_TORCH:BOOL=ON' "$BUILD_DIR/CMakeCache.txt" && [ -f python/qkit/_C.so ] \
    && [ "${QKIT_NO_PTH:-0}" != 1 ]; then
  site_dir=$(/usr/bin/python3 -c 'import site; print(site.getsitepackages()[0])')
  if mkdir -p "$site_dir" 2>/dev/null && echo "$PWD/python" >"$site_dir/qkit.pth" 2>/dev/null; then
    echo "build: $site_dir/qkit.pth -> $PWD/python (import qkit with /usr/bin/python3)"
  else
    echo "build: cannot write $site_dir/qkit.pth; use PYTHONPATH=$PWD/python" >&2
  fi
fi
