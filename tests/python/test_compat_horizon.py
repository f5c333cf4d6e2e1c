"""qkit.compat.horizon against Horizon's semantics (SPEC.md §6, §7 as its public fallback,
§10.2 J, §10.3 and the seed document 002). References are plain torch written from SPEC §6
(one float32 op per step); nothing here calls qkit except the module under test.
"""
import pickle

import pytest
import torch

import qkit.compat.horizon as hz
from qkit.compat.horizon import fake_quantize as hfq

X = torch.tensor([-1.5, -0.75, -0.2, 0.0, 0.1, 0.35, 0.9, 2.0])
EPS = torch.tensor(torch.finfo(torch.float32).eps)


@pytest.fixture(autouse=True)
def _restore_globals():
    yield
    hz.QuantRoundMode.set(hz.QuantRoundMode.HALF_TO_EVEN)
    hz.set_march(None)


def same(a, b):
    assert a.shape == b.shape, (a.shape, b.shape)
    a, b = a.float(), b.float()
    eq = (a == b) | (torch.isnan(a) & torch.isnan(b))
    assert bool(eq.all()), (a[~eq], b[~eq])


# ---- plain references (SPEC §6.3 - §6.5, §7.3) ---------------------------------------------------
class RefObserver:
    """Horizon v1 observers: first batch copied, then v + c·(cur - v) (moving average) or the
    running min / max; scale = max(amax' / ((qmax - qmin) / 2), eps)."""

    def __init__(self, qmin, qmax, c=0.01, moving=True, ch_axis=None):
        self.qmin, self.qmax, self.c, self.moving, self.ch_axis = qmin, qmax, c, moving, ch_axis
        self.min_val = self.max_val = None

    def __call__(self, x):
        x = x.detach().float()
        if self.ch_axis is None:
            mn, mx = x.min().reshape(1), x.max().reshape(1)
        else:
            r = x.movedim(self.ch_axis, 0).reshape(x.shape[self.ch_axis], -1)
            mn, mx = r.min(1).values, r.max(1).values
        if self.min_val is None:
            self.min_val, self.max_val = mn, mx
        elif self.moving:
            c = torch.tensor(self.c, dtype=torch.float32)
            self.min_val = self.min_val + c * (mn - self.min_val)
            self.max_val = self.max_val + c * (mx - self.max_val)
        else:
            self.min_val = torch.minimum(self.min_val, mn)
            self.max_val = torch.maximum(self.max_val, mx)

    def scale(self):
        mn = torch.minimum(self.min_val, torch.zeros(1))
        mx = torch.maximum(self.max_val, torch.zeros(1))
        amax = torch.maximum(-mn, mx)
        return torch.maximum(amax / ((self.qmax - self.qmin) / 2), EPS)


def ref_fake(x, s, qmin, qmax, axis=None, bpu=False):
    """(out, mask): clamp(round(x / s)) * s; mask on the rounded value (inferred, SPEC §6.4)."""
    if axis is not None:
        shape = [1] * x.dim()
        shape[axis] = -1
        s = s.reshape(shape)
    v = x / s
    q = torch.floor(v + 0.5) if bpu else torch.round(v)
    out = torch.where(q < qmin, torch.full_like(q, qmin),
                      torch.where(q > qmax, torch.full_like(q, qmax), q)) * s
    return out, (q >= qmin) & (q <= qmax)


# ---- dtypes, globals ---------------------------------------------------------------------------
def test_dtypes_and_qinfo():
    for d, (bits, lo, hi) in [(hz.qint4, (4, -8, 7)), (hz.quint4, (4, 0, 15)),
                              (hz.qint8, (8, -128, 127)), (hz.qint16, (16, -32768, 32767)),
                              (hz.qint32, (32, -(2 ** 31), 2 ** 31 - 1))]:
        assert tuple(hz.qinfo(d)) == (bits, lo, hi)
        assert pickle.loads(pickle.dumps(d)) == d
    assert hz.qinfo(torch.qint8) == hz.qinfo(hz.qint8)
    with pytest.raises(ValueError, match="dtype"):
        hz.qinfo(torch.quint8)


def test_round_mode_global():
    assert hz.QuantRoundMode.get() == "half_to_even"
    hz.QuantRoundMode.set(hz.QuantRoundMode.BPU_ROUND)
    assert hz.QuantRoundMode.get() == "bpu_round"
    with pytest.raises(ValueError, match="mode"):
        hz.QuantRoundMode.set("nearest")


# ---- FakeQuantize ------------------------------------------------------------------------------
def test_spec_10_2_row_j_both_round_modes():
    for mode in (hz.QuantRoundMode.HALF_TO_EVEN, hz.QuantRoundMode.BPU_ROUND):
        hz.QuantRoundMode.set(mode)
        fq = hz.FakeQuantize(observer=hz.MinMaxObserver)
        out = fq(X)
        assert abs(fq.scale.item() - 0.015686275) < 1e-9
        same(out, torch.tensor([-96.0, -48, -13, 0, 6, 22, 57, 127]) * fq.scale)


def test_rounding_modes_on_ties_and_rfloor_case():
    fq = hz.FakeQuantize()
    fq.disable_observer()
    fq.set_qparams(0.5)
    x = torch.tensor([-1.25, -0.75, -0.25, 0.25, 0.75, 1.25])
    same(fq(x), torch.tensor([-2.0, -2, 0, 0, 2, 2]) * 0.5)
    hz.QuantRoundMode.set(hz.QuantRoundMode.BPU_ROUND)
    same(fq(x), torch.tensor([-2.0, -1, 0, 1, 2, 3]) * 0.5)
    fq.set_qparams(1.0)
    v = torch.tensor([0.49999997])  # 0.5 - 2^-25: f32(v + 0.5) == 1
    assert fq(v).item() == 1.0
    hz.QuantRoundMode.set(hz.QuantRoundMode.HALF_TO_EVEN)
    assert fq(v).item() == 0.0


@pytest.mark.parametrize("dtype", [hz.qint8, hz.qint16, hz.qint4])
@pytest.mark.parametrize("bpu", [False, True])
def test_default_fake_quantize_training_sequence(dtype, bpu, gen):
    if bpu:
        hz.QuantRoundMode.set(hz.QuantRoundMode.BPU_ROUND)
    fq = hz.FakeQuantize(dtype=dtype)
    assert isinstance(fq.activation_post_process, hz.MovingAverageMinMaxObserver)
    info = hz.qinfo(dtype)
    r = RefObserver(info.min, info.max)
    for i in range(5):
        x = (torch.randn(4, 6, generator=gen) * (i + 1)).requires_grad_()
        out = fq(x)
        r(x)
        same(fq.scale, r.scale())
        rout, mask = ref_fake(x.detach(), r.scale(), info.min, info.max, bpu=bpu)
        same(out, rout)
        dy = torch.randn(x.shape, generator=gen)
        out.backward(dy)
        same(x.grad, torch.where(mask, dy, torch.zeros_like(dy)))
    assert fq.zero_point.dtype == torch.int64 and fq.zero_point.tolist() == [0]


def test_per_channel_fake_quantize(gen):
    fq = hz.FakeQuantize(observer=hz.MovingAveragePerChannelMinMaxObserver, ch_axis=1,
                         channel_len=3)
    assert fq.scale.shape == (3,) and fq.ch_axis == 1
    r = RefObserver(-128, 127, ch_axis=1)
    for i in range(3):
        x = torch.randn(2, 3, 5, generator=gen) * torch.tensor([0.1, 1.0, 10.0]).reshape(1, 3, 1)
        out = fq(x)
        r(x)
        same(fq.scale, r.scale())
        same(out, ref_fake(x, r.scale(), -128, 127, axis=1)[0])
    fq2 = hz.FakeQuantize(observer=hz.PerChannelMinMaxObserver, ch_axis=0, dtype=hz.qint16)
    r2 = RefObserver(-32768, 32767, moving=False, ch_axis=0)
    for i in range(3):
        x = torch.randn(4, 3, generator=gen) * (3 - i)
        out = fq2(x)
        r2(x)
        same(fq2.scale, r2.scale())
        assert fq2.zero_point.tolist() == [0, 0, 0, 0]  # resized from channel_len=1
        same(out, ref_fake(x, r2.scale(), -32768, 32767, axis=0)[0])


def test_eval_does_not_observe_and_toggles():
    fq = hz.FakeQuantize(observer=hz.MinMaxObserver)
    fq(torch.tensor([-1.0, 1.0]))
    s = fq.scale.clone()
    fq.eval()
    out = fq(torch.tensor([-100.0, 0.3]))
    same(fq.scale, s)  # no observation in eval (unlike PyTorch's FakeQuantize)
    same(out, ref_fake(torch.tensor([-100.0, 0.3]), s, -128, 127)[0])
    fq.train()
    fq.disable_fake_quant()
    x = torch.tensor([5.0, 0.1])
    assert fq(x) is x
    same(fq.scale, torch.tensor([5.0]) / 127.5)  # observer still on
    fq.disable_observer()
    fq.enable_fake_quant()
    fq(torch.tensor([500.0]))
    same(fq.scale, torch.tensor([5.0]) / 127.5)


def test_saturate_compat_mask_in_place(gen):
    x0 = torch.randn(50, generator=gen) * 4
    outs, grads = [], []
    for kw in [dict(), dict(compat_mask=False), dict(saturate=True, in_place=True),
               dict(saturate=False)]:
        fq = hz.FakeQuantize(observer=hz.FixedScaleObserver, scale=0.02, **kw)
        x = x0.clone().requires_grad_()
        y = x * 1.0  # in_place needs a non-leaf
        out = fq(y)
        if kw.get("in_place"):
            assert out.data_ptr() == y.data_ptr()
        out.backward(torch.ones(50))
        outs.append(out.detach())
        grads.append(x.grad)
    rout, mask = ref_fake(x0, torch.tensor([0.02]), -128, 127)
    for o in outs:
        same(o, rout)
    for g in grads[:3]:
        same(g, mask.float())
    same(grads[3], torch.ones(50))  # saturate=False: plain STE
    hfq.saturate_grad = False
    try:
        assert hz.FakeQuantize().saturate is False
    finally:
        hfq.saturate_grad = True


def test_set_qparams_with_args_and_errors():
    fq = hz.FakeQuantize(observer=hz.MovingAveragePerChannelMinMaxObserver, channel_len=3)
    fq.set_qparams([0.1, 0.2, 0.3], [0, 0, 0])  # sequences are copied (upstream drops them)
    same(fq.scale, torch.tensor([0.1, 0.2, 0.3]))
    fq.set_qparams(torch.tensor([0.5, 0.5, 0.5]))
    fq.set_qparams(0.25)
    same(fq.scale, torch.full((3,), 0.25))
    with pytest.raises(ValueError, match="scale"):
        fq.set_qparams([0.1, 0.2])
    with pytest.raises(AssertionError, match="channel_len"):
        hz.FakeQuantize(channel_len=0)
    factory = hz.FakeQuantize.with_args(observer=hz.MinMaxObserver, dtype=hz.qint16)
    a, b = factory(), factory()
    assert a is not b and a.quant_max == 32767
    obs_factory = hz.MovingAverageMinMaxObserver.with_args(averaging_constant=0.5)
    assert hz.FakeQuantize(observer=obs_factory).activation_post_process.averaging_constant == 0.5
    with pytest.raises(ValueError, match="qscheme"):
        hz.FakeQuantize(qscheme=torch.per_tensor_affine)
    with pytest.raises(ValueError, match="ch_axis"):
        hz.MovingAveragePerChannelMinMaxObserver(ch_axis=-1)
    with pytest.raises(ValueError, match="quant_min"):
        hz.MinMaxObserver(quant_min=-200, quant_max=127)
    with pytest.raises(ValueError, match="scale"):
        hz.FakeQuantize(observer=hz.FixedScaleObserver, scale=0.0)


def test_state_dict_round_trip_and_legacy_version():
    fq = hz.FakeQuantize()
    fq(torch.tensor([-2.0, 3.0]))
    sd = fq.state_dict()
    other = hz.FakeQuantize()
    other.load_state_dict(sd)
    same(other.scale, fq.scale)
    same(other.calculate_qparams()[0], fq.calculate_qparams()[0])
    assert hz.QuantRoundMode.get() == "half_to_even"
    sd._metadata[""]["version"] = 1  # a checkpoint from an older plugin
    other.load_state_dict(sd)
    assert hz.QuantRoundMode.get() == "bpu_round"  # global switch, as the plugin


def test_observers_before_data_nan_and_march():
    obs = hz.MovingAverageMinMaxObserver()
    s, z = obs.calculate_qparams()
    assert s.tolist() == [1.0] and z is None
    assert obs.min_val.numel() == 0
    obs(torch.tensor([float("nan"), -0.5, 1.0]))  # NaN skipped (differs: not public upstream)
    same(obs.calculate_qparams()[0], torch.tensor([1.0]) / 127.5)
    obs = hz.MinMaxObserver()
    obs(torch.zeros(3))
    same(obs.calculate_qparams()[0], EPS.reshape(1))
    hz.set_march(hz.March.BERNOULLI)  # power-of-two scales 2^-clamp(floor(-log2 s), 1, 14)
    obs = hz.MinMaxObserver()
    obs(torch.tensor([-3.0, 1.0]))  # s = 3/127.5 = 0.0235, -log2 s = 5.41 -> 2^-5
    assert obs.calculate_qparams()[0].tolist() == [2.0 ** -5]
    fq = hz.FakeQuantize(observer=hz.MinMaxObserver)
    fq.disable_observer()
    fq.set_qparams(0.5)
    assert torch.isnan(fq(torch.tensor([float("nan")]))).all()


def test_with_args_chain_as_in_seed_002():
    builder = hz.FakeQuantize.with_args(observer=hz.MinMaxObserver).with_args(dtype=hz.qint16)
    a, b = builder(), builder()
    assert id(a) != id(b) and a.quant_max == 32767
    assert isinstance(a.activation_post_process, hz.MinMaxObserver)


# ---- is_sync_quantize across two processes (gloo) ---------------------------------------------------
def _sync_worker(rank, world, init_file, out_dir):
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    g = torch.Generator().manual_seed(11)
    batches = [torch.randn(2, 8, generator=g) * (i + 1) for i in range(3)]
    obs = hz.MovingAverageMinMaxObserver(averaging_constant=0.5, is_sync_quantize=True)
    for b in batches:
        obs(b[rank])
    scale, _ = obs.calculate_qparams()
    torch.save(scale, f"{out_dir}/{rank}.pt")
    dist.destroy_process_group()


def test_is_sync_quantize_two_ranks(tmp_path):
    import torch.multiprocessing as mp
    mp.spawn(_sync_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    g = torch.Generator().manual_seed(11)
    batches = [torch.randn(2, 8, generator=g) * (i + 1) for i in range(3)]
    refs = [RefObserver(-128, 127, c=0.5) for _ in range(2)]
    for b in batches:
        for rank in range(2):
            refs[rank](b[rank])
    # Horizon all-reduces the per-rank running values: MIN of mins, MAX of maxes.
    r = RefObserver(-128, 127)
    r.min_val = torch.minimum(refs[0].min_val, refs[1].min_val)
    r.max_val = torch.maximum(refs[0].max_val, refs[1].max_val)
    for rank in range(2):
        same(torch.load(tmp_path / f"{rank}.pt"), r.scale())
