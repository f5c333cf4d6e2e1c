#!/usr/bin/env bash
# End-to-end tests of the `qkit` command-line tool (registered with ctest in tools/CMakeLists.txt).
#   test_cli.sh CASE QKIT_BINARY PYTHON WORKDIR
# Inputs are written at test time with numpy; expected values are computed independently in
# Python from the documented formulas (docs/qparams.md, docs/cli.md), never by running qkit.
set -u
CASE=$1 QKIT=$2 PY=$3 DIR=$4
rm -rf "$DIR" && mkdir -p "$DIR" && cd "$DIR" || exit 1
FAILS=0
fail() { echo "FAIL: $*" >&2; FAILS=$((FAILS + 1)); }

# run EXPECTED_RC ARGS...: runs qkit, keeps stdout/stderr in out.txt/err.txt, checks the rc.
run() {
  local want=$1; shift
  "$QKIT" "$@" >out.txt 2>err.txt
  local rc=$?
  if [[ $rc != "$want" ]]; then
    fail "qkit $* -> rc $rc, want $want; stderr: $(cat err.txt)"
    return 1
  fi
  return 0
}
# Python with numpy; the expected-value checks print a message and exit 1 on mismatch.
py() { "$PY" -c "$@" || fail "python check failed: ${2:-}"; }

# Deterministic data: normal values, a few outliers.
"$PY" - <<'PYEOF'
import numpy as np
rng = np.random.default_rng(7)
x = rng.standard_normal((64, 3, 5)).astype(np.float32)
x[3, 1, 2] = 9.5
x[10, 0, 0] = -4.25
np.save("x.npy", x)
np.save("small.npy", np.array([[-1.0, 0.5, 2.0], [0.25, -0.75, 1.5]], dtype=np.float32))
np.save("half.npy", x.astype(np.float16))
np.save("int8.npy", np.arange(-100, 100, dtype=np.int8).reshape(20, 10))
PYEOF

# Reference formulas (float32 arithmetic as docs/qparams.md; RNE = np.rint).
REF='
import json, sys, numpy as np
f32 = np.float32
def sym_scale(amax, bits=8, narrow=False):
    qmin, qmax = (-(2**(bits-1)) + (1 if narrow else 0), 2**(bits-1) - 1)
    d = f32(qmax - qmin) / f32(2)          # kHalfRange: 127.5 (127 narrow)
    return max(f32(amax) / d, f32(2.0**-23))
def affine(mn, mx, qmin, qmax):
    mn, mx = min(f32(mn), f32(0)), max(f32(mx), f32(0))
    s = max((mx - mn) / f32(qmax - qmin), f32(2.0**-23))
    z = min(max(f32(qmin) - np.rint(mn / s), f32(qmin)), f32(qmax))
    return s, z
def fq(x, s, z, qmin, qmax):
    q = np.rint(x / f32(s)) + f32(z)
    clipped = np.count_nonzero((q < qmin) | (q > qmax)) / x.size
    xh = ((np.clip(q, qmin, qmax) - f32(z)) * f32(s)).astype(np.float32)
    x64 = x.astype(np.float64)
    sqnr = 10 * np.log10(np.sum(x64**2) / np.sum((x64 - xh.astype(np.float64))**2))
    return clipped, sqnr
def check(name, got, want, rel=0.0):
    ok = got == want if rel == 0 else abs(got - want) <= rel * abs(want)
    if not ok:
        print(f"{name}: got {got!r}, want {want!r}"); sys.exit(1)
def method(j, m, file_index=0):
    return [r for r in j["files"][file_index]["methods"] if r["method"] == m][0]
'

METHODS_RE='(minmax|ema|histogram-l2|entropy|mse|percentile)'
case $CASE in
table)
  # Default: every method this build has (minmax and ema always; the histogram methods when
  # the core has them), one table row each, and the same methods in the JSON.
  run 0 calibrate x.npy --json all.json && {
    rows=$(grep -cE "^$METHODS_RE " out.txt)
    py "import json; m = [r['method'] for r in json.load(open('all.json'))['files'][0]['methods']]
assert m[:2] == ['minmax', 'ema'] and len(m) in (2, 6) and $rows == len(m), (m, $rows)"
    grep -q 'scale' out.txt && grep -q 'sqnr_db' out.txt || fail "header missing: $(cat out.txt)"
  }
  run 0 calibrate x.npy --method minmax && {
    rows=$(grep -cE "^$METHODS_RE " out.txt)
    [[ $rows == 1 ]] || fail "--method minmax: want 1 row, got $rows"
  }
  run 0 calibrate --method ema --method minmax x.npy small.npy && {
    rows=$(grep -cE "^$METHODS_RE " out.txt)
    [[ $rows == 4 ]] || fail "2 methods x 2 files: want 4 rows, got $rows"
  }
  # float16 and int8 inputs are accepted.
  run 0 calibrate half.npy int8.npy --method minmax --json j.json && py "$REF
j = json.load(open('j.json'))
check('int8 scale', method(j, 'minmax', 1)['scale'][0], float(sym_scale(100)))
x = np.load('x.npy').astype(np.float16).astype(np.float32)
check('half scale', method(j, 'minmax', 0)['scale'][0], float(sym_scale(np.abs(x).max())))
"
  run 0 --help
  ;;
json_minmax)
  for flags in "" "--narrow-range" "--bits 4" "--threads 2"; do
    # shellcheck disable=SC2086
    run 0 calibrate x.npy --method minmax $flags --json j.json || continue
    bits=8; narrow=False
    [[ $flags == "--narrow-range" ]] && narrow=True
    [[ $flags == "--bits 4" ]] && bits=4
    py "$REF
bits, narrow = $bits, $narrow
j = json.load(open('j.json'))
r = method(j, 'minmax')
x = np.load('x.npy')
s = sym_scale(np.abs(x).max(), bits, narrow)
check('scale', r['scale'][0], float(s))
check('zero_point', r['zero_point'][0], 0.0)
qmin, qmax = -(2**(bits-1)) + (1 if narrow else 0), 2**(bits-1) - 1
check('quant_min', j['spec']['quant_min'], qmin)
clipped, sqnr = fq(x, s, 0, qmin, qmax)
check('clipped', r['clipped_fraction'], clipped, 1e-12)
check('sqnr', r['sqnr_db'], sqnr, 1e-9)
" "$flags"
  done
  # Exact quantization (narrow range: scale 127 / 127 = 1, integer data): SQNR is +inf in the
  # table and null in the JSON.
  "$PY" -c 'import numpy as np; np.save("exact.npy", np.array([-127, 0, 1, 127], np.float32))'
  run 0 calibrate exact.npy --method minmax --narrow-range --json e.json && {
    grep -qE '^minmax .* inf ' out.txt || fail "exact: want sqnr inf: $(cat out.txt)"
    py "import json; r = json.load(open('e.json'))['files'][0]['methods'][0]; assert r['sqnr_db'] is None, r"
  }
  # The JSON is written atomically: no temporary file is left behind.
  ls j.json.tmp.* >/dev/null 2>&1 && fail "temporary JSON file left behind"
  ;;
json_affine)
  run 0 calibrate x.npy --method minmax --affine --unsigned --json j.json && py "$REF
j = json.load(open('j.json'))
r = method(j, 'minmax')
x = np.load('x.npy')
s, z = affine(x.min(), x.max(), 0, 255)
check('scale', r['scale'][0], float(s))
check('zero_point', r['zero_point'][0], float(z))
clipped, sqnr = fq(x, s, z, 0, 255)
check('clipped', r['clipped_fraction'], clipped, 1e-12)
check('sqnr', r['sqnr_db'], sqnr, 1e-9)
"
  ;;
per_channel)
  for axis in 1 -1; do
    run 0 calibrate x.npy --method minmax --per-channel $axis --json j.json || continue
    py "$REF
axis = $axis
j = json.load(open('j.json'))
r = method(j, 'minmax')
x = np.load('x.npy')
other = tuple(i for i in range(x.ndim) if i != axis % x.ndim)
amax = np.abs(x).max(axis=other)
check('channels', len(r['scale']), x.shape[axis])
for c in range(x.shape[axis]):
    check(f'scale[{c}]', r['scale'][c], float(sym_scale(amax[c])))
"
    grep -q 'scale\[0\]' out.txt || fail "per-channel table header: $(cat out.txt)"
  done
  run 1 calibrate x.npy --per-channel 3 && { grep -q 'x.npy' err.txt || fail "axis 3: $(cat err.txt)"; }
  ;;
batch)
  # Min/max is exact under batching; the PyTorch-style moving average (c = 0.01; first batch
  # copies, then v += c * (cur - v) in float32) depends on the batches.
  run 0 calibrate x.npy --batch 4 --json j.json && py "$REF
j = json.load(open('j.json'))
x = np.load('x.npy')
check('minmax', method(j, 'minmax')['scale'][0], float(sym_scale(np.abs(x).max())))
c = f32(0.01)
mn = mx = None
for part in np.array_split(x, 4, axis=0):
    a, b = part.min(), part.max()
    if mn is None: mn, mx = a, b
    else: mn, mx = f32(mn + f32(c * f32(a - mn))), f32(mx + f32(c * f32(b - mx)))
check('ema', method(j, 'ema')['scale'][0], float(sym_scale(max(-mn, mx))))
"
  run 1 calibrate x.npy --batch 4 --per-channel 0 && { grep -q 'x.npy' err.txt || fail "batch+axis 0"; }
  ;;
malformed)
  "$PY" - <<'PYEOF'
import numpy as np, io
good = io.BytesIO(); np.save(good, np.arange(12, dtype=np.float32).reshape(3, 4)); good = good.getvalue()
open("truncated.npy", "wb").write(good[:-5])
open("badmagic.npy", "wb").write(b"\x93NUMPX" + good[6:])
np.save("bigendian.npy", np.arange(6, dtype=">f4"))
np.save("object.npy", np.array([1, "a"], dtype=object), allow_pickle=True)
hdr = "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000, 1000000000, 1000), }"
hdr = hdr + " " * (-(10 + len(hdr) + 1) % 64) + "\n"
open("absurd.npy", "wb").write(b"\x93NUMPY\x01\x00" + len(hdr).to_bytes(2, "little") + hdr.encode() + b"\0" * 16)
open("empty_file.npy", "wb").write(b"")
open("headeronly.npy", "wb").write(good[:20])
np.save("complex.npy", np.zeros(3, np.complex64))
PYEOF
  for f in truncated.npy badmagic.npy bigendian.npy object.npy absurd.npy empty_file.npy \
           headeronly.npy complex.npy missing.npy; do
    run 1 calibrate "$f" || continue
    grep -q "$f" err.txt || fail "$f: message does not name the file: $(cat err.txt)"
    [[ $(wc -l <err.txt) == 1 ]] || fail "$f: want a one-line message: $(cat err.txt)"
  done
  # Non-finite values are left out of the statistics and counted; an all-NaN tensor has
  # nothing to calibrate on (exit 1).
  "$PY" -c 'import numpy as np; np.save("nan.npy", np.array([1, np.nan, -2, np.inf], np.float32)); np.save("allnan.npy", np.full(5, np.nan, np.float32))'
  run 0 calibrate nan.npy --method minmax --json n.json && py "$REF
r = method(json.load(open('n.json')), 'minmax')
check('nonfinite', r['nonfinite_count'], 2)
check('scale', r['scale'][0], float(sym_scale(2)))
"
  run 1 calibrate allnan.npy && { grep -q 'allnan.npy' err.txt || fail "allnan: $(cat err.txt)"; }
  # The JSON cannot be written: exit 1 naming the path.
  run 1 calibrate nan.npy --json no_such_dir/out.json && {
    grep -q 'no_such_dir/out.json' err.txt || fail "json path: $(cat err.txt)"; }
  # A bad file after a good one still fails, and no JSON is written.
  "$PY" -c 'import numpy as np; np.save("ok.npy", np.ones(4, np.float32))'
  run 1 calibrate ok.npy truncated.npy --json j.json && { [[ -e j.json ]] && fail "JSON written on failure"; }
  ;;
usage)
  "$PY" -c 'import numpy as np; np.save("ok.npy", np.ones(4, np.float32))'
  # The histogram methods: usage error when this build lacks them, a row each when it has them.
  run 0 calibrate ok.npy --json all.json
  if grep -q '"entropy"' all.json; then
    run 0 calibrate ok.npy --method entropy --method percentile --percentile 99.9
  else
    run 2 calibrate ok.npy --method entropy
    grep -q 'not available' err.txt || fail "entropy: $(cat err.txt)"
  fi
  run 2 calibrate ok.npy --no-such-flag
  run 2 calibrate ok.npy --bits 17
  run 2 calibrate ok.npy --bits 1
  run 2 calibrate ok.npy --bits abc
  run 2 calibrate ok.npy --method bogus
  run 2 calibrate ok.npy --percentile 101
  run 2 calibrate ok.npy --threads 0
  run 2 calibrate ok.npy --batch 0
  run 2 calibrate ok.npy --unsigned --narrow-range
  run 2 calibrate
  run 2
  run 2 frobnicate ok.npy
  ;;
*)
  fail "unknown case $CASE"
  ;;
esac
if [[ $FAILS != 0 ]]; then
  echo "$CASE: $FAILS failure(s)" >&2
  exit 1
fi
echo "$CASE: ok"
