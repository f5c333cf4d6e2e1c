#!/usr/bin/env bash
# Reliability layer (docs/reliability.md), called by scripts/test.sh:
#  1. build-san/: the core and qkit_tests with AddressSanitizer + UndefinedBehaviorSanitizer
#     (GCC, -fno-sanitize-recover=all), then run the C++ tests; any sanitizer report fails.
#     The sanitized core is compiled for the Highway targets AVX2, SSE4 and SCALAR only
#     (CMakeLists.txt, QKIT_SANITIZE_HWY_DISABLED_TARGETS; docs/reliability.md "CI time");
#     QKIT_SAN_ALL_TARGETS=1 compiles every target (the kernels take ~50 % more CPU then).
#  2. build-fuzz/: the libFuzzer targets in fuzz/ (clang, -fsanitize=fuzzer,address,undefined),
#     each run for a bounded time over its checked-in seed corpus fuzz/corpus/<target>/; any
#     crash, sanitizer report, leak, timeout or out-of-memory fails.
# Environment:
#   QKIT_FUZZ_SECONDS   total fuzzing time shared by the targets (default 60; 0 = only replay
#                       the seed corpora)
#   QKIT_SAN_FILTER     gtest filter for the sanitized run (default: every test)
#   QKIT_SKIP_SAN=1 / QKIT_SKIP_FUZZ=1   skip one half
# Longer runs: see docs/reliability.md ("Longer fuzzing runs").
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=$(nproc)
FUZZ_SECONDS=${QKIT_FUZZ_SECONDS:-60}
t0=$(date +%s)
# Stage timings: wall seconds, and the CPU seconds (user + sys) of the stage's processes, which
# estimate the wall time on an unshared machine (CPU / cores for the parallel builds).
cpu_file=$(mktemp)
trap 'rm -f "$cpu_file"' EXIT
cpu_now() {  # CPU seconds of all finished child processes so far (`times`, second line) -> cpu
  times >"$cpu_file"  # a builtin with a redirection: runs in this shell (a subshell has no children)
  read -r cu cs <<<"$(tail -n 1 "$cpu_file")"
  cpu=$(awk -v u="$cu" -v s="$cs" 'BEGIN { split(u, a, /[ms]/); split(s, b, /[ms]/);
    printf "%d", a[1] * 60 + a[2] + b[1] * 60 + b[2] }')
}
begin() { start=$(date +%s); cpu_now; cpu0=$cpu; }
stage() {
  cpu_now
  echo "reliability: $1: $(( $(date +%s) - start )) s wall, $(( cpu - cpu0 )) s CPU"
}

# Any report is fatal, and fatal means a non-zero exit (not only a printed report).
export ASAN_OPTIONS="halt_on_error=1:abort_on_error=1:detect_leaks=1:detect_stack_use_after_return=1:strict_string_checks=1:check_initialization_order=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="halt_on_error=1:abort_on_error=1:print_stacktrace=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"

if [[ "${QKIT_SKIP_SAN:-0}" != 1 ]]; then
  echo "== C++ tests under ASan + UBSan (build-san) =="
  cmake -S . -B build-san -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DQKIT_SANITIZE=ON \
    -DQKIT_BUILD_TESTS=ON -DQKIT_BUILD_BENCH=OFF -DQKIT_BUILD_TORCH=OFF -DQKIT_BUILD_CLI=OFF \
    -DQKIT_BUILD_FUZZ=OFF \
    -DQKIT_SANITIZE_HWY_DISABLED_TARGETS="$([[ "${QKIT_SAN_ALL_TARGETS:-0}" == 1 ]] && echo 0 ||
      echo '(HWY_AVX3|HWY_AVX3_DL|HWY_SSSE3)')" >/dev/null
  begin
  cmake --build build-san -j "$JOBS" --target qkit_tests
  stage "sanitized build"
  begin
  build-san/tests/qkit_tests --gtest_brief=1 ${QKIT_SAN_FILTER:+--gtest_filter="$QKIT_SAN_FILTER"}
  stage "sanitized tests"
fi

if [[ "${QKIT_SKIP_FUZZ:-0}" != 1 ]]; then
  echo "== libFuzzer targets (build-fuzz, clang) =="
  CXX_CLANG=$(command -v clang++ || command -v clang++-14 || true)
  if [[ -z "$CXX_CLANG" ]]; then
    echo "clang++ not found (apt-get install clang)" >&2
    exit 1
  fi
  cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_COMPILER="$CXX_CLANG" -DQKIT_BUILD_FUZZ=ON -DQKIT_SANITIZE=OFF \
    -DQKIT_BUILD_TESTS=OFF -DQKIT_BUILD_BENCH=OFF -DQKIT_BUILD_TORCH=OFF -DQKIT_BUILD_CLI=OFF \
    >/dev/null
  targets=()
  for src in fuzz/*_fuzzer.cc; do targets+=("$(basename "$src" .cc)"); done
  begin
  cmake --build build-fuzz -j "$JOBS" --target "${targets[@]}"
  stage "fuzz build"
  begin
  per_target=$(( FUZZ_SECONDS / ${#targets[@]} ))
  mkdir -p build-fuzz/runs
  for t in "${targets[@]}"; do
    corpus=fuzz/corpus/$t
    [[ -d "$corpus" ]] || { echo "missing seed corpus $corpus" >&2; exit 1; }
    # New inputs go to a scratch corpus in build-fuzz/ (the checked-in seeds stay as they are);
    # crash reproducers go to build-fuzz/runs/ and are printed below.
    work=build-fuzz/runs/$t.corpus
    mkdir -p "$work"
    log=build-fuzz/runs/$t.log
    if (( per_target > 0 )); then
      args=(-max_total_time="$per_target")
    else
      args=(-runs=0)
    fi
    echo "-- $t (${per_target} s)"
    if ! "build-fuzz/fuzz/$t" "${args[@]}" -rss_limit_mb=2048 -timeout=10 -max_len=4096 \
        -print_final_stats=1 -artifact_prefix="build-fuzz/runs/$t-" "$work" "$corpus" \
        >"$log" 2>&1; then
      tail -n 60 "$log" >&2
      echo "FAILED: $t (log $log; reproducer build-fuzz/runs/$t-*)" >&2
      exit 1
    fi
    grep -E '^stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)' \
      "$log" | sed "s/^/   /"
  done
  stage "fuzz run"
fi
echo "reliability: OK ($(( $(date +%s) - t0 )) s)"
