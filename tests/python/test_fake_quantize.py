"""torch.ops.qkit fake quantization, quantize / dequantize, reductions and qparams, against the
plain-torch reference (reference.fake_quant, written from docs/numerics.md) and against
PyTorch's own kernels where the options coincide; the C++ autograd (clipped / recomputed /
identity straight-through, in place); layouts, dtypes, threads, SIMD targets; errors;
TorchScript; and the FakeQuantize module.

gradcheck is not used here: fake quantization is piecewise constant, so its true derivative is
0 almost everywhere and the straight-through gradient is by design not the derivative; the
gradients are compared with the reference mask instead.
"""
import copy
import itertools
import math

import pytest
import torch

import qkit
import reference as ref


def _assert_same(a, b):
    torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


def _data(shape, gen, scale=1.0, specials=True):
    x = torch.randn(*shape, generator=gen) * 60 * scale
    if specials and x.numel() > 10:
        flat = x.view(-1)
        flat[:8] = torch.tensor([math.inf, -math.inf, math.nan, 0.0, -0.0, 3e38, 0.5, -0.5])
        flat[8:10] = flat[8:10].round() + 0.5  # exact ties for power-of-two scales
    return x


SPEC_CASES = list(itertools.product(
    ["half_to_even", "half_away_from_zero", "floor_add_half"],
    ["divide", "multiply_reciprocal", "multiplier"],
    ["add_after_round", "add_before_round"],
    ["propagate", "to_quant_min"]))


@pytest.mark.parametrize("rounding,scale_mode,zero_point_mode,nan_mode", SPEC_CASES)
def test_every_spec_option_matches_reference(rounding, scale_mode, zero_point_mode, nan_mode,
                                             gen):
    x = _data((1000,), gen)
    scale = torch.tensor([0.5 if scale_mode != "multiplier" else 2.0])
    zp = torch.tensor([3.0])
    kw = dict(quant_min=-100, quant_max=120, rounding=rounding, scale_mode=scale_mode,
              zero_point_mode=zero_point_mode, nan_mode=nan_mode)
    out, mask = qkit.fake_quantize_with_mask(x, scale, zp, **kw)
    want, want_mask = ref.fake_quant(x, scale, zp, -100, 120, rounding, scale_mode,
                                     zero_point_mode, nan_mode)
    _assert_same(out, want)
    assert torch.equal(mask, ref.pack_mask(want_mask))


@pytest.mark.parametrize("axis,group_size,shape", [
    (None, 0, (3, 50, 7)), (0, 0, (3, 50, 7)), (1, 0, (3, 50, 7)), (-1, 0, (3, 50, 7)),
    (2, 3, (3, 50, 7)), (1, 16, (3, 50, 7))])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_layouts_and_dtypes(axis, group_size, shape, dtype, gen):
    x = _data(shape, gen).to(dtype)
    if axis is None:
        n = 1
    elif group_size:
        a = axis % len(shape)
        n = x.numel() // shape[a] * ((shape[a] + group_size - 1) // group_size)
    else:
        n = shape[axis]
    scale = torch.rand(n, generator=gen) * 0.5 + 0.1
    zp = torch.randint(-5, 5, (n,), generator=gen).float()
    for view in (x, x.transpose(0, 2), x[:, ::2]):
        if axis is not None and (view.shape != x.shape):
            continue  # parameter counts follow the original shape
        dy = torch.randn(view.shape, generator=gen).to(dtype)
        xr = view.clone().requires_grad_(True)
        out = qkit.fake_quantize(xr, scale, zp, axis=axis, group_size=group_size)
        out.backward(dy)
        want, mask = ref.fake_quant(view, scale, zp, -128, 127,
                                    axis=None if axis is None else axis % len(shape),
                                    group_size=group_size)
        assert out.dtype == dtype
        _assert_same(out, want.to(dtype))
        _assert_same(xr.grad, torch.where(mask, dy, torch.zeros_like(dy)))


def test_float64_computed_in_float32(gen):
    x = _data((500,), gen)
    s = torch.tensor([0.25])
    out = qkit.fake_quantize(x.double(), s)
    assert out.dtype == torch.float64
    _assert_same(out, qkit.fake_quantize(x, s).double())


# ---- PyTorch's own kernels (x * f32(1/s), RNE, NaN -> quant_min) --------------------------------

def _finite_for_torch(x, scale):
    # torch 1.13 casts the rounded quotient to int64, so |x/s| >= 2^63 (and +Inf) map to
    # quant_min there; qkit saturates them to quant_max. Compare on finite, moderate inputs.
    return torch.where(torch.isfinite(x) & (x.abs() < 1e6), x, torch.zeros_like(x))


@pytest.mark.parametrize("qrange", [(-128, 127), (0, 255), (-8, 7)])
def test_matches_torch_fake_quantize_per_tensor(qrange, gen):
    qmin, qmax = qrange
    x = _finite_for_torch(_data((3, 4000), gen, 0.05), 0.1)
    x.view(-1)[11] = math.nan  # NaN -> (quant_min - zp) * s, mask 0
    for scale, zp in ((0.1, 0), (0.0173, 3), (1 / 64, qmin + 1)):
        dy = torch.randn(x.shape, generator=gen)
        xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        out_q = qkit.fake_quantize(xa, torch.tensor([scale]), torch.tensor([float(zp)]),
                                   quant_min=qmin, quant_max=qmax,
                                   scale_mode="multiply_reciprocal", nan_mode="to_quant_min")
        out_t = torch.fake_quantize_per_tensor_affine(xb, scale, zp, qmin, qmax)
        _assert_same(out_q, out_t)
        out_q.backward(dy)
        out_t.backward(dy)
        _assert_same(xa.grad, xb.grad)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_matches_torch_fake_quantize_per_channel(axis, gen):
    x = _finite_for_torch(_data((5, 6, 70), gen, 0.05), 0.1)
    c = x.shape[axis]
    scale = torch.rand(c, generator=gen) * 0.05 + 0.01
    zp = torch.randint(-10, 10, (c,), generator=gen, dtype=torch.int32)
    dy = torch.randn(x.shape, generator=gen)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    out_q = qkit.fake_quantize(xa, scale, zp, axis=axis, scale_mode="multiply_reciprocal",
                               nan_mode="to_quant_min")
    out_t = torch.fake_quantize_per_channel_affine(xb, scale, zp, axis, -128, 127)
    _assert_same(out_q, out_t)
    out_q.backward(dy)
    out_t.backward(dy)
    _assert_same(xa.grad, xb.grad)


# ---- straight-through variants, in place, mask ops -------------------------------------------

def test_ste_variants(gen):
    x = _data((2000,), gen)
    s = torch.tensor([0.5])
    dy = torch.randn(2000, generator=gen)
    _, mask = ref.fake_quant(x, s, None, -128, 127)
    grads = {}
    for ste in ("clipped", "clipped_recompute", "identity"):
        xr = x.clone().requires_grad_(True)
        qkit.fake_quantize(xr, s, ste=ste).backward(dy)
        grads[ste] = xr.grad
    _assert_same(grads["clipped"], torch.where(mask, dy, torch.zeros_like(dy)))
    _assert_same(grads["clipped_recompute"], grads["clipped"])
    _assert_same(grads["identity"], dy)
    _, packed = qkit.fake_quantize_with_mask(x, s)
    _assert_same(qkit.fake_quantize_backward(dy, packed), grads["clipped"])
    _assert_same(qkit.fake_quantize_backward_clipped(dy, x, s), grads["clipped"])


def test_in_place(gen):
    x = _data((999,), gen)
    s = torch.tensor([0.25])
    want, mask = ref.fake_quant(x, s, None, -128, 127)
    y = x.clone()
    r = qkit.fake_quantize_(y, s)
    assert r.data_ptr() == y.data_ptr()
    _assert_same(y, want)
    # Differentiable through a non-leaf; the saved packed mask drives the gradient.
    leaf = x.clone().requires_grad_(True)
    h = leaf * 1.0
    qkit.fake_quantize_(h, s)
    dy = torch.randn(999, generator=gen)
    h.backward(dy)
    _assert_same(leaf.grad, torch.where(mask, dy, torch.zeros_like(dy)))
    with pytest.raises(ValueError, match="cannot be used in place"):
        qkit.fake_quantize_(x.clone().requires_grad_(True) * 1.0, s, ste="clipped_recompute")
    with torch.inference_mode():
        z = x.clone()
        qkit.fake_quantize_(z, s)
        _assert_same(z, want)


@pytest.mark.parametrize("rounding,scale_mode", [("half_to_even", "divide"),
                                                 ("half_away_from_zero", "multiplier"),
                                                 ("floor_add_half", "multiply_reciprocal")])
def test_quantize_codes_match_reference(rounding, scale_mode, gen):
    x = _finite_for_torch(_data((7, 300), gen), 1.0).t()  # non-contiguous
    scale = torch.rand(7, generator=gen) + 0.2
    zp = torch.randint(-3, 3, (7,), generator=gen).float()
    kw = dict(rounding=rounding, scale_mode=scale_mode, axis=1, quant_min=-50, quant_max=60)
    q = qkit.quantize(x, scale, zp, dtype=torch.int16, **kw)
    want, _ = ref.fake_quant(x, scale, zp, -50, 60, rounding, scale_mode, axis=1, codes=True)
    assert q.dtype == torch.int16
    _assert_same(q.float(), want)
    _assert_same(qkit.dequantize(q, scale, zp, **kw), qkit.fake_quantize(x, scale, zp, **kw))


@pytest.mark.parametrize("zero_point_mode", ["add_after_round", "add_before_round"])
@pytest.mark.parametrize("scale_mode", ["divide", "multiply_reciprocal", "multiplier"])
def test_zero_point_outside_range_matches_reference(zero_point_mode, scale_mode, gen):
    # allow_zero_point_outside_range: integral zero points beyond either end (OneFlow affine
    # with b < 8 bits); codes stay clamped to [quant_min, quant_max].
    x = _data((4, 250), gen, scale=0.2)
    scale = torch.rand(4, generator=gen) + 0.3
    zp = torch.tensor([20.0, -9.0, 255.0, 7.0])  # 4-bit range [0, 15]
    kw = dict(bits=4, is_signed=False, axis=0, scale_mode=scale_mode,
              zero_point_mode=zero_point_mode, allow_zero_point_outside_range=True)
    out, mask = qkit.fake_quantize_with_mask(x, scale, zp, **kw)
    want, want_mask = ref.fake_quant(x, scale, zp, 0, 15, scale_mode=scale_mode,
                                     zero_point_mode=zero_point_mode, axis=0)
    _assert_same(out, want)
    assert torch.equal(mask, ref.pack_mask(want_mask))
    codes = qkit.quantize(x, scale, zp, dtype=torch.int32, nan_mode="to_quant_min", **kw)
    want_codes, _ = ref.fake_quant(x, scale, zp, 0, 15, scale_mode=scale_mode,
                                   zero_point_mode=zero_point_mode, nan_mode="to_quant_min",
                                   axis=0, codes=True)
    _assert_same(codes.float(), want_codes)
    back = qkit.dequantize(codes, scale, zp, **kw)
    finite = ~torch.isnan(x)
    _assert_same(back[finite], out[finite])
    # without the option, or with a non-integral one outside, the zero point is refused
    kw.pop("allow_zero_point_outside_range")
    with pytest.raises(ValueError, match="zero_point"):
        qkit.fake_quantize(x, scale, zp, **kw)
    with pytest.raises(ValueError, match="integral"):
        qkit.fake_quantize(x, scale, torch.tensor([20.5, 0, 0, 0]),
                           allow_zero_point_outside_range=True, **kw)


@pytest.mark.parametrize("nan_mode", ["propagate", "to_quant_min"])
def test_quantize_to_float_codes_keeps_nan(nan_mode, gen):
    x = _data((5, 120), gen).t()  # NaN, ±inf, ties; non-contiguous
    scale = torch.rand(5, generator=gen) + 0.2
    zp = torch.randint(-3, 3, (5,), generator=gen).float()
    kw = dict(axis=1, quant_min=-50, quant_max=60, nan_mode=nan_mode,
              zero_point_mode="add_before_round")
    q = qkit.quantize(x, scale, zp, dtype=torch.float32, **kw)
    want, _ = ref.fake_quant(x, scale, zp, -50, 60, axis=1, codes=True, nan_mode=nan_mode,
                             zero_point_mode="add_before_round")
    assert q.dtype == torch.float32 and bool(torch.isnan(q).any()) == (nan_mode == "propagate")
    _assert_same(q, want)
    # float64 input: float32 codes converted back like every op
    _assert_same(qkit.quantize(x.double(), scale, zp, dtype=torch.float32, **kw), want)
    with pytest.raises(ValueError, match="NaN"):
        qkit.quantize(x, scale, zp, dtype=torch.float32, axis=1, nan_mode="error")
    with pytest.raises(ValueError, match="dtype"):
        qkit.quantize(x, scale, zp, dtype=torch.float16, axis=1)


def test_quantize_dequantize_round_trip(gen):
    x = _finite_for_torch(_data((3, 200), gen), 1.0)
    for kw, dtype in ((dict(), torch.int8), (dict(is_signed=False), torch.uint8),
                      (dict(bits=12), torch.int16), (dict(quant_min=0, quant_max=70000),
                                                     torch.int32)):
        s = torch.tensor([0.37])
        q = qkit.quantize(x, s, **kw)
        assert q.dtype == dtype
        _assert_same(qkit.dequantize(q, s, **kw), qkit.fake_quantize(x, s, **kw))
    with pytest.raises(ValueError):
        qkit.quantize(torch.tensor([math.nan]), torch.tensor([1.0]))


# ---- reductions and qparams ------------------------------------------------------------------

def test_minmax_and_absmax(gen):
    x = torch.randn(4, 37, 5, generator=gen)
    x[0, 0, 0] = math.nan
    x[1, 2, 3] = math.inf
    mn, mx, skipped = qkit.minmax(x, axis=1)
    finite = torch.where(torch.isfinite(x), x, torch.full_like(x, math.nan))
    want_min = torch.stack([finite[:, c].reshape(-1)[~torch.isnan(finite[:, c].reshape(-1))].min()
                            for c in range(37)])
    want_max = torch.stack([finite[:, c].reshape(-1)[~torch.isnan(finite[:, c].reshape(-1))].max()
                            for c in range(37)])
    _assert_same(mn, want_min)
    _assert_same(mx, want_max)
    assert skipped == 2
    # Folding into accumulators.
    mn2, mx2, _ = qkit.minmax(x * 0.1, axis=1, min_acc=mn, max_acc=mx)
    _assert_same(mn2, mn)
    _assert_same(mx2, mx)
    amax, skipped = qkit.absmax(x, nonfinite="skip")
    assert skipped == 2
    _assert_same(amax, finite.abs().nan_to_num(0.0).max().reshape(1))


@pytest.mark.parametrize("dtype,qscheme", [(torch.qint8, torch.per_tensor_symmetric),
                                           (torch.quint8, torch.per_tensor_affine),
                                           (torch.quint8, torch.per_tensor_symmetric)])
def test_running_observer_matches_torch_minmax_observer(dtype, qscheme, gen):
    obs_t = torch.ao.quantization.MinMaxObserver(dtype=dtype, qscheme=qscheme)
    obs_q = qkit.nn.RunningMinMaxObserver(dtype=dtype, qscheme=qscheme)
    for _ in range(3):
        x = torch.randn(1000, generator=gen) * 3 + 0.5
        obs_t(x)
        obs_q(x)
    st, zt = obs_t.calculate_qparams()
    sq, zq = obs_q.calculate_qparams()
    _assert_same(sq, st)
    assert torch.equal(zq, zt.to(torch.int32))


# ---- threads, SIMD targets ---------------------------------------------------------------------

def test_threads_and_targets_give_identical_bits(gen):
    x = _data((3 * 65536 + 7,), gen)
    s = torch.tensor([0.3])
    results = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        results.append(qkit.fake_quantize_with_mask(x, s, rounding="half_away_from_zero"))
    for target in qkit.ops.available_targets():
        qkit.ops.force_target(target)
        results.append(qkit.fake_quantize_with_mask(x[:4099], s,
                                                    rounding="half_away_from_zero"))
    for out, mask in results[1:2]:
        _assert_same(out, results[0][0])
        assert torch.equal(mask, results[0][1])
    for out, mask in results[2:]:
        _assert_same(out, results[0][0][:4099])


# ---- errors --------------------------------------------------------------------------------------

def test_errors():
    x = torch.randn(4, 3)
    s = torch.tensor([0.1])
    with pytest.raises(ValueError, match="device meta"):
        qkit.fake_quantize(x.to("meta"), s)
    with pytest.raises(ValueError, match="device meta"):
        qkit.fake_quantize(torch.empty(3, device="meta", requires_grad=True), s)
    with pytest.raises(ValueError, match="`x` has dtype Long"):
        qkit.fake_quantize(torch.ones(3, dtype=torch.int64), s)
    with pytest.raises(ValueError, match="`bits`=17"):
        qkit.fake_quantize(x, s, bits=17)
    with pytest.raises(ValueError, match="`rounding`='up'"):
        qkit.fake_quantize(x, s, rounding="up")
    with pytest.raises(ValueError, match="`ste`='straight'"):
        qkit.fake_quantize(x, s, ste="straight")
    with pytest.raises(ValueError, match="`scale` has 1 element"):
        qkit.fake_quantize(x, s, axis=1)
    with pytest.raises(IndexError, match="`axis`=5"):
        qkit.fake_quantize(x, s, axis=5)
    with pytest.raises(ValueError, match="`mask` has 1 bytes"):
        qkit.fake_quantize_backward(torch.ones(20), torch.zeros(1, dtype=torch.uint8))
    with pytest.raises(ValueError, match="scale"):
        qkit.fake_quantize(x, torch.tensor([-1.0]))


# ---- TorchScript ---------------------------------------------------------------------------------

def test_torchscript(gen):
    @torch.jit.script
    def f(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return torch.ops.qkit.fake_quantize(x, s, None, bits=4, rounding="half_away_from_zero")

    x = torch.randn(300, generator=gen)
    s = torch.tensor([0.2])
    _assert_same(f(x, s), qkit.fake_quantize(x, s, bits=4, rounding="half_away_from_zero"))
    assert "qkit::fake_quantize" in str(f.graph)


# ---- the FakeQuantize module ---------------------------------------------------------------------

def test_fake_quantize_module_observes_and_quantizes(gen):
    fq = qkit.nn.FakeQuantize()
    x = torch.randn(100, generator=gen) * 2
    y = fq(x)
    scale, zp = fq.calculate_qparams()
    _assert_same(fq.scale, scale)
    _assert_same(y, qkit.fake_quantize(x, scale, zp))
    fq.disable_fake_quant()
    assert torch.equal(fq(x), x)
    fq.enable_fake_quant()
    fq.disable_observer()
    fq.set_qparams(0.5)
    _assert_same(fq(x), qkit.fake_quantize(x, torch.tensor([0.5])))
    assert torch.equal(fq.zero_point, torch.zeros(1, dtype=torch.int32))
    torch.ao.quantization.enable_observer(fq)  # PyTorch's helpers act on it
    assert fq.observer_enabled[0] == 1


def test_fake_quantize_module_options(gen):
    x = torch.randn(64, 8, generator=gen)
    dy = torch.randn(64, 8, generator=gen)
    grads = {}
    for name, kw in {"clipped": dict(), "recompute": dict(compat_mask=False),
                     "identity": dict(saturate=False)}.items():
        fq = qkit.nn.FakeQuantize(quant_min=-4, quant_max=3, **kw)
        xr = x.clone().requires_grad_(True)
        fq(xr).backward(dy)
        grads[name] = xr.grad
    _assert_same(grads["recompute"], grads["clipped"])
    _assert_same(grads["identity"], dy)
    assert not torch.equal(grads["clipped"], dy)  # the observed range is symmetric: 1 clipped
    fq = qkit.nn.FakeQuantize(in_place=True)
    h = x.clone()
    assert fq(h).data_ptr() == h.data_ptr()
    # Per channel, with_args factory, resizing on the first batch.
    factory = qkit.nn.FakeQuantize.with_args(qscheme=torch.per_channel_symmetric, ch_axis=1)
    fq = factory()
    out = fq(x)
    assert fq.scale.shape == (8,)
    _assert_same(out, qkit.fake_quantize(x, fq.scale, fq.zero_point, axis=1))


def test_fake_quantize_state_dict_round_trip_and_refusals(gen):
    fq = qkit.nn.FakeQuantize(qscheme=torch.per_channel_affine, dtype=torch.quint8, ch_axis=0)
    fq(torch.randn(6, 10, generator=gen))
    sd = fq.state_dict()
    fresh = qkit.nn.FakeQuantize(qscheme=torch.per_channel_affine, dtype=torch.quint8,
                                 ch_axis=0)
    fresh.load_state_dict(sd)
    for k, v in sd.items():
        assert torch.equal(fresh.state_dict()[k], v), k
    per_tensor = qkit.nn.FakeQuantize()
    with pytest.raises(RuntimeError, match=r"`scale` has shape \(6,\)"):
        per_tensor.load_state_dict(sd)
    old = copy.copy(sd)  # keeps the OrderedDict's _metadata
    old._metadata = copy.deepcopy(sd._metadata)
    old._metadata[""]["version"] = 0  # pretend another version wrote it
    with pytest.raises(RuntimeError, match="version 0 is not supported"):
        fresh.load_state_dict(old)
