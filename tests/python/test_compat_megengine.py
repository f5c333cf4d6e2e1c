"""qkit.compat.megengine against MegEngine's semantics (SPEC.md §3, §9, §10.2 C/C', §10.4,
§10.5, §10.6 and the seed document 001). References are plain torch written from SPEC §3 (one
float32 op per step); nothing here calls qkit except the module under test (and, for the
learned-range parameter sums, the documented summation order in reference.ordered_sum).
"""
import copy
import math
import warnings

import numpy as np
import pytest
import torch

import reference as ref
from qkit.compat.megengine import dtype as mdt
from qkit.compat.megengine import fake_quant, utils
from qkit.compat.megengine.utils import LSQParams, QParams, QuantMode, create_qparams

X = torch.tensor([-1.5, -0.75, -0.2, 0.0, 0.1, 0.35, 0.9, 2.0])
DTYPES = ["quint8", "qint8", "qint8_narrow", "quint4", "qint4", "qint1", "quint2", "qint2"]
RANGES = {"quint8": (0, 255), "qint8": (-128, 127), "qint8_narrow": (-127, 127),
          "quint4": (0, 15), "qint4": (-8, 7), "qint1": (0, 1), "quint2": (0, 3),
          "qint2": (-2, 1), "qint32": (-(2 ** 31), 2 ** 31 - 1)}


def same(a, b):
    assert a.shape == b.shape, (a.shape, b.shape)
    a, b = a.float(), b.float()
    eq = (a == b) | (torch.isnan(a) & torch.isnan(b))
    assert bool(eq.all()), (a[~eq], b[~eq])


# ---- plain references (SPEC §3.2, §3.3) ----------------------------------------------------------
def ref_fake_quant(x, s, z, qmin, qmax):
    """(out, grad mask) of MegEngine's naive FakeQuant; s, z broadcast to x."""
    t = ref.rhaz(x / s) + z
    out = (ref.clamp_keep_nan(t, qmin, qmax) - z) * s
    mask = (t >= qmin) & (t <= qmax)
    return out, mask


def ref_calculate_qparams(mn, mx, mode, qmin, qmax, eps=1e-5):
    mn = torch.minimum(torch.tensor(0.0), torch.as_tensor(mn, dtype=torch.float32))
    mx = torch.maximum(torch.tensor(0.0), torch.as_tensor(mx, dtype=torch.float32))
    eps = torch.tensor(eps, dtype=torch.float32)
    if mode == QuantMode.SYMMERTIC:
        return torch.maximum(torch.maximum(-mn, mx) / ((qmax - qmin) / 2), eps), None
    scale = torch.maximum((mx - mn) / torch.tensor(float(qmax - qmin)), eps)
    return scale, qmin - ref.rhaz(mn / scale)


# ---- dtypes (SPEC §3.1) --------------------------------------------------------------------------
def test_builtin_dtype_table():
    for name, (lo, hi) in RANGES.items():
        meta = mdt._builtin_quant_dtypes[name]
        assert (meta.name, meta.qmin, meta.qmax) == (name, lo, hi)
        assert meta.is_unsigned == name.startswith("qu")
        assert copy.copy(meta) is meta and copy.deepcopy(meta) is meta
    assert mdt._builtin_quant_dtypes["qint8"] == mdt.QuantDtypeMeta(
        "qint8", "QuantizedS8", "int8", -128, 127)


def test_dtype_constructors_and_metadata():
    d = mdt.qint8(0.25)
    assert d == np.int8 and mdt.is_quantize(d) and mdt.get_scale(d) == 0.25
    d = mdt.quint8(0.5, 128)
    assert d == np.uint8 and mdt.get_zero_point(d) == 128
    assert mdt.get_scale(mdt.qint4(0.1)) == pytest.approx(0.1)
    assert mdt.get_zero_point(mdt.quint4(1.0, 3)) == 3
    assert mdt.qint32(2.0) == np.int32
    assert not mdt.is_quantize(np.dtype("int8"))
    with pytest.raises(ValueError, match="zero_point"):
        mdt.quint8(0.5, 256)
    with pytest.raises(ValueError, match="integer"):
        mdt.quint4(0.5, 1.5)
    with pytest.raises(ValueError, match="zero_point"):
        mdt.create_quantized_dtype(mdt._builtin_quant_dtypes["qint8"], 0.5, 3)
    with pytest.raises(ValueError, match="cname"):
        mdt.create_quantized_dtype(mdt._builtin_quant_dtypes["qint2"], 0.5, None)


def test_quant_mode_spelling_and_create_qparams():
    assert QuantMode.SYMMERTIC.value == 1 and QuantMode.ASYMMERTIC.value == 2
    assert QuantMode.SYMMETRIC is QuantMode.SYMMERTIC
    qp = create_qparams(QuantMode.ASYMMERTIC, "quint8", torch.tensor(0.5), torch.tensor(3.0))
    assert qp.dtype_meta is mdt._builtin_quant_dtypes["quint8"] and qp.mode is QuantMode.ASYMMERTIC
    assert qp == QParams(QuantMode.ASYMMERTIC, mdt._builtin_quant_dtypes["quint8"],
                         torch.tensor(0.5), torch.tensor(3.0))
    assert qp != create_qparams(QuantMode.ASYMMERTIC, "quint8", torch.tensor(0.5),
                                torch.tensor(4.0))
    other = QParams(None, None, None, None)
    other.update(qp)
    assert other == qp
    assert "scale" in repr(qp)
    with pytest.raises(KeyError):
        create_qparams(QuantMode.SYMMERTIC, "qint7")
    with pytest.raises(AssertionError):
        create_qparams("symmetric", "qint8")
    assert create_qparams(None, "qint8").mode is None


# ---- fake_quant_tensor (SPEC §3.2) ---------------------------------------------------------------
def test_spec_10_2_rows_c_and_c_prime():
    for name, s, q in [("qint8", 0.015686275, [-96, -48, -13, 0, 6, 22, 57, 127]),
                       ("qint8_narrow", 0.015748031, [-95, -48, -13, 0, 6, 22, 57, 127])]:
        lo, hi = RANGES[name]
        scale, _ = ref_calculate_qparams(-1.5, 2.0, QuantMode.SYMMERTIC, lo, hi)
        assert abs(scale.item() - s) < 1e-9
        out = utils.fake_quant_tensor(X, create_qparams(QuantMode.SYMMERTIC, name, scale))
        same(out, torch.tensor(q, dtype=torch.float32) * scale)


def test_rounding_is_half_away_from_zero():
    # Code beats docs: C round. x/s = ±0.5, ±1.5, ±2.5 -> ±1, ±2, ±3.
    x = torch.tensor([-1.25, -0.75, -0.25, 0.25, 0.75, 1.25])
    qp = create_qparams(QuantMode.SYMMERTIC, "qint8", torch.tensor(0.5))
    same(utils.fake_quant_tensor(x, qp), torch.tensor([-3.0, -2, -1, 1, 2, 3]) * 0.5)


@pytest.mark.parametrize("name", DTYPES)
@pytest.mark.parametrize("mode", [QuantMode.SYMMERTIC, QuantMode.ASYMMERTIC])
def test_fake_quant_tensor_matches_reference(name, mode, gen):
    lo, hi = RANGES[name]
    x = (torch.randn(4, 3, 5, generator=gen) * 2).requires_grad_()
    x.data[0, 0, :4] = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0])
    s = torch.tensor(0.0625 if hi > 3 else 0.7)
    z = torch.tensor(float((lo + hi) // 2)) if mode == QuantMode.ASYMMERTIC else None
    out = utils.fake_quant_tensor(x, create_qparams(mode, name, s, z))
    zz = z if z is not None else torch.tensor(0.0)
    rout, mask = ref_fake_quant(x.detach(), s, zz, lo, hi)
    same(out, rout)
    dy = torch.randn(x.shape, generator=gen)
    out.backward(dy)
    same(x.grad, torch.where(mask, dy, torch.zeros_like(dy)))


def test_fake_quant_tensor_per_channel_broadcast(gen):
    x = torch.randn(2, 3, 4, 4, generator=gen)
    s = torch.tensor([0.01, 0.1, 0.05]).reshape(1, 3, 1, 1)
    z = torch.tensor([100.0, 128.0, 3.0]).reshape(1, 3, 1, 1)
    out = utils.fake_quant_tensor(x, create_qparams(QuantMode.ASYMMERTIC, "quint8", s, z))
    same(out, ref_fake_quant(x, s, z, 0, 255)[0])
    # a scalar zero point with per-channel scales (MegEngine broadcasts both)
    out = utils.fake_quant_tensor(x, create_qparams(QuantMode.ASYMMERTIC, "quint8", s,
                                                    torch.tensor(7.0)))
    same(out, ref_fake_quant(x, s, torch.tensor(7.0), 0, 255)[0])
    with pytest.raises(ValueError, match="scale"):
        utils.fake_quant_tensor(x, create_qparams(QuantMode.SYMMERTIC, "qint8",
                                                  torch.ones(1, 3, 4, 1)))


def test_gradient_mask_uses_rounded_value():
    # z = 0, [-128, 127]: passes exactly -128.5 < x/s < 127.5 (ties round outward).
    s = torch.tensor(1.0)
    x = torch.tensor([-128.5, -128.49, 127.49, 127.5], requires_grad=True)
    utils.fake_quant_tensor(x, create_qparams(QuantMode.SYMMERTIC, "qint8", s)).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 0.0]


def test_nan_propagates_with_zero_gradient():
    x = torch.tensor([float("nan"), 1.0], requires_grad=True)
    out = utils.fake_quant_tensor(x, create_qparams(QuantMode.SYMMERTIC, "qint8",
                                                    torch.tensor(0.1)))
    assert math.isnan(out[0].item())
    out.sum().backward()
    assert x.grad.tolist() == [0.0, 1.0]


def test_fake_quant_tensor_bad_qparams():
    with pytest.raises(AssertionError, match="scale"):
        utils.fake_quant_tensor(X, create_qparams(QuantMode.SYMMERTIC, "qint8", None))
    with pytest.raises(ValueError, match="scale"):
        utils.fake_quant_tensor(X, create_qparams(QuantMode.SYMMERTIC, "qint8",
                                                  torch.tensor(0.0)))
    with pytest.raises(ValueError, match="scale"):
        utils.fake_quant_tensor(X, create_qparams(QuantMode.SYMMERTIC, "qint8",
                                                  torch.tensor(float("nan"))))


def test_fake_quant_bias():
    class T(torch.Tensor):
        pass
    inp, w = torch.ones(1).as_subclass(T), torch.ones(1).as_subclass(T)
    inp.qparams = create_qparams(QuantMode.SYMMERTIC, "qint8", torch.tensor(0.5))
    w.qparams = create_qparams(QuantMode.SYMMERTIC, "qint8_narrow", torch.tensor(0.25))
    bias = torch.tensor([0.1, -0.2, 1e9, 0.0625])
    # qint32 codes are not exact in float32: qkit's core refuses the range (docs/compat.md)
    with pytest.raises(ValueError, match="2\\^24"):
        utils.fake_quant_bias(bias, inp, w)
    # asymmetric or non-int8 qparams: bias unchanged
    w.qparams = create_qparams(QuantMode.SYMMERTIC, "quint8", torch.tensor(0.25))
    assert utils.fake_quant_bias(bias, inp, w) is bias
    assert utils.fake_quant_bias(bias, torch.ones(1), w) is bias


# ---- TQT / LSQ functions and modules (SPEC §3.4, §10.5, §10.6) -------------------------------------
def test_tqt_forward_spec_10_6():
    x = torch.tensor([-16.0, -0.3, 0.1, 15.9, 15.95], requires_grad=True)
    log2_t = torch.tensor(-3.0, requires_grad=True)
    y = utils.tqt_forward(-127, 127, x, log2_t)
    same(y, torch.tensor([-15.875, -0.25, 0.125, 15.875, 15.875]))
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]
    terms = torch.tensor([-11.003712, 0.034657367, 0.017328678, -0.017328415, 11.003712])
    out, dx, t0, _ = ref.tqt(x.detach(), torch.ones(5), log2_t.reshape(1), -127, 127)
    torch.testing.assert_close(t0, terms, rtol=1e-6, atol=0)
    same(log2_t.grad.reshape(1), ref.ordered_sum(t0).reshape(1))


def test_tqt_forward_per_channel(gen):
    x = torch.randn(3, 5, generator=gen) * 4
    log2_t = torch.tensor([[-3.0], [-1.5], [0.25]])
    out = utils.tqt_forward(-128, 127, x, log2_t)
    same(out, ref.tqt(x, torch.ones_like(x), log2_t.reshape(-1), -128, 127, axis=0)[0])


def test_lsq_forward_spec_10_5():
    x = torch.tensor([-13.0, -0.26, 0.04, 0.05, 0.15, 12.74, 12.8], requires_grad=True)
    s = torch.tensor([0.1], requires_grad=True)
    y = utils.lsq_forward(-128, 127, x, s, torch.tensor([0.0]))
    same(y, torch.tensor([-12.8, -0.3, 0.0, 0.1, 0.2, 12.7, 12.7]))
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 1, 1, 1, 1, 0, 0]
    gs = torch.tensor([-128.0, -0.40000009536743164, -0.3999999761581421, 0.5, 0.5, 127.0,
                       127.0])
    _, _, t0, _ = ref.lsq_megengine(x.detach(), torch.ones(7), s, torch.zeros(1), -128, 127, 1.0)
    same(t0, gs)
    same(s.grad, ref.ordered_sum(gs).reshape(1))


def test_lsq_upstream_golden_shape():
    # SPEC §3.4 test_lsq: 24 integers with every |x/s| > 127, s = 0.02918224, z = 1,
    # grad_scale 2, [-127, 127]: out is 126·s or -128·s, dx = 0, sum ds = (11 - 13)·127·2.
    x = torch.tensor([4.0, 9, 17, 25, 33, 48, 56, 64, 77, 90, 109,
                      -121, -110, -95, -80, -64, -50, -37, -30, -22, -15, -9, -6, -5],
                     requires_grad=True)
    s = torch.tensor([0.02918224], requires_grad=True)
    y = utils.lsq_forward(-127, 127, x, s, torch.tensor([1.0]), torch.tensor([2.0]))
    expect = torch.where(x.detach() > 0, 126 * s.detach(), -128 * s.detach())
    same(y, expect)
    y.sum().backward()
    assert x.grad.abs().sum().item() == 0
    assert s.grad.item() == -508.0
    with pytest.raises(ValueError, match="scale_grad"):
        utils.lsq_forward(-127, 127, x, s, None, torch.tensor([1.0, 2.0]))


def test_fake_quantize_module():
    m = fake_quant.FakeQuantize("qint8")
    qp = create_qparams(QuantMode.SYMMERTIC, "qint8", torch.tensor(0.5))
    x = torch.tensor([-1.25, 0.25, 100.0])
    same(m(x, qp), torch.tensor([-1.5, 0.5, 63.5]))
    m.disable()
    assert m(x, qp) is x and m.enabled is False
    m.enable()
    with pytest.raises(AssertionError, match="dtype"):
        m(x, create_qparams(QuantMode.SYMMERTIC, "qint8_narrow", torch.tensor(0.5)))
    with pytest.raises(ValueError, match="unknown dtype"):
        fake_quant.FakeQuantize("qint7")
    with pytest.warns(DeprecationWarning, match="narrow_range"):
        m = fake_quant.FakeQuantize("qint8", narrow_range=True)
    assert (m.qmin, m.qmax) == (-128, 127)  # ignored, as MegEngine
    with pytest.raises(TypeError):
        fake_quant.FakeQuantize("qint8", bogus=1)
    meta = mdt._builtin_quant_dtypes["quint4"]
    assert fake_quant.FakeQuantize(meta).dtype is meta


def test_tqt_module():
    m = fake_quant.TQT("qint8_narrow")
    assert m.scale.item() == 0.0 and isinstance(m.scale, torch.nn.Parameter)
    m.set_qparams(create_qparams(QuantMode.SYMMERTIC, "qint8_narrow", torch.tensor(0.125)))
    assert m.scale.item() == -3.0
    x = torch.tensor([-16.0, -0.3, 0.1, 15.9, 15.95], requires_grad=True)
    y = m(x)
    same(y, torch.tensor([-15.875, -0.25, 0.125, 15.875, 15.875]))
    y.sum().backward()
    _, _, t0, _ = ref.tqt(x.detach(), torch.ones(5), torch.tensor([-3.0]), -127, 127)
    same(m.scale.grad.reshape(1), ref.ordered_sum(t0).reshape(1))
    qp = m.get_qparams()
    assert qp.mode is QuantMode.SYMMERTIC and qp.scale.item() == 0.125
    assert qp.dtype_meta is m.dtype
    assert mdt.get_scale(m.get_quantized_dtype()) == 0.125
    with pytest.raises(AssertionError, match="symmetric"):
        m.set_qparams(create_qparams(QuantMode.ASYMMERTIC, "qint8_narrow", torch.tensor(0.5),
                                     torch.tensor(0.0)))
    with pytest.raises(AssertionError, match="scale"):
        m.set_qparams(create_qparams(QuantMode.SYMMERTIC, "qint8_narrow", None))
    m.disable()
    assert m(x) is x


def test_lsq_module():
    m = fake_quant.LSQ("qint8")
    assert m.step_size.item() == 1.0 and m.eps == 1e-5 and m.mode is None
    m.set_qparams(LSQParams(QuantMode.ASYMMERTIC, m.dtype, torch.tensor(0.2),
                            torch.tensor(3.0), torch.tensor(2.0)))
    step = torch.tensor(0.2) - torch.tensor(1e-5)
    assert m.step_size.item() == step.item() and m.zero_point.item() == 3.0
    assert m.grad_scale == 2.0
    x = torch.linspace(-30, 30, 101, requires_grad=True)
    y = m(x)
    s_eff = step.abs() + torch.tensor(1e-5)
    rout, rdx, t0, _ = ref.lsq_megengine(x.detach(), torch.ones(101), s_eff.reshape(1),
                                         torch.tensor([3.0]), -128, 127, 2.0)
    same(y, rout)
    y.sum().backward()
    same(x.grad, rdx)
    same(m.step_size.grad.reshape(1), ref.ordered_sum(t0).reshape(1))
    qp = m.get_qparams()
    assert isinstance(qp, LSQParams) and qp.scale.item() == s_eff.item()
    assert qp.grad_scale.item() == 2.0 and qp.zero_point.item() == 3.0
    # a scale below eps gives step_size 0 (effective step eps)
    m.set_qparams(create_qparams(QuantMode.SYMMERTIC, "qint8", torch.tensor(1e-6)))
    assert m.step_size.item() == 0.0 and m.zero_point.item() == 0.0 and m.grad_scale == 2.0
    with pytest.raises(AssertionError, match="scale"):
        m.set_qparams(create_qparams(QuantMode.SYMMERTIC, "qint8", None))
    m.disable()
    assert m(x) is x


# ---- observers (SPEC §3.3, §10.4, seed 001) ------------------------------------------------------
from qkit.compat.megengine import observer as mobs  # noqa: E402

FLT_MAX = float(np.finfo(np.float32).max)


class RefEMA:
    """MegEngine's (Sync)ExponentialMovingAverageObserver.forward restated (float32 tensors)."""

    def __init__(self, momentum=0.9):
        self.momentum = torch.tensor(momentum, dtype=torch.float32)
        self.rm = torch.tensor(0.0)
        self.min_val = torch.tensor(FLT_MAX)
        self.max_val = torch.tensor(-FLT_MAX)

    def __call__(self, x):
        one = torch.tensor(1.0)
        self.min_val = self.min_val * self.rm + (one - self.rm) * x.min()
        self.max_val = self.max_val * self.rm + (one - self.rm) * x.max()
        self.rm = self.momentum.clone()


def check_qparams(qp, mn, mx, mode, name, eps=1e-5):
    lo, hi = RANGES[name]
    s, z = ref_calculate_qparams(mn, mx, mode, lo, hi, eps)
    assert qp.mode is mode and qp.dtype_meta is mdt._builtin_quant_dtypes[name]
    same(qp.scale.reshape(()), s.reshape(()))
    if z is None:
        assert qp.zero_point is None
    else:
        assert qp.zero_point.dtype == torch.float32
        same(qp.zero_point.reshape(()), z.reshape(()))


@pytest.mark.parametrize("name", ["qint8", "qint8_narrow", "quint8", "qint4", "quint4"])
@pytest.mark.parametrize("mode", [QuantMode.SYMMERTIC, QuantMode.ASYMMERTIC])
def test_minmax_observer_sequence(name, mode, gen):
    obs = mobs.MinMaxObserver(mode=mode, dtype=name)
    mn, mx = torch.tensor(FLT_MAX), torch.tensor(-FLT_MAX)
    for i in range(4):
        x = torch.randn(5, 7, generator=gen) * (i + 1) + (0.5 if i == 0 else 0.0)
        assert obs(x) is x
        mn, mx = torch.minimum(mn, x.min()), torch.maximum(mx, x.max())
        same(obs.min_val, mn)
        same(obs.max_val, mx)
        check_qparams(obs.get_qparams(), mn, mx, mode, name)
    # positive-only data: widened to [0, max]
    obs = mobs.MinMaxObserver(mode=mode, dtype=name)
    obs(torch.tensor([0.5, 3.0]))
    check_qparams(obs.get_qparams(), 0.5, 3.0, mode, name)


def test_minmax_observer_spec_10_2_and_fake_quantize_chain():
    obs = mobs.MinMaxObserver()
    obs(X)
    qp = obs.get_qparams()
    assert abs(qp.scale.item() - 0.015686275) < 1e-9
    out = fake_quant.FakeQuantize("qint8")(X, qp)
    same(out, torch.tensor([-96.0, -48, -13, 0, 6, 22, 57, 127]) * qp.scale)


def test_minmax_observer_enable_train_and_empty():
    obs = mobs.MinMaxObserver()
    qp = obs.get_qparams()  # sentinels widen to [0, 0]: scale eps
    assert qp.scale.item() == np.float32(1e-5) and qp.zero_point is None
    assert obs.min_val.item() == FLT_MAX and obs.max_val.item() == -FLT_MAX
    obs.eval()
    assert obs.enabled is False
    obs(torch.tensor([5.0]))
    assert obs.min_val.item() == FLT_MAX
    obs.train()
    obs(torch.tensor([5.0, -1.0]))
    obs.disable()
    obs(torch.tensor([50.0]))
    assert obs.max_val.item() == 5.0
    obs.enable()
    obs(torch.tensor([50.0]))
    assert obs.max_val.item() == 50.0
    qp = mobs.MinMaxObserver(mode=QuantMode.ASYMMERTIC, dtype="quint8").get_qparams()
    assert qp.scale.item() == np.float32(1e-5) and qp.zero_point.item() == 0.0


def test_constant_and_zero_inputs_floor_at_eps():
    for mode in (QuantMode.SYMMERTIC, QuantMode.ASYMMERTIC):
        obs = mobs.MinMaxObserver(mode=mode, dtype="quint8")
        obs(torch.zeros(5))
        check_qparams(obs.get_qparams(), 0.0, 0.0, mode, "quint8")
        obs = mobs.MinMaxObserver(mode=mode, eps=0.1)
        obs(torch.full((3,), 2.0))
        check_qparams(obs.get_qparams(), 2.0, 2.0, mode, "qint8", eps=0.1)


def test_nan_skipped_inf_raises():
    obs = mobs.MinMaxObserver()
    obs(torch.tensor([float("nan"), 1.0, -2.0]))
    check_qparams(obs.get_qparams(), -2.0, 1.0, QuantMode.SYMMERTIC, "qint8")
    obs(torch.tensor([float("inf")]))
    with pytest.raises(ValueError):
        obs.get_qparams()


def test_sync_minmax_observes_even_when_disabled():
    obs = mobs.SyncMinMaxObserver()
    obs.eval()
    obs(torch.tensor([3.0, -1.0]))  # MegEngine's `if self.enable:` is always true
    assert obs.max_val.item() == 3.0 and obs.min_val.item() == -1.0


@pytest.mark.parametrize("cls", [mobs.ExponentialMovingAverageObserver,
                                 mobs.SyncExponentialMovingAverageObserver])
def test_ema_spec_10_4_and_sequence(cls, gen):
    obs = cls()
    expect = [(-1.0, 2.0, 0.015686275), (-0.95, 1.9, 0.014901960),
              (-1.155, 2.1100001, 0.016549021)]
    for (mn, mx), (emn, emx, es) in zip([(-1, 2), (-0.5, 1), (-3, 4)], expect):
        obs(torch.tensor([float(mn), float(mx)]))
        assert abs(obs.min_val.item() - emn) < 1e-6 and abs(obs.max_val.item() - emx) < 1e-6
        assert abs(obs.get_qparams().scale.item() - es) < 1e-9
    # against the restated forward, every mode, momentum change included
    for mode, name in [(QuantMode.SYMMERTIC, "qint8"), (QuantMode.ASYMMERTIC, "quint8")]:
        obs, r = cls(momentum=0.8, mode=mode, dtype=name), RefEMA(0.8)
        for i in range(6):
            x = torch.randn(10, generator=gen) * (i + 1)
            if i == 2:
                obs.set_momentum(0.5)
                r.momentum = torch.tensor(0.5)  # read at the end of the next update
            if i == 4:
                obs.eval()  # disabled: no update
                obs(x)
                obs.train()
                continue
            obs(x)
            r(x)
            same(obs.min_val, r.min_val)
            same(obs.max_val, r.max_val)
            check_qparams(obs.get_qparams(), r.min_val, r.max_val, mode, name)


def test_ema_set_momentum_before_first_update():
    obs, r = mobs.ExponentialMovingAverageObserver(), RefEMA()
    obs.set_momentum(0.25)
    r.momentum = torch.tensor(0.25)
    assert obs.momentum.item() == 0.25
    for v in ([1.0, -1.0], [3.0, -0.5], [0.25, -4.0]):
        obs(torch.tensor(v))
        r(torch.tensor(v))
        same(obs.max_val, r.max_val)
        same(obs.min_val, r.min_val)


def ref_histogram_minmax(batches, bins, upsample_rate, dst_nbins):
    """MegEngine's HistogramObserver restated from the seed (numpy, float64 scalars), for
    batches that stay inside the first batch's range when bins * upsample_rate is a power of
    two (the counts then add exactly); returns the searched (min, max)."""
    x0 = batches[0].numpy()
    mn, mx = np.float32(x0.min()), np.float32(x0.max())
    hist = np.histogram(x0, bins, (mn, mx))[0].astype(np.float64)
    for b in batches[1:]:  # adjusted range == stored range (e = 0), as float64 scalars
        hist += np.histogram(b.numpy(), bins, (float(mn) - 0.0, float(mx) + 0.0))[0]
    bin_width = float(mx - mn) / bins
    total = hist.sum()
    csum = np.cumsum(hist)

    def qerr(a, b):
        dw = bin_width * (b - a + 1) / dst_nbins
        if dw == 0.0:
            return 0.0
        norm = 0.0
        for i in range(bins):
            sb = (i - a) * bin_width
            se = sb + bin_width
            db = min(dst_nbins - 1, max(0.0, math.floor(sb / dw)))
            de = min(dst_nbins - 1, max(0.0, math.floor(se / dw)))
            dens = hist[i] / bin_width

            def nrm(d0, d1):
                return dens * (d1 * d1 * d1 - d0 * d0 * d0) / 3
            if db == de:
                c = db * dw + dw / 2
                norm += nrm(sb - c, se - c)
            else:
                norm += nrm(sb - (db * dw + dw / 2), dw / 2)
                norm += (de - db - 1) * nrm(-dw / 2, dw / 2)
                norm += nrm(-dw / 2, se - (de * dw + dw / 2))
        return norm

    alpha, beta, start, end, norm_min = 0.0, 1.0, 0, bins - 1, float("inf")
    while alpha < beta:
        na, nb = alpha + 1e-5, beta - 1e-5
        l, r = start, end
        while l < end and csum[l] < na * total:
            l += 1
        while r > start and csum[r] > nb * total:
            r -= 1
        ns, ne = start, end
        if (l - start) > (end - r):
            ns, alpha = l, na
        else:
            ne, beta = r, nb
        if ns == start and ne == end:
            continue
        norm = qerr(ns, ne)
        if norm > norm_min:
            break
        norm_min, start, end = norm, ns, ne
    new_min = np.float32(mn + np.float32(bin_width * start))
    new_max = np.float32(mn + np.float32(bin_width * (end + 1)))
    return float(new_min), float(new_max)


@pytest.mark.parametrize("name,mode", [("qint8", QuantMode.SYMMERTIC),
                                       ("qint4", QuantMode.SYMMERTIC),
                                       ("quint8", QuantMode.ASYMMERTIC)])
def test_histogram_observer_matches_seed_algorithm(name, mode, gen):
    bins, up = 64, 16
    first = torch.randn(400, generator=gen)
    first[0], first[1] = -4.0, 5.0  # later batches stay inside [-4, 5]
    batches = [first] + [(torch.randn(300, generator=gen)).clamp(-3.9, 4.9) for _ in range(2)]
    obs = mobs.HistogramObserver(bins=bins, upsample_rate=up, dtype=name, mode=mode)
    assert obs.histogram[0].item() == -1
    obs.eval()  # HistogramObserver ignores `enabled`
    for b in batches:
        obs(b)
    assert obs.histogram.sum().item() == 1000
    lo, hi = RANGES[name]
    rmin, rmax = ref_histogram_minmax(batches, bins, up, hi - lo + 1)
    mn, mx = obs._non_linear_param_search()
    assert (mn.item(), mx.item()) == (rmin, rmax)
    check_qparams(obs.get_qparams(), rmin, rmax, mode, name)
    # A batch outside the range re-bins: the total is conserved (MegEngine's fractional
    # float32 counts are within 1 per bin of qkit's integers, docs/calibration.md §2).
    obs(torch.tensor([-9.0, 12.0, 0.0]))
    assert obs.histogram.sum().item() == 1003
    assert obs.min_val.item() <= -9.0 and obs.max_val.item() >= 12.0


def test_histogram_observer_empty_and_asymmetric():
    obs = mobs.HistogramObserver(mode=QuantMode.ASYMMERTIC, dtype="quint8", bins=32,
                                 upsample_rate=4)
    assert obs.get_qparams().scale.item() == np.float32(1e-5)
    with pytest.raises(ValueError):
        obs._non_linear_param_search()
    obs(torch.linspace(-1, 3, 100))
    qp = obs.get_qparams()
    assert qp.zero_point is not None and qp.scale.item() > 0


def test_passive_observer():
    obs = mobs.PassiveObserver("qint8")
    assert obs.get_qparams() is None
    qp = create_qparams(QuantMode.SYMMERTIC, "qint8", torch.tensor(0.25))
    obs.set_qparams(qp)
    got = obs.get_qparams()
    assert got is not qp and got.scale.item() == 0.25 and got.dtype_meta is obs.dtype
    assert obs.orig_scale == np.float32(0.25)
    x = torch.randn(3)
    assert obs(x) is x
    obs.scale = torch.tensor(0.5)
    assert obs.scale.item() == 0.5 and obs.orig_scale == np.float32(0.25)
    with pytest.raises(AssertionError):
        obs.scale = torch.tensor(-1.0)
    with pytest.raises(AssertionError, match="dtype"):
        obs.set_qparams(create_qparams(QuantMode.SYMMERTIC, "qint4", torch.tensor(0.25)))
    with pytest.raises(AssertionError, match="scale"):
        obs.set_qparams(create_qparams(QuantMode.SYMMERTIC, "qint8", None))
    with pytest.raises(ValueError):
        obs.set_qparams(create_qparams(QuantMode.SYMMERTIC, "qint8", torch.tensor(float("inf"))))
    obs2 = mobs.PassiveObserver("quint8")
    with pytest.raises(ValueError, match="zero_point"):
        obs2.set_qparams(QParams(QuantMode.ASYMMERTIC, None, torch.tensor(0.1),
                                 torch.tensor(300.0)))
    obs2.set_qparams(QParams(QuantMode.ASYMMERTIC, None, torch.tensor(0.1), torch.tensor(3.0)))
    assert obs2.get_qparams().dtype_meta is obs2.dtype


def test_observer_bad_arguments():
    with pytest.raises(ValueError, match="unknown dtype"):
        mobs.MinMaxObserver(dtype="int8")
    with pytest.raises(ValueError, match="mode"):
        mobs.MinMaxObserver(mode="symmetric")
    with pytest.warns(DeprecationWarning):
        mobs.MinMaxObserver(narrow_range=True)
    with pytest.raises(TypeError):
        mobs.ExponentialMovingAverageObserver(bogus=3)


# ---- Sync observers across two processes (gloo) ----------------------------------------------------
def _sync_worker(rank, world, init_file, out_dir):
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    g = torch.Generator().manual_seed(7)
    batches = [torch.randn(2, 8, generator=g) * (i + 1) for i in range(3)]
    mm = mobs.SyncMinMaxObserver(mode=QuantMode.ASYMMERTIC, dtype="quint8")
    ema = mobs.SyncExponentialMovingAverageObserver()
    for b in batches:
        mm(b[rank])  # each rank sees its shard (one row)
        ema(b[rank])
    torch.save({"mm": (mm.min_val, mm.max_val, mm.get_qparams().scale),
                "ema": (ema.min_val, ema.max_val, ema.get_qparams().scale)},
               f"{out_dir}/{rank}.pt")
    dist.destroy_process_group()


def test_sync_observers_two_ranks_equal_one_process(tmp_path):
    import torch.multiprocessing as mp
    mp.spawn(_sync_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    g = torch.Generator().manual_seed(7)
    batches = [torch.randn(2, 8, generator=g) * (i + 1) for i in range(3)]
    mm = mobs.MinMaxObserver(mode=QuantMode.ASYMMERTIC, dtype="quint8")
    ema = mobs.ExponentialMovingAverageObserver()
    for b in batches:  # one process seeing the whole batch
        mm(b)
        ema(b)
    expect = {"mm": (mm.min_val, mm.max_val, mm.get_qparams().scale),
              "ema": (ema.min_val, ema.max_val, ema.get_qparams().scale)}
    for rank in range(2):
        got = torch.load(tmp_path / f"{rank}.pt")
        for key in expect:
            for a, b in zip(got[key], expect[key]):
                same(a, b)


def test_ema_and_histogram_degenerate_inputs():
    ema = mobs.ExponentialMovingAverageObserver()
    ema(torch.zeros(4))
    check_qparams(ema.get_qparams(), 0.0, 0.0, QuantMode.SYMMERTIC, "qint8")  # scale eps
    ema(torch.tensor([float("nan"), 2.0, -1.0]))  # NaN skipped (MegEngine: NaN for good)
    r = RefEMA()
    r(torch.zeros(4))
    r(torch.tensor([2.0, -1.0]))
    same(ema.max_val, r.max_val)
    same(ema.min_val, r.min_val)
    # Constant stream: MegEngine's first call stores [c, c] (its second call would divide by
    # zero and raise); qkit keeps accepting it and searches on [c, c].
    hist = mobs.HistogramObserver(bins=32, upsample_rate=4)
    hist(torch.full((10,), 1.5))
    check_qparams(hist.get_qparams(), 1.5, 1.5, QuantMode.SYMMERTIC, "qint8")
    hist(torch.full((10,), 1.5))
    check_qparams(hist.get_qparams(), 1.5, 1.5, QuantMode.SYMMERTIC, "qint8")
    assert hist.histogram.sum().item() == 20
