"""qkit.compat.distiller against Distiller's documented values (tests/test_quant_utils.py, SPEC
§5.1, §10.2 H/I, §10.4) and a plain torch reference written from SPEC §5 (no qkit inside)."""
import math

import pytest
import torch

from qkit.compat.distiller import q_utils, range_linear
from qkit.compat.distiller.range_linear import (FakeLinearQuantization, FakeQuantizationWrapper,
                                                LinearQuantMode)


# ---- plain-torch reference (SPEC §5.1) -------------------------------------------------------
def ref_symmetric(num_bits, sat, restrict=False):
    n = 2 ** (num_bits - 1) - 1 if restrict else (2 ** num_bits - 1) / 2
    sat = torch.as_tensor(sat, dtype=torch.float32).reshape(-1).clone()
    sat[sat == 0] = n
    scale = n / sat   # as Distiller writes it: torch evaluates it as sat.reciprocal() * n
    return scale, torch.zeros_like(scale)


def ref_asymmetric(num_bits, smin, smax, integral=True, signed=False):
    n = 2 ** num_bits - 1
    smin = torch.as_tensor(smin, dtype=torch.float32).reshape(-1)
    smax = torch.as_tensor(smax, dtype=torch.float32).reshape(-1)
    smin = torch.min(smin, torch.zeros_like(smin))
    smax = torch.max(smax, torch.zeros_like(smax))
    diff = smax - smin
    diff[diff == 0] = n
    scale = n / diff  # Distiller's n / diff (torch: diff.reciprocal() * n)
    zp = scale * smin
    if integral:
        zp = zp.round()
    if signed:
        zp = zp + 2 ** (num_bits - 1)
    return scale, zp


def same(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape, (a.dtype, b.dtype, a.shape, b.shape)
    nan_a, nan_b = torch.isnan(a), torch.isnan(b)
    assert torch.equal(nan_a, nan_b)
    assert torch.equal(a[~nan_a], b[~nan_b]), (a, b)
    return True


# ---- Distiller's own golden values (tests/test_quant_utils.py) -------------------------------
def test_symmetric_params_golden():
    f = q_utils.symmetric_linear_quantization_params
    assert f(8, 4) == (31.875, 0.0)
    assert f(8, 4, restrict_qrange=True) == (31.75, 0.0)
    s, z = f(8, torch.tensor([4.0, 10.0]))
    assert s.tolist() == [31.875, 12.75] and z.tolist() == [0.0, 0.0]
    s, _ = f(8, torch.tensor([4.0, 10.0]), restrict_qrange=True)
    same(s, torch.tensor([31.75, 12.7]))
    assert f(8, 0) == (1.0, 0.0)
    assert f(8, 0, True) == (1.0, 0.0)
    assert isinstance(f(8, 4)[0], float)
    assert f(8, torch.tensor(4.0))[0].shape == (1,)


@pytest.mark.parametrize("smin,smax,signed,integral,scale,zp", [
    (-2, 10, False, True, 21.25, -42.0),       # -42.5 rounds half to even
    (-2, 10, True, True, 21.25, 86.0),
    (-2, 10, False, False, 21.25, -42.5),
    (-2, 10, True, False, 21.25, 85.5),
    (5, 10, False, True, 25.5, 0.0),
    (-10, -5, False, True, 25.5, -255.0),
    (0, 0, False, True, 1.0, 0.0),
])
def test_asymmetric_params_golden(smin, smax, signed, integral, scale, zp):
    got = q_utils.asymmetric_linear_quantization_params(8, smin, smax, integral_zero_point=integral,
                                                        signed=signed)
    assert got == (scale, zp)


def test_asymmetric_params_vector():
    s, z = q_utils.asymmetric_linear_quantization_params(
        8, torch.tensor([-2.0, 5.0, -10.0, 0.0]), torch.tensor([10.0, 10.0, -5.0, 0.0]))
    same(s, torch.tensor([21.25, 25.5, 25.5, 1.0]))
    same(z, torch.tensor([-42.0, 0.0, -255.0, 0.0]))
    # scalar min with a tensor max broadcasts
    s, z = q_utils.asymmetric_linear_quantization_params(8, -2.0, torch.tensor([10.0, 20.0]))
    same(s, ref_asymmetric(8, [-2.0, -2.0], [10.0, 20.0])[0])


SPEC_X = [-1.5, -0.75, -0.2, 0, 0.1, 0.35, 0.9, 2.0]


def test_spec_10_2_row_h_257_levels():
    x = torch.tensor(SPEC_X)
    s, z = q_utils.symmetric_linear_quantization_params(8, 2.0)
    assert s == 63.75
    assert q_utils.linear_quantize(x, s, z).tolist() == [-96, -48, -13, 0, 6, 22, 57, 128]
    out = q_utils.LinearQuantizeSTE.apply(x, s, z, True, False)
    assert out[-1].item() == pytest.approx(2.0078433, abs=1e-7)
    same(out, (torch.round(s * x - z) + z) / s)


def test_spec_10_2_row_i():
    x = torch.tensor(SPEC_X)
    s, z = q_utils.asymmetric_linear_quantization_params(8, -1.5, 2.0)
    assert z == -109.0 and s == pytest.approx(72.857140, abs=1e-5)
    assert q_utils.linear_quantize(x, s, z).tolist() == [0, 54, 94, 109, 116, 134, 175, 255]


# ---- all options against the reference -------------------------------------------------------
@pytest.mark.parametrize("num_bits", [2, 4, 8, 16])
@pytest.mark.parametrize("restrict", [False, True])
def test_symmetric_params_match_reference(gen, num_bits, restrict):
    sat = torch.rand(500, generator=gen) * torch.logspace(-3, 3, 500)
    sat[:3] = torch.tensor([0.0, 1.0, 127.5])
    s, z = q_utils.symmetric_linear_quantization_params(num_bits, sat, restrict)
    rs, rz = ref_symmetric(num_bits, sat, restrict)
    same(s, rs)
    same(z, rz)


@pytest.mark.parametrize("num_bits", [2, 4, 8, 16])
@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("integral", [False, True])
def test_asymmetric_params_match_reference(gen, num_bits, signed, integral):
    a = torch.randn(500, generator=gen) * 5
    b = torch.randn(500, generator=gen) * 5
    lo, hi = torch.min(a, b), torch.max(a, b)
    lo[:2] = torch.tensor([0.0, 3.0])
    hi[:2] = torch.tensor([0.0, 3.0])
    s, z = q_utils.asymmetric_linear_quantization_params(num_bits, lo, hi, integral, signed)
    rs, rz = ref_asymmetric(num_bits, lo, hi, integral, signed)
    same(s, rs)
    same(z, rz)


def test_scale_is_torch_rdiv_bit_for_bit(gen):
    """Distiller writes ``n / sat``; torch evaluates a number divided by a tensor as
    ``reciprocal(sat) * n`` (two roundings). The core's ``reciprocal_multiplier`` rule gives
    exactly that over random saturations of every magnitude; a single division would differ
    in about a quarter of them (so this test can tell the two apart)."""
    sat = torch.rand(20000, generator=gen) * torch.logspace(-6, 6, 20000)
    for num_bits, restrict in [(8, False), (8, True), (4, False), (13, True)]:
        n = 2 ** (num_bits - 1) - 1 if restrict else (2 ** num_bits - 1) / 2
        s, _ = q_utils.symmetric_linear_quantization_params(num_bits, sat, restrict)
        same(s, sat.reciprocal() * n)
        assert int((s != torch.full_like(sat, n) / sat).sum()) > 1000
    lo = -torch.rand(20000, generator=gen) * torch.logspace(-5, 5, 20000)
    hi = torch.rand(20000, generator=gen) * torch.logspace(5, -5, 20000)
    s, z = q_utils.asymmetric_linear_quantization_params(8, lo, hi)
    diff = hi - lo
    same(s, diff.reciprocal() * 255)
    same(z, torch.round(s * lo))
    assert int((s != torch.full_like(diff, 255.0) / diff).sum()) > 1000
    # scalar inputs too (Python floats in and out)
    assert q_utils.symmetric_linear_quantization_params(8, 0.3)[0] == 425.0  # 424.99997 by /


@pytest.mark.parametrize("mode", list(LinearQuantMode))
@pytest.mark.parametrize("num_bits", [3, 8])
def test_fake_quantized_values_bit_for_bit_over_random_ranges(gen, mode, num_bits):
    """Parameters and fake-quantized values of random ranges, bit for bit against the plain
    reference (the one-ulp scale difference used to change ~22% of the elements)."""
    for _ in range(20):
        a, b = (torch.randn(2, generator=gen) * torch.rand(2, generator=gen) * 100).tolist()
        tmin, tmax = min(a, b), max(a, b)
        x = torch.randn(500, generator=gen) * max(abs(tmin), abs(tmax))
        out, _, s, z = ref_fake_linear(x, mode, num_bits, tmin, tmax)
        if mode in (LinearQuantMode.SYMMETRIC, LinearQuantMode.SYMMETRIC_RESTRICTED):
            max_abs = torch.tensor([max(abs(tmin), abs(tmax))])
            gs, gz = q_utils.symmetric_linear_quantization_params(
                num_bits, max_abs, mode == LinearQuantMode.SYMMETRIC_RESTRICTED)
            lo, hi = -max_abs.item(), max_abs.item()
        else:
            gs, gz = q_utils.asymmetric_linear_quantization_params(
                num_bits, torch.tensor([tmin]), torch.tensor([tmax]),
                signed=mode == LinearQuantMode.ASYMMETRIC_SIGNED)
            lo, hi = tmin, tmax
        same(gs, s)
        same(gz, z)
        y = q_utils.LinearQuantizeSTE.apply(torch.clamp(x, lo, hi), gs, gz, True, False)
        same(y, out)


def test_linear_quantize_and_dequantize(gen):
    x = torch.randn(4, 3, 5, generator=gen) * 3
    # per-channel tensor parameters broadcast like Distiller's weight quantization
    s = torch.rand(4, 1, 1, generator=gen) * 30 + 1
    zp = torch.round(torch.randn(4, 1, 1, generator=gen) * 10)
    q = q_utils.linear_quantize(x, s, zp)
    same(q, torch.round(s * x - zp))
    same(q_utils.linear_dequantize(q, s, zp), (q + zp) / s)
    same(q_utils.linear_quantize_clamp(x, s, zp, -20, 20),
         torch.clamp(torch.round(s * x - zp), -20, 20))
    # scalar parameters, in place
    y = x.clone()
    r = q_utils.linear_quantize(y, 12.5, -3.0, inplace=True)
    assert r is y
    same(y, torch.round(12.5 * x - -3.0))
    q_utils.linear_dequantize(y, 12.5, -3.0, inplace=True)
    same(y, (torch.round(12.5 * x + 3.0) + -3.0) / 12.5)
    # non-integral zero point (integral_zero_point=False)
    same(q_utils.linear_quantize(x, 21.25, -42.5), torch.round(21.25 * x + 42.5))
    # per-row parameters on a 2-d weight (shape (C, 1))
    w = torch.randn(6, 7, generator=gen)
    sw = torch.rand(6, 1, generator=gen) * 50 + 10
    same(q_utils.linear_quantize(w, sw, torch.zeros(6, 1)), torch.round(sw * w - 0))


def test_linear_quantize_degenerate_inputs():
    x = torch.tensor([math.nan, 1.0, 2.0 ** 30, -math.inf, -0.001])
    q = q_utils.linear_quantize(x, 1.0, 0.0)
    assert math.isnan(q[0]) and q[1] == 1.0 and q[4] == 0
    # codes are limited to the core's exact range +-2^24 (Distiller: unclamped)
    assert q[2] == 2 ** 24 and q[3] == -2 ** 24
    with pytest.raises(ValueError, match="non-integer"):
        q_utils.linear_dequantize(torch.tensor([0.5]), 1.0, 0.0)


def test_linear_quantize_ste_gradient_is_identity(gen):
    x = (torch.randn(20, generator=gen) * 4).requires_grad_(True)
    dy = torch.randn(20, generator=gen)
    for deq in (True, False):
        (dx,) = torch.autograd.grad(q_utils.LinearQuantizeSTE.apply(x, 10.0, 0.0, deq, False),
                                    x, dy)
        same(dx, dy)


def test_get_tensor_min_max(gen):
    t = torch.randn(3, 4, 5, generator=gen)
    mn, mx = q_utils.get_tensor_min_max(t)
    same(mn, t.min())
    same(mx, t.max())
    for d in (0, 1, 2):
        mn, mx = q_utils.get_tensor_min_max(t, per_dim=d)
        v = t.reshape([t.shape[i] for i in range(d + 1)] + [-1])
        same(mn, v.min(dim=-1)[0])
        same(mx, v.max(dim=-1)[0])
    same(q_utils.get_tensor_max_abs(t, 0), t.reshape(3, -1).abs().max(dim=-1)[0])
    with pytest.raises(ValueError, match="per_dim"):
        q_utils.get_tensor_min_max(t, per_dim=3)
    t[1, 1, 1] = math.nan
    assert torch.isnan(q_utils.get_tensor_min_max(t)[0])


def test_get_quantized_range():
    assert q_utils.get_quantized_range(8, signed=False) == (0, 255)
    assert q_utils.get_quantized_range(8) == (-128, 127)
    assert q_utils.get_quantized_range(8, signed_restrict_qrange=True) == (-127, 127)


def test_errors():
    with pytest.raises(ValueError, match="Saturation value must be >= 0"):
        q_utils.symmetric_linear_quantization_params(8, -1.0)
    with pytest.raises(ValueError, match="saturation_min must be smaller"):
        q_utils.asymmetric_linear_quantization_params(8, 2.0, 1.0)
    with pytest.raises(ValueError, match="not finite"):
        q_utils.symmetric_linear_quantization_params(8, math.nan)
    with pytest.raises(ValueError, match="not finite"):
        q_utils.asymmetric_linear_quantization_params(8, -math.inf, 1.0)
    with pytest.raises(ValueError, match="num_bits"):
        q_utils.symmetric_linear_quantization_params(32, 1.0)
    with pytest.raises(ValueError, match="Unknown quantization mode"):
        FakeLinearQuantization(mode="NOPE")


# ---- FakeLinearQuantization ------------------------------------------------------------------
def ref_fake_linear(x, mode, num_bits, tmin, tmax):
    """SPEC §5.2 steps 2-4 (eval with trained parameters)."""
    if mode in (LinearQuantMode.SYMMETRIC, LinearQuantMode.SYMMETRIC_RESTRICTED):
        max_abs = max(abs(tmin), abs(tmax))
        lo, hi = -max_abs, max_abs
        s, z = ref_symmetric(num_bits, max_abs, mode == LinearQuantMode.SYMMETRIC_RESTRICTED)
    else:
        lo, hi = tmin, tmax
        s, z = ref_asymmetric(num_bits, tmin, tmax,
                              signed=mode == LinearQuantMode.ASYMMETRIC_SIGNED)
    xc = torch.clamp(x, lo, hi)
    out = (torch.round(s * xc - z) + z) / s
    mask = ((x >= lo) & (x <= hi)).float()
    return out, mask, s, z


@pytest.mark.parametrize("mode", list(LinearQuantMode))
@pytest.mark.parametrize("num_bits", [4, 8])
def test_fake_linear_quantization_eval(gen, mode, num_bits):
    tmin, tmax = -1.25, 2.5
    fq = FakeLinearQuantization(num_bits, mode)
    _, _, s, z = ref_fake_linear(torch.zeros(1), mode, num_bits, tmin, tmax)
    with torch.no_grad():
        fq.tracked_min.fill_(tmin)
        fq.tracked_max.fill_(tmax)
        fq.scale.copy_(s)
        fq.zero_point.copy_(z)
    fq.eval()
    x = (torch.randn(200, generator=gen) * 2).requires_grad_(True)
    y = fq(x)
    out, mask, _, _ = ref_fake_linear(x.detach(), mode, num_bits, tmin, tmax)
    same(y.detach(), out)
    (dx,) = torch.autograd.grad(y, x, torch.ones(200))
    same(dx, mask)
    if mode == LinearQuantMode.SYMMETRIC and num_bits == 8:   # 257 levels
        assert int(torch.round(s * torch.tensor(2.5)).item()) == 128
    fq.dequantize = False
    codes = fq(x.detach())
    same(codes, torch.round(s * torch.clamp(x.detach(), *((-2.5, 2.5) if mode.value <= 2
                                                          else (tmin, tmax))) - z))


def test_fake_linear_quantization_before_training_outputs_zero(gen):
    fq = FakeLinearQuantization().eval()
    x = torch.randn(10, generator=gen)
    y = fq(x)
    assert y.abs().sum().item() == 0.0


def test_wrapper_and_repr():
    w = FakeQuantizationWrapper(torch.nn.ReLU(inplace=True), 8, LinearQuantMode.SYMMETRIC, 0.999)
    assert w.fake_q.inplace is True
    assert "mode=SYMMETRIC, num_bits=8, ema_decay=0.9990" in repr(w)
    w.eval()
    assert w(torch.randn(5)).abs().sum().item() == 0.0


# ---- EMA (SPEC §5.2, §10.4) ------------------------------------------------------------------
def ref_update_ema(biased_ema, value, decay, step):
    """Distiller's update_ema on its own tensor types (float32; decay 0-d, step (1,))."""
    biased_ema = biased_ema * decay + (1 - decay) * value
    unbiased_ema = biased_ema / (1 - decay ** step)
    return biased_ema, unbiased_ema


def test_update_ema_matches_reference(gen):
    decay = torch.tensor(0.999)
    biased = torch.zeros(1)
    for step in range(1, 30):
        v = torch.randn(1, generator=gen) * 3
        b, u = q_utils.update_ema(biased, v, decay, torch.tensor([float(step)]))
        rb, ru = ref_update_ema(biased, v, decay, torch.tensor([float(step)]))
        same(b, rb)
        assert abs(u.item() - ru.item()) <= abs(ru.item()) * 2 ** -23   # powf vs torch.pow
        biased = rb
    # element-wise on vectors, decay as a float
    b = torch.randn(5, generator=gen)
    v = torch.randn(5, generator=gen)
    rb, ru = ref_update_ema(b, v, torch.tensor(0.9), torch.tensor([3.0]))
    gb, gu = q_utils.update_ema(b, v, 0.9, 3)
    same(gb, rb)
    assert torch.allclose(gu, ru, rtol=2 ** -22, atol=0)


def test_fake_linear_quantization_training_spec_10_4():
    fq = FakeLinearQuantization(8, LinearQuantMode.SYMMETRIC, 0.999).train()
    expect = [((-1.0, 2.0), 63.75), ((-0.74987990, 1.4997598), 85.013611),
              ((-1.5006579, 2.3339860), 54.627575)]
    for (lo, hi), ((tmin, tmax), scale) in zip([(-1, 2), (-0.5, 1), (-3, 4)], expect):
        x = torch.tensor([lo, 0.3, hi])
        y = fq(x)
        assert fq.tracked_min.item() == pytest.approx(tmin, abs=2e-7)
        assert fq.tracked_max.item() == pytest.approx(tmax, abs=2e-7)
        assert fq.scale.item() == pytest.approx(scale, rel=1e-7)
        out, _, s, _ = ref_fake_linear(x, LinearQuantMode.SYMMETRIC, 8, fq.tracked_min.item(),
                                       fq.tracked_max.item())
        same(fq.scale, s)
        same(y, out)
    assert fq.iter_count.item() == 3


@pytest.mark.parametrize("mode", list(LinearQuantMode))
def test_fake_linear_quantization_training_matches_reference(gen, mode):
    fq = FakeLinearQuantization(8, mode, 0.9).train()
    decay = torch.tensor(0.9)
    bmin, bmax, count = torch.zeros(1), torch.zeros(1), torch.zeros(1)
    for _ in range(5):
        x = torch.randn(64, generator=gen) * 2 + 0.5
        count = count + 1
        bmin, umin = ref_update_ema(bmin, x.min(), decay, count)
        bmax, umax = ref_update_ema(bmax, x.max(), decay, count)
        y = fq(x)
        same(fq.tracked_min_biased, bmin)
        same(fq.tracked_max_biased, bmax)
        assert torch.allclose(fq.tracked_min, umin, rtol=2 ** -22, atol=0)
        assert torch.allclose(fq.tracked_max, umax, rtol=2 ** -22, atol=0)
        out, _, s, z = ref_fake_linear(x, mode, 8, fq.tracked_min.item(), fq.tracked_max.item())
        same(fq.scale, s)
        same(fq.zero_point, z)
        same(y, out)
    # eval keeps the parameters
    before = fq.state_dict()
    fq.eval()
    fq(torch.randn(8, generator=gen) * 100)
    for k, v in fq.state_dict().items():
        same(v, before[k])


def test_fake_linear_quantization_rejects_nan_batch():
    fq = FakeLinearQuantization().train()
    fq(torch.tensor([-1.0, 2.0]))
    before = {k: v.clone() for k, v in fq.state_dict().items()}
    with pytest.raises(ValueError, match="NaN or Inf"):
        fq(torch.tensor([0.0, math.nan]))
    for k, v in fq.state_dict().items():
        same(v, before[k])
    with pytest.raises(ValueError):
        FakeLinearQuantization(ema_decay=1.0)


def test_mode_by_name_and_update_ema_in_range_linear():
    assert FakeLinearQuantization(mode="ASYMMETRIC_SIGNED").mode is \
        LinearQuantMode.ASYMMETRIC_SIGNED
    b, v = torch.tensor([0.5]), torch.tensor([2.0])
    same(range_linear.update_ema(b, v, 0.99, 4)[0], q_utils.update_ema(b, v, 0.99, 4)[0])
    same(range_linear.update_ema(b, v, 0.99, 4)[0], ref_update_ema(b, v, torch.tensor(0.99),
                                                                   torch.tensor([4.0]))[0])
    with pytest.raises(ValueError, match="step"):
        q_utils.update_ema(b, v, 0.99, 0)
