"""qkit.compat.pytorch_quantization against NVIDIA's documented example (SPEC §4.7) and a plain
torch reference written from SPEC §4.2-4.5 (nothing in the references calls qkit)."""
import math

import numpy as np
import pytest
import torch

from qkit.compat.pytorch_quantization import calib, tensor_quant
from qkit.compat.pytorch_quantization import nn as quant_nn
from qkit.compat.pytorch_quantization.tensor_quant import QuantDescriptor
from qkit.compat.pytorch_quantization.utils import reduce_amax


# ---- plain-torch reference (SPEC §4.2) -------------------------------------------------------
def ref_tensor_quant(x, amax, num_bits=8, unsigned=False, narrow_range=True):
    """``(q, scale)`` of NVIDIA's ``_tensor_quant`` on the CPU, float32 (fp16 upcast)."""
    amax = torch.as_tensor(amax, dtype=torch.float32)
    xf = x.float()
    max_bound = torch.tensor(2.0 ** (num_bits - 1 + int(unsigned)) - 1.0)
    if unsigned:
        min_bound = torch.tensor(0.0)
    elif narrow_range:
        min_bound = -max_bound
    else:
        min_bound = -max_bound - 1
    scale = max_bound / amax
    zero = amax <= 2.0 ** -24
    scale = torch.where(zero, torch.zeros_like(scale), scale)
    q = torch.round(xf * scale)
    q = torch.where(q < min_bound, min_bound, torch.where(q > max_bound, max_bound, q))
    scale = torch.where(zero, torch.ones_like(scale), scale)
    if x.dtype == torch.half:
        q = q.half()
    return q, scale


def ref_fake_tensor_quant(x, amax, num_bits=8, unsigned=False, narrow_range=True):
    q, scale = ref_tensor_quant(x, amax, num_bits, unsigned, narrow_range)
    return q / scale.to(x.dtype)


def ref_ste(x, amax, dy):
    return torch.where(x.abs() <= amax, dy, torch.zeros_like(dy))


def same(a, b):
    """Equal values (±0 alike) with NaN in the same places, same dtype and shape."""
    assert a.dtype == b.dtype and a.shape == b.shape, (a.dtype, b.dtype, a.shape, b.shape)
    nan_a, nan_b = torch.isnan(a), torch.isnan(b)
    assert torch.equal(nan_a, nan_b)
    assert torch.equal(a[~nan_a], b[~nan_b]), (a, b)
    return True


# ---- NVIDIA's documented example (tensor_quant.py docstring) --------------------------------
GOLDEN_X = [0.9817181825637817, 0.8796065449714661, 0.992143452167511, 0.461067259311676,
            0.08321595191955566, 0.17843109369277954, 0.36743152141571045, 0.5676497220993042,
            0.3376067280769348, 0.21194660663604736]
GOLDEN_FAKE = [0.9843314, 0.8827733, 0.9921435, 0.4609171, 0.0859337, 0.1796795, 0.3671712,
               0.5702872, 0.3359226, 0.2109281]


def test_golden_example_as_documented():
    # Generate random input. With fixed seed 12345, x should be
    # tensor([0.9817, 0.8796, 0.9921, 0.4611, 0.0832, 0.1784, 0.3674, 0.5676, 0.3376, 0.2119])
    torch.manual_seed(12345)
    x = torch.rand(10)
    assert x.tolist() == GOLDEN_X
    # quantize tensor x. quant_x will be
    # tensor([126., 113., 127.,  59.,  11.,  23.,  47.,  73.,  43.,  27.])
    # with scale=128.0057
    quant_x, scale = tensor_quant.tensor_quant(x, x.abs().max())
    assert quant_x.tolist() == [126., 113., 127., 59., 11., 23., 47., 73., 43., 27.]
    assert scale.item() == 128.00567626953125
    assert quant_x.dtype == torch.float32 and scale.shape == ()
    # fake quantize tensor x. fake_quant_x will be
    # tensor([0.9843, 0.8828, 0.9921, 0.4609, 0.0859, 0.1797, 0.3672, 0.5703, 0.3359, 0.2109])
    fake_quant_x = tensor_quant.fake_tensor_quant(x, x.abs().max())
    assert torch.allclose(fake_quant_x, torch.tensor(GOLDEN_FAKE), rtol=0, atol=1e-7)  # 7 digits
    same(fake_quant_x, quant_x / scale)
    # the largest element does not round-trip exactly (SPEC §4.7)
    assert fake_quant_x[2].item() == pytest.approx(0.99214351, abs=1e-8)
    assert fake_quant_x[2].item() != x[2].item()


def test_spec_10_2_row_g():
    x = torch.tensor([-1.5, -0.75, -0.2, 0, 0.1, 0.35, 0.9, 2.0])
    q, scale = tensor_quant.tensor_quant(x, torch.tensor(2.0))
    assert scale.item() == 63.5
    assert q.tolist() == [-95, -48, -13, 0, 6, 22, 57, 127]


# ---- every option against the reference -----------------------------------------------------
AMAX_SHAPES = {
    "per_tensor_0d": lambda x: (), "per_tensor_1": lambda x: (1,),
    "axis0": lambda x: (x.shape[0], 1, 1, 1), "axis1": lambda x: (1, x.shape[1], 1, 1),
    "axis_last_trailing": lambda x: (x.shape[3],),
    "axes_0_2": lambda x: (x.shape[0], 1, x.shape[2], 1),
    "axes_1_3": lambda x: (x.shape[1], 1, x.shape[3]),
}


def _data(gen, unsigned):
    x = torch.randn(3, 4, 5, 6, generator=gen) * 3
    if unsigned:
        x = x.abs()
    return x


def _amax_for(x, shape, gen):
    full = x.abs().amax().item()
    a = torch.rand(shape, generator=gen) * full * 0.9 + full * 0.1
    return a


@pytest.mark.parametrize("num_bits", [2, 4, 8, 16])
@pytest.mark.parametrize("unsigned", [False, True])
@pytest.mark.parametrize("narrow_range", [False, True])
@pytest.mark.parametrize("layout", sorted(AMAX_SHAPES))
def test_options_match_reference(gen, num_bits, unsigned, narrow_range, layout):
    x = _data(gen, unsigned)
    amax = _amax_for(x, AMAX_SHAPES[layout](x), gen)
    # boundary values: exactly ±amax (per slot) and just beyond it
    a_full = torch.broadcast_to(amax, x.shape)
    x = x.clone()
    x[0, 0, 0] = a_full[0, 0, 0]
    x[1, 1, 1] = torch.nextafter(a_full[1, 1, 1], torch.tensor(math.inf))
    if not unsigned:
        x[2, 2, 2] = -a_full[2, 2, 2]
        x[2, 3, 3] = -a_full[2, 3, 3] * (128.0 / 127.0)
    q, s = tensor_quant.tensor_quant(x, amax, num_bits, unsigned, narrow_range)
    rq, rs = ref_tensor_quant(x, amax, num_bits, unsigned, narrow_range)
    same(q, rq)
    same(s, rs.to(s.dtype))
    f = tensor_quant.fake_tensor_quant(x, amax, num_bits, unsigned, narrow_range)
    same(f, ref_fake_tensor_quant(x, amax, num_bits, unsigned, narrow_range))


@pytest.mark.parametrize("fake", [False, True])
def test_gradient_is_clipped_ste(gen, fake):
    x = torch.randn(4, 3, 5, generator=gen) * 2
    amax = torch.rand(4, 1, 5, generator=gen) + 0.5
    x[0, 0, 0] = amax[0, 0, 0]          # inclusive bound
    x[1, 0, 1] = -amax[1, 0, 1]
    x[2, 0, 2] = torch.nextafter(amax[2, 0, 2], torch.tensor(9.0))
    x[3, 1, 3] = math.nan
    x.requires_grad_(True)
    dy = torch.randn(4, 3, 5, generator=gen)
    if fake:
        y = tensor_quant.fake_tensor_quant(x, amax, 8, False, False)
    else:
        y, _ = tensor_quant.tensor_quant(x, amax, 8, False, False)
    (dx,) = torch.autograd.grad(y, x, dy)
    same(dx, ref_ste(x.detach(), amax, dy))
    assert dx[0, 0, 0] == dy[0, 0, 0] and dx[1, 0, 1] == dy[1, 0, 1]
    assert dx[2, 0, 2] == 0 and dx[3, 1, 3] == 0


def test_keyword_and_float_amax():
    x = torch.tensor([-1.0, 0.26, 0.5])
    a = tensor_quant.fake_tensor_quant(x, torch.tensor(1.0), num_bits=4, narrow_range=False)
    b = tensor_quant.fake_tensor_quant(x, 1.0, 4, False, False)
    same(a, b)
    same(a, ref_fake_tensor_quant(x, 1.0, 4, False, False))


def test_fp16_paths(gen):
    x = (torch.randn(64, generator=gen) * 4).half()
    amax = torch.tensor(3.0)
    q, s = tensor_quant.tensor_quant(x, amax)
    rq, rs = ref_tensor_quant(x, amax)
    same(q, rq)
    assert s.dtype == torch.half and s.item() == rs.half().item()
    same(tensor_quant.fake_tensor_quant(x, amax), ref_fake_tensor_quant(x, amax))
    # tensor_quant refuses a scale that overflows fp16 (upstream's own check)
    with pytest.raises(ValueError, match="FP16"):
        tensor_quant.tensor_quant(x, torch.tensor(1e-3))


# ---- degenerate inputs ----------------------------------------------------------------------
def test_zero_amax_quantizes_to_zero_with_scale_one():
    x = torch.tensor([[-1.0, 0.5, 3.0], [-2.0, 0.25, 1.0]])
    amax = torch.tensor([[0.0], [2.0]])
    q, s = tensor_quant.tensor_quant(x, amax)
    rq, rs = ref_tensor_quant(x, amax)
    same(q, rq)
    same(s, rs)
    assert s[0, 0].item() == 1.0 and q[0].abs().sum() == 0
    same(tensor_quant.fake_tensor_quant(x, amax), ref_fake_tensor_quant(x, amax))


@pytest.mark.parametrize("amax", [2.0 ** -24, 2.0 ** -24 * (1 + 2.0 ** -23), 0.0])
def test_epsilon_boundary_is_inclusive(amax):
    x = torch.tensor([-2.0 ** -24, 2.0 ** -25, 2.0 ** -24, 1.0])
    q, s = tensor_quant.tensor_quant(x, torch.tensor(amax))
    rq, rs = ref_tensor_quant(x, torch.tensor(amax))
    same(q, rq)
    same(s, rs)


def test_nan_input_propagates():
    x = torch.tensor([0.5, math.nan, -1.0, math.inf, -math.inf])
    q, _ = tensor_quant.tensor_quant(x, torch.tensor(1.0))
    same(q, ref_tensor_quant(x, torch.tensor(1.0))[0])
    f = tensor_quant.fake_tensor_quant(x, torch.tensor(1.0), 8, False, False)
    same(f, ref_fake_tensor_quant(x, torch.tensor(1.0), 8, False, False))


def test_errors():
    x = torch.tensor([-1.0, 0.5])
    with pytest.raises(TypeError, match="Negative values encountered in unsigned"):
        tensor_quant.tensor_quant(x, torch.tensor(1.0), 8, True)
    with pytest.raises(ValueError, match="Negative values in amax"):
        tensor_quant.fake_tensor_quant(x, torch.tensor(-1.0))
    with pytest.raises(ValueError, match="not finite"):
        tensor_quant.fake_tensor_quant(x, torch.tensor(math.nan))
    with pytest.raises(ValueError, match="not finite"):
        tensor_quant.tensor_quant(x, torch.tensor(math.inf))
    with pytest.raises(ValueError, match="num_bits"):
        tensor_quant.tensor_quant(x, torch.tensor(1.0), 17)
    with pytest.raises(ValueError, match="num_bits"):
        tensor_quant.tensor_quant(x, torch.tensor(1.0), 0)
    with pytest.raises(TypeError, match="num_bits must be an integer"):
        tensor_quant.tensor_quant(x, torch.tensor(1.0), 8.0)
    with pytest.raises(RuntimeError, match="does not broadcast"):
        tensor_quant.fake_tensor_quant(torch.zeros(3, 4), torch.ones(3, 1, 1))
    with pytest.raises(RuntimeError, match="does not broadcast"):
        tensor_quant.fake_tensor_quant(torch.zeros(3, 4), torch.ones(2, 1))
    with pytest.raises(NotImplementedError):
        tensor_quant.scaled_e4m3(x, torch.tensor(1.0))


def test_fake_affine_tensor_quant(gen):
    # upstream test: identity on integer data with min -128, max 127
    x = torch.arange(-128.0, 128.0)
    same(tensor_quant.fake_affine_tensor_quant(x, torch.tensor(-128.0), torch.tensor(127.0)), x)
    # plain reference (SPEC §4.2)
    x = torch.randn(100, generator=gen) * 2
    lo, hi = torch.tensor(-1.3), torch.tensor(2.1)
    step = (hi - lo) / (2 ** 8 - 1)
    qz = torch.round(lo / step) - (-128)
    q = torch.clamp(torch.round(x / step) - qz, -128, 127)
    same(tensor_quant.fake_affine_tensor_quant(x, lo, hi), (q + qz) * step)
    xg = x.clone().requires_grad_(True)
    (dx,) = torch.autograd.grad(tensor_quant.fake_affine_tensor_quant(xg, lo, hi), xg,
                                torch.ones(100))
    same(dx, ((x >= lo) & (x <= hi)).float())


# ---- QuantDescriptor --------------------------------------------------------------------------
def test_descriptor_defaults_and_predefined():
    d = QuantDescriptor()
    assert (d.num_bits, d.name, d.fake_quant, d.axis, d.amax, d.learn_amax, d.scale_amax,
            d.calib_method, d.unsigned, d.narrow_range) == \
        (8, None, True, None, None, False, None, "max", False, False)
    assert tensor_quant.QUANT_DESC_UNSIGNED_8BIT_PER_TENSOR.unsigned
    assert tensor_quant.QUANT_DESC_8BIT_PER_TENSOR.axis is None
    for name in ("CONV1D", "CONV2D", "CONV3D"):
        assert getattr(tensor_quant, f"QUANT_DESC_8BIT_{name}_WEIGHT_PER_CHANNEL").axis == 0
        assert getattr(tensor_quant,
                       f"QUANT_DESC_8BIT_CONVTRANSPOSE{name[4:]}_WEIGHT_PER_CHANNEL").axis == 1
    assert tensor_quant.QUANT_DESC_8BIT_LINEAR_WEIGHT_PER_ROW.axis == 0
    assert tensor_quant.ScaledQuantDescriptor is QuantDescriptor


def test_descriptor_amax_dict_and_errors():
    d = QuantDescriptor(num_bits=4, fake_quant=False, axis=(0), unsigned=True, amax=[1.5, 2.0],
                        narrow_range=True, name="w")
    assert d.amax.dtype == np.float32 and d.amax.tolist() == [1.5, 2.0]
    assert QuantDescriptor(**d.dict()) == d
    assert "unsigned 4bit real axis=0" in str(d)
    with pytest.raises(TypeError, match="num_bits must be an integer"):
        QuantDescriptor(num_bits=8.0)
    with pytest.raises(ValueError, match="num_bits must be >= 0"):
        QuantDescriptor(num_bits=-1)
    with pytest.raises(ValueError, match="not supported by qkit"):
        QuantDescriptor(num_bits=0)
    with pytest.raises(NotImplementedError):
        QuantDescriptor(num_bits=(4, 3))
    with pytest.raises(TypeError, match="name must be a string"):
        QuantDescriptor(name=3)
    with pytest.raises(TypeError, match="learn_amax"):
        QuantDescriptor(learn_amax=True, axis=0)
    with pytest.raises(TypeError, match="amax must be float, list or ndarray"):
        QuantDescriptor(amax=torch.tensor(1.0))
    with pytest.raises(TypeError, match="Unused keys"):
        QuantDescriptor(foo=1)


# ---- reduce_amax and MaxCalibrator (SPEC §4.4, §4.5) -----------------------------------------
def ref_reduce_keep(x, keep):
    out = x.abs()
    for d in range(x.dim()):
        if d not in keep:
            out = out.amax(dim=d, keepdim=True)
    return out


def test_reduce_amax(gen):
    x = torch.randn(3, 4, 5, generator=gen)
    same(reduce_amax(x), x.abs().max())
    same(reduce_amax(x, axis=1), x.abs().amax(dim=1, keepdim=True))
    same(reduce_amax(x, axis=(0, 2)), x.abs().amax(dim=(0, 2), keepdim=True))
    same(reduce_amax(x, axis=(0, 2), keepdims=False), x.abs().amax(dim=(0, 2)))
    with pytest.raises(ValueError, match="Cannot reduce more axes"):
        reduce_amax(x, axis=(0, 1, 2, 0))
    x[1, 2, 3] = math.nan
    assert torch.isnan(reduce_amax(x))


@pytest.mark.parametrize("axis", [None, 0, 1, -1, (0, 2), (1,)])
def test_max_calibrator(gen, axis):
    c = calib.MaxCalibrator(8, axis, False, track_amax=True)
    assert c.compute_amax() is None
    batches = [torch.randn(3, 4, 5, generator=gen) * s for s in (1.0, 3.0, 0.5)]
    keep = [] if axis is None else [a % 3 for a in (axis if isinstance(axis, tuple) else [axis])]
    expect = None
    for b in batches:
        c.collect(b)
        local = ref_reduce_keep(b, keep)
        expect = local if expect is None else torch.max(expect, local)
    if axis is None:
        expect = expect.squeeze()
    same(c.compute_amax(), expect)
    assert len(c.amaxs) == 3
    with pytest.raises(RuntimeError):
        c.collect(torch.randn(2, 2, 2) if axis is not None else torch.empty(0))
    c.reset()
    assert c.compute_amax() is None


def test_max_calibrator_nan_propagates():
    c = calib.MaxCalibrator(8, None, False)
    c.collect(torch.tensor([1.0, math.nan]))
    c.collect(torch.tensor([5.0]))
    assert torch.isnan(c.compute_amax())


# ---- TensorQuantizer (SPEC §4.4) --------------------------------------------------------------
def test_tensor_quantizer_default_dynamic_amax(gen):
    tq = quant_nn.TensorQuantizer()
    x = torch.randn(4, 8, generator=gen)
    # default descriptor: narrow_range False, dynamic per-tensor amax
    same(tq(x), ref_fake_tensor_quant(x, x.abs().max(), 8, False, False))
    tq.disable()
    assert tq(x) is x


def test_tensor_quantizer_calibration_flow(gen):
    desc = QuantDescriptor(num_bits=8, axis=(0))
    tq = quant_nn.TensorQuantizer(desc)
    tq.disable_quant()
    tq.enable_calib()
    batches = [torch.randn(4, 3, 2, generator=gen) * s for s in (1.0, 2.0)]
    for b in batches:
        same(tq(b), b)
    tq.load_calib_amax()
    tq.enable_quant()
    tq.disable_calib()
    amax = torch.max(ref_reduce_keep(batches[0], [0]), ref_reduce_keep(batches[1], [0]))
    same(tq.amax, amax)
    x = torch.randn(4, 3, 2, generator=gen) * 3       # beyond the calibrated range: -128 appears
    same(tq(x), ref_fake_tensor_quant(x, amax, 8, False, False))
    # state dict round trip creates the _amax buffer
    tq2 = quant_nn.TensorQuantizer(desc)
    tq2.load_state_dict(tq.state_dict())
    same(tq2(x), tq(x))


def test_tensor_quantizer_real_quant_is_narrow(gen):
    tq = quant_nn.TensorQuantizer(QuantDescriptor(fake_quant=False, amax=2.0))
    x = torch.tensor([-3.0, -2.0, 0.7, 2.5])
    q = tq(x)
    rq, rs = ref_tensor_quant(x, torch.tensor(2.0), 8, False, True)
    same(q, rq)
    same(tq.scale, rs)
    assert q.min().item() == -127


def test_tensor_quantizer_options(gen):
    x = torch.randn(5, 6, generator=gen).abs()
    tq = quant_nn.TensorQuantizer(QuantDescriptor(num_bits=4, unsigned=True, amax=1.0,
                                                  scale_amax=0.5, narrow_range=True))
    same(tq(x), ref_fake_tensor_quant(x, torch.tensor(0.5), 4, True, True))
    assert tq.maxbound == 15
    tq.amax = 2.0
    same(tq(x), ref_fake_tensor_quant(x, torch.tensor(1.0), 4, True, True))
    assert tq.step_size.item() == pytest.approx(2.0 / 15)
    with pytest.raises(TypeError, match="Changing shape"):
        tq.amax = [1.0, 2.0]


def test_tensor_quantizer_learn_amax(gen):
    tq = quant_nn.TensorQuantizer(QuantDescriptor(amax=2.0, learn_amax=True))
    with torch.no_grad():
        tq.clip.clip_value_min.fill_(-1.5)
    x = torch.randn(50, generator=gen) * 2
    x[0], x[1] = 2.0, -1.5
    xg = x.clone().requires_grad_(True)
    dy = torch.randn(50, generator=gen)
    y = tq(xg)
    y.backward(dy)
    clipped = torch.clamp(x, -1.5, 2.0)
    same(y.detach(), ref_fake_tensor_quant(clipped, torch.tensor(2.0), 8, False, False))
    same(xg.grad, torch.where((x > -1.5) & (x < 2.0), dy, torch.zeros_like(dy)))
    assert tq.clip.clip_value_max.grad.item() == pytest.approx(dy[x >= 2.0].sum().item(),
                                                               abs=1e-5)
    assert tq.clip.clip_value_min.grad.item() == pytest.approx(dy[x <= -1.5].sum().item(),
                                                               abs=1e-5)
    with pytest.raises(ValueError, match="scalar"):
        quant_nn.Clip(torch.ones(2), 1.0, learn_min=True)


def test_tensor_quantizer_errors():
    tq = quant_nn.TensorQuantizer()
    tq.enable_calib()
    with pytest.raises(RuntimeError, match="Calibrator returned None"):
        tq.load_calib_amax()
    tq.load_calib_amax(strict=False)
    assert torch.isnan(tq.amax)
    tq.disable_calib()
    with pytest.raises(ValueError, match="not finite"):
        tq(torch.ones(3))
    with pytest.raises(ValueError, match="learn_amax is False"):
        quant_nn.TensorQuantizer().enable_clip()
    with pytest.raises(RuntimeError, match="init_learn_amax"):
        quant_nn.TensorQuantizer().init_learn_amax()


# ---- HistogramCalibrator (SPEC §4.6, torch path and numpy path) ------------------------------
def ref_histc(x, bins, min, max):  # noqa: A002
    """Current PyTorch's CPU torch.histc as SPEC §4.6 states it (float32: x - lo, times nbins,
    divided by hi - lo, truncated; x == hi in the last bin; outside and NaN ignored)."""
    lo = torch.as_tensor(min, dtype=torch.float32)
    hi = torch.as_tensor(max, dtype=torch.float32)
    if lo == hi and x.numel() > 0:
        lo, hi = x.min(), x.max()
    if lo == hi:
        lo, hi = lo - 1, hi + 1
    x = x[(x >= lo) & (x <= hi)]
    pos = torch.trunc(((x - lo) * torch.tensor(float(bins))) / (hi - lo)).long()
    pos[pos == bins] = bins - 1
    return torch.bincount(pos, minlength=bins).float()


def ref_hist_collect(state, x, num_bins, torch_hist=True, histc=ref_histc):
    """Upstream's collect (SPEC §4.6) with the given torch.histc, or numpy."""
    x = x.detach().abs().float()
    if torch_hist:
        x_max = x.max()
        if state.get("hist") is None:
            state["hist"] = histc(x, bins=num_bins, min=0, max=x_max)
            state["edges"] = torch.linspace(0, x_max, num_bins + 1)
            state["bins"] = num_bins
        else:
            edges = state["edges"]
            if x_max > edges[-1]:
                width = edges[1] - edges[0]
                state["bins"] = int((x_max / width).ceil().item())
                state["edges"] = torch.arange(0, x_max + width, width)
            hist = histc(x, bins=state["bins"], min=0, max=state["edges"][-1])
            hist[:state["hist"].numel()] += state["hist"]
            state["hist"] = hist
        return state
    xn = x.numpy()
    if state.get("hist") is None:
        state["hist"], state["edges"] = np.histogram(xn, bins=num_bins)
    else:
        edges = state["edges"]
        temp_amax = np.max(xn)
        if temp_amax > edges[-1]:
            width = edges[1] - edges[0]
            new_bin_edges = np.arange(edges[-1] + width, temp_amax + width, width)
            edges = np.hstack((edges, new_bin_edges))
        hist, edges = np.histogram(xn, bins=edges)
        hist[:len(state["hist"])] += state["hist"]
        state["hist"], state["edges"] = hist, edges
    return state


def _hist_np(state):
    h = state["hist"]
    e = state["edges"]
    if isinstance(h, torch.Tensor):
        h = h.int().cpu().numpy()
        e = e.cpu().numpy()
    return h.astype(np.int64), e


def ref_percentile(state, percentile):
    hist, edges = _hist_np(state)
    total = hist.sum()
    cdf = np.cumsum(hist / total)
    idx = np.searchsorted(cdf, percentile / 100)
    return torch.tensor(edges[idx].item())


def ref_entropy(state, num_bits, unsigned, stride=1, start_bin=128):
    from scipy.stats import entropy
    hist, edges = _hist_np(state)
    bins = hist.copy()
    bins[0] = bins[1]
    nbins = 1 << (num_bits - 1 + int(unsigned))
    divergences = []
    for i in range(start_bin, len(bins) + 1, stride):
        digitized = np.digitize(range(i), np.linspace(0, i, num=nbins + 1)) - 1
        digitized[bins[:i] == 0] = -1
        keep = digitized != -1
        sums = np.bincount(digitized[keep], weights=bins[:i][keep], minlength=nbins)
        counts = np.bincount(digitized[keep], minlength=nbins)
        means = np.divide(sums, counts, out=np.zeros(nbins), where=counts > 0)
        q = np.where(keep, means[np.where(keep, digitized, 0)], 0.0)
        p = bins[:i].astype(np.float64)
        p[-1] += bins[i:].sum()
        divergences.append(entropy(p, q))
    divergences = np.array(divergences)
    last_argmin = len(divergences) - 1 - np.argmin(divergences[::-1])
    return torch.tensor(edges[last_argmin * stride + start_bin].item())


def ref_mse_all(state, num_bits, unsigned, start_bin=128):
    """(centers, mse per candidate) with the CUDA kernel's narrow-range arithmetic."""
    hist, edges = _hist_np(state)
    counts = torch.from_numpy(hist.astype(np.float32))
    e = torch.from_numpy(np.asarray(edges, dtype=np.float32))
    centers = (e[1:] + e[:-1]) / 2
    bound = 2.0 ** (num_bits - 1 + int(unsigned)) - 1
    out = []
    for i in range(start_bin, len(centers)):
        amax = centers[i]
        s = torch.tensor(bound, dtype=torch.float32) / amax
        q = torch.clamp(torch.round(centers * s), -bound, bound) / s
        out.append(((q - centers) ** 2 * counts).double().mean().item())
    return centers, np.array(out)


def same_edge(a, b, exact):
    """qkit's edges are ATen's scalar linspace / arange formulas (docs/calibration.md §4);
    torch 1.13's vectorised CPU loops can round an interior edge differently in the last bit,
    so on the torch path an amax may be one float32 ulp from torch's edge (same bin)."""
    if exact:
        return same(a, b)
    assert a.dtype == b.dtype and a.shape == b.shape
    ulp = torch.nextafter(b, torch.tensor(math.inf)) - b
    assert (a - b).abs() <= ulp, (a.item(), b.item())
    return True


@pytest.mark.parametrize("torch_hist", [True, False])
@pytest.mark.parametrize("unsigned", [False, True])
def test_histogram_calibrator_matches_reference(gen, torch_hist, unsigned):
    num_bins = 128
    c = calib.HistogramCalibrator(4, None, unsigned, num_bins=num_bins, torch_hist=torch_hist)
    assert c.compute_amax("entropy", start_bin=16) is None
    state = {}
    for s in (1.0, 2.0, 0.5, 3.0):   # the range grows twice
        x = torch.randn(3000, generator=gen) * s
        x[0] = 0.0
        if unsigned:
            x = x.abs()
        c.collect(x)
        ref_hist_collect(state, x, num_bins, torch_hist)
    for p in (90.0, 99.0, 99.99, 100.0, 0.0):
        same_edge(c.compute_amax("percentile", percentile=p), ref_percentile(state, p),
                  exact=not torch_hist)
    for stride, start in ((1, 16), (3, 40)):
        same_edge(c.compute_amax("entropy", stride=stride, start_bin=start),
                  ref_entropy(state, 4, unsigned, stride, start), exact=not torch_hist)
    centers, mse = ref_mse_all(state, 4, unsigned, start_bin=16)
    got = c.compute_amax("mse", start_bin=16)
    k = int((centers - got).abs().argmin())
    same_edge(got, centers[k], exact=not torch_hist)
    assert mse[k - 16] <= mse.min() * (1 + 1e-6)     # float32 sums: ties within an ulp
    c.reset()
    assert c.compute_amax("percentile") is None


def test_histogram_calibrator_torch_113_binning_matches_local_torch(gen):
    """torch_binning="histc_divide_first" is Debian's torch 1.13 torch.histc: run upstream's
    collect with the real torch.histc as the oracle."""
    c = calib.HistogramCalibrator(8, None, False, num_bins=256,
                                  torch_binning="histc_divide_first")
    state = {}
    for s in (1.0, 3.0, 2.0):
        x = torch.randn(20000, generator=gen) * s
        c.collect(x)
        ref_hist_collect(state, x, 256, histc=torch.histc)
    for p in (50.0, 99.0, 99.9, 99.99):
        same_edge(c.compute_amax("percentile", percentile=p), ref_percentile(state, p),
                  exact=False)
    same_edge(c.compute_amax("entropy"), ref_entropy(state, 8, False), exact=False)


def test_histogram_calibrator_degenerate_inputs():
    # all zeros: every edge is 0, so every method gives amax 0 (as upstream's first batch)
    c = calib.HistogramCalibrator(8, None, False, num_bins=64)
    c.collect(torch.zeros(10))
    state = ref_hist_collect({}, torch.zeros(10), 64)
    for method, kw in (("percentile", {}), ("entropy", dict(start_bin=8))):
        same(c.compute_amax(method, **kw), torch.tensor(0.0))
    assert state["edges"].abs().max() == 0
    # NaN / Inf are skipped (upstream's histogram would break on them)
    a = calib.HistogramCalibrator(8, None, False, num_bins=64)
    b = calib.HistogramCalibrator(8, None, False, num_bins=64)
    a.collect(torch.tensor([0.5, math.nan, -2.0, math.inf, 1.0]))
    b.collect(torch.tensor([0.5, -2.0, 1.0]))
    for p in (10.0, 50.0, 100.0):
        same(a.compute_amax("percentile", percentile=p), b.compute_amax("percentile",
                                                                         percentile=p))
    with pytest.raises(RuntimeError):
        a.collect(torch.empty(0))


def test_histogram_calibrator_upstream_expectations(gen):
    # tests/calibrator_test.py: arange(100), percentile 90 -> about 89
    c = calib.HistogramCalibrator(8, None, False)
    c.collect(torch.arange(100.0))
    assert abs(c.compute_amax("percentile", percentile=90).item() - 89) <= 100 / 1024
    # uniform(0, 1) with one outlier 10: entropy ignores the outlier
    c = calib.HistogramCalibrator(8, None, False)
    x = torch.rand(10000, generator=gen)
    x[0] = 10.0
    c.collect(x)
    assert c.compute_amax("entropy").item() < 1.1


def test_histogram_calibrator_errors_and_quantizer_flow(gen):
    with pytest.raises(NotImplementedError, match="per tensor"):
        calib.HistogramCalibrator(8, 0, False)
    c = calib.HistogramCalibrator(8, None, False)
    c.collect(torch.randn(100, generator=gen))
    with pytest.raises(TypeError, match="Unknown calibration method"):
        c.compute_amax("max")
    with pytest.raises(ValueError, match="percentile"):
        c.compute_amax("percentile", percentile=101)
    tq = quant_nn.TensorQuantizer(QuantDescriptor(calib_method="histogram"))
    tq.disable_quant()
    tq.enable_calib()
    x = torch.randn(2000, generator=gen)
    tq(x)
    tq.load_calib_amax("percentile", percentile=99.9)
    tq.enable_quant()
    tq.disable_calib()
    state = ref_hist_collect({}, x, 2048)
    same_edge(tq.amax, ref_percentile(state, 99.9), exact=False)
    same(tq(x), ref_fake_tensor_quant(x, tq.amax, 8, False, False))
