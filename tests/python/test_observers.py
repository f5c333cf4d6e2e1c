"""qkit.nn observers (torch.ops.qkit.observer_* over the C++ core observers) against PyTorch's
own observers where the options coincide (bit for bit) and against the plain references of
reference_observers.py (OneFlow, MegEngine, Distiller, NVIDIA rules from SPEC.md); multi-batch
sequences, the distributed protocol (commit(batch_range, batch_counts) == forward; merged
shards == the concatenation), state_dict round trips and refusals, bad input."""
import copy
from typing import List
import math

import pytest
import torch
import torch.ao.quantization as tq

import qkit
import reference_observers as ref
from qkit.nn import (HistogramCalibrator, HistogramObserver, MinMaxObserver,
                     MovingAverageMinMaxObserver, PassiveObserver, RangeStats)


def _same(a, b):
    torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


def _batches(gen, shape=(16, 4, 5), n=4):
    return [torch.randn(*shape, generator=gen) * (1 + i) + 0.3 * i for i in range(n)]


def _state(obs):
    return {k: v.clone() for k, v in obs.state_dict().items()}


def _same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype, k
        _same(sa[k], sb[k])


# ---- against PyTorch's own observers -------------------------------------------------------------

TORCH_SCHEMES = [(torch.quint8, torch.per_tensor_affine), (torch.qint8, torch.per_tensor_symmetric),
                 (torch.quint8, torch.per_tensor_symmetric)]


@pytest.mark.parametrize("dtype,qscheme", TORCH_SCHEMES)
def test_minmax_matches_torch(dtype, qscheme, gen):
    t = tq.MinMaxObserver(dtype=dtype, qscheme=qscheme)
    q = MinMaxObserver(dtype=dtype, qscheme=qscheme)
    for x in _batches(gen):
        t(x)
        q(x)
        _same(q.min_val, t.min_val.reshape(1))
        _same(q.max_val, t.max_val.reshape(1))
        st, zt = t.calculate_qparams()
        sq, zq = q.calculate_qparams()
        _same(sq, st)
        assert torch.equal(zq, zt.to(torch.int32))
    assert q.num_batches.tolist() == [4]


@pytest.mark.parametrize("dtype,qscheme", [(torch.qint8, torch.per_channel_symmetric),
                                           (torch.quint8, torch.per_channel_affine)])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_per_channel_minmax_matches_torch(dtype, qscheme, axis, gen):
    t = tq.PerChannelMinMaxObserver(ch_axis=axis, dtype=dtype, qscheme=qscheme)
    q = MinMaxObserver(ch_axis=axis, dtype=dtype, qscheme=qscheme)
    for x in _batches(gen):
        t(x)
        q(x)
    _same(q.min_val, t.min_val)
    _same(q.max_val, t.max_val)
    st, zt = t.calculate_qparams()
    sq, zq = q.calculate_qparams()
    _same(sq, st)
    assert torch.equal(zq, zt.to(torch.int32))


@pytest.mark.parametrize("dtype,qscheme", TORCH_SCHEMES)
@pytest.mark.parametrize("constant", [0.01, 0.3])
def test_moving_average_torch_variant_matches_torch(dtype, qscheme, constant, gen):
    t = tq.MovingAverageMinMaxObserver(averaging_constant=constant, dtype=dtype,
                                       qscheme=qscheme)
    q = MovingAverageMinMaxObserver(averaging_constant=constant, dtype=dtype, qscheme=qscheme)
    q.eval()  # PyTorch's observer also updates in eval mode: the 'torch' variant does too
    for x in _batches(gen, n=5):
        t(x)
        q(x)
        _same(q.min_val, t.min_val.reshape(1))
        _same(q.max_val, t.max_val.reshape(1))
    st, zt = t.calculate_qparams()
    sq, zq = q.calculate_qparams()
    _same(sq, st)
    assert torch.equal(zq, zt.to(torch.int32))


def test_per_channel_moving_average_matches_torch(gen):
    t = tq.MovingAveragePerChannelMinMaxObserver(averaging_constant=0.1, ch_axis=1,
                                                 dtype=torch.qint8,
                                                 qscheme=torch.per_channel_symmetric)
    q = MovingAverageMinMaxObserver(averaging_constant=0.1, ch_axis=1, dtype=torch.qint8,
                                    qscheme=torch.per_channel_symmetric)
    for x in _batches(gen, n=5):
        t(x)
        q(x)
    _same(q.min_val, t.min_val)
    _same(q.max_val, t.max_val)
    _same(q.calculate_qparams()[0], t.calculate_qparams()[0])


# ---- the other systems' update rules (plain references from SPEC.md) -----------------------------

@pytest.mark.parametrize("symmetric", [True, False])
def test_oneflow_variant_and_step_gate(symmetric, gen):
    q = MovingAverageMinMaxObserver(variant="oneflow", range="absmax" if symmetric else "minmax",
                                    stop_update_after_iters=3)
    r = ref.OneFlowMovingAverage(symmetric=symmetric, stop_update_after_iters=3)
    for step, x in enumerate(_batches(gen, n=6)):
        q(x, current_train_step=step)
        r.update(x, step)
        _same(q.max_val, r.moving_max)
        _same(q.min_val, r.moving_min)
    assert q.num_updates.tolist() == [4]  # steps 0..3
    assert q.gate_open(3) and not q.gate_open(4)
    before = _state(q)
    x = torch.randn(10, generator=gen) * 100
    q.commit(q.batch_range(x), current_train_step=4)  # the protocol applies the same gate
    for k, v in q.state_dict().items():
        _same(v, before[k])
    q.eval()  # OneFlow observes only in training mode
    assert not q.gate_open(0)
    before = _state(q)
    q(torch.randn(10, generator=gen) * 100, current_train_step=0)
    for k, v in q.state_dict().items():
        _same(v, before[k])


def test_oneflow_default_gate_is_step_1(gen):
    q = MovingAverageMinMaxObserver(variant="oneflow", range="absmax")
    r = ref.OneFlowMovingAverage()
    for step, x in enumerate(_batches(gen, n=4)):
        q(x, current_train_step=step)
        r.update(x, step)
    _same(q.max_val, r.moving_max)
    assert q.num_updates.tolist() == [2]


@pytest.mark.parametrize("bits", [2, 3, 5, 8, 12, 16])
def test_bits_reach_the_rule_cambricon(bits, gen):
    """The observers hand the spec's bit width to the qparams rule: OneFlow's cambricon shift
    floor(log2(amax)) - (b - 2) (SPEC §2.2) at every b, from the full b-bit quant range or an
    explicit ``bits``. SPEC §2.7's amax 2 at 2 bits: shift 1 (it was -5 = the 8-bit shift)."""
    h = 2 ** (bits - 1)
    for x in [torch.tensor([-1.5, -0.75, 0.1, 2.0])] + _batches(gen, n=3):
        shift = torch.floor(torch.log2(x.abs().max())) - (bits - 2)  # float32 log2, as OneFlow
        want_step = 2.0 ** int(shift)
        for kw in (dict(quant_min=-h, quant_max=h - 1),
                   dict(quant_min=-(h - 1), quant_max=h - 1),
                   dict(quant_min=-7, quant_max=7, bits=bits) if bits != 4 else
                   dict(quant_min=-h, quant_max=h - 1, bits=bits)):
            q = MinMaxObserver(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric,
                               restriction="pow2_floor_log2_amax", degenerate="none", **kw)
            assert q.bits == bits
            q(x)
            scale, zp = q.calculate_qparams()
            assert scale.tolist() == [want_step] and zp.tolist() == [0]
    x = torch.tensor([-1.5, 2.0])
    q = MovingAverageMinMaxObserver(variant="oneflow", range="absmax", dtype=torch.qint8,
                                    qscheme=torch.per_tensor_symmetric, quant_min=-2,
                                    quant_max=1, restriction="pow2_floor_log2_amax",
                                    degenerate="none")
    q(x)
    assert q.calculate_qparams()[0].tolist() == [2.0]  # shift 1 - 0 = 1
    assert q.observe_and_calculate_qparams(x)[0].tolist() == [2.0]


def test_bits_needed_but_not_determined():
    # [-100, 100] is no b-bit range: a rule that reads the bit width needs `bits`.
    for rule in (dict(restriction="pow2_floor_log2_amax", degenerate="none"),
                 dict(divisor="half_full_range")):
        with pytest.raises(ValueError, match="pass `bits`"):
            MinMaxObserver(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric,
                           quant_min=-100, quant_max=100, **rule)
    q = MinMaxObserver(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric,
                       quant_min=-100, quant_max=100)
    assert q.bits is None
    with pytest.raises(TypeError, match="`bits`"):
        MinMaxObserver(bits=8.0)
    with pytest.raises(ValueError, match="`bits`=17"):
        MinMaxObserver(bits=17)
    # divisor half_full_range reads bits: (2^b - 1) / 2 = 7.5 at 4 bits on Distiller's
    # 17-level range [-8, 8].
    q = MinMaxObserver(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric, quant_min=-8,
                       quant_max=8, bits=4, divisor="half_full_range")
    q(torch.tensor([-3.0, 1.5]))
    assert q.calculate_qparams()[0].tolist() == [torch.tensor(3.0 / 7.5).item()]


@pytest.mark.parametrize("axis", [None, 1])
def test_megengine_variant(axis, gen):
    kw = dict(ch_axis=axis, qscheme=torch.per_channel_affine) if axis is not None else {}
    q = MovingAverageMinMaxObserver(variant="megengine", **kw)
    r = ref.MegEngineEma()
    for x in _batches(gen, n=5):
        q(x)
        r.update(x, axis)
    _same(q.min_val, r.min_val)
    _same(q.max_val, r.max_val)


@pytest.mark.parametrize("decay", [0.999, 0.5])
def test_distiller_variant(decay, gen):
    q = MovingAverageMinMaxObserver(variant="distiller", momentum=decay)
    r = ref.DistillerEma(decay)
    for x in _batches(gen, n=5):
        q(x)
        r.update(x)
        _same(q.biased_min, r.biased_min)
        _same(q.biased_max, r.biased_max)
        _same(q.min_val, r.min_val)
        _same(q.max_val, r.max_val)
    q.eval()  # Distiller updates its EMA only in training mode
    before = _state(q)
    q(torch.randn(10, generator=gen) * 50)
    for k, v in q.state_dict().items():
        _same(v, before[k])


# ---- histograms ----------------------------------------------------------------------------------

def test_histogram_observer_counts_and_range(gen):
    bins = 256
    q = HistogramObserver(bins=bins, dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)
    x = torch.randn(4000, generator=gen)
    q(x)
    _same(q.histogram[0], ref.megengine_first_histogram(x, bins))
    _same(q.min_val, x.min().reshape(1))
    _same(q.max_val, x.max().reshape(1))
    inside = x[:1000] * 0.5  # inside the stored range: counts add on the same bins
    before = q.histogram.clone()
    q(inside)
    assert torch.equal(q.histogram[0] - before[0], ref.megengine_first_histogram(
        torch.cat([inside, x.min().reshape(1), x.max().reshape(1)]), bins)
        - ref.megengine_first_histogram(torch.cat([x.min().reshape(1), x.max().reshape(1)]),
                                        bins))
    q(torch.randn(3000, generator=gen) * 3)  # widens: the old histogram is re-binned
    assert int(q.histogram.sum()) == 8000  # exact int64 counts are conserved
    mn, mx = q.calculate_range()
    assert q.min_val.item() <= mn.item() < mx.item() <= q.max_val.item()
    scale, zp = q.calculate_qparams()
    assert scale.item() > 0 and zp.tolist() == [0]


def test_histogram_l2_search_matches_torch(gen):
    # PyTorch 1.13's own L2 search (HistogramObserver._non_linear_param_search, 256 levels for
    # quint8) run on qkit's histogram and range is the reference of calculate_range().
    bins = 2048
    q = HistogramObserver(bins=bins, dst_nbins=256, dtype=torch.quint8,
                          qscheme=torch.per_tensor_affine)
    for i in range(3):
        q(torch.randn(20000, generator=gen) * (1 + i) + 0.2)
    t = tq.HistogramObserver(bins=bins, dtype=torch.quint8, qscheme=torch.per_tensor_affine)
    t.histogram = q.histogram[0].to(torch.float32)
    t.min_val = q.min_val[0].clone()
    t.max_val = q.max_val[0].clone()
    new_min, new_max = t._non_linear_param_search()
    mn, mx = q.calculate_range()
    torch.testing.assert_close(mn, new_min.reshape(1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(mx, new_max.reshape(1), rtol=1e-5, atol=1e-6)


def test_histogram_calibrator_matches_nvidia_reference(gen):
    q = HistogramCalibrator(num_bins=512, torch_binning="histc_divide_first")  # torch 1.13 histc
    r = ref.NvidiaHistogram(num_bins=512)
    for i in range(3):
        x = torch.randn(5000, generator=gen) * (1 + i)
        q.collect(x)
        r.collect(x)
        assert torch.equal(q.hist, r.hist.to(torch.int64))
        # torch 1.13's linspace fills from both ends; the core follows current PyTorch
        # (step * i): the edges agree within one float32 ulp.
        torch.testing.assert_close(q.edges.float(), r.edges, rtol=2.4e-7, atol=0)
    for pct in (99.0, 99.99):
        torch.testing.assert_close(q.compute_amax("percentile", percentile=pct),
                                   r.percentile_amax(pct).reshape(1), rtol=2.4e-7, atol=0)
    hist, edges = q.hist.numpy(), q.edges.numpy()
    assert q.compute_amax("entropy").item() == ref.nvidia_entropy_amax(hist, edges)
    assert q.compute_amax("entropy", stride=3, start_bin=64).item() == \
        ref.nvidia_entropy_amax(hist, edges, stride=3, start_bin=64)
    assert q.compute_amax("mse").item() == ref.nvidia_mse_amax(hist, edges)
    assert HistogramCalibrator().compute_amax("entropy") is None  # nothing collected


def test_passive_observer(gen):
    p = PassiveObserver(dtype=torch.quint8, qscheme=torch.per_tensor_affine)
    with pytest.raises(RuntimeError):
        p.calculate_qparams()  # nothing set yet
    p.set_qparams(0.25, 3)
    x = torch.randn(10, generator=gen)
    assert p(x) is x
    s, z = p.calculate_qparams()
    _same(s, torch.tensor([0.25]))
    assert z.tolist() == [3]
    with pytest.raises(ValueError, match="zero"):
        p.set_qparams(0.25, 300)  # outside [0, 255]
    with pytest.raises(ValueError):
        p.set_qparams(-1.0)
    _same(p.calculate_qparams()[0], torch.tensor([0.25]))  # unchanged by the failed calls
    p.set_scale(0.5)
    _same(p.orig_scale, torch.tensor([0.25]))
    _same(p.scale, torch.tensor([0.5]))


# ---- distributed protocol ------------------------------------------------------------------------

def _make(kind):
    return {
        "minmax": lambda: MinMaxObserver(),
        "minmax_pc": lambda: MinMaxObserver(ch_axis=1, qscheme=torch.per_channel_affine),
        "ma_torch": lambda: MovingAverageMinMaxObserver(averaging_constant=0.2),
        "ma_oneflow": lambda: MovingAverageMinMaxObserver(variant="oneflow",
                                                          stop_update_after_iters=100),
        "ma_megengine": lambda: MovingAverageMinMaxObserver(variant="megengine"),
        "ma_distiller_pc": lambda: MovingAverageMinMaxObserver(
            variant="distiller", ch_axis=1, qscheme=torch.per_channel_affine),
        "histogram": lambda: HistogramObserver(bins=128, upsample_rate=16),
        "histogram_pc": lambda: HistogramObserver(bins=64, upsample_rate=8, ch_axis=1,
                                                  qscheme=torch.per_channel_affine),
        "calibrator": lambda: HistogramCalibrator(num_bins=128),
        "calibrator_numpy": lambda: HistogramCalibrator(num_bins=128, torch_hist=False),
        "calibrator_pc": lambda: HistogramCalibrator(num_bins=64, axis=1),
        "max_calibrator_pc": lambda: qkit.nn.MaxCalibrator(axis=1),
    }[kind]()


KINDS = ["minmax", "minmax_pc", "ma_torch", "ma_oneflow", "ma_megengine", "ma_distiller_pc",
         "histogram", "histogram_pc", "calibrator", "calibrator_numpy", "calibrator_pc",
         "max_calibrator_pc"]


@pytest.mark.parametrize("kind", KINDS)
def test_protocol_with_one_participant_is_forward(kind, gen):
    a, b = _make(kind), _make(kind)
    for x in _batches(gen, n=4):
        a(x)
        r = b.batch_range(x)
        counts = b.batch_counts(x, r) if b.needs_counts else None
        b.commit(r, counts)
        _same_state(a, b)


@pytest.mark.parametrize("kind", KINDS)
def test_merged_shards_equal_the_concatenation(kind, gen):
    whole, dist = _make(kind), [_make(kind) for _ in range(3)]
    for x in _batches(gen, shape=(18, 4, 5), n=4):
        shards = [x[:7], x[7:7], x[7:]]  # one empty shard
        whole(x)
        ranges = [o.batch_range(s) for o, s in zip(dist, shards)]
        # the all_reduce buffers: one MIN over floats, one SUM over counts
        flat = [r.flatten() for r in ranges]
        floats = torch.stack([f for f, _ in flat]).amin(0)
        counts = torch.stack([c for _, c in flat]).sum(0)
        merged = RangeStats.unflatten(floats, counts)
        merged2 = ranges[0].merge(ranges[1]).merge(ranges[2])
        for u, v in zip(merged, merged2):
            _same(u, v)
        hist = None
        if whole.needs_counts:
            parts = [o.batch_counts(s, merged) for o, s in zip(dist, shards)]
            hist = dist[0].merge_counts(dist[0].merge_counts(parts[0], parts[1]), parts[2])
            assert torch.equal(hist, torch.stack(parts).sum(0))
        for o in dist:
            o.commit(merged, hist)
        for o in dist:
            _same_state(whole, o)


def test_state_level_merge_of_minmax(gen):
    xs = _batches(gen, n=4)
    a, b, whole = MinMaxObserver(), MinMaxObserver(), MinMaxObserver()
    for i, x in enumerate(xs):
        (a if i % 2 else b)(x)
        whole(x)
    a.merge_state_(b)
    _same_state(a, whole)
    with pytest.raises(ValueError, match="moving average"):
        m = MovingAverageMinMaxObserver()
        m(xs[0])
        m.merge_state_(copy.deepcopy(m))


# ---- state_dict ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_state_dict_round_trip_continues_identically(kind, gen):
    a = _make(kind)
    xs = _batches(gen, n=4)
    for x in xs[:2]:
        a(x)
    fresh = _make(kind)
    fresh.load_state_dict(a.state_dict())
    _same_state(a, fresh)
    for x in xs[2:]:
        a(x)
        fresh(x)
    _same_state(a, fresh)
    a.reset()
    _same_state(a, _make(kind))


def test_state_dict_refusals(gen):
    q = MinMaxObserver(ch_axis=0, qscheme=torch.per_channel_affine)
    q(torch.randn(6, 10, generator=gen))
    sd = q.state_dict()
    with pytest.raises(RuntimeError, match="per tensor"):
        MinMaxObserver().load_state_dict(sd)
    bad = copy.copy(sd)
    bad["num_batches"] = torch.tensor([1, 1, -1, 1, 1, 1])
    with pytest.raises(RuntimeError, match="invalid state"):
        MinMaxObserver(ch_axis=0, qscheme=torch.per_channel_affine).load_state_dict(bad)
    bad = copy.copy(sd)
    bad["min_val"] = sd["min_val"].double()
    with pytest.raises(RuntimeError, match="`min_val` is torch.float64"):
        MinMaxObserver(ch_axis=0, qscheme=torch.per_channel_affine).load_state_dict(bad)
    old = copy.copy(sd)
    old._metadata = copy.deepcopy(sd._metadata)
    old._metadata[""]["version"] = 7
    with pytest.raises(RuntimeError, match="version 7 is not supported"):
        MinMaxObserver(ch_axis=0, qscheme=torch.per_channel_affine).load_state_dict(old)
    h = HistogramObserver(bins=64)
    h(torch.randn(100, generator=gen))
    with pytest.raises(RuntimeError, match="bins=32"):
        HistogramObserver(bins=32).load_state_dict(h.state_dict())
    target = MinMaxObserver(ch_axis=0, qscheme=torch.per_channel_affine)
    target(torch.randn(6, 3, generator=gen))
    before = _state(target)
    with pytest.raises(RuntimeError):
        target.load_state_dict(bad)
    for k, v in target.state_dict().items():
        _same(v, before[k])


# ---- bad input -----------------------------------------------------------------------------------

def test_bad_input_errors_and_state_unchanged(gen):
    q = MinMaxObserver(ch_axis=1, qscheme=torch.per_channel_affine)
    q(torch.randn(4, 3, generator=gen))
    before = _state(q)
    with pytest.raises(ValueError, match="dtype"):
        q(torch.ones(4, 3, dtype=torch.int32))
    with pytest.raises(IndexError):
        MinMaxObserver(ch_axis=5, qscheme=torch.per_channel_affine)(torch.randn(4, 3))
    with pytest.raises(ValueError, match="channel count mismatch"):
        q(torch.randn(4, 5, generator=gen))
    for k, v in q.state_dict().items():
        _same(v, before[k])
    with pytest.raises(ValueError, match="variant"):
        MovingAverageMinMaxObserver(variant="bogus")
    with pytest.raises(ValueError, match="nonfinite"):
        MinMaxObserver(nonfinite="bogus")
    with pytest.raises(ValueError, match="momentum"):
        MovingAverageMinMaxObserver(momentum=1.5)
    with pytest.raises(ValueError, match="bins"):
        HistogramObserver(bins=0)
    with pytest.raises(ValueError, match="qscheme"):
        MinMaxObserver(qscheme=torch.per_channel_affine_float_qparams)
    with pytest.raises(ValueError, match="ch_axis"):
        MinMaxObserver(ch_axis=1)  # per-tensor scheme
    with pytest.raises(RuntimeError):
        MinMaxObserver().calculate_qparams()  # no data yet
    x = torch.tensor([1.0, math.nan, -2.0, math.inf])
    skip = MinMaxObserver()
    skip(x)
    assert skip.nonfinite_count == 2 and skip.min_val.item() == -2.0
    prop = MinMaxObserver(nonfinite="propagate")
    prop(x)
    assert math.isnan(prop.min_val.item())
    with pytest.raises(ValueError):
        prop.calculate_qparams()
    h = HistogramObserver(bins=16, error_on_nonfinite=True)
    with pytest.raises(ValueError):
        h(x)
    empty = MinMaxObserver()
    empty(torch.empty(0, 3))
    assert empty.num_batches.numel() == 0


def test_float64_half_and_strided_inputs(gen):
    x = torch.randn(8, 6, generator=gen)
    a, b, c = MinMaxObserver(), MinMaxObserver(), MinMaxObserver()
    a(x)
    b(x.double())
    c(x.t().contiguous().t())
    _same_state(a, b)
    _same_state(a, c)
    h = MinMaxObserver()
    h(x.half())
    _same(h.max_val, x.half().max().float().reshape(1))


# ---- in PyTorch's flows --------------------------------------------------------------------------

def test_observers_in_a_ptq_qconfig(gen):
    model = torch.nn.Sequential(tq.QuantStub(), torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(),
                                tq.DeQuantStub()).eval()
    model.qconfig = tq.QConfig(
        activation=qkit.nn.HistogramObserver.with_args(bins=256, reduce_range=True),
        weight=qkit.nn.MinMaxObserver.with_args(dtype=torch.qint8,
                                                qscheme=torch.per_channel_symmetric))
    prepared = tq.prepare(model)
    for _ in range(3):
        prepared(torch.randn(2, 3, 8, 8, generator=gen))
    converted = tq.convert(prepared)
    assert isinstance(converted[1], torch.ao.nn.quantized.Conv2d)
    x = torch.randn(2, 3, 8, 8, generator=gen)
    assert (converted(x) - model(x)).abs().max().item() < 0.1


def test_observer_ops_from_torchscript(gen):
    @torch.jit.script
    def observe(x: torch.Tensor, state: List[torch.Tensor]) -> List[torch.Tensor]:
        return torch.ops.qkit.observer_observe(x, state, kind="minmax")

    q = MinMaxObserver()
    x = torch.randn(50, generator=gen)
    new = observe(x, q._state())
    q(x)
    for t, name in zip(new, ["min_val", "max_val", "num_batches", "num_nonfinite"]):
        _same(t, getattr(q, name))


def test_per_group_minmax(gen):
    # per group along axis 1, groups of 2 consecutive elements, one slot per (row, group)
    q = MinMaxObserver(ch_axis=1, group_size=2, qscheme=torch.per_channel_affine)
    xs = [torch.randn(4, 6, generator=gen) for _ in range(2)]
    for x in xs:
        q(x)
    both = torch.stack(xs).reshape(2, 4, 3, 2)
    _same(q.min_val, both.amin(dim=(0, 3)).reshape(-1))
    _same(q.max_val, both.amax(dim=(0, 3)).reshape(-1))
    assert q.calculate_qparams()[0].shape == (12,)


def test_failed_commit_leaves_histogram_state_unchanged(gen):
    h = HistogramObserver(bins=32)
    h(torch.randn(100, generator=gen))
    before = _state(h)
    x = torch.randn(100, generator=gen) * 4
    r = h.batch_range(x)
    counts = h.batch_counts(x, r)
    with pytest.raises(ValueError):
        h.commit(r, counts[:-1])  # wrong number of counts
    with pytest.raises(ValueError):
        h.commit(r)  # a histogram needs counts
    for k, v in h.state_dict().items():
        _same(v, before[k])
    h.commit(r, counts)
    assert int(h.histogram.sum()) == 200


def test_passive_state_dict_round_trip_and_refusal():
    p = PassiveObserver(qscheme=torch.per_channel_symmetric, ch_axis=0)
    p.set_qparams([0.5, 0.25, 2.0])
    fresh = PassiveObserver(qscheme=torch.per_channel_symmetric, ch_axis=0)
    fresh.load_state_dict(p.state_dict())
    _same_state(p, fresh)
    _same(fresh.calculate_qparams()[0], torch.tensor([0.5, 0.25, 2.0]))
    bad = copy.copy(p.state_dict())
    bad["scale"] = torch.tensor([0.5, -1.0, 2.0])
    with pytest.raises(RuntimeError, match="invalid state"):
        PassiveObserver(qscheme=torch.per_channel_symmetric, ch_axis=0).load_state_dict(bad)
