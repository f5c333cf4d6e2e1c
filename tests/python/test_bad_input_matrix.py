"""The Python half of the bad-input matrix (issue 8; the C++ half is
tests/cpp/bad_input_matrix_test.cc).

Every row is (target, bad input, call, documented outcome). The outcome is either a value,
checked against the plain references in reference.py (never against qkit itself), or an
exception type whose message must match a pattern naming the argument. Rows on modules
(``MODULES`` below) also check that a rejected call leaves every buffer and parameter unchanged,
bit for bit. Adding a module is one ``Mod(...)`` entry in ``MODULES``: the generic module cases
(``MODULE_CASES``) then run on it.

``QKIT_PRINT_MATRIX=1 /usr/bin/python3 -m pytest -q -s tests/python/test_bad_input_matrix.py -k
print`` prints the Markdown tables of docs/reliability.md from the rows themselves.

Documented outcomes (docs/torch.md, docs/numerics.md): CPU dense tensors only (ValueError naming
the argument and the device / layout); float32 / float16 / bfloat16 computed as they are, float64
computed in float32 and returned as float64; integer inputs where floats are needed are a
ValueError; OutOfRange (axis) is IndexError; NaN follows ``nan_mode`` / ``nonfinite``; +-Inf
saturate; scale / zero point / bits are validated before anything is written."""
import math
import os
import re
from typing import Any, Callable, List, NamedTuple, Optional

import pytest
import torch

import qkit
import reference as ref
from qkit import nn as qnn
from qkit import ops

FLT_MAX = 3.4028234663852886e38
QMIN, QMAX = -128, 127
S = torch.tensor([0.1])
Z = torch.tensor([3.0])
ABSURD = 2 ** 48  # the core rejects 2^48 elements or more (src/internal/strided_walk.cc)


class Raises(NamedTuple):
    exc: type
    match: str  # regex the message must contain; names the argument


class Row(NamedTuple):
    target: str
    case: str
    call: Callable[..., Any]  # () -> result; (module) -> result for module rows
    expect: Any  # Raises(...) or a checker(result) that asserts the documented value
    doc: str  # the documented value, in words (for the table)
    module: Optional[Callable[[], torch.nn.Module]] = None


def _same(a, b):
    torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


# ---- the generic bad inputs for an op's floating input `x` ------------------------------------

X_CASES = [
    ("empty tensor", lambda: torch.empty(0)),
    ("0-d tensor", lambda: torch.tensor(0.26)),
    ("NaN", lambda: torch.tensor([math.nan, 1.0, -math.nan, 0.3])),
    ("+-Inf", lambda: torch.tensor([math.inf, -math.inf, 2.0])),
    ("denormals", lambda: torch.tensor([1e-40, -1e-40, 1.4e-45, -1.4e-45])),
    ("FLT_MAX", lambda: torch.tensor([FLT_MAX, -FLT_MAX, 1.0])),
    ("all-equal values", lambda: torch.full((19,), 0.35)),
    ("non-contiguous (transposed, step 2)",
     lambda: torch.linspace(-20, 20, 84).reshape(7, 12).t()[:, ::2]),
    ("float64 (computed in float32)", lambda: torch.linspace(-15, 15, 37, dtype=torch.float64)),
]


class XOp(NamedTuple):
    name: str
    call: Callable[[torch.Tensor], Any]  # x -> result
    check: Callable[[torch.Tensor, Any], None]  # (x, result): asserts the reference value
    doc: str
    nan: Optional[Raises] = None  # when NaN is rejected instead
    absurd: Any = None  # Raises for a 2^48-element stride-0 view
    raw: Optional[Callable[[torch.Tensor], Any]] = None  # the call without a defensive copy


def _dy(x):
    return torch.linspace(-1, 1, x.numel()).reshape(x.shape).to(x.dtype) if x.dim() else \
        torch.tensor(0.5, dtype=x.dtype)


def _fq_ref(x):
    out, mask = ref.fake_quant(x.float(), S, Z, QMIN, QMAX)
    return out.to(x.dtype), mask


def _check_fq(x, r):
    want, _ = _fq_ref(x)
    assert r.dtype == x.dtype and r.shape == x.shape
    _same(r, want)


def _check_fq_inplace(x, r):
    _check_fq(x, r)


def _fq_inplace(x):
    y = x.clone()
    r = ops.fake_quantize_(y, S, Z)
    assert r.data_ptr() == y.data_ptr()
    return y


def _check_fq_mask(x, r):
    want, mask = _fq_ref(x)
    _same(r[0], want)
    assert torch.equal(r[1], ref.pack_mask(mask))


def _check_bw_clipped(x, r):
    _, mask = _fq_ref(x)
    dy = _dy(x)
    _same(r, torch.where(mask, dy, torch.zeros_like(dy)))


def _check_quantize(x, r):
    codes, _ = ref.fake_quant(x.float(), S, Z, QMIN, QMAX, codes=True)
    assert r.dtype == torch.int8
    assert torch.equal(r, codes.to(torch.int8))


def _finite_minmax(x):
    xf = x.float().reshape(-1)
    fin = xf[torch.isfinite(xf)]
    skipped = xf.numel() - fin.numel()
    if fin.numel() == 0:
        return torch.tensor([math.inf]), torch.tensor([-math.inf]), skipped
    return fin.min().reshape(1), fin.max().reshape(1), skipped


def _check_minmax(x, r):
    mn, mx, skipped = _finite_minmax(x)
    _same(r[0], mn)
    _same(r[1], mx)
    assert r[2] == skipped


def _check_absmax(x, r):
    mn, mx, skipped = _finite_minmax(x)
    want = torch.maximum(torch.maximum(mn.abs(), mx.abs()), torch.zeros(1)) \
        if math.isfinite(float(mn)) else torch.zeros(1)
    _same(r[0], want)
    assert r[1] == skipped


LSQ_STEP = torch.tensor([0.2])
LSQ_ZP = torch.tensor([2.0])


def _check_lsq(x, r):
    out, _, _, _ = ref.lsq_pytorch(x, _dy(x).float(), LSQ_STEP, LSQ_ZP, QMIN, QMAX, 1.0)
    assert r.dtype == x.dtype
    _same(r, out.to(x.dtype))


def _check_lsq_bw(x, r):
    _, dx, t0, t1 = ref.lsq_pytorch(x, _dy(x).float(), LSQ_STEP, LSQ_ZP, QMIN, QMAX, 1.0)
    _same(r[0], dx.to(x.dtype))
    _same(r[1], ref.slot_sums(t0, None))
    _same(r[2], ref.slot_sums(t1, None))


LOG2_T = torch.tensor([1.5])


def _check_tqt(x, r):
    out, _, _, _ = ref.tqt(x, _dy(x), LOG2_T, -127, 127)
    _same(r, out.to(x.dtype))


def _check_tqt_bw(x, r):
    _, dx, t0, _ = ref.tqt(x, _dy(x), LOG2_T, -127, 127)
    _same(r[0], dx.to(x.dtype))
    _same(r[1], ref.slot_sums(t0, None))


ALPHA = torch.tensor([6.0])


def _check_pact(x, r):
    out, _, _, _ = ref.pact(x, _dy(x), ALPHA, 4)
    _same(r, out.to(x.dtype))


def _check_pact_bw(x, r):
    _, dx, t0, _ = ref.pact(x, _dy(x), ALPHA, 4)
    _same(r[0], dx.to(x.dtype))
    _same(r[1], ref.slot_sums(t0, None))


CMIN, CMAX = torch.tensor([-2.0]), torch.tensor([3.0])


def _check_clip(x, r):
    out, _, _, _ = ref.learned_clip(x, _dy(x), CMIN, CMAX)
    _same(r, out.to(x.dtype))


def _check_clip_bw(x, r):
    _, dx, t0, t1 = ref.learned_clip(x, _dy(x), CMIN, CMAX)
    _same(r[0], dx.to(x.dtype))
    _same(r[1], ref.slot_sums(t0, None))
    _same(r[2], ref.slot_sums(t1, None))


ALLOC = Raises(RuntimeError, "can't allocate memory")  # torch's allocator, before any kernel
WALK = Raises(ValueError, r"absurd shape \[281474976710656\] \(2\^48 elements or more\)")

X_OPS = [
    XOp("fake_quantize", lambda x: ops.fake_quantize(x, S, Z), _check_fq,
        "reference fake_quant (NaN propagates, +-Inf saturate, denormal -> 0)", absurd=ALLOC),
    XOp("fake_quantize_", _fq_inplace, _check_fq_inplace, "as fake_quantize, in place",
        absurd=WALK, raw=lambda x: ops.fake_quantize_(x, S, Z)),
    XOp("fake_quantize_with_mask", lambda x: ops.fake_quantize_with_mask(x, S, Z), _check_fq_mask,
        "reference output and packed in-range mask", absurd=ALLOC),
    XOp("fake_quantize_backward_clipped",
        lambda x: ops.fake_quantize_backward_clipped(_dy(x), x, S, Z), _check_bw_clipped,
        "dy where the reference mask is set, else 0", absurd=ALLOC),
    XOp("quantize", lambda x: ops.quantize(x, S, Z), _check_quantize,
        "reference codes (int8)",
        nan=Raises(ValueError, r"`x` has NaN at logical index 0 \(nan_mode=propagate\)"),
        absurd=ALLOC),
    XOp("minmax", lambda x: ops.minmax(x), _check_minmax,
        "min / max of the finite elements, non-finite counted in `skipped`; empty: (+inf, -inf)",
        absurd=WALK),
    XOp("absmax", lambda x: ops.absmax(x), _check_absmax,
        "max |x| of the finite elements (accumulator 0), non-finite counted", absurd=WALK),
    XOp("lsq", lambda x: ops.lsq(x, LSQ_STEP, LSQ_ZP), _check_lsq, "reference LSQ+ (pytorch)",
        absurd=ALLOC),
    XOp("lsq_backward", lambda x: ops.lsq_backward(_dy(x), x, LSQ_STEP, LSQ_ZP), _check_lsq_bw,
        "reference dx and ordered parameter sums", absurd=ALLOC),
    XOp("tqt", lambda x: ops.tqt(x, LOG2_T), _check_tqt, "reference TQT", absurd=ALLOC),
    XOp("tqt_backward", lambda x: ops.tqt_backward(_dy(x), x, LOG2_T), _check_tqt_bw,
        "reference dx and ordered dlog2_t", absurd=ALLOC),
    XOp("pact", lambda x: ops.pact(x, ALPHA, bits=4), _check_pact, "reference PACT (Distiller)",
        absurd=ALLOC),
    XOp("pact_backward", lambda x: ops.pact_backward(_dy(x), x, ALPHA, bits=4), _check_pact_bw,
        "reference dx and dalpha", absurd=ALLOC),
    XOp("learned_clip", lambda x: ops.learned_clip(x, CMIN, CMAX), _check_clip,
        "reference clip (NaN passes)", absurd=ALLOC),
    XOp("learned_clip_backward", lambda x: ops.learned_clip_backward(_dy(x), x, CMIN, CMAX),
        _check_clip_bw, "reference dx, dcmin, dcmax", absurd=ALLOC),
]


def _x_rows() -> List[Row]:
    rows = []
    for op in X_OPS:
        for case, make in X_CASES:
            if case == "NaN" and op.nan is not None:
                rows.append(Row(op.name, case, (lambda op=op, make=make: op.call(make())),
                                op.nan, ""))
                continue
            rows.append(Row(op.name, case, (lambda op=op, make=make: (make(), op.call(make()))),
                            (lambda r, op=op: op.check(r[0], r[1])), op.doc))
        raw = op.raw or op.call
        rows.append(Row(op.name, "wrong dtype (int64)",
                        lambda raw=raw: raw(torch.arange(6)),
                        Raises(ValueError, r"`(x|dy)` has dtype Long; expected (a floating tensor|"
                               r"float32, float16 or bfloat16)"), ""))
        rows.append(Row(op.name, "wrong device (meta)",
                        lambda op=op: op.call(torch.empty(5, device="meta")),
                        Raises(ValueError, r"`(x|dy)` is on device meta; qkit's kernels run on "
                               r"CPU tensors only"), ""))
        rows.append(Row(op.name, "sparse tensor",
                        lambda op=op: op.call(torch.ones(4).to_sparse()),
                        Raises(ValueError, r"`(x|dy)` has layout Sparse"), ""))
        rows.append(Row(op.name, "absurd size (stride-0 view of 2^48 elements)",
                        lambda raw=raw: raw(torch.zeros(1).expand(ABSURD)), op.absurd, ""))
    return rows


# ---- op-specific rows: parameters, layout, bits, other arguments ------------------------------

X = torch.linspace(-3, 3, 12).reshape(4, 3)
FQ = [("fake_quantize", ops.fake_quantize), ("fake_quantize_with_mask",
                                              ops.fake_quantize_with_mask),
      ("quantize", ops.quantize)]


def _check_unsigned_negative(r):
    # unsigned 8 bit [0, 255], z = 0: negatives clamp to code 0 -> 0.0
    want, _ = ref.fake_quant(torch.tensor([-1.0, -0.04, 0.5]), S, torch.zeros(1), 0, 255)
    _same(r, want)
    assert float(r[0]) == 0.0


def _check_zp_not_integral(r):
    want, _ = ref.fake_quant(X, S, torch.tensor([0.5]), QMIN, QMAX)
    _same(r, want)


def _op_rows() -> List[Row]:
    rows = []
    for name, fn in FQ:
        rows += [
            Row(name, f"bits {b}", (lambda fn=fn, b=b: fn(X, S, bits=b)),
                Raises(ValueError, rf"`bits`={b} outside \[2, 16\]"), "")
            for b in (0, 1, 17, -1)]
        rows += [
            Row(name, "channel axis out of range (2 on 2-d)", lambda fn=fn: fn(X, S, axis=2),
                Raises(IndexError, r"`axis`=2 out of range for a tensor of shape \[4, 3\]"), ""),
            Row(name, "channel axis -3 on 2-d", lambda fn=fn: fn(X, S, axis=-3),
                Raises(IndexError, r"`axis`=-3 out of range"), ""),
            Row(name, "per-channel on a 0-d tensor", lambda fn=fn: fn(torch.tensor(1.0), S, axis=0),
                Raises(IndexError, r"0-d tensor \(`axis`=0\)"), ""),
            Row(name, "channel count mismatch (2 scales, 4 channels)",
                lambda fn=fn: fn(X, torch.tensor([0.1, 0.2]), axis=0),
                Raises(ValueError, r"`scale` has 2 element\(s\) \(shape \[2\]\); expected 4"), ""),
            Row(name, "zero_point count mismatch", lambda fn=fn: fn(X, S, torch.zeros(2)),
                Raises(ValueError, r"`zero_point` has 2 element\(s\)"), ""),
            Row(name, "scale 0", lambda fn=fn: fn(X, torch.tensor([0.0])),
                Raises(ValueError, r"`scale\[0\]`=0 must be finite and > 0"), ""),
            Row(name, "scale negative", lambda fn=fn: fn(X, torch.tensor([-0.5])),
                Raises(ValueError, r"`scale\[0\]`=-0.5 must be finite and > 0"), ""),
            Row(name, "scale NaN", lambda fn=fn: fn(X, torch.tensor([math.nan])),
                Raises(ValueError, r"`scale\[0\]`=nan must be finite and > 0"), ""),
            Row(name, "scale +Inf", lambda fn=fn: fn(X, torch.tensor([math.inf])),
                Raises(ValueError, r"`scale\[0\]`=inf must be finite and > 0"), ""),
            Row(name, "scale denormal, multiply_reciprocal",
                lambda fn=fn: fn(X, torch.tensor([1e-40]), scale_mode="multiply_reciprocal"),
                Raises(ValueError, r"`scale\[0\]`=.* has no finite float32 reciprocal"), ""),
            Row(name, "scale of dtype bool", lambda fn=fn: fn(X, torch.tensor([True])),
                Raises(ValueError, r"`scale` has dtype Bool; expected a real number type"), ""),
            Row(name, "scale on device meta", lambda fn=fn: fn(X, torch.empty(1, device="meta")),
                Raises(ValueError, r"`scale` is on device meta"), ""),
            Row(name, "zero_point outside the range (200 for int8)",
                lambda fn=fn: fn(X, S, torch.tensor([200.0])),
                Raises(ValueError, r"`zero_point\[0\]`=200 outside \[`quant_min`=-128, "
                       r"`quant_max`=127\]"), ""),
            Row(name, "zero_point NaN", lambda fn=fn: fn(X, S, torch.tensor([math.nan])),
                Raises(ValueError, r"`zero_point\[0\]`=nan"), ""),
            Row(name, "only quant_min given", lambda fn=fn: fn(X, S, quant_min=0),
                Raises(ValueError, r"`quant_min` and `quant_max` must be given together"), ""),
            Row(name, "quant_min >= quant_max", lambda fn=fn: fn(X, S, quant_min=5, quant_max=5),
                Raises(ValueError, r"`quant_min`=5 must be < `quant_max`=5"), ""),
            Row(name, "narrow_range with unsigned",
                lambda fn=fn: fn(X, S, is_signed=False, narrow_range=True),
                Raises(ValueError, r"`narrow_range`=true needs a signed range"), ""),
            Row(name, "unknown rounding", lambda fn=fn: fn(X, S, rounding="up"),
                Raises(ValueError, r"`rounding`='up'"), ""),
            Row(name, "group_size without axis", lambda fn=fn: fn(X, S, group_size=2),
                Raises(ValueError, r"`group_size`=2 needs an `axis`"), ""),
            Row(name, "group_size negative", lambda fn=fn: fn(X, S, axis=1, group_size=-1),
                Raises(ValueError, r"`group_size`=-1 must be >= 1"), ""),
            Row(name, "nan_mode=error with a NaN",
                lambda fn=fn: fn(torch.tensor([1.0, math.nan]), S, nan_mode="error"),
                Raises(ValueError, r"`x` has NaN at logical index 1 \(nan_mode=error\)"), ""),
        ]
    rows += [
        Row("fake_quantize", "unsigned with negative input",
            lambda: ops.fake_quantize(torch.tensor([-1.0, -0.04, 0.5]), S, is_signed=False),
            _check_unsigned_negative, "clamps to quant_min = 0: output 0"),
        Row("fake_quantize", "zero_point not integral (0.5)",
            lambda: ops.fake_quantize(X, S, torch.tensor([0.5])), _check_zp_not_integral,
            "accepted (no integer codes needed): reference value"),
        Row("quantize", "zero_point not integral (0.5)",
            lambda: ops.quantize(X, S, torch.tensor([0.5])),
            Raises(ValueError, r"`zero_point\[0\]`=0.5 must be integral"), ""),
        Row("quantize", "dtype float32 for the codes (NaN kept)",
            lambda: ops.quantize(torch.tensor([math.nan, 0.26, -1.0, 100.0]), S,
                                 dtype=torch.float32),
            # round(x / 0.1) clamped to [-128, 127]; NaN passes (nan_mode="propagate")
            lambda r: _same(r, torch.tensor([math.nan, 3.0, -10.0, 127.0])),
            "float32 codes, NaN passes"),
        Row("quantize", "dtype float64 for the codes",
            lambda: ops.quantize(X, S, dtype=torch.float64),
            Raises(ValueError, r"has dtype Double; expected int8, uint8, int16 or int32"), ""),
        Row("quantize", "dtype int8 for 16-bit codes",
            lambda: ops.quantize(X, S, bits=16, dtype=torch.int8),
            Raises(ValueError, r"dtype int8 \[-128, 127\] cannot hold"), ""),
        Row("fake_quantize_", "in place on an integer tensor",
            lambda: ops.fake_quantize_(torch.arange(4), S),
            Raises(ValueError, r"`x` has dtype Long"), ""),
        Row("fake_quantize_", "nan_mode=error: nothing written",
            lambda: _inplace_nan_error(), lambda r: None if r else pytest.fail("x was modified"),
            "ValueError and x unchanged"),
        Row("fake_quantize_", "in place on a stride-0 (self-overlapping) view",
            lambda: ops.fake_quantize_(torch.zeros(1).expand(5), S),
            Raises(ValueError, r"`out` \(shape \[5\]\) has elements that share memory"), ""),
        Row("fake_quantize_", "in place on an overlapping as_strided view",
            lambda: ops.fake_quantize_(torch.arange(4.0).as_strided((3, 2), (1, 1)), S),
            Raises(ValueError, r"`out` \(shape \[3, 2\]\) has elements that share memory"), ""),
        Row("fake_quantize", "ste unknown", lambda: ops.fake_quantize(X, S, ste="straight"),
            Raises(ValueError, r"`ste`='straight'"), ""),
        # dequantize: integer codes
        Row("dequantize", "wrong dtype (float32 q)", lambda: ops.dequantize(X, S),
            Raises(ValueError, r"`q` has dtype Float; expected int8, uint8, int16 or int32"), ""),
        Row("dequantize", "wrong device (meta)",
            lambda: ops.dequantize(torch.empty(3, dtype=torch.int8, device="meta"), S),
            Raises(ValueError, r"`q` is on device meta"), ""),
        Row("dequantize", "empty tensor",
            lambda: ops.dequantize(torch.empty(0, dtype=torch.int8), S),
            lambda r: (r.shape == (0,) and r.dtype == torch.float32) or pytest.fail(str(r)),
            "empty float32"),
        Row("dequantize", "codes outside the range (int16 300 for int8)",
            lambda: ops.dequantize(torch.tensor([300], dtype=torch.int16), S),
            lambda r: _same(r, torch.tensor([300 * 0.1], dtype=torch.float32)),
            "(q - z) * s, codes not clamped"),
        Row("dequantize", "scale 0", lambda: ops.dequantize(torch.ones(2, dtype=torch.int8),
                                                           torch.tensor([0.0])),
            Raises(ValueError, r"`scale\[0\]`=0 must be finite and > 0"), ""),
        Row("dequantize", "zero_point outside the range",
            lambda: ops.dequantize(torch.ones(2, dtype=torch.int8), S, torch.tensor([-129.0])),
            Raises(ValueError, r"`zero_point\[0\]`=-129 outside"), ""),
        Row("dequantize", "bits 17", lambda: ops.dequantize(torch.ones(2, dtype=torch.int8), S,
                                                           bits=17),
            Raises(ValueError, r"`bits`=17 outside \[2, 16\]"), ""),
        # fake_quantize_backward: dy + packed mask
        Row("fake_quantize_backward", "mask too short",
            lambda: ops.fake_quantize_backward(torch.ones(16), torch.zeros(1, dtype=torch.uint8)),
            Raises(ValueError, r"`mask` has 1 bytes; 16 elements need 2"), ""),
        Row("fake_quantize_backward", "mask of dtype float",
            lambda: ops.fake_quantize_backward(torch.ones(8), torch.zeros(1)),
            Raises(ValueError, r"`mask`"), ""),
        Row("fake_quantize_backward", "dy int64",
            lambda: ops.fake_quantize_backward(torch.ones(8, dtype=torch.int64),
                                               torch.zeros(1, dtype=torch.uint8)),
            Raises(ValueError, r"`dy` has dtype Long"), ""),
        Row("fake_quantize_backward", "dy on device meta",
            lambda: ops.fake_quantize_backward(torch.empty(8, device="meta"),
                                               torch.zeros(1, dtype=torch.uint8)),
            Raises(ValueError, r"`dy` is on device meta"), ""),
        Row("fake_quantize_backward", "empty dy", lambda: ops.fake_quantize_backward(
            torch.empty(0), torch.empty(0, dtype=torch.uint8)),
            lambda r: (r.shape == (0,)) or pytest.fail(str(r)), "empty dx"),
        Row("fake_quantize_backward_clipped", "dy shape mismatch",
            lambda: ops.fake_quantize_backward_clipped(torch.ones(3), X, S),
            Raises(ValueError, r"`dy`"), ""),
        # minmax / absmax options
        Row("minmax", "channel axis out of range", lambda: ops.minmax(X, axis=5),
            Raises(IndexError, r"`axis`=5 out of range for a tensor of shape \[4, 3\]"), ""),
        Row("minmax", "accumulator count mismatch",
            lambda: ops.minmax(X, axis=0, min_acc=torch.zeros(3), max_acc=torch.zeros(3)),
            Raises(ValueError, r"`min_acc` has 3 element\(s\) \(shape \[3\]\); expected 4"), ""),
        Row("minmax", "unknown nonfinite", lambda: ops.minmax(X, nonfinite="drop"),
            Raises(ValueError, r"`nonfinite`='drop'"), ""),
        Row("minmax", "NaN with nonfinite=propagate",
            lambda: ops.minmax(torch.tensor([1.0, math.nan]), nonfinite="propagate"),
            lambda r: (_same(r[0], torch.tensor([math.nan])),
                       _same(r[1], torch.tensor([math.nan]))),
            "min = max = NaN"),
        Row("minmax", "+-Inf with nonfinite=skip_nan",
            lambda: ops.minmax(torch.tensor([1.0, math.inf, -math.inf, math.nan]),
                               nonfinite="skip_nan"),
            lambda r: (_same(r[0], torch.tensor([-math.inf])),
                       _same(r[1], torch.tensor([math.inf])), r[2] == 1 or pytest.fail(str(r))),
            "+-Inf taken, NaN skipped and counted"),
        Row("absmax", "channel axis out of range", lambda: ops.absmax(X, axis=-3),
            Raises(IndexError, r"`axis`=-3 out of range"), ""),
        Row("absmax", "accumulator count mismatch",
            lambda: ops.absmax(X, amax_acc=torch.zeros(2)),
            Raises(ValueError, r"`amax_acc` has 2 element\(s\)"), ""),
        # choose_qparams
        Row("choose_qparams", "min NaN",
            lambda: ops.choose_qparams(torch.tensor([math.nan]), torch.tensor([1.0])),
            Raises(ValueError, r"`min`\[0\]=nan is not finite"), ""),
        Row("choose_qparams", "max +Inf",
            lambda: ops.choose_qparams(torch.tensor([0.0]), torch.tensor([math.inf])),
            Raises(ValueError, r"`max`\[0\]=inf is not finite"), ""),
        Row("choose_qparams", "min > max",
            lambda: ops.choose_qparams(torch.tensor([1.0]), torch.tensor([-1.0])),
            Raises(ValueError, r"`min`.*=1 > `max`.*=-1"), ""),
        *[Row("choose_qparams", f"bits {b}",
              lambda b=b: ops.choose_qparams(torch.tensor([0.0]), torch.tensor([1.0]), bits=b),
              Raises(ValueError, rf"`bits`={b} outside \[2, 16\]"), "") for b in (0, 1, 17, -1)],
        Row("choose_qparams", "shape mismatch",
            lambda: ops.choose_qparams(torch.tensor([0.0, 1.0]), torch.tensor([1.0])),
            Raises(ValueError, r"`min` has shape \[2\] but `max` has shape \[1\]"), ""),
        Row("choose_qparams", "empty ranges",
            lambda: ops.choose_qparams(torch.empty(0), torch.empty(0)),
            lambda r: (r[0].shape == (0,) and r[1].shape == (0,)) or pytest.fail(str(r)),
            "empty scale and zero point"),
        Row("choose_qparams", "0-d ranges",
            lambda: ops.choose_qparams(torch.tensor(-1.0), torch.tensor(1.0)),
            lambda r: (_same(r[0], torch.tensor(1.0 / 127.5)), _same(r[1], torch.tensor(0.0))),
            "scale 1/127.5, zero point 0, 0-d"),
        Row("choose_qparams", "all-equal (min == max == 0)",
            lambda: ops.choose_qparams(torch.tensor([0.0]), torch.tensor([0.0])),
            lambda r: (_same(r[0], torch.tensor([2.0 ** -23])), _same(r[1], torch.tensor([0.0]))),
            "scale floored at eps 2^-23, zero point 0"),
        Row("choose_qparams", "denormal range",
            lambda: ops.choose_qparams(torch.tensor([-1e-40]), torch.tensor([1e-40])),
            lambda r: _same(r[0], torch.tensor([2.0 ** -23])), "scale floored at eps"),
        Row("choose_qparams", "FLT_MAX symmetric",
            lambda: ops.choose_qparams(torch.tensor([-FLT_MAX]), torch.tensor([FLT_MAX])),
            lambda r: _same(r[0], torch.tensor([FLT_MAX]) / torch.tensor([127.5])),
            "scale = FLT_MAX / 127.5"),
        Row("choose_qparams", "[-FLT_MAX, FLT_MAX] affine (range overflows)",
            lambda: ops.choose_qparams(torch.tensor([-FLT_MAX]), torch.tensor([FLT_MAX]),
                                       symmetric=False),
            Raises(ValueError, r"overflows float32"), ""),
        Row("choose_qparams", "eps NaN",
            lambda: ops.choose_qparams(torch.tensor([0.0]), torch.tensor([1.0]), eps=math.nan),
            Raises(ValueError, r"`rule.eps`=nan"), ""),
        Row("choose_qparams", "min int64 (any real dtype is documented)",
            lambda: ops.choose_qparams(torch.tensor([-1]), torch.tensor([1.0])),
            lambda r: (_same(r[0], torch.tensor([1.0 / 127.5])), _same(r[1], torch.zeros(1))),
            "converted to float32: scale 1/127.5, zero point 0"),
        Row("choose_qparams", "min of dtype bool",
            lambda: ops.choose_qparams(torch.tensor([False]), torch.tensor([1.0])),
            Raises(ValueError, r"`min` has dtype Bool"), ""),
        Row("choose_qparams", "min on device meta",
            lambda: ops.choose_qparams(torch.empty(1, device="meta"), torch.tensor([1.0])),
            Raises(ValueError, r"`min` is on device meta"), ""),
        Row("choose_qparams", "unknown divisor",
            lambda: ops.choose_qparams(torch.tensor([0.0]), torch.tensor([1.0]), divisor="x"),
            Raises(ValueError, r"`divisor`='x'"), ""),
        # learned-range parameters
        Row("lsq", "step 0", lambda: ops.lsq(X, torch.tensor([0.0])),
            Raises(ValueError, r"step 0 \(from `step`\[0\]=0\) must be > 0"), ""),
        Row("lsq", "step negative", lambda: ops.lsq(X, torch.tensor([-1.0])),
            Raises(ValueError, r"`step`\[0\]=-1\) must be > 0"), ""),
        Row("lsq", "step NaN", lambda: ops.lsq(X, torch.tensor([math.nan])),
            Raises(ValueError, r"`step`\[0\]=nan is not finite"), ""),
        Row("lsq", "quant_min >= quant_max", lambda: ops.lsq(X, LSQ_STEP, quant_min=5,
                                                             quant_max=1),
            Raises(ValueError, r"`quant_min`=5 must be < `quant_max`=1"), ""),
        Row("lsq", "zero_point outside the range (pytorch: rounded and clamped)",
            lambda: ops.lsq(X, LSQ_STEP, torch.tensor([500.0])),
            lambda r: _same(r, ref.lsq_pytorch(X, X, LSQ_STEP, torch.tensor([500.0]), QMIN, QMAX,
                                               1.0)[0]),
            "reference (zero point clamped to 127)"),
        Row("lsq", "zero_point NaN", lambda: ops.lsq(X, LSQ_STEP, torch.tensor([math.nan])),
            Raises(ValueError, r"`zero_point`\[0\]=nan"), ""),
        Row("lsq", "channel axis out of range", lambda: ops.lsq(X, LSQ_STEP, axis=2),
            Raises(IndexError, r"`axis`=2 out of range"), ""),
        Row("lsq", "channel count mismatch", lambda: ops.lsq(X, torch.ones(3), axis=0),
            Raises(ValueError, r"`step` has 3 element\(s\) \(shape \[3\]\); expected 4"), ""),
        Row("lsq", "unknown variant", lambda: ops.lsq(X, LSQ_STEP, variant="lsq+"),
            Raises(ValueError, r"`variant`='lsq\+'"), ""),
        Row("lsq", "megengine, step -1 (|step| + eps)",
            lambda: ops.lsq(X, torch.tensor([-1.0]), variant="megengine",
                            step_transform="abs_plus_eps", step_eps=1e-5),
            lambda r: _same(r, ref.lsq_megengine(X, X, torch.tensor([1.0 + 1e-5]), torch.zeros(1),
                                                 QMIN, QMAX, 1.0)[0]),
            "reference with step |-1| + 1e-5"),
        Row("lsq_grad_scale", "numel 0", lambda: ops.lsq_grad_scale(0, 127),
            Raises(ValueError, r"`numel`=0 must be >= 1"), ""),
        Row("lsq_grad_scale", "numel -1", lambda: ops.lsq_grad_scale(-1, 127),
            Raises(ValueError, r"`numel`=-1 must be >= 1"), ""),
        Row("lsq_grad_scale", "quant_max 0", lambda: ops.lsq_grad_scale(10, 0),
            Raises(ValueError, r"`quant_max`=0"), ""),
        Row("tqt", "log2_t NaN", lambda: ops.tqt(X, torch.tensor([math.nan])),
            Raises(ValueError, r"`log2_t`\[0\]=nan is not finite"), ""),
        Row("tqt", "log2_t +Inf", lambda: ops.tqt(X, torch.tensor([math.inf])),
            Raises(ValueError, r"`log2_t`\[0\]=inf is not finite"), ""),
        Row("tqt", "channel count mismatch", lambda: ops.tqt(X, torch.zeros(2), axis=1),
            Raises(ValueError, r"`log2_t` has 2 element\(s\)"), ""),
        Row("tqt", "quant_min >= quant_max", lambda: ops.tqt(X, LOG2_T, quant_min=3, quant_max=3),
            Raises(ValueError, r"`quant_min`=3 must be < `quant_max`=3"), ""),
        *[Row("pact", f"bits {b}", lambda b=b: ops.pact(X, ALPHA, bits=b),
              Raises(ValueError, rf"`bits`={b} outside \[2, 16\]"), "") for b in (0, 1, 17, -1)],
        Row("pact", "alpha NaN", lambda: ops.pact(X, torch.tensor([math.nan])),
            Raises(ValueError, r"`alpha`\[0\]=nan is not finite"), ""),
        Row("pact", "alpha +Inf", lambda: ops.pact(X, torch.tensor([math.inf])),
            Raises(ValueError, r"`alpha`\[0\]=inf is not finite"), ""),
        Row("pact", "alpha 0 (any finite alpha is documented)",
            lambda: ops.pact(X, torch.tensor([0.0])),
            lambda r: _same(r, ref.pact(X, X, torch.tensor([0.0]), 8)[0]),
            "reference: every output 0"),
        Row("pact", "alpha negative (any finite alpha is documented)",
            lambda: ops.pact(X, torch.tensor([-1.0])),
            lambda r: _same(r, ref.pact(X, X, torch.tensor([-1.0]), 8)[0]),
            "reference (Distiller): every output clipped to alpha = -1"),
        Row("pact", "channel axis out of range", lambda: ops.pact(X, ALPHA, axis=-3),
            Raises(IndexError, r"`axis`=-3 out of range"), ""),
        Row("learned_clip", "cmin > cmax (inverted)",
            lambda: ops.learned_clip(X, torch.tensor([1.0]), torch.tensor([-1.0])),
            lambda r: _same(r, ref.learned_clip(X, X, torch.tensor([1.0]),
                                                torch.tensor([-1.0]))[0]),
            "reference max(min(x, cmax), cmin): every output cmin"),
        Row("learned_clip", "cmin NaN",
            lambda: ops.learned_clip(X, torch.tensor([math.nan]), CMAX),
            Raises(ValueError, r"`cmin`\[0\]=nan"), ""),
        Row("learned_clip", "channel count mismatch",
            lambda: ops.learned_clip(X, torch.zeros(2), torch.ones(2), axis=0),
            Raises(ValueError, r"`cmin` has 2 element\(s\)"), ""),
        # SIMD dispatch control
        Row("force_target", "unknown target", lambda: ops.force_target("AVX9"),
            Raises(ValueError, r"target `AVX9` is not compiled in or not supported"), ""),
        Row("available_targets", "(no input)", lambda: ops.available_targets(),
            lambda r: ("SCALAR" in r) or pytest.fail(str(r)), "includes SCALAR"),
        Row("current_target", "after force_target('')",
            lambda: (ops.force_target(""), ops.current_target())[1],
            lambda r: (r == ops.available_targets()[0]) or pytest.fail(r), "the best target"),
    ]
    return rows


# ---- observer ops (torch.ops.qkit.observer_* / range_stats_*; python/qkit/nn/observers.py) ----

QK = torch.ops.qkit
META = torch.empty(3, device="meta")
DEV = Raises(ValueError, r"`x` is on device meta; qkit's kernels run on CPU tensors only")
XLONG = Raises(ValueError, r"`x` has dtype Long; expected a floating tensor")


def _obs(cls=None, **kw):
    """(state, kw, rule) of an observer after one batch of linspace(-3, 3, 12)."""
    m = (cls or qnn.MinMaxObserver)(**kw)
    m(torch.linspace(-3, 3, 12))
    return m._state(), m._kw, m._rule


def _rs():
    st, kw, _ = _obs()
    return list(QK.observer_batch_range(torch.linspace(-1, 2, 5), st, **kw))


def _hist_state():
    return _obs(qnn.HistogramObserver, bins=16)


def _hc_state():
    return _obs(qnn.HistogramCalibrator, num_bins=16)


def _check_minmax_state(r):
    # MinMaxObserver state after linspace(-3, 3, 12) then [-5, 0.5, NaN] (NaN skipped)
    _same(r[0], torch.tensor([-5.0]))
    _same(r[1], torch.tensor([3.0]))
    assert int(r[3]) == 1


def _check_rs_roundtrip(r):
    rs = _rs()
    for a, b in zip(r, rs):
        assert torch.equal(a, b)


def _observer_op_rows() -> List[Row]:
    def mm():
        return _obs()

    rows = [
        # observer_observe
        Row("observer_observe", "NaN (nonfinite=skip)",
            lambda: QK.observer_observe(torch.tensor([-5.0, 0.5, math.nan]), mm()[0], **mm()[1]),
            _check_minmax_state, "running min -5 / max 3, NaN skipped and counted (1)"),
        Row("observer_observe", "wrong dtype (int64)",
            lambda: QK.observer_observe(torch.arange(6), mm()[0], **mm()[1]), XLONG, ""),
        Row("observer_observe", "wrong device (meta)",
            lambda: QK.observer_observe(META, mm()[0], **mm()[1]), DEV, ""),
        Row("observer_observe", "unknown kind",
            lambda: QK.observer_observe(torch.ones(3), mm()[0], kind="x"),
            Raises(ValueError, r"`kind`='x' is not one of"), ""),
        Row("observer_observe", "state with too few tensors",
            lambda: QK.observer_observe(torch.ones(3), mm()[0][:2], **mm()[1]),
            Raises(ValueError, r"`state` has 2 tensors; kind 'minmax' has 4"), ""),
        Row("observer_observe", "state tensor of the wrong dtype",
            lambda: QK.observer_observe(torch.ones(3), [mm()[0][0].double()] + mm()[0][1:],
                                        **mm()[1]),
            Raises(ValueError, r"state tensor `min_val` has dtype Double; expected Float"), ""),
        Row("observer_observe", "state on device meta",
            lambda: QK.observer_observe(torch.ones(3), [META] + mm()[0][1:], **mm()[1]),
            Raises(ValueError, r"is on device meta"), ""),
        Row("observer_observe", "absurd size (stride-0 view of 2^48 elements)",
            lambda: QK.observer_observe(torch.zeros(1).expand(ABSURD), mm()[0], **mm()[1]),
            WALK, ""),
        Row("observer_observe", "histogram, error_on_nonfinite with a NaN",
            lambda: (lambda st, kw, _: QK.observer_observe(
                torch.tensor([1.0, math.nan]), st, **{**kw, "error_on_nonfinite": True}))(
                *_hist_state()),
            Raises(ValueError, r"`x` holds 1 NaN / Inf values \(`error_on_nonfinite` is set\)"),
            ""),
        # observer_observe_qparams
        Row("observer_observe_qparams", "wrong dtype (int64)",
            lambda: (lambda st, kw, rule: QK.observer_observe_qparams(
                torch.arange(4), st, **kw, **rule))(*mm()), XLONG, ""),
        Row("observer_observe_qparams", "wrong device (meta)",
            lambda: (lambda st, kw, rule: QK.observer_observe_qparams(
                META, st, **kw, **rule))(*mm()), DEV, ""),
        Row("observer_observe_qparams", "unknown divisor",
            lambda: (lambda st, kw, rule: QK.observer_observe_qparams(
                torch.ones(3), st, **kw, **{**rule, "divisor": "x"}))(*mm()),
            Raises(ValueError, r"`divisor`='x'"), ""),
        # observer_batch_range / batch_counts / commit
        Row("observer_batch_range", "wrong dtype (int64)",
            lambda: QK.observer_batch_range(torch.arange(6), mm()[0], **mm()[1]), XLONG, ""),
        Row("observer_batch_range", "wrong device (meta)",
            lambda: QK.observer_batch_range(META, mm()[0], **mm()[1]), DEV, ""),
        Row("observer_batch_counts", "kind without counts (minmax)",
            lambda: QK.observer_batch_counts(torch.ones(3), mm()[0], *_rs(), **mm()[1]),
            Raises(ValueError, r"observer kind 'minmax' has no batch_counts"), ""),
        Row("observer_batch_counts", "wrong device (meta)",
            lambda: (lambda st, kw, _: QK.observer_batch_counts(META, st, *_rs(), **kw))(
                *_hist_state()), DEV, ""),
        Row("observer_commit", "inconsistent RangeStats (0 min, 1 max)",
            lambda: QK.observer_commit(mm()[0], _rs()[0][:0], *_rs()[1:], None, **mm()[1]),
            Raises(ValueError, r"inconsistent RangeStats \(0 min, 1 max, 1 observed\)"), ""),
        Row("observer_commit", "range_min on device meta",
            lambda: QK.observer_commit(mm()[0], torch.empty(1, device="meta"), *_rs()[1:], None,
                                       **mm()[1]),
            Raises(ValueError, r"is on device meta"), ""),
        # observer_qparams / range / amax / validate
        Row("observer_qparams", "no data yet",
            lambda: QK.observer_qparams(qnn.MinMaxObserver()._state(), **mm()[1], **mm()[2]),
            Raises(RuntimeError, r"the observer has not seen any data yet \(no slots\)"), ""),
        Row("observer_qparams", "state on device meta",
            lambda: QK.observer_qparams([META] + mm()[0][1:], **mm()[1], **mm()[2]),
            Raises(ValueError, r"is on device meta"), ""),
        Row("observer_range", "kind without a range search (minmax)",
            lambda: QK.observer_range(mm()[0], **mm()[1]),
            Raises(ValueError, r"observer kind 'minmax' has no range search"), ""),
        Row("observer_range", "state on device meta",
            lambda: (lambda st, kw, _: QK.observer_range([META] + st[1:], **kw))(*_hist_state()),
            Raises(ValueError, r"is on device meta"), ""),
        Row("observer_amax", "kind without amax (histogram)",
            lambda: (lambda st, kw, _: QK.observer_amax(st, method="entropy", **kw))(
                *_hist_state()),
            Raises(ValueError, r"observer kind 'histogram' has no amax"), ""),
        Row("observer_amax", "unknown method",
            lambda: (lambda st, kw, _: QK.observer_amax(st, method="bogus", **kw))(*_hc_state()),
            Raises(ValueError, r"unknown calibration method `bogus`"), ""),
        Row("observer_amax", "state on device meta",
            lambda: (lambda st, kw, _: QK.observer_amax([torch.empty(1, dtype=torch.long,
                                                                     device="meta")] + st[1:],
                                                        method="entropy", **kw))(*_hc_state()),
            Raises(ValueError, r"is on device meta"), ""),
        Row("observer_validate", "unknown nonfinite",
            lambda: QK.observer_validate(mm()[0], **{**mm()[1], "nonfinite": "x"}),
            Raises(ValueError, r"`nonfinite`='x' is not one of"), ""),
        Row("observer_validate", "state on device meta",
            lambda: QK.observer_validate([META] + mm()[0][1:], **mm()[1]),
            Raises(ValueError, r"is on device meta"), ""),
        # observer_set_qparams / merge / merge_counts / gate_open
        Row("observer_set_qparams", "kind without set parameters (minmax)",
            lambda: QK.observer_set_qparams(mm()[0], torch.tensor([0.1]), None, **mm()[1]),
            Raises(ValueError, r"observer kind 'minmax' has no set_qparams"), ""),
        Row("observer_set_qparams", "scale on device meta",
            lambda: (lambda st, kw, _: QK.observer_set_qparams(st, META, None, **kw))(
                *_obs(qnn.PassiveObserver)),
            Raises(ValueError, r"`scale` is on device meta"), ""),
        Row("observer_set_qparams", "scale -1",
            lambda: (lambda st, kw, _: QK.observer_set_qparams(st, torch.tensor([-1.0]), None,
                                                               **kw))(*_obs(qnn.PassiveObserver)),
            Raises(ValueError, r"`scale`\[0\]=-1 must be finite and > 0"), ""),
        Row("observer_merge", "b with too few tensors",
            lambda: QK.observer_merge(mm()[0], mm()[0][:1], **mm()[1]),
            Raises(ValueError, r"`state` has 1 tensors; kind 'minmax' has 4"), ""),
        Row("observer_merge", "b on device meta",
            lambda: QK.observer_merge(mm()[0], [META] + mm()[0][1:], **mm()[1]),
            Raises(ValueError, r"is on device meta"), ""),
        Row("observer_merge_counts", "sizes differ (3 vs 4)",
            lambda: QK.observer_merge_counts(torch.zeros(3, dtype=torch.long),
                                             torch.zeros(4, dtype=torch.long), kind="histogram"),
            Raises(ValueError, r"sizes differ \(3 vs 4\)"), ""),
        Row("observer_merge_counts", "a on device meta",
            lambda: QK.observer_merge_counts(torch.zeros(3, dtype=torch.long, device="meta"),
                                             torch.zeros(3, dtype=torch.long), kind="histogram"),
            Raises(ValueError, r"is on device meta"), ""),
        Row("observer_gate_open", "unknown variant",
            lambda: QK.observer_gate_open(kind="moving_average", variant="x"),
            Raises(ValueError, r"`variant`='x' is not one of"), ""),
        Row("observer_gate_open", "momentum 2",
            lambda: QK.observer_gate_open(kind="moving_average", momentum=2.0),
            Raises(ValueError, r"`momentum`=2 outside \[0, 1\]"), ""),
        # range_stats_*
        Row("range_stats_merge", "inconsistent a (0 min, 1 max)",
            lambda: QK.range_stats_merge(_rs()[0][:0], *_rs()[1:], *_rs()),
            Raises(ValueError, r"inconsistent RangeStats \(0 min, 1 max, 1 observed\)"), ""),
        Row("range_stats_merge", "b_min on device meta",
            lambda: QK.range_stats_merge(*_rs(), torch.empty(1, device="meta"), *_rs()[1:]),
            Raises(ValueError, r"is on device meta"), ""),
        Row("range_stats_flatten", "min of dtype float64",
            lambda: QK.range_stats_flatten(_rs()[0].double(), *_rs()[1:]),
            Raises(ValueError, r"`min` has dtype Double; expected Float"), ""),
        Row("range_stats_flatten", "min on device meta",
            lambda: QK.range_stats_flatten(torch.empty(1, device="meta"), *_rs()[1:]),
            Raises(ValueError, r"is on device meta"), ""),
        Row("range_stats_unflatten", "3 floats (odd)",
            lambda: QK.range_stats_unflatten(torch.zeros(3), torch.zeros(1, dtype=torch.long)),
            Raises(ValueError, r"`num_floats`=3 must be 2 \* slots"), ""),
        Row("range_stats_unflatten", "floats on device meta",
            lambda: QK.range_stats_unflatten(torch.zeros(2, device="meta"),
                                             torch.zeros(2, dtype=torch.long)),
            Raises(ValueError, r"is on device meta"), ""),
        Row("range_stats_unflatten", "flatten then unflatten",
            lambda: QK.range_stats_unflatten(*QK.range_stats_flatten(*_rs())),
            _check_rs_roundtrip, "the same RangeStats, bit for bit"),
    ]
    return rows


def _inplace_nan_error():
    x = torch.tensor([0.26, math.nan, 1.3])
    before = x.clone()
    with pytest.raises(ValueError, match=r"`x` has NaN at logical index 1 \(nan_mode=error\)"):
        ops.fake_quantize_(x, S, nan_mode="error")
    return torch.equal(x.view(torch.int32), before.view(torch.int32))


# ---- modules ------------------------------------------------------------------------------------

class Mod(NamedTuple):
    name: str
    make: Callable[[], torch.nn.Module]  # a per-tensor module in training mode
    make_per_channel: Callable[[int], torch.nn.Module]  # per-channel along axis 0, n channels
    ref_out: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]  # reference output for x
    # case -> (expect, doc) where this module's documented outcome differs from MODULE_CASES
    overrides: Optional[dict] = None


def _fq_module_ref(m, x):
    return ref.fake_quant(x.float(), m.scale, m.zero_point.float(), m.quant_min,
                          m.quant_max)[0].to(x.dtype)


def _lsq_module_ref(m, x):
    return ref.lsq_pytorch(x, x, m.step_size, m.zero_point, m.quant_min, m.quant_max,
                           1.0)[0].to(x.dtype)


def _lsq_meg_ref(m, x):
    return ref.lsq_megengine(x, x, m.step_size.abs() + m.eps, m.zero_point, m.quant_min,
                             m.quant_max, 1.0)[0].to(x.dtype)


def _identity(m, x):
    """Observers and calibrators return their input unchanged."""
    return x


def _nvidia_fq_ref(m, x):
    """pytorch-quantization's _tensor_quant (SPEC.md; as test_quantizer_modules.py): scale =
    127 / amax, round half to even, clamp to [-128, 127], divide by scale; computed in float32."""
    amax = m.amax.detach().reshape([-1] + [1] * (x.dim() - 1) if x.dim() else [])
    sc = torch.tensor(127.0) / amax
    return (torch.clamp(torch.round(x.float() * sc), -128.0, 127.0) / sc).to(x.dtype)


def _passive(qscheme=torch.per_tensor_symmetric, n=1, **kw):
    m = qnn.PassiveObserver(qscheme=qscheme, **kw)
    m.set_qparams([0.1] * n)
    return m


# PassiveObserver only checks x: a 2^48-element stride-0 view is a valid input it does not read.
_PASSIVE_ABSURD = (lambda r: (r[1] is r[0]) or pytest.fail("not returned unchanged"),
                   "x returned unchanged (nothing is read)")

# HistogramCalibrator grows its histogram by bins of the first batch's width (NVIDIA's torch
# path): FLT_MAX after linspace(-3, 3) would need ~1e39 bins (this crashed before); rejected.
_HIST_GROW = {"FLT_MAX": Raises(ValueError, r"max \|x\|=3.40282e\+38 would grow the histogram "
                                            r"\(bin width 0.046875\) to .* bins, more than "
                                            r"16777216")}

MODULES = [
    Mod("nn.FakeQuantize", lambda: qnn.FakeQuantize(),
        lambda n: qnn.FakeQuantize(qscheme=torch.per_channel_symmetric, ch_axis=0,
                                   channel_len=n),
        _fq_module_ref),
    Mod("nn.LSQ (pytorch)", lambda: qnn.LSQ(scale=0.2, zero_point=1.0),
        lambda n: qnn.LSQ(scale=0.2, ch_axis=0, channel_len=n), _lsq_module_ref),
    Mod("nn.LSQ (megengine)", lambda: qnn.LSQ(variant="megengine", scale=0.2),
        lambda n: qnn.LSQ(variant="megengine", scale=0.2, ch_axis=0, channel_len=n),
        _lsq_meg_ref),
    Mod("nn.TQT", lambda: qnn.TQT(log2_t=1.0),
        lambda n: qnn.TQT(log2_t=1.0, ch_axis=0, channel_len=n),
        lambda m, x: ref.tqt(x, x, m.log2_t, m.quant_min, m.quant_max)[0].to(x.dtype)),
    Mod("nn.PACT", lambda: qnn.PACT(bits=4, alpha=6.0),
        lambda n: qnn.PACT(bits=4, alpha=6.0, ch_axis=0, channel_len=n),
        lambda m, x: ref.pact(x, x, m.alpha, m.bits)[0].to(x.dtype)),
    Mod("nn.LearnedClip", lambda: qnn.LearnedClip(-2.0, 3.0, True, True),
        lambda n: qnn.LearnedClip(torch.full((n,), -2.0), torch.full((n,), 3.0), True, True,
                                  ch_axis=0, channel_len=n),
        lambda m, x: ref.learned_clip(x, x, m.cmin, m.cmax)[0].to(x.dtype)),
    Mod("nn.RunningMinMaxObserver", lambda: qnn.RunningMinMaxObserver(),
        lambda n: qnn.RunningMinMaxObserver(qscheme=torch.per_channel_symmetric, ch_axis=0),
        _identity),
    Mod("nn.MinMaxObserver", lambda: qnn.MinMaxObserver(),
        lambda n: qnn.MinMaxObserver(qscheme=torch.per_channel_affine, ch_axis=0), _identity),
    *[Mod(f"nn.MovingAverageMinMaxObserver ({v})",
          lambda v=v: qnn.MovingAverageMinMaxObserver(variant=v),
          lambda n, v=v: qnn.MovingAverageMinMaxObserver(
              variant=v, qscheme=torch.per_channel_affine, ch_axis=0), _identity)
      for v in ("torch", "oneflow", "megengine", "distiller")],
    Mod("nn.HistogramObserver", lambda: qnn.HistogramObserver(bins=64),
        lambda n: qnn.HistogramObserver(bins=64, qscheme=torch.per_channel_affine, ch_axis=0),
        _identity),
    Mod("nn.HistogramCalibrator", lambda: qnn.HistogramCalibrator(num_bins=64),
        lambda n: qnn.HistogramCalibrator(num_bins=64, axis=0), _identity,
        overrides=_HIST_GROW),
    Mod("nn.PassiveObserver", _passive,
        lambda n: _passive(torch.per_channel_symmetric, n, ch_axis=0), _identity,
        overrides={"absurd size (stride-0 view of 2^48 elements)": _PASSIVE_ABSURD}),
    Mod("nn.MaxCalibrator", lambda: qnn.MaxCalibrator(), lambda n: qnn.MaxCalibrator(axis=0),
        _identity),
    Mod("nn.TensorQuantizer (max)", lambda: qnn.TensorQuantizer(amax=2.0, if_calib=True),
        lambda n: qnn.TensorQuantizer(axis=0, amax=torch.full((n,), 2.0), if_calib=True),
        _nvidia_fq_ref),
    Mod("nn.TensorQuantizer (histogram)",
        lambda: qnn.TensorQuantizer(amax=2.0, if_calib=True, calib_method="histogram",
                                    num_bins=64),
        lambda n: qnn.TensorQuantizer(axis=0, amax=torch.full((n,), 2.0), if_calib=True,
                                      calib_method="histogram", num_bins=64),
        _nvidia_fq_ref, overrides=_HIST_GROW),
]

# (case, input, expected: "ref" -> the module's reference output, or Raises)
MODULE_CASES = [
    ("empty tensor", lambda: torch.empty(0), "ref"),
    ("0-d tensor", lambda: torch.tensor(0.7), "ref"),
    ("NaN", lambda: torch.tensor([math.nan, 1.0, -0.5]), "ref"),
    ("+-Inf", lambda: torch.tensor([math.inf, -math.inf, 0.5]), "ref"),
    ("denormals", lambda: torch.tensor([1e-40, -1e-40, 0.5]), "ref"),
    ("FLT_MAX", lambda: torch.tensor([FLT_MAX, -FLT_MAX, 0.5]), "ref"),
    ("all-equal values", lambda: torch.full((9,), 0.35), "ref"),
    ("non-contiguous", lambda: torch.linspace(-4, 4, 40).reshape(5, 8).t()[::2], "ref"),
    ("float64", lambda: torch.linspace(-4, 4, 11, dtype=torch.float64), "ref"),
    ("wrong dtype (int64)", lambda: torch.arange(6),
     Raises(ValueError, r"`x` has dtype Long; expected a floating tensor")),
    ("wrong device (meta)", lambda: torch.empty(6, device="meta"),
     Raises(ValueError, r"`x` is on device meta")),
    ("absurd size (stride-0 view of 2^48 elements)", lambda: torch.zeros(1).expand(ABSURD),
     Raises((ValueError, RuntimeError), r"absurd shape|can't allocate memory")),
]


def _state(m):
    return {k: v.detach().clone() for k, v in list(m.state_dict(keep_vars=True).items())}


def _assert_state_unchanged(before, m):
    after = _state(m)
    assert before.keys() == after.keys()
    for k in before:
        a, b = before[k], after[k]
        assert a.shape == b.shape, f"{k}: shape {tuple(a.shape)} -> {tuple(b.shape)}"
        if a.is_floating_point():
            assert torch.equal(a.view(torch.int32) if a.dtype == torch.float32 else a,
                               b.view(torch.int32) if b.dtype == torch.float32 else b), \
                f"{k}: {a} -> {b}"
        else:
            assert torch.equal(a, b), f"{k}: {a} -> {b}"


def _warm(m):
    """One good batch first, so that the state is not the initial one."""
    m(torch.linspace(-3, 3, 12))
    return m


def _module_rows() -> List[Row]:
    rows = []
    for mod in MODULES:
        for case, make_x, expect in MODULE_CASES:
            if mod.overrides and case in mod.overrides and isinstance(mod.overrides[case],
                                                                      Raises):
                rows.append(Row(mod.name, case, (lambda m, make_x=make_x: m(make_x())),
                                mod.overrides[case], "",
                                module=(lambda mod=mod: _warm(mod.make()))))
                continue
            if mod.overrides and case in mod.overrides:
                check, doc = mod.overrides[case]
                rows.append(Row(mod.name, case,
                                (lambda m, make_x=make_x: (lambda x: (x, m(x)))(make_x())),
                                check, doc, module=(lambda mod=mod: _warm(mod.make()))))
                continue
            if expect == "ref":
                def check(r, mod=mod):
                    m, x, y = r
                    assert y.dtype == x.dtype and y.shape == x.shape
                    _same(y, mod.ref_out(m, x))
                rows.append(Row(mod.name, case,
                                (lambda m, make_x=make_x: (m, make_x(), m(make_x()))), check,
                                "reference output for the module's parameters",
                                module=(lambda mod=mod: _warm(mod.make()))))
            else:
                rows.append(Row(mod.name, case, (lambda m, make_x=make_x: m(make_x())), expect,
                                "", module=(lambda mod=mod: _warm(mod.make()))))
        rows.append(Row(mod.name, "channel count mismatch (per-channel, 3 vs 4)",
                        lambda m: m(torch.ones(4, 2)),
                        Raises((ValueError,), r"(`step`|`log2_t`|`alpha`|`cmin`|`scale`) has 3 "
                               r"element|the batch has 4 slots for per_channel\(axis=0\) "
                               r"\(shape \[4, 2\]\), but earlier batches had 3 \(channel count "
                               r"mismatch\)"),
                        "", module=(lambda mod=mod: _prime(mod.make_per_channel(3)))))
        rows.append(Row(mod.name, "channel axis out of range (per-channel axis 0 on 0-d)",
                        lambda m: m(torch.tensor(1.0)),
                        Raises(IndexError, r"0-d tensor"),
                        "", module=(lambda mod=mod: _prime(mod.make_per_channel(3)))))
    rows += [
        Row("nn.FakeQuantize", "ch_axis out of range (5 on 2-d)", lambda m: m(torch.ones(4, 2)),
            Raises(IndexError, r"`ch_axis`=5 out of range for an input of shape \[4, 2\]"), "",
            module=lambda: qnn.FakeQuantize(qscheme=torch.per_channel_symmetric, ch_axis=5)),
        Row("nn.FakeQuantize", "nan_mode=error with a NaN (observer enabled)",
            lambda m: m(torch.tensor([1.0, math.nan])),
            Raises(ValueError, r"`x` has NaN at logical index 1 \(nan_mode=error\)"), "",
            module=lambda: _warm(qnn.FakeQuantize(nan_mode="error"))),
        Row("nn.FakeQuantize", "set_qparams(-1) then forward (observer disabled)",
            lambda m: m(torch.ones(3)),
            Raises(ValueError, r"`scale\[0\]`=-1 must be finite and > 0"), "",
            module=lambda: _disabled_bad_scale()),
        Row("nn.FakeQuantize", "set_qparams with the wrong count",
            lambda m: m.set_qparams([0.1, 0.2]),
            Raises(ValueError, r"`scale` has 2 value\(s\), expected 1"), "",
            module=lambda: _warm(qnn.FakeQuantize())),
        Row("nn.FakeQuantize", "quant_min >= quant_max",
            lambda: qnn.FakeQuantize(quant_min=5, quant_max=5),
            Raises(ValueError, r"`quant_min`=5 must be < `quant_max`=5"), ""),
        Row("nn.FakeQuantize", "custom 1-bit range [0, 1]",
            lambda: (lambda m: (m, m(X)))(qnn.FakeQuantize(quant_min=0, quant_max=1)),
            lambda r: _same(r[1], _fq_module_ref(r[0], X)),
            "accepted (a range override, not `bits`): reference output"),
        Row("nn.FakeQuantize", "channel_len 0", lambda: qnn.FakeQuantize(channel_len=0),
            Raises(ValueError, r"`channel_len`=0 must be >= 1"), ""),
        Row("nn.LSQ (pytorch)", "scale 0 (clamped to eps, as torch's _LearnableFakeQuantize)",
            lambda m: (m, m(X)),
            lambda r: (_same(r[0].step_size.detach(), torch.tensor([r[0].eps])),
                       _same(r[1].detach(), _lsq_module_ref(r[0], X))),
            "step clamped to eps = 2^-23, reference output",
            module=lambda: qnn.LSQ(scale=0.0)),
        Row("nn.LSQ (pytorch)", "scale NaN", lambda m: m(X),
            Raises(ValueError, r"`step`\[0\]=nan is not finite"), "",
            module=lambda: qnn.LSQ(scale=math.nan)),
        Row("nn.LSQ", "unknown variant", lambda: qnn.LSQ(variant="x"),
            Raises(ValueError, r"`variant`='x'"), ""),
        Row("nn.LSQ", "channel_len without ch_axis", lambda: qnn.LSQ(channel_len=3),
            Raises(ValueError, r"`channel_len`=3 needs a `ch_axis`"), ""),
        Row("nn.LSQ", "scale count mismatch", lambda: qnn.LSQ(scale=[1.0, 2.0]),
            Raises(ValueError, r"`scale`: 2 value\(s\) given, expected 1"), ""),
        Row("nn.TQT", "set_qparams(0)", lambda m: m.set_qparams(0.0),
            Raises(ValueError, r"`scale` must be > 0"), "", module=lambda: _warm(qnn.TQT())),
        Row("nn.TQT", "log2_t NaN", lambda m: m(X),
            Raises(ValueError, r"`log2_t`\[0\]=nan is not finite"), "",
            module=lambda: qnn.TQT(log2_t=math.nan)),
        *[Row("nn.PACT", f"bits {b}", lambda m: m(X),
              Raises(ValueError, rf"`bits`={b} outside \[2, 16\]"), "",
              module=(lambda b=b: qnn.PACT(bits=b))) for b in (0, 1, 17, -1)],
        Row("nn.PACT", "alpha +Inf", lambda m: m(X),
            Raises(ValueError, r"`alpha`\[0\]=inf is not finite"), "",
            module=lambda: qnn.PACT(alpha=math.inf)),
        # observers and calibrators
        Row("nn.MinMaxObserver", "calculate_qparams before any data", lambda m: m.calculate_qparams(),
            Raises(RuntimeError, r"has not seen any data yet"), "",
            module=lambda: qnn.MinMaxObserver()),
        Row("nn.MinMaxObserver", "unknown nonfinite", lambda: qnn.MinMaxObserver(nonfinite="x"),
            Raises(ValueError, r"`nonfinite`='x' is not one of"), ""),
        Row("nn.MinMaxObserver", "ch_axis with a per-tensor qscheme",
            lambda: qnn.MinMaxObserver(ch_axis=1),
            Raises(ValueError, r"`ch_axis`=1 needs a per-channel qscheme"), ""),
        Row("nn.MinMaxObserver", "only quant_min given", lambda: qnn.MinMaxObserver(quant_min=0),
            Raises(ValueError, r"`quant_min`=0 and `quant_max`=None must be given together"), ""),
        Row("nn.MinMaxObserver", "ch_axis out of range (5 on 2-d)", lambda m: m(torch.ones(4, 2)),
            Raises(IndexError, r"`ch_axis`=5 out of range for an input of shape \[4, 2\]"), "",
            module=lambda: _warm_pc(qnn.MinMaxObserver(qscheme=torch.per_channel_affine,
                                                       ch_axis=5))),
        Row("nn.MinMaxObserver", "merge_state_ with different options",
            lambda m: m.merge_state_(_warm(qnn.MinMaxObserver(nonfinite="propagate"))),
            Raises(ValueError, r"`other` has different options"), "",
            module=lambda: _warm(qnn.MinMaxObserver())),
        Row("nn.MovingAverageMinMaxObserver", "unknown variant",
            lambda: qnn.MovingAverageMinMaxObserver(variant="x"),
            Raises(ValueError, r"`variant`='x' is not one of"), ""),
        Row("nn.MovingAverageMinMaxObserver", "averaging_constant 2",
            lambda: qnn.MovingAverageMinMaxObserver(averaging_constant=2.0),
            Raises(ValueError, r"`momentum`=2 outside \[0, 1\] for variant torch"), ""),
        Row("nn.MovingAverageMinMaxObserver", "averaging_constant and momentum both given",
            lambda: qnn.MovingAverageMinMaxObserver(averaging_constant=0.1, momentum=0.1),
            Raises(ValueError, r"give `averaging_constant` or `momentum`, not both"), ""),
        Row("nn.MovingAverageMinMaxObserver", "ch_axis out of range (-3 on 2-d)",
            lambda m: m(torch.ones(4, 2)),
            Raises(IndexError, r"`ch_axis`=-3 out of range for an input of shape \[4, 2\]"), "",
            module=lambda: _warm_pc(qnn.MovingAverageMinMaxObserver(
                qscheme=torch.per_channel_affine, ch_axis=-3))),
        Row("nn.HistogramObserver", "bins 0", lambda: qnn.HistogramObserver(bins=0),
            Raises(ValueError, r"`bins`=0 outside \[1, 16777216\]"), ""),
        Row("nn.HistogramObserver", "error_on_nonfinite with a NaN",
            lambda m: m(torch.tensor([1.0, math.nan])),
            Raises(ValueError, r"`x` holds 1 NaN / Inf values \(`error_on_nonfinite` is set\)"),
            "", module=lambda: _warm(qnn.HistogramObserver(bins=64, error_on_nonfinite=True))),
        Row("nn.HistogramCalibrator", "compute_amax with an unknown method",
            lambda m: m.compute_amax("bogus"),
            Raises(ValueError, r"unknown calibration method `bogus`"), "",
            module=lambda: _warm(qnn.HistogramCalibrator(num_bins=64))),
        Row("nn.HistogramCalibrator", "calculate_qparams", lambda m: m.calculate_qparams(),
            Raises(RuntimeError, r"a calibrator gives amax \(compute_amax\), not qparams"), "",
            module=lambda: _warm(qnn.HistogramCalibrator(num_bins=64))),
        Row("nn.HistogramCalibrator", "axis out of range (5 on 2-d)",
            lambda m: m(torch.ones(4, 2)),
            Raises(IndexError, r"`axis`=5 out of range for an input of shape \[4, 2\]"), "",
            module=lambda: qnn.HistogramCalibrator(num_bins=64, axis=5)),
        Row("nn.PassiveObserver", "set_qparams(-1)", lambda m: m.set_qparams(-1.0),
            Raises(ValueError, r"`scale`\[0\]=-1 must be finite and > 0"), "",
            module=lambda: _passive()),
        Row("nn.PassiveObserver", "set_qparams with zero_point outside the range",
            lambda m: m.set_qparams(0.1, 300.0),
            Raises(ValueError, r"`zero_point`\[0\]=300"), "", module=lambda: _passive()),
        Row("nn.MaxCalibrator", "compute_amax before any data",
            lambda: qnn.MaxCalibrator().compute_amax(),
            lambda r: (r is None) or pytest.fail(str(r)), "None (nothing collected)"),
        Row("nn.MaxCalibrator", "axis out of range (5 on 2-d)", lambda m: m(torch.ones(4, 2)),
            Raises(IndexError, r"`axis`=5 out of range for an input of shape \[4, 2\]"), "",
            module=lambda: qnn.MaxCalibrator(axis=5)),
        Row("nn.TensorQuantizer", "forward without amax",
            lambda m: m(torch.ones(3)), Raises(RuntimeError, r"no amax yet"), "",
            module=lambda: qnn.TensorQuantizer()),
        Row("nn.TensorQuantizer", "unknown calib_method",
            lambda: qnn.TensorQuantizer(calib_method="x"),
            Raises(ValueError, r"`calib_method`='x' is not one of"), ""),
        Row("nn.TensorQuantizer", "learn_amax without amax",
            lambda: qnn.TensorQuantizer(learn_amax=True),
            Raises(ValueError, r"`learn_amax`=True needs an initial `amax`"), ""),
        Row("nn.TensorQuantizer", "load_calib_amax before calibrating",
            lambda m: m.load_calib_amax(), Raises(RuntimeError, r"has collected nothing"), "",
            module=lambda: qnn.TensorQuantizer()),
        Row("nn.TensorQuantizer", "histogram load_calib_amax without a method",
            lambda m: m.load_calib_amax(),
            Raises(ValueError, r"calibrator needs `method`"), "",
            module=lambda: _warm(qnn.TensorQuantizer(calib_method="histogram", num_bins=64,
                                                     if_calib=True, amax=2.0))),
        Row("nn.TensorQuantizer", "axis out of range (5 on 2-d), calibrating",
            lambda m: m(torch.ones(4, 2)),
            Raises(IndexError, r"`axis`=5 out of range for an input of shape \[4, 2\]"), "",
            module=lambda: qnn.TensorQuantizer(axis=5, amax=2.0, if_calib=True)),
    ]
    return rows


def _warm_pc(m):
    """A per-channel observer with an out-of-range axis: nothing to warm (every batch is
    rejected); returned as constructed."""
    return m


def _prime(m):
    """A per-channel module that has seen a 3-channel batch."""
    m(torch.linspace(-3, 3, 6).reshape(3, 2))
    return m


def _disabled_bad_scale():
    m = _warm(qnn.FakeQuantize())
    m.disable_observer()
    m.set_qparams(-1.0)
    return m


ROWS = _x_rows() + _op_rows() + _observer_op_rows() + _module_rows()


def _run(row: Row):
    """Calls the row and asserts its documented outcome; for module rows, the module's state
    is compared before and after a rejected call."""
    m = row.module() if row.module is not None else None
    call = (lambda: row.call(m)) if m is not None else row.call
    if isinstance(row.expect, Raises):
        before = _state(m) if m is not None else None
        with pytest.raises(row.expect.exc) as info:
            call()
        msg = str(info.value).split("\n")[0]
        assert re.search(row.expect.match, msg), \
            f"message {msg!r} does not match {row.expect.match!r}"
        assert "Traceback" not in msg
        if m is not None:
            _assert_state_unchanged(before, m)
    else:
        row.expect(call())


def _id(row):
    return f"{row.target}|{row.case}"


@pytest.mark.parametrize("row", ROWS, ids=[_id(r) for r in ROWS])
def test_row(row):
    _run(row)


def test_every_public_op_and_module_has_rows():
    targets = {r.target for r in ROWS}
    missing = [n for n in ops.__all__ if n not in targets]
    assert not missing, f"qkit.ops functions without a bad-input row: {missing}"
    schemas = {s.name.split("::")[1] for s in torch._C._jit_get_all_schemas()
               if s.name.startswith("qkit::")}
    missing_ops = sorted(n for n in schemas if n not in targets)
    assert not missing_ops, f"torch.ops.qkit ops without a bad-input row: {missing_ops}"
    module_names = {m.name.split(" ")[0] for m in MODULES}
    # every module class of qkit.nn (ObserverBase is abstract; RangeStats is a NamedTuple)
    classes = [n for n in qnn.__all__ if isinstance(getattr(qnn, n), type)
               and issubclass(getattr(qnn, n), torch.nn.Module) and n != "ObserverBase"]
    assert "TensorQuantizer" in classes and "HistogramCalibrator" in classes
    for cls in classes:
        assert f"nn.{cls}" in module_names, cls
    for v in ("torch", "oneflow", "megengine", "distiller"):
        assert f"nn.MovingAverageMinMaxObserver ({v})" in {m.name for m in MODULES}, v
    # every generic bad input is a row for every floating-input op and every module
    for op in X_OPS:
        cases = {r.case for r in ROWS if r.target == op.name}
        for case, _ in X_CASES:
            assert case in cases, (op.name, case)


def _outcome(row):
    if isinstance(row.expect, Raises):
        excs = row.expect.exc if isinstance(row.expect.exc, tuple) else (row.expect.exc,)
        return " / ".join(e.__name__ for e in excs)
    return "value"


def _detail(row):
    if isinstance(row.expect, Raises):
        pattern = re.sub(r"\\(.)", r"\1", row.expect.match).replace("|", " or ")
        detail = pattern  # the patterns quote argument names in backticks themselves
        if row.module is not None:
            detail += "; state unchanged"
        return detail
    return row.doc


def _grid(targets, cases, cell):
    lines = ["| | " + " | ".join(cases) + " |", "|---" * (len(cases) + 1) + "|"]
    for t in targets:
        lines.append(f"| {t} | " + " | ".join(cell(t, c) for c in cases) + " |")
    return lines


def matrix_markdown():
    """The tables of docs/reliability.md ("Python bad-input matrix"): a grid of the generic
    inputs for every floating-input op and every module, then every other row."""
    by_key = {(r.target, r.case): r for r in ROWS}
    short = {"value": "ref", "ValueError": "ValueError", "IndexError": "IndexError",
             "RuntimeError": "RuntimeError (alloc)", "ValueError / RuntimeError":
             "ValueError / RuntimeError"}
    generic = [c for c, _ in X_CASES] + ["wrong dtype (int64)", "wrong device (meta)",
                                         "sparse tensor",
                                         "absurd size (stride-0 view of 2^48 elements)"]
    used = set()

    def cell(t, c):
        r = by_key[(t, c)]
        used.add((t, c))
        return short.get(_outcome(r), _outcome(r))

    lines = ["Generic inputs, every op with a floating input (`ref`: equals the plain reference "
             "in tests/python/reference.py, NaN-aware, bit for bit; errors: the message names "
             "the argument):", ""]
    lines += _grid([op.name for op in X_OPS], generic, cell)
    mcases = [c for c, _, _ in MODULE_CASES] + [
        "channel count mismatch (per-channel, 3 vs 4)",
        "channel axis out of range (per-channel axis 0 on 0-d)"]
    lines += ["", "Generic inputs, every module (after one good batch; a rejected call leaves "
              "every buffer and parameter unchanged, bit for bit):", ""]
    lines += _grid([m.name for m in MODULES], mcases, cell)
    lines += ["", "Every other row:", "",
              "| target | bad input | outcome | message matches / value |", "|---|---|---|---|"]
    for r in ROWS:
        if (r.target, r.case) in used:
            continue
        lines.append(f"| {r.target} | {r.case} | {_outcome(r)} | {_detail(r)} |")
    return lines


def test_print_matrix():
    """Builds the docs/reliability.md tables from the rows (QKIT_PRINT_MATRIX=1 and pytest -s
    print them)."""
    lines = matrix_markdown()
    assert sum(1 for line in lines if line.startswith("| ")) > 100
    if os.environ.get("QKIT_PRINT_MATRIX") == "1":
        print("\n" + "\n".join(lines))
