#!/usr/bin/env bash
# Builds qkit (installing what it needs) and runs every test layer; exits non-zero if any
# test fails. This is the README's test command and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
BUILD_DIR=${QKIT_BUILD_DIR:-build}
echo "== C++ tests (ctest) =="
ctest --test-dir "$BUILD_DIR" --output-on-failure --no-tests=error -j "$(nproc)"

echo "== Python tests (pytest, /usr/bin/python3) =="
if [ ! -f python/qkit/_C.so ]; then
  echo "test: python/qkit/_C.so was not built (QKIT_BUILD_TORCH=OFF or libtorch-dev missing)" >&2
  exit 1
fi
# tests/python/conftest.py imports qkit from this checkout's python/, whatever qkit.pth says.
set +e
/usr/bin/python3 -m pytest -q -p no:cacheprovider tests/python
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "test: pytest collected no tests (exit code 5): failing" >&2
  exit 1
fi
if [ "$rc" -ne 0 ]; then
  exit "$rc"
fi

# Reliability layer (docs/reliability.md): the C++ tests again under ASan + UBSan (build-san/)
# and a bounded libFuzzer run over the checked-in seed corpora (build-fuzz/, clang; 60 s in
# total, QKIT_FUZZ_SECONDS). Any sanitizer report, fuzzer crash, leak or timeout fails.
# QKIT_SKIP_RELIABILITY=1 skips it (local iterations only; CI never sets it).
if [ "${QKIT_SKIP_RELIABILITY:-0}" != 1 ]; then
  bash scripts/test_reliability.sh
fi
