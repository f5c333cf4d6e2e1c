"""qkit.distributed across real processes: gloo on localhost, torch.multiprocessing spawn,
bounded timeouts, free ports (bind port 0).

The property under test (docs/distributed.md): after synchronised observation of shards, every
rank holds a state bit-identical to ONE plain observer that observed the concatenation of the
shards, batch after batch. The reference is that plain single-process observer (computed here,
in the parent process, without torch.distributed), plus, for min/max, plain torch reductions.

Process starts dominate the cost (about 3 s per rank on the shared machine), so each world
size is spawned once (module-scoped fixtures) and runs every scenario; the tests then check the
results the ranks saved.
"""
import datetime
import math
import os
import socket
import time
import traceback

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import qkit
import qkit.distributed as qd
from qkit.nn import (HistogramCalibrator, HistogramObserver, MaxCalibrator, MinMaxObserver,
                     MovingAverageMinMaxObserver, TensorQuantizer)

TIMEOUT = datetime.timedelta(seconds=20)   # default group: bounds every collective
SHORT = datetime.timedelta(seconds=2)      # the timeout scenario's group
STEPS = 4                                  # batches per observer
PC = dict(qscheme=torch.per_channel_affine, ch_axis=1)

# name -> (plain class, constructor kwargs). Small histograms keep it fast.
CASES = {
    "minmax": (MinMaxObserver, {}),
    "minmax_pc": (MinMaxObserver, PC),
    "ema_torch": (MovingAverageMinMaxObserver, dict(variant="torch", averaging_constant=0.3)),
    "ema_torch_pc": (MovingAverageMinMaxObserver, dict(variant="torch", **PC)),
    "ema_oneflow": (MovingAverageMinMaxObserver,
                    dict(variant="oneflow", stop_update_after_iters=100,
                         qscheme=torch.per_tensor_symmetric, dtype=torch.qint8, range="absmax")),
    "ema_oneflow_affine": (MovingAverageMinMaxObserver,
                           dict(variant="oneflow", stop_update_after_iters=100)),
    "ema_oneflow_gated": (MovingAverageMinMaxObserver,  # step 3 > 2: gated on every rank
                          dict(variant="oneflow", stop_update_after_iters=2)),
    "ema_megengine": (MovingAverageMinMaxObserver, dict(variant="megengine")),
    "ema_megengine_pc": (MovingAverageMinMaxObserver, dict(variant="megengine", **PC)),
    "ema_distiller": (MovingAverageMinMaxObserver, dict(variant="distiller")),
    "ema_distiller_pc": (MovingAverageMinMaxObserver, dict(variant="distiller", **PC)),
    "hist_l2": (HistogramObserver, dict(bins=64, upsample_rate=8)),
    "hist_l2_pc": (HistogramObserver, dict(bins=64, upsample_rate=8, **PC)),
    "nvidia": (HistogramCalibrator, dict(num_bins=64)),
    "nvidia_pc": (HistogramCalibrator, dict(num_bins=64, axis=1)),
    "nvidia_numpy": (HistogramCalibrator, dict(num_bins=64, torch_hist=False)),
    "nvidia_max": (MaxCalibrator, {}),
    "nvidia_max_pc": (MaxCalibrator, dict(axis=1)),
}
MODES = ("forward", "deferred", "batched")
DDP_STEPS = (0, 1, 3)  # no empty shard: each rank's contribution is visible


def _step_kw(case, step):
    """Moving averages get the training step (OneFlow's gate compares it)."""
    return {"current_train_step": step} if CASES[case][0] is MovingAverageMinMaxObserver else {}


def _make(case, sync=None, **extra):
    cls, kw = CASES[case]
    if sync is None:
        return cls(**kw, **extra)
    return qd._SYNC_OF[cls](**kw, sync=sync, **extra)


def _batch(case, step):
    """The full (concatenated) batch of `step`: (N, C, 5), ranges growing with the step so that
    histograms re-bin, a few NaN / ±Inf, and an exact zero."""
    g = torch.Generator().manual_seed(1000 * step + sum(map(ord, case)))
    n = 12 + step
    x = torch.randn(n, 3, 5, generator=g) * (1.0 + 1.5 * step) + 0.25 * step
    x[0, 0, 0] = 0.0
    if step == 1:
        x[1, 1, 1] = math.nan
        x[2, 2, 2] = math.inf
    if step == 2:
        x[-1, 0, 3] = -math.inf
    return x


def _shards(x, world, step):
    """Uneven contiguous shards along dim 0; at step 2 the last rank's shard is empty."""
    n = x.shape[0]
    if step == 2:
        cuts = [n * (r + 1) // (world - 1) for r in range(world - 1)] + [n]
        cuts[-2] = n
    else:
        cuts = [n * (r + 1) // world + (1 if r == 0 else 0) for r in range(world)]
        cuts[-1] = n
    out, lo = [], 0
    for c in cuts:
        out.append(x[lo:c])
        lo = c
    return out


def _bits(sd):
    """state_dict -> {name: (dtype, shape, raw bytes)} for bit-for-bit comparisons."""
    out = {}
    for k, v in sd.items():
        t = v.detach().cpu().contiguous()
        raw = t.reshape(-1).view(torch.uint8).clone() if t.numel() else torch.zeros(0)
        out[k] = (str(t.dtype), tuple(t.shape), raw)
    return out


def _same(a, b):
    return a.keys() == b.keys() and all(
        a[k][0] == b[k][0] and a[k][1] == b[k][1] and torch.equal(a[k][2], b[k][2]) for k in a)


def _free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ------------------------------------------------------------------ worker (child processes)

def _observe_all(world, rank, results):
    """Every case in the three modes; each rank's final state_dicts go into results."""
    fwd = {c: _make(c, "forward") for c in CASES}
    dfr = nn.ModuleDict({c: _make(c, "deferred") for c in CASES})
    bat = {c: _make(c) for c in CASES}
    counts = []
    for step in range(STEPS):
        shard = {c: _shards(_batch(c, step), world, step)[rank] for c in CASES}
        for c in CASES:
            fwd[c](shard[c], **_step_kw(c, step))
            dfr[c](shard[c], **_step_kw(c, step))
        qd.sync_observe([(bat[c], shard[c], _step_kw(c, step)) for c in CASES])
        if step != 2:  # steps 2 and 3 are committed together: two rounds in one call
            counts.append(qd.sync_observers(dfr))
    results["deferred_counts"] = counts
    for c in CASES:
        results[("forward", c)] = _bits(fwd[c].state_dict())
        results[("deferred", c)] = _bits(dfr[c].state_dict())
        results[("batched", c)] = _bits(bat[c].state_dict())


def _disagree(world, rank, results):
    """Ranks whose observers' states differ, or that sync different observers: every rank
    raises SyncError and no state changes."""
    a, b = MinMaxObserver(), HistogramObserver(bins=16, upsample_rate=4)
    qd.sync_observe([(a, torch.arange(4.0) + rank), (b, torch.arange(4.0) * (rank + 1))])
    m = qd.convert_sync_observers(nn.ModuleDict({"a": a, "b": b}), sync="deferred")
    if rank == 1:
        with torch.no_grad():
            a.max_val.add_(1.0)  # diverged state (e.g. a checkpoint loaded on one rank)
    m["a"](torch.ones(3))
    m["b"](torch.ones(3))
    before = _bits(m.state_dict())
    try:
        qd.sync_observers(m)
        results["state_err"] = None
    except qd.SyncError as e:
        results["state_err"] = str(e)
    results["state_unchanged"] = _same(before, _bits(m.state_dict()))
    results["pending_kept"] = m["a"].pending_batches == 1
    m["a"].discard_pending()
    m["b"].discard_pending()
    # another observer set on rank 1 (same buffer sizes: only the header can tell)
    c = MinMaxObserver()
    pairs = [(MovingAverageMinMaxObserver(), torch.ones(2))] if rank == 1 else [(c, torch.ones(2))]
    try:
        qd.sync_observe(pairs)
        results["layout_err"] = None
    except qd.SyncError as e:
        results["layout_err"] = str(e)
    # a group this rank is not in; a one-rank group (rank 0) observes locally
    solo = dist.new_group([0])
    o = qd.SyncMinMaxObserver(group=solo)
    try:
        o(torch.arange(3.0))
        results["member_err"] = None
    except RuntimeError as e:
        results["member_err"] = str(e)
    results["solo_state"] = _bits(o.state_dict())


def _ddp(world, rank, results):
    """DistributedDataParallel interplay (the observer sits before a Linear layer, so it sees
    the raw shards)."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    def run(obs, broadcast_buffers, ignore):
        torch.manual_seed(0)
        model = nn.Sequential(obs, nn.Linear(5, 2))
        if ignore:
            results["ignored"] = qd.ddp_ignore_observer_buffers(model)
        ddp = DDP(model, broadcast_buffers=broadcast_buffers)
        for step in DDP_STEPS:
            x = _shards(_batch("ddp", step), world, step)[rank]
            ddp(x).sum().backward()
        return ddp, _bits(obs.state_dict())

    _, results["plain_broadcast"] = run(MinMaxObserver(), True, False)
    ddp, results["sync_ignored"] = run(qd.SyncMinMaxObserver(), True, True)
    results["ddp_buffers"] = sorted(ddp.named_module_buffers)
    _, results["sync_nobroadcast"] = run(qd.SyncMinMaxObserver(), False, False)


def _fake_quant(world, rank, results):
    """QAT: FakeQuantize (fused observe + qparams path) with its observer converted to a Sync
    one gives every rank the qparams, and each shard the fake-quantized values, of one process
    running the whole batch."""
    fq = qd.convert_sync_observers(_make_fq())
    for step in DDP_STEPS:
        y = fq(_shards(_batch("fq", step), world, step)[rank], current_train_step=step)
    results["fq_state"] = _bits(fq.state_dict())
    results["fq_y"] = y
    # NVIDIA flow: TensorQuantizer calibration (histogram, per channel) then amax
    tq = qd.convert_sync_observers(_make_tq())
    for step in DDP_STEPS:
        tq(_shards(_batch("tq", step), world, step)[rank])
    tq.load_calib_amax("percentile", percentile=99.0)
    results["tq_amax"] = tq.amax.clone()
    results["tq_state"] = _bits(tq.state_dict())


def _make_tq():
    tq = TensorQuantizer(calib_method="histogram", axis=1, num_bins=64)
    tq.disable_quant()
    tq.enable_calib()
    return tq


def _make_fq():
    return qkit.nn.FakeQuantize(observer=MovingAverageMinMaxObserver, variant="megengine")


def _failures(world, rank, results):
    """One rank stops taking part: first alive but silent (the others time out on a group with
    a 2 s timeout), then it exits. The others get SyncError and keep their state."""
    short = dist.new_group(list(range(world)), timeout=SHORT)
    obs = nn.ModuleDict({"mm": qd.SyncMinMaxObserver(group=short),
                         "hist": qd.SyncHistogramObserver(bins=16, upsample_rate=4,
                                                          group=short)})
    x = torch.arange(6.0) + rank
    obs["mm"](x)
    obs["hist"](x)
    dfr = qd.convert_sync_observers(nn.ModuleDict({"ema": MovingAverageMinMaxObserver()}),
                                    sync="deferred")
    dfr["ema"](x)
    qd.sync_observers(dfr)
    dist.barrier()
    if rank == world - 1:
        time.sleep(SHORT.total_seconds() + 1.0)  # silent: the others time out
        raise _EarlyExit()  # then exits: the others' next collective fails at once
    before = _bits(obs.state_dict())
    t0 = time.monotonic()
    try:
        obs["hist"](x * 2)
        results["timeout_err"] = None
    except RuntimeError as e:
        results["timeout_err"] = f"{type(e).__name__}: {e}"
    results["timeout_s"] = time.monotonic() - t0
    results["timeout_unchanged"] = _same(before, _bits(obs.state_dict()))
    time.sleep(1.5)  # let the last rank exit
    dfr["ema"](x * 3)
    before = _bits(dfr.state_dict())
    t0 = time.monotonic()
    try:
        qd.sync_observers(dfr)
        results["exit_err"] = None
    except RuntimeError as e:
        results["exit_err"] = f"{type(e).__name__}: {e}"
    results["exit_s"] = time.monotonic() - t0
    results["exit_unchanged"] = _same(before, _bits(dfr.state_dict()))


class _EarlyExit(Exception):
    pass


def _worker(rank, world, port, outdir, scenarios):
    torch.set_num_threads(1)
    results = {}
    try:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                world_size=world, timeout=TIMEOUT)
        for name in scenarios:
            globals()[name](world, rank, results)
    except _EarlyExit:
        torch.save(results, os.path.join(outdir, f"rank{rank}.pt"))
        os._exit(0)
    except BaseException:
        results["error"] = traceback.format_exc()
    torch.save(results, os.path.join(outdir, f"rank{rank}.pt"))
    if "_failures" in scenarios:
        os._exit(0)  # the default group is broken on purpose; skip its teardown
    dist.destroy_process_group()


def _spawn(world, scenarios, tmp_path_factory):
    outdir = str(tmp_path_factory.mktemp(f"dist{world}"))
    t0 = time.monotonic()
    mp.spawn(_worker, args=(world, _free_port(), outdir, scenarios), nprocs=world, join=True)
    elapsed = time.monotonic() - t0
    res = [torch.load(os.path.join(outdir, f"rank{r}.pt")) for r in range(world)]
    for r, d in enumerate(res):
        assert "error" not in d, f"rank {r} failed:\n{d['error']}"
    return res, elapsed


@pytest.fixture(scope="module")
def world2(tmp_path_factory):
    return _spawn(2, ["_observe_all", "_disagree", "_ddp", "_fake_quant"], tmp_path_factory)[0]


@pytest.fixture(scope="module")
def world3(tmp_path_factory):
    return _spawn(3, ["_observe_all", "_failures"], tmp_path_factory)[0]


# ------------------------------------------------------------------ references (parent)

_REF = {}


def _reference(case, world):
    """ONE plain observer fed the concatenated batches (== _batch; the shards are views of
    it), with empty shards irrelevant by construction."""
    key = (case, world)
    if key not in _REF:
        obs = _make(case)
        for step in range(STEPS):
            full = torch.cat(_shards(_batch(case, step), world, step))
            assert torch.equal(full.nan_to_num(7.0), _batch(case, step).nan_to_num(7.0))
            obs(full, **_step_kw(case, step))
        _REF[key] = _bits(obs.state_dict())
    return _REF[key]


# ------------------------------------------------------------------ tests

@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", list(CASES))
def test_every_rank_equals_single_process(case, mode, world, world2, world3):
    res = world2 if world == 2 else world3
    ref = _reference(case, world)
    for r, d in enumerate(res):
        assert _same(d[(mode, case)], ref), (
            f"{case} ({mode}) on rank {r} of {world} differs from one process that observed "
            "the concatenated batches")


@pytest.mark.parametrize("world", [2, 3])
def test_minmax_matches_plain_torch(world, world2, world3):
    """Independent reference: torch's own min / max over the finite elements of every batch."""
    res = world2 if world == 2 else world3
    allx = torch.cat([_batch("minmax", s) for s in range(STEPS)])
    fin = allx[torch.isfinite(allx)]
    nonfinite = int((~torch.isfinite(allx)).sum())
    for d in res:
        dtype, shape, raw = d[("forward", "minmax")]["min_val"]
        assert raw.view(torch.float32).item() == fin.min().item()
        raw = d[("forward", "minmax")]["max_val"][2]
        assert raw.view(torch.float32).item() == fin.max().item()
        assert d[("forward", "minmax")]["num_nonfinite"][2].view(torch.int64).item() == nonfinite
        assert d[("forward", "minmax")]["num_batches"][2].view(torch.int64).item() == STEPS


def test_deferred_commits_all_recorded_batches(world2, world3):
    for res in (world2, world3):
        for d in res:
            # after steps 0 and 1: one batch per observer; after step 3: two (two rounds),
            # except that OneFlow's closed step gate records nothing at step 3
            assert d["deferred_counts"] == [len(CASES), len(CASES), 2 * len(CASES) - 1]


def test_diverged_states_fail_on_every_rank(world2):
    for r, d in enumerate(world2):
        assert d["state_err"] is not None, f"rank {r} did not detect the diverged state"
        assert "qkit.distributed" in d["state_err"] and "states differ" in d["state_err"]
        assert "SyncMinMaxObserver 'a'" in d["state_err"]
        assert d["state_unchanged"] and d["pending_kept"]
        assert d["layout_err"] is not None and "disagree" in d["layout_err"]
    assert world2[0]["member_err"] is None
    assert "rank 1 is not a member of `group`" in world2[1]["member_err"]
    plain = MinMaxObserver()
    plain(torch.arange(3.0))
    assert _same(world2[0]["solo_state"], _bits(plain.state_dict()))
    assert not _same(world2[1]["solo_state"], _bits(plain.state_dict()))  # unchanged (empty)


def test_ddp_broadcast_buffers(world2):
    def ref(batches):
        o = MinMaxObserver()
        for x in batches:
            o(x)
        return _bits(o.state_dict())

    sh = [_shards(_batch("ddp", s), 2, s) for s in DDP_STEPS]
    full = [_batch("ddp", s) for s in DDP_STEPS]
    r0, r1 = world2
    # plain observers + broadcast_buffers=True: each forward starts from rank 0's buffers, so
    # rank 0 ends with its own shards only and rank 1 with rank 0's state plus its last shard.
    assert _same(r0["plain_broadcast"], ref([sh[0][0], sh[1][0], sh[2][0]]))
    assert _same(r1["plain_broadcast"], ref([sh[0][0], sh[1][0], sh[2][1]]))
    assert not _same(r0["plain_broadcast"], ref(full))
    # Sync observers: exact with DDP ignoring their buffers, or with broadcast_buffers=False
    for d in world2:
        assert _same(d["sync_ignored"], ref(full))
        assert _same(d["sync_nobroadcast"], ref(full))
        assert d["ignored"] == ["0.min_val", "0.max_val", "0.num_batches", "0.num_nonfinite"]
        assert d["ddp_buffers"] == []  # DDP broadcasts none of the observer's buffers


def test_fake_quantize_and_tensor_quantizer_with_sync_observers(world2):
    ref = _make_fq()
    for step in DDP_STEPS:
        y = ref(_batch("fq", step), current_train_step=step)
    want = _bits(ref.state_dict())
    lo = 0
    for r, d in enumerate(world2):
        assert _same(d["fq_state"], want), f"rank {r}: FakeQuantize state differs"
        shard = _shards(_batch("fq", DDP_STEPS[-1]), 2, DDP_STEPS[-1])[r]
        assert torch.equal(d["fq_y"].view(torch.int32),  # bitwise (NaN propagates)
                           y[lo:lo + shard.shape[0]].contiguous().view(torch.int32))
        lo += shard.shape[0]
    tq = _make_tq()
    for step in DDP_STEPS:
        tq(_batch("tq", step))
    tq.load_calib_amax("percentile", percentile=99.0)
    for r, d in enumerate(world2):
        assert _same(d["tq_state"], _bits(tq.state_dict())), f"rank {r}: calibrator differs"
        assert torch.equal(d["tq_amax"], tq.amax)


def test_rank_that_times_out_or_exits(world3):
    for r, d in enumerate(world3[:2]):
        for what in ("timeout", "exit"):
            err = d[f"{what}_err"]
            assert err is not None, f"rank {r}: no error when the last rank {what}"
            assert err.startswith("SyncError: qkit.distributed:"), err
            assert d[f"{what}_unchanged"], f"rank {r}: state changed by a failed sync ({what})"
        assert "SyncHistogramObserver" in d["timeout_err"]
        assert "SyncMovingAverageMinMaxObserver 'ema'" in d["exit_err"]
        assert d["timeout_s"] < SHORT.total_seconds() + 3.0
        assert d["exit_s"] < TIMEOUT.total_seconds()


# ------------------------------------------------------------------ single process

def test_without_process_group_sync_is_plain_observation(gen):
    x = torch.randn(4, 3, generator=gen)
    for case in ("minmax", "ema_distiller", "hist_l2", "nvidia"):
        plain, fwd, bat = _make(case), _make(case, "forward"), _make(case)
        dfr = nn.ModuleDict({"o": _make(case, "deferred")})
        for k in range(2):
            plain(x * (k + 1))
            fwd(x * (k + 1))
            dfr["o"](x * (k + 1))
            qd.sync_observe([(bat, x * (k + 1))])
        assert dfr["o"].pending_batches == 2
        assert qd.sync_observers(dfr) == 2 and dfr["o"].pending_batches == 0
        ref = _bits(plain.state_dict())
        for o in (fwd, bat, dfr["o"]):
            assert _same(_bits(o.state_dict()), ref), case


def test_convert_in_place_and_plain_observers_rejected():
    m = nn.Sequential(MinMaxObserver(), nn.Sequential(HistogramObserver(bins=8)), nn.ReLU())
    with pytest.raises(TypeError, match=r"sync_observers.*MinMaxObserver '0'"):
        qd.sync_observers(m)
    inner = m[1][0]
    assert qd.convert_sync_observers(m, sync="deferred") is m
    assert m[1][0] is inner and type(inner) is qd.SyncHistogramObserver
    assert inner.sync == "deferred" and inner.qkit_name == "1.0"
    assert qd.sync_observers(m) == 0


def test_bad_arguments():
    with pytest.raises(ValueError, match="`sync`='eager'"):
        qd.SyncMinMaxObserver(sync="eager")
    with pytest.raises(RuntimeError, match="not initialised"):
        qd.SyncMinMaxObserver(group=object())(torch.ones(2))
    with pytest.raises(TypeError, match="unexpected arguments"):
        qd.SyncMinMaxObserver()(torch.ones(2), 3)
    o = MinMaxObserver()
    with pytest.raises(ValueError, match="appears twice"):
        qd.sync_observe([(o, torch.ones(2)), (o, torch.ones(2))])
    with pytest.raises(TypeError, match="distributed protocol"):
        qd.sync_observe([(nn.ReLU(), torch.ones(2))])


def test_failed_commit_rolls_back_every_observer():
    """All-or-nothing: a commit that raises after another observer committed restores both."""
    a, b = _make("hist_l2"), _make("ema_torch")
    a(torch.arange(4.0))
    before = _bits(a.state_dict())

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    b.commit = boom
    with pytest.raises(RuntimeError, match="boom"):
        qd.sync_observe([(a, torch.arange(9.0) - 3), (b, torch.ones(2))])
    assert _same(before, _bits(a.state_dict()))
    # deferred: the recorded batches survive a failed sync_observers
    m = qd.convert_sync_observers(nn.ModuleDict({"a": a, "b": b}), sync="deferred")
    m["a"](torch.arange(9.0) - 3)
    m["b"](torch.ones(2))
    with pytest.raises(RuntimeError, match="boom"):
        qd.sync_observers(m)
    assert _same(before, _bits(a.state_dict())) and m["a"].pending_batches == 1


def test_reset_and_load_state_dict_drop_recorded_batches():
    o = qd.SyncHistogramCalibrator(num_bins=8, torch_hist=False, sync="deferred")
    o(torch.arange(5.0))
    assert o.pending_batches == 1
    o.reset()
    assert o.pending_batches == 0
    o(torch.arange(5.0))
    o.load_state_dict(HistogramCalibrator(num_bins=8, torch_hist=False).state_dict())
    assert o.pending_batches == 0
