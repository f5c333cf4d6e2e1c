"""qkit.compat.oneflow against OneFlow's semantics (SPEC.md §2, §9, §10.2 D/E/F, §10.4 and the
seed document 000). The references below are plain torch, written from SPEC §2 (one float32
op per step, as OneFlow's float kernels); nothing here calls qkit except the module under test.
"""
import itertools

import numpy as np
import pytest
import torch

import qkit.compat.oneflow as flow
from reference import rhaz

X = torch.tensor([-1.5, -0.75, -0.2, 0.0, 0.1, 0.35, 0.9, 2.0])


# ---- plain references (SPEC §2.2, §2.4, §2.5) -----------------------------------------------
def _rows(x, per_layer):
    return x.reshape(1, -1) if per_layer else x.reshape(x.shape[0], -1)


def ref_minmax(x, formula, bit, scheme, per_layer=True):
    r = _rows(x.float(), per_layer)
    mx, mn = r.max(dim=1).values, r.min(dim=1).values
    if formula == "cambricon":
        amax = torch.maximum(mx.abs(), mn.abs())
        shift = torch.floor(torch.log2(amax)) - (bit - 2)
        return shift, torch.zeros_like(shift)
    if scheme == "symmetric":
        amax = torch.maximum(mx.abs(), mn.abs())
        return amax / torch.tensor(float(2 ** (bit - 1)) - 1), torch.zeros_like(amax)
    scale = (mx - mn) / torch.tensor(float(2 ** bit) - 1)
    return scale, -torch.round(mn / scale)


def _bcast(p, x):
    p = p.float().reshape(-1)
    return p.reshape(()) if p.numel() == 1 else p.reshape([-1] + [1] * (x.dim() - 1))


def _clamp(v, lo, hi):  # OneFlow's two ternaries: NaN passes
    v = torch.where(v > hi, torch.full_like(v, hi), v)
    return torch.where(v < lo, torch.full_like(v, lo), v)


def ref_codes(x, scale, zp, formula, bit, scheme):
    """(codes, step, zero point used)."""
    x = x.float()
    if formula == "cambricon":
        step = torch.tensor(2.0 ** int(scale.reshape(-1)[0]))
        q = _clamp(torch.round(x / step), -(2 ** (bit - 1)), 2 ** (bit - 1) - 1)
        return q, step, torch.tensor(0.0)
    s = _bcast(scale, x)
    if scheme == "symmetric":
        hi = float(2 ** (bit - 1)) - 1
        return _clamp(torch.round(x / s), -hi - 1, hi), s, torch.tensor(0.0)
    zu = rhaz(_bcast(zp, x))
    return _clamp(torch.round(x / s + zu), 0, float(2 ** bit) - 1), s, zu


def ref_fake(x, scale, zp, formula, bit, scheme):
    q, s, zu = ref_codes(x, scale, zp, formula, bit, scheme)
    return (q - zu) * s


def same(a, b):
    """Bit-equal, NaN == NaN (signs of zero ignored, see docs/qparams.md)."""
    assert a.shape == b.shape, (a.shape, b.shape)
    a, b = a.float(), b.float()
    eq = (a == b) | (torch.isnan(a) & torch.isnan(b))
    assert bool(eq.all()), (a[~eq], b[~eq])


CONFIGS = [("google", "symmetric"), ("google", "affine"), ("cambricon", "symmetric"),
           ("cambricon", "affine")]  # cambricon ignores the scheme (OneFlow's kernels)


# ---- SPEC §10.2 D/E/F and §2.7 golden numbers --------------------------------------------------
def test_spec_10_2_golden_rows():
    s, z = flow.nn.MinMaxObserver("google", 8, "symmetric")(X)
    assert s.item() == np.float32(2.0) / np.float32(127.0) and z.item() == 0
    assert abs(s.item() - 0.015748031) < 1e-9
    q = flow.nn.Quantization("google", 8, "symmetric")(X, s, z)
    assert q.tolist() == [-95, -48, -13, 0, 6, 22, 57, 127]

    s, z = flow.nn.MinMaxObserver("google", 8, "affine")(X)
    assert abs(s.item() - 0.013725490) < 1e-9 and z.item() == 109
    q = flow.nn.Quantization("google", 8, "affine")(X, s, z)
    assert q.tolist() == [0, 54, 94, 109, 116, 134, 175, 255]

    s, z = flow.nn.MinMaxObserver("cambricon", 8, "symmetric")(X)
    assert s.tolist() == [-5.0] and z.tolist() == [0.0]
    q = flow.nn.Quantization("cambricon", 8, "symmetric")(X, s, z)
    assert q.tolist() == [-48, -24, -6, 0, 3, 11, 29, 64]
    out = flow.nn.FakeQuantization("cambricon", 8, "symmetric")(X, s, z)
    assert out.tolist() == [v / 32 for v in [-48, -24, -6, 0, 3, 11, 29, 64]]


def test_symmetric_clamp_is_full_signed_range_not_documented_narrow():
    # Code beats docs: -2.0 with s = 2/127 gives -127; -2.1 gives -128 (the docstring's
    # [-127, 127] would give -127).
    s = torch.tensor([2.0 / 127.0])
    x = torch.tensor([-2.1, -2.0, 2.1])
    q = flow.nn.Quantization()(x, s, torch.zeros(1))
    assert q.tolist() == [-128, -127, 127]


def test_affine_quantization_keeps_zero_point_added():
    s, z = torch.tensor([0.5]), torch.tensor([10.0])
    q = flow.nn.Quantization("google", 8, "affine")(torch.tensor([0.0, 1.0, -1.0]), s, z)
    assert q.tolist() == [10, 12, 8]  # docs would subtract the zero point: [0, 2, -2]


# ---- every option combination against the references -----------------------------------------
@pytest.mark.parametrize("formula,scheme", CONFIGS)
@pytest.mark.parametrize("bit", range(2, 9))
def test_observer_and_ops_match_reference_per_layer(formula, scheme, bit, gen):
    x = torch.randn(3, 5, 7, generator=gen) * 3
    s, z = flow.nn.MinMaxObserver(formula, bit, scheme)(x)
    rs, rz = ref_minmax(x, formula, bit, scheme)
    same(s, rs)
    same(z, rz)
    assert s.dtype == torch.float32 and s.shape == (1,) and z.shape == (1,)
    same(flow.nn.FakeQuantization(formula, bit, scheme)(x, s, z),
         ref_fake(x, s, z, formula, bit, scheme))
    same(flow.nn.Quantization(formula, bit, scheme)(x, s, z),
         ref_codes(x, s, z, formula, bit, scheme)[0])


@pytest.mark.parametrize("scheme", ["symmetric", "affine"])
@pytest.mark.parametrize("bit", [2, 4, 8])
def test_google_per_channel_matches_reference(scheme, bit, gen):
    x = torch.randn(4, 3, 5, generator=gen) * torch.tensor([0.1, 1.0, 10.0, 3.0]).reshape(4, 1, 1)
    x[:, 0, 0] = torch.tensor([-2.0, 0.5, -7.0, 1.0])  # both signs per channel
    x[:, 1, 1] = torch.tensor([0.3, -1.5, 12.0, -1.0])
    obs = flow.nn.MinMaxObserver("google", bit, scheme, per_layer_quantization=False)
    s, z = obs(x)
    rs, rz = ref_minmax(x, "google", bit, scheme, per_layer=False)
    same(s, rs)
    same(z, rz)
    assert s.shape == (4,)
    same(flow.nn.FakeQuantization("google", bit, scheme)(x, s, z),
         ref_fake(x, s, z, "google", bit, scheme))
    same(flow.nn.Quantization("google", bit, scheme)(x, s, z),
         ref_codes(x, s, z, "google", bit, scheme)[0])


def test_cambricon_fake_quant_uses_first_shift_only():
    x = torch.tensor([[0.3, -0.7], [1.9, -3.0]])
    shifts = torch.tensor([-3.0, 5.0])  # per-channel shifts are ignored but the first
    same(flow.nn.FakeQuantization("cambricon")(x, shifts, torch.zeros(2)),
         ref_fake(x, shifts, None, "cambricon", 8, "symmetric"))
    # (int) truncates a non-integral shift toward zero: -2.7 -> -2 (step 1/4)
    out = flow.nn.FakeQuantization("cambricon")(torch.tensor([0.3]), torch.tensor([-2.7]),
                                                torch.zeros(1))
    assert out.tolist() == [0.25]


def test_affine_zero_point_rounds_half_away_like_oneflow_cpu():
    # OneFlow CPU: (uint8_t) std::round(zp): 2.5 -> 3, 3.5 -> 4, 0.4 -> 0, 254.6 -> 255
    x = torch.tensor([0.0, 0.26, 1.0, -0.9])
    s = torch.tensor([0.5])
    for zp in [2.5, 3.5, 0.4, -0.4, 254.6, 7.0]:
        z = torch.tensor([zp])
        same(flow.nn.FakeQuantization("google", 8, "affine")(x, s, z),
             ref_fake(x, s, z, "google", 8, "affine"))
        same(flow.nn.Quantization("google", 8, "affine")(x, s, z),
             ref_codes(x, s, z, "google", 8, "affine")[0])


def test_float32_division_not_reciprocal():
    # SPEC 10.8: 1.55 / 0.1 = 15.499999 -> 15, while 1.55 * (1/0.1) = 15.5 -> 16.
    q = flow.nn.Quantization()(torch.tensor([1.55, 3.2500002]), torch.tensor([0.1]),
                               torch.zeros(1))
    assert q.tolist() == [15, 32]


def test_ties_round_half_to_even():
    s = torch.tensor([0.5])
    x = torch.tensor([-1.25, -0.75, -0.25, 0.25, 0.75, 1.25])
    assert flow.nn.Quantization()(x, s, torch.zeros(1)).tolist() == [-2, -2, 0, 0, 2, 2]


def test_gradient_is_identity_without_mask():
    for formula, scheme in CONFIGS:
        x = torch.tensor([-100.0, -0.3, 0.0, 0.7, 100.0], requires_grad=True)
        s, z = torch.tensor([0.05]), torch.tensor([100.0])
        out = flow.nn.FakeQuantization(formula, 8, scheme)(x, s, z)
        dy = torch.tensor([1.0, 2.0, 3.0, 4.0, float("nan")])
        out.backward(dy)
        same(x.grad, dy)  # OneFlow: dx = dy everywhere, NaN included


def test_float64_input_returns_float64():
    x = X.double()
    s, z = flow.nn.MinMaxObserver()(x)
    assert s.dtype == torch.float64 and z.dtype == torch.float64
    out = flow.nn.FakeQuantization()(x, s, z)
    assert out.dtype == torch.float64
    same(out.float(), ref_fake(X, s.float(), z, "google", 8, "symmetric"))


# ---- degenerate inputs --------------------------------------------------------------------------
def test_all_zero_symmetric_gives_zero_scale_then_fake_quant_raises():
    s, z = flow.nn.MinMaxObserver()(torch.zeros(6))
    assert s.tolist() == [0.0] and z.tolist() == [0.0]  # OneFlow's values
    with pytest.raises(ValueError, match="scale"):
        flow.nn.FakeQuantization()(torch.zeros(6), s, z)  # OneFlow: 0/0 = NaN (undefined)


def test_constant_tensor_affine_and_cambricon_zero_raise():
    with pytest.raises(ValueError):
        flow.nn.MinMaxObserver("google", 8, "affine")(torch.full((4,), 2.0))
    with pytest.raises(ValueError):
        flow.nn.MinMaxObserver("cambricon")(torch.zeros(4))


def test_constant_tensor_symmetric_is_defined():
    s, z = flow.nn.MinMaxObserver()(torch.full((4,), -2.54))
    same(s, ref_minmax(torch.full((4,), -2.54), "google", 8, "symmetric")[0])


def test_nan_and_inf_inputs():
    x = torch.tensor([0.5, float("nan"), -1.0])
    for formula, scheme in CONFIGS:
        with pytest.raises(ValueError):
            flow.nn.MinMaxObserver(formula, 8, scheme)(x)
    with pytest.raises(ValueError):
        flow.nn.MinMaxObserver()(torch.tensor([1.0, float("inf")]))
    # fake quantization propagates NaN (the kernel's ternary clamps) and saturates ±inf
    s, z = torch.tensor([0.1]), torch.tensor([3.0])
    for formula, scheme in CONFIGS:
        xi = torch.tensor([float("nan"), float("inf"), float("-inf"), 0.2])
        same(flow.nn.FakeQuantization(formula, 8, scheme)(xi, s, z),
             ref_fake(xi, s, z, formula, 8, scheme))
        # Quantization keeps NaN in its float codes (the kernel's ternary clamps)
        same(flow.nn.Quantization(formula, 8, scheme)(xi, s, z),
             ref_codes(xi, s, z, formula, 8, scheme)[0])
    q = flow.nn.Quantization()(x, s, z)
    assert torch.isnan(q[1]) and q[0].item() == 5.0 and q[2].item() == -10.0


def test_undefined_zero_points_raise():
    fq = flow.nn.FakeQuantization("google", 8, "affine")
    x = torch.tensor([0.1])
    for zp in [-0.5, -3.0, 255.5, 300.0, float("nan")]:
        with pytest.raises(ValueError, match="zero_point"):
            fq(x, torch.tensor([0.1]), torch.tensor([zp]))


@pytest.mark.parametrize("bit", range(2, 9))
def test_affine_zero_point_beyond_the_b_bit_range(bit, gen):
    """SPEC §2.2: the range is not widened, so an all-negative tensor gives
    zero_point = -RNE(min / s) above 2^b - 1; OneFlow's CPU kernels use it (uint8, defined up
    to 255) with codes clamped to [0, 2^b - 1]."""
    levels = 2 ** bit - 1
    checked = 0
    for _ in range(30):
        lo = -float(torch.rand(1, generator=gen)) * 10 - 0.1
        hi = lo * float(torch.rand(1, generator=gen)) * 0.99  # lo < hi < 0
        x = lo + (hi - lo) * torch.rand(40, generator=gen)
        x[:2] = torch.tensor([lo, hi])
        x = torch.cat([x, torch.tensor([0.0, 1.0, lo * 2])])
        s, z = flow.nn.MinMaxObserver("google", bit, "affine")(x[:40])
        rs, rz = ref_minmax(x[:40], "google", bit, "affine")
        same(s, rs)
        same(z, rz)
        if not 0 <= float(z) <= 255:
            with pytest.raises(ValueError, match="zero_point"):
                flow.nn.FakeQuantization("google", bit, "affine")(x, s, z)
            continue
        checked += float(z) > levels
        same(flow.nn.FakeQuantization("google", bit, "affine")(x, s, z),
             ref_fake(x, s, z, "google", bit, "affine"))
        same(flow.nn.Quantization("google", bit, "affine")(x, s, z),
             ref_codes(x, s, z, "google", bit, "affine")[0])
    assert checked > 0 or bit == 8  # at 8 bits an all-negative range gives z > 255
    # explicit zero points: 20 at 4 bits (defined, uint8), per channel too
    xs = torch.tensor([[0.1, -3.0, 1.7], [-0.4, 0.2, 9.0]])
    for s, z in [(torch.tensor([0.1]), torch.tensor([20.0])),
                 (torch.tensor([0.1, 0.25]), torch.tensor([200.0, 16.0]))]:
        same(flow.nn.FakeQuantization("google", 4, "affine")(xs, s, z),
             ref_fake(xs, s, z, "google", 4, "affine"))
        same(flow.nn.Quantization("google", 4, "affine")(xs, s, z),
             ref_codes(xs, s, z, "google", 4, "affine")[0])


def test_undefined_cambricon_shift_raises():
    for shift in [float("nan"), float("inf"), 2.0 ** 40]:
        with pytest.raises(ValueError, match="shift"):
            flow.nn.FakeQuantization("cambricon")(X, torch.tensor([shift]), torch.zeros(1))


def test_empty_input():
    with pytest.raises(ValueError):
        flow.nn.MinMaxObserver()(torch.zeros(0))
    out = flow.nn.FakeQuantization()(torch.zeros(0, 3), torch.tensor([0.1]), torch.zeros(1))
    assert out.shape == (0, 3)


# ---- bad arguments: OneFlow's op checks ---------------------------------------------------------
@pytest.mark.parametrize("cls", [flow.nn.MinMaxObserver, flow.nn.FakeQuantization,
                                 flow.nn.Quantization])
def test_bad_attributes_raise_check_failed(cls):
    for kwargs in [dict(quantization_bit=1), dict(quantization_bit=9),
                   dict(quantization_bit=8.0), dict(quantization_scheme="asymmetric"),
                   dict(quantization_formula="tensorrt")]:
        with pytest.raises(flow.nn.CheckFailedException) as e:
            cls(**kwargs)
        assert isinstance(e.value, RuntimeError)
        assert list(kwargs)[0] in str(e.value)


def test_cambricon_per_channel_is_unimplemented():
    with pytest.raises(flow.nn.UnimplementedException):
        flow.nn.MinMaxObserver("cambricon", 8, "symmetric", per_layer_quantization=False)


def test_per_channel_scale_length_must_match_axis_0():
    with pytest.raises(flow.nn.CheckFailedException, match="scale"):
        flow.nn.FakeQuantization()(torch.ones(3, 4), torch.ones(4), torch.zeros(4))
    with pytest.raises(flow.nn.CheckFailedException, match="dtype"):
        flow.nn.FakeQuantization()(torch.ones(3, dtype=torch.int32), torch.ones(1),
                                   torch.zeros(1))


def test_defaults_and_repr():
    for cls in (flow.nn.FakeQuantization, flow.nn.Quantization):
        m = cls()
        assert (m.quantization_formula, m.quantization_bit, m.quantization_scheme) == (
            "google", 8, "symmetric")
    m = flow.nn.MinMaxObserver()
    assert m.per_layer_quantization is True
    assert "google" in repr(m)


# ---- MovingAverageMinMaxObserver (SPEC §2.3, §10.4, seed 000) -----------------------------------
class RefMovingAverage:
    """OneFlow's moving_average_min_max_observer kernel restated (float32 ops)."""

    def __init__(self, stop=1, formula="google", bit=8, scheme="symmetric", momentum=0.95):
        self.stop, self.formula, self.bit, self.scheme = stop, formula, bit, scheme
        self.m = torch.tensor(momentum, dtype=torch.float32)
        self.one_m = torch.tensor(1.0) - self.m
        self.moving_max = torch.zeros(())
        self.moving_min = torch.zeros(())

    def _avg(self, v, cur):
        return cur if v.item() == 0 else v * self.m + cur * self.one_m

    def __call__(self, x, step, training=True):
        x = x.float()
        if training and step <= self.stop:
            if self.formula == "cambricon" or self.scheme == "symmetric":
                a = torch.maximum(x.max().abs(), x.min().abs())
                self.moving_max = self._avg(self.moving_max, a)
                self.moving_min = self.moving_max
            else:
                self.moving_max = self._avg(self.moving_max, x.max())
                self.moving_min = self._avg(self.moving_min, x.min())
        b = self.bit
        if self.formula == "cambricon":
            return (torch.floor(torch.log2(self.moving_max)) - (b - 2)).reshape(1), torch.zeros(1)
        if self.scheme == "symmetric":
            return (self.moving_max / torch.tensor(float(2 ** (b - 1)) - 1)).reshape(1), \
                torch.zeros(1)
        scale = (self.moving_max - self.moving_min) / torch.tensor(float(2 ** b) - 1)
        return scale.reshape(1), (-rhaz(self.moving_min / scale)).reshape(1)


def test_seed_000_example_runs_as_written():
    weight = (np.random.random((2, 3, 4, 5)) - 0.5).astype(np.float32)
    input_tensor = flow.tensor(weight, dtype=flow.float32)
    current_train_step_tensor = flow.tensor(np.zeros((1,)).astype(np.float32), dtype=flow.int64)
    momentum = 0.95
    quantization_bit = 8
    quantization_scheme = "symmetric"
    quantization_formula = "google"
    moving_average_min_max_observer = flow.nn.MovingAverageMinMaxObserver(
        stop_update_after_iters=1, quantization_formula=quantization_formula,
        quantization_bit=quantization_bit, quantization_scheme=quantization_scheme,
        momentum=momentum,
    )
    (scale, zero_point) = moving_average_min_max_observer(input_tensor, current_train_step_tensor)
    rs, rz = RefMovingAverage()(torch.from_numpy(weight), 0)
    same(scale, rs)
    same(zero_point, rz)


def test_spec_10_4_oneflow_row():
    obs = flow.nn.MovingAverageMinMaxObserver()
    batches = [torch.tensor([-1.0, 2.0]), torch.tensor([-0.5, 1.0]), torch.tensor([-3.0, 4.0])]
    expect_max = [2.0, 1.9500000476837158, 1.9500000476837158]  # frozen at step 2
    expect_s = [0.015748031, 0.015354331, 0.015354331]
    for step, (x, mm, es) in enumerate(zip(batches, expect_max, expect_s)):
        s, z = obs(x, torch.tensor([step]))
        assert obs.moving_max.item() == mm and obs.moving_min.item() == mm
        assert abs(s.item() - es) < 1e-9 and z.item() == 0


@pytest.mark.parametrize("formula,scheme", CONFIGS[:3])
@pytest.mark.parametrize("bit", [2, 5, 8])
def test_moving_average_sequences_match_reference(formula, scheme, bit, gen):
    for stop, momentum in [(1, 0.95), (4, 0.9), (2, 0.5)]:
        obs = flow.nn.MovingAverageMinMaxObserver(stop, formula, bit, scheme, momentum)
        r = RefMovingAverage(stop, formula, bit, scheme, momentum)
        steps = [0, 1, 1, 2, 3, 4, 5, 3, 0]
        training = [True, True, False, True, True, True, True, True, True]
        for i, (step, tr) in enumerate(zip(steps, training)):
            x = torch.randn(3, 4, generator=gen) * (i + 1)
            if i == 3:
                x = x.abs()  # ReLU-like: min > 0 (affine min re-initialised when 0)
            if i == 4:
                x = torch.relu(x)  # min exactly 0
            obs.train(tr)
            s, z = obs(x, torch.tensor([step], dtype=torch.int64))
            rs, rz = r(x, step, tr)
            same(s, rs)
            same(z, rz)
            same(obs.moving_max.reshape(()), r.moving_max)
            same(obs.moving_min.reshape(()), r.moving_min)


def test_moving_average_zero_reinitialises_and_affine_zero_point_rounds_half_away():
    # A first all-zero batch leaves moving_max at 0; the next gated step copies the batch.
    obs = flow.nn.MovingAverageMinMaxObserver(stop_update_after_iters=5)
    s, _ = obs(torch.zeros(4), torch.tensor([0]))
    assert s.item() == 0.0
    obs(torch.tensor([-3.0, 1.0]), torch.tensor([1]))
    assert obs.moving_max.item() == 3.0
    # min/scale = -2.5 exactly: MovingAverage (RHAZ) gives 3, MinMaxObserver (RNE) gives 2.
    x = torch.tensor([-0.15625, 15.78125])
    s, z = flow.nn.MovingAverageMinMaxObserver(quantization_scheme="affine")(x, torch.tensor([0]))
    assert s.item() == 0.0625 and z.item() == 3.0
    s, z = flow.nn.MinMaxObserver(quantization_scheme="affine")(x)
    assert s.item() == 0.0625 and z.item() == 2.0


def test_moving_average_state_and_errors():
    obs = flow.nn.MovingAverageMinMaxObserver()
    obs.eval()
    with pytest.raises(RuntimeError):
        obs(torch.ones(3), torch.tensor([0]))  # nothing stored yet (OneFlow: scale 0)
    obs.train()
    obs(torch.tensor([1.0, -2.0]), torch.tensor([0]))
    obs.reset_running_stats()
    assert obs.moving_max.item() == 0.0
    with pytest.raises(flow.nn.CheckFailedException, match="stop_update_after_iters"):
        flow.nn.MovingAverageMinMaxObserver(stop_update_after_iters=0)
    with pytest.raises(flow.nn.CheckFailedException, match="quantization_bit"):
        flow.nn.MovingAverageMinMaxObserver(quantization_bit=9)
    with pytest.raises(flow.nn.CheckFailedException, match="current_train_step"):
        flow.nn.MovingAverageMinMaxObserver()(torch.ones(2), torch.tensor([0, 1]))
    with pytest.raises(ValueError):
        flow.nn.MovingAverageMinMaxObserver()(torch.tensor([float("nan")]), torch.tensor([0]))
    sd = flow.nn.MovingAverageMinMaxObserver()
    sd(torch.tensor([1.0, -2.0]), torch.tensor([0]))
    other = flow.nn.MovingAverageMinMaxObserver()
    other.load_state_dict(sd.state_dict())
    assert other.moving_max.item() == 2.0
