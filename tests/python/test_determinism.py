"""Determinism (issue 8): fake_quantize, minmax, lsq and the histogram observer / calibrator ops
give the same bits for 1 and 2 threads (torch.set_num_threads) and under every SIMD target this CPU runs
(torch.ops.qkit.available_targets / force_target), forward and backward, NaN payloads, +-Inf,
denormals and ragged tails included. Every run is compared with the first one (1 thread, the
default target) bit for bit; the numeric correctness itself is tested against the plain
references in test_fake_quantize.py / test_learned_range.py.

C++ counterparts: tests/cpp/fake_quant_test.cc (FakeQuantDeterminism.IdenticalAcrossTargetsAndThreads),
tests/cpp/minmax_test.cc (MinMaxTest.ThreadCountsAndExactSkipCount, per target),
tests/cpp/learned_range_test.cc (LearnedRangeTest.ManyChunksSameForOneAndTwoThreads, per target)."""
import math

import pytest
import torch

import qkit

# Three parallel chunks (the core splits work in kGrain = 65,536-element chunks) and a
# ragged SIMD tail.
N = 2 * 65536 + 13


def _data(gen, n=N):
    x = torch.randn(n, generator=gen) * 4.0
    special = torch.tensor([math.nan, math.inf, -math.inf, 1e-40, -1e-40, 0.0, -0.0,
                            3.4028234663852886e38, -3.4028234663852886e38, 0.25, -0.25, 0.75])
    idx = torch.randint(0, n, (special.numel() * 20,), generator=gen)
    x[idx] = special.repeat(20)
    return x


def _bits(t):
    """The bytes of a tensor (NaN payloads and -0 compared exactly)."""
    t = t.detach().contiguous()
    if t.dtype == torch.float32:
        return t.view(torch.int32)
    if t.dtype in (torch.float16, torch.bfloat16):
        return t.view(torch.int16)
    return t


def _same(a, b):
    if isinstance(a, (tuple, list)):
        assert len(a) == len(b)
        for u, v in zip(a, b):
            _same(u, v)
    elif isinstance(a, torch.Tensor):
        assert a.shape == b.shape and a.dtype == b.dtype
        assert torch.equal(_bits(a), _bits(b))
    else:
        assert a == b


def _settings():
    """(threads, target) pairs: 1 and 2 threads under the default dispatch, then every target
    with 1 and 2 threads."""
    out = [(1, ""), (2, "")]
    for target in qkit.ops.available_targets():
        out += [(1, target), (2, target)]
    return out


def _under_every_setting(fn):
    results = []
    for threads, target in _settings():
        torch.set_num_threads(threads)
        qkit.ops.force_target(target)
        if target:
            assert qkit.ops.current_target() == target
        results.append(((threads, target), fn()))
    qkit.ops.force_target("")
    first = results[0][1]
    for setting, r in results[1:]:
        try:
            _same(r, first)
        except AssertionError:
            pytest.fail(f"result under (threads, target)={setting} differs from 1 thread, "
                        f"default target")
    return first


def test_targets_are_listed():
    targets = qkit.ops.available_targets()
    assert "SCALAR" in targets and len(targets) >= 2, targets


@pytest.mark.parametrize("case", ["per_tensor", "per_channel", "per_group", "transposed",
                                  "float16", "bfloat16"])
def test_fake_quantize(case, gen):
    x = _data(gen)
    kw = dict(rounding="half_away_from_zero")
    s = torch.tensor([0.05])
    z = torch.tensor([3.0])
    if case == "per_channel":
        x = x[: 7 * (N // 7)].reshape(7, -1)
        s = torch.rand(7, generator=gen) * 0.1 + 0.01
        z = torch.randint(-5, 5, (7,), generator=gen).float()
        kw.update(axis=0, nan_mode="to_quant_min", scale_mode="multiply_reciprocal")
    elif case == "per_group":
        x = x[: 64 * (N // 64)].reshape(-1, 64)
        s = torch.rand(x.shape[0] * 4, generator=gen) * 0.1 + 0.01
        z = None
        kw.update(axis=1, group_size=16)
    elif case == "transposed":
        x = x[: 5 * (N // 5)].reshape(5, -1).t()
        kw.update(zero_point_mode="add_before_round", rounding="floor_add_half")
    elif case == "float16":
        x = x.clamp(-60000, 60000).half()
    elif case == "bfloat16":
        x = x.bfloat16()

    def run():
        xr = x.detach().clone().requires_grad_(True)
        out, mask = qkit.fake_quantize_with_mask(x, s, z, **kw)
        y = qkit.fake_quantize(xr, s, z, **kw)
        y.backward(torch.ones_like(y))
        return out, mask, y, xr.grad

    _under_every_setting(run)


@pytest.mark.parametrize("axis,group_size,nonfinite", [(None, 0, "skip"), (None, 0, "skip_nan"),
                                                       (None, 0, "propagate"), (0, 0, "skip"),
                                                       (1, 32, "skip")])
def test_minmax(axis, group_size, nonfinite, gen):
    x = _data(gen)
    if axis is not None:
        x = x[: 3 * 64 * (N // (3 * 64))].reshape(3, -1)
    acc = None
    if axis is None:
        acc = (torch.tensor([-0.5]), torch.tensor([0.5]))

    def run():
        mn, mx, skipped = qkit.minmax(x, axis=axis, group_size=group_size, nonfinite=nonfinite,
                                      min_acc=None if acc is None else acc[0],
                                      max_acc=None if acc is None else acc[1])
        amax, askipped = qkit.absmax(x, axis=axis, group_size=group_size, nonfinite=nonfinite)
        return mn, mx, skipped, amax, askipped

    _under_every_setting(run)


@pytest.mark.parametrize("variant,axis,fused", [("pytorch", None, False), ("pytorch", None, True),
                                                ("pytorch", 0, False), ("megengine", None, False),
                                                ("megengine", 1, False)])
def test_lsq(variant, axis, fused, gen):
    x = _data(gen)
    if axis is not None:
        x = x[: 6 * (N // 6)].reshape(6, -1) if axis == 0 else x[: 6 * (N // 6)].reshape(-1, 6)
    slots = 1 if axis is None else x.shape[axis]
    step = torch.rand(slots, generator=gen) * 0.1 + 0.02
    zp = torch.randint(-3, 3, (slots,), generator=gen).float()
    dy = torch.randn(x.shape, generator=gen)
    kw = dict(variant=variant, axis=axis, grad_scale=0.01)
    if variant == "pytorch":
        kw["fused"] = fused
    else:
        kw.update(step_transform="abs_plus_eps", step_eps=1e-5)

    def run():
        xr = x.detach().clone().requires_grad_(True)
        sr = step.detach().clone().requires_grad_(True)
        zr = zp.detach().clone().requires_grad_(variant == "pytorch")
        y = qkit.lsq(xr, sr, zr, **kw)
        y.backward(dy)
        grads = (xr.grad, sr.grad) + ((zr.grad,) if variant == "pytorch" else ())
        return (y,) + grads + qkit.ops.lsq_backward(dy, x, step, zp, **kw)

    _under_every_setting(run)


# ---- histogram observer / calibrator ops (torch.ops.qkit.observer_*; issue 8) -----------------

def _no_flt_max(gen, n=N):
    """_data without the +-FLT_MAX outliers (a range of 2 * FLT_MAX overflows float32 and is
    rejected by ComputeQParams); NaN / +-Inf are kept (skipped and counted by the observers)."""
    x = _data(gen, n)
    return torch.where((x.abs() >= 1e30) & torch.isfinite(x), torch.zeros(()), x)


def _observe_all(m, batches):
    """Every op a histogram observer or calibrator goes through, in one result: observe (two
    batches, the second wider, so the histogram is re-binned / grown), the distributed phases
    (batch_range, batch_counts, commit) and the state tensors."""
    for b in batches[:2]:
        m(b)
    rs = m.batch_range(batches[2])
    counts = m.batch_counts(batches[2], rs)
    m.commit(rs, counts)
    return tuple(rs) + (counts,) + tuple(t.clone() for t in m._state())


@pytest.mark.parametrize("axis", [None, 0])
def test_histogram_observer(axis, gen):
    xs = [_no_flt_max(gen), _no_flt_max(gen) * 3.0, _no_flt_max(gen) * 0.5]
    if axis is not None:
        xs = [x[: 4 * (N // 4)].reshape(4, -1) for x in xs]
    kw = {} if axis is None else dict(qscheme=torch.per_channel_affine, ch_axis=axis)

    def run():
        m = qkit.nn.HistogramObserver(bins=512, upsample_rate=16, **kw)
        r = _observe_all(m, xs)
        scale, zp = m.calculate_qparams()
        return r + (scale, zp) + tuple(m.calculate_range())

    _under_every_setting(run)


@pytest.mark.parametrize("torch_hist,axis", [(True, None), (False, None), (True, 0)])
def test_histogram_calibrator(torch_hist, axis, gen):
    xs = [_no_flt_max(gen), _no_flt_max(gen) * 3.0, _no_flt_max(gen) * 0.5]
    if axis is not None:
        xs = [x[: 4 * (N // 4)].reshape(4, -1) for x in xs]

    def run():
        m = qkit.nn.HistogramCalibrator(num_bins=512, torch_hist=torch_hist, axis=axis)
        r = _observe_all(m, xs)
        amax = tuple(m.compute_amax(method, start_bin=64)
                     for method in ("entropy", "mse", "percentile"))
        return r + amax

    _under_every_setting(run)
