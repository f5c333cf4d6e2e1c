"""qkit.distributed: observer statistics synchronised across data-parallel ranks.

Every rank observes its LOCAL shard; the core's three-phase protocol (docs/observers.md,
include/qkit/observers/range_stats.h) makes every rank end in the state of ONE process that
observed the concatenation of all shards, bit for bit:

1. each rank computes its batch range (``observer.batch_range(x)``, no state change); all
   ranges of all observers being synced are flattened into ONE float32 buffer
   (``all_reduce(MIN)``) and ONE int64 buffer (``all_reduce(SUM)``);
2. histogram observers / calibrators bin their local shard on the range every rank derives
   from the (identical) state and the merged range (``observer.batch_counts``); all counts go
   into ONE int64 buffer (``all_reduce(SUM)``, exact integers);
3. every rank commits the same merged result (``observer.commit``).

Nothing here computes a statistic: the collectives only move the core's flattened buffers
(min of mins, max of maxes, sums of exact counts) and the observers apply them. State changes
only after every collective succeeded; a collective that fails (a rank died, timed out or
disagreed) raises :class:`SyncError` (a ``RuntimeError`` naming qkit, the caller and the
observers) and leaves every observer as it was. Contract and DDP interplay:
docs/distributed.md.

The collectives run on whatever process group the user initialised (``torch.distributed``'s
default group, or ``group=``), with any backend (gloo on CPU; NCCL with CUDA buffers).
"""
import hashlib
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from . import nn as _qnn

__all__ = [
    "SyncError",
    "SyncHistogramCalibrator",
    "SyncHistogramObserver",
    "SyncMaxCalibrator",
    "SyncMinMaxObserver",
    "SyncMovingAverageMinMaxObserver",
    "convert_sync_observers",
    "ddp_ignore_observer_buffers",
    "sync_observe",
    "sync_observers",
]

_MODES = ("forward", "deferred")
# Header of the int64 SUM buffer: [participants, h1, h1^2, h2, h2^2]. Every rank adds 1 and
# two 24-bit digests of (what it syncs, its observers' states); by Cauchy-Schwarz,
# sum(h) == world * h_local and sum(h^2) == world * h_local^2 hold on a rank iff every rank
# sent the same h, so a disagreement is seen by every rank (and no rank commits).
_HEADER = 5
_DIGEST_BITS = 24


class SyncError(RuntimeError):
    """A qkit observer sync failed (collective error or timeout, or ranks that disagree on
    what they sync). No observer was changed by the failed call on the rank that raises."""


# ---------------------------------------------------------------------------- helpers

def _dist():
    import torch.distributed as dist
    return dist


def _active(group: Any) -> bool:
    """True when collectives must run: torch.distributed is initialised and the group has more
    than one rank. A group given while torch.distributed is not initialised is an error."""
    dist = _dist()
    if not dist.is_available() or not dist.is_initialized():
        if group is not None:
            raise RuntimeError(
                f"qkit.distributed: `group`={group!r} was given but torch.distributed is not "
                "initialised (call torch.distributed.init_process_group first)")
        return False
    if group is not None and dist.get_rank(group) < 0:
        raise RuntimeError(
            f"qkit.distributed: rank {dist.get_rank()} is not a member of `group`={group!r}; "
            "only the group's ranks may sync observers on it")
    return dist.get_world_size(group) > 1


def _comm_device(group: Any) -> torch.device:
    dist = _dist()
    backend = dist.get_backend(group)
    if backend == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _rank_text(group: Any) -> str:
    dist = _dist()
    try:
        return f"rank {dist.get_rank()} of {dist.get_world_size(group)}"
    except Exception:  # noqa: BLE001 (the group itself may be broken)
        return "this rank"


def _names(items: Sequence["_Item"], limit: int = 6) -> str:
    seen: List[str] = []
    for it in items:
        if it.label not in seen:
            seen.append(it.label)
    text = ", ".join(seen[:limit])
    if len(seen) > limit:
        text += f" and {len(seen) - limit} more"
    return text or "no observer"


def _label(obs: nn.Module, name: Optional[str] = None) -> str:
    name = name or getattr(obs, "qkit_name", None)
    return f"{type(obs).__name__} {name!r}" if name else type(obs).__name__


def _all_reduce(buf: Tensor, op: str, group: Any, what: str, caller: str,
                items: Sequence["_Item"]) -> Tensor:
    dist = _dist()
    dev = _comm_device(group)
    t = buf.to(dev) if buf.device != dev else buf
    try:
        dist.all_reduce(t, op=getattr(dist.ReduceOp, op), group=group)
    except Exception as e:  # gloo/nccl raise RuntimeError (timeout, closed connection, ...)
        raise SyncError(
            f"qkit.distributed: {caller}: all_reduce({op}) of the {what} failed on "
            f"{_rank_text(group)} for {_names(items)}: {e}. No observer was changed; the "
            "process group is probably unusable (a rank died, timed out or called other "
            "collectives).") from e
    return t.cpu() if t.device.type != "cpu" else t


def _bytes_of(observers: Iterable[nn.Module]) -> Tuple[List[Tuple[Any, ...]], Tensor]:
    """Every buffer of every observer as raw bytes in ONE fresh uint8 tensor (one copy, however
    many buffers), plus (observer, name, dtype, shape, offset, nbytes) per buffer."""
    meta: List[Tuple[Any, ...]] = []
    parts: List[Tensor] = []
    off = 0
    for o in observers:
        for name, buf in o._buffers.items():
            if buf is None:
                meta.append((o, name, None, None, off, 0))
                continue
            if not buf.numel():
                raw = None
            elif buf.dim() == 1 and buf.is_contiguous():  # the common case: one view
                raw = buf.view(torch.uint8)
            else:
                raw = buf.reshape(-1).view(torch.uint8)
            n = 0 if raw is None else raw.numel()
            meta.append((o, name, buf.dtype, tuple(buf.shape), off, n))
            if raw is not None:
                parts.append(raw.cpu())
            off += n
    blob = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.uint8)
    return meta, blob


def _states_digest(state: Tuple[List[Tuple[Any, ...]], Tensor], h: "hashlib._Hash") -> None:
    meta, blob = state
    h.update(repr([(m[1], str(m[2]), m[3]) for m in meta]).encode())
    # (blob is a fresh tensor: exposing a buffer's own storage to numpy would make it
    # non-resizable)
    h.update(blob.numpy().tobytes())


def _snapshot(observers: Iterable[nn.Module],
              state: Optional[Tuple[List[Tuple[Any, ...]], Tensor]] = None
              ) -> Tuple[List[Tuple[Any, ...]], Tensor, List[Tuple[nn.Module, List[str]]]]:
    obs = list(observers)
    meta, blob = _bytes_of(obs) if state is None else state
    return meta, blob, [(o, list(o._buffers)) for o in obs]


def _restore(snap: Tuple[List[Tuple[Any, ...]], Tensor, List[Tuple[nn.Module, List[str]]]]
             ) -> None:
    meta, blob, names = snap
    with torch.no_grad():
        for o, keys in names:
            for k in list(o._buffers):
                if k not in keys:
                    del o._buffers[k]
        for o, name, dtype, shape, off, n in meta:
            if dtype is None:
                o._buffers[name] = None
                continue
            v = (blob[off:off + n].clone().view(dtype) if n else torch.zeros(0, dtype=dtype))
            v = v.reshape(shape)
            cur = o._buffers.get(name)
            if cur is not None and cur.shape == v.shape and cur.dtype == v.dtype:
                cur.copy_(v)
            else:
                o._buffers[name] = v.to(cur.device) if cur is not None else v


def _gate_open(obs: nn.Module, gate: Dict[str, Any]) -> bool:
    fn = getattr(obs, "gate_open", None)
    return True if fn is None else bool(fn(**gate))


# ---------------------------------------------------------------------------- the engine

class _Item:
    """One batch of one observer: its local shard (x), or stats recorded earlier (deferred)."""
    __slots__ = ("obs", "label", "x", "stats", "gate", "merged", "floats", "counts")

    def __init__(self, obs: nn.Module, label: str, x: Optional[Tensor],
                 stats: Any = None, gate: Optional[Dict[str, Any]] = None) -> None:
        self.obs, self.label, self.x, self.stats = obs, label, x, stats
        self.gate = gate or {}
        self.merged = None


def _run(rounds: List[List[_Item]], group: Any, caller: str,
         extra_observers: Sequence[Tuple[nn.Module, str]] = (),
         check_state: bool = True) -> None:
    """Runs the protocol for `rounds` (round j holds at most one batch per observer; rounds are
    committed in order). ``extra_observers`` take part in the state check only."""
    active = _active(group)
    items = [it for r in rounds for it in r]
    uniq: Dict[int, nn.Module] = {}
    for o in [it.obs for it in items] + [o for o, _ in extra_observers]:
        uniq.setdefault(id(o), o)
    needs_snapshot = len(items) > 1
    # every observer's buffers as bytes, copied once: hashed for the state check and kept as
    # the snapshot that makes a multi-observer sync all-or-nothing
    state = _bytes_of(uniq.values()) if (active and check_state) or needs_snapshot else None
    # ---- phase 1: local ranges (validates x; may raise before any collective)
    for it in items:
        if it.stats is None:
            it.stats = it.obs.batch_range(it.x)
        it.floats, it.counts = it.stats.flatten()
        it.floats = it.floats.detach().reshape(-1).to("cpu", torch.float32)
        it.counts = it.counts.detach().reshape(-1).to("cpu", torch.int64)
    if active:
        h1 = hashlib.blake2b(b"qkit-sync-1", digest_size=8)
        layout = []
        for j, r in enumerate(rounds):
            for it in r:
                layout.append((j, type(it.obs).__name__, it.obs.extra_repr(),
                               bool(getattr(it.obs, "needs_counts", False)),
                               it.floats.numel(), it.counts.numel(),
                               sorted(it.gate.items())))
        h1.update(repr(layout).encode())
        h2 = h1.copy()
        h2.update(b"state")
        if check_state:
            _states_digest(state, h2)
        d1 = int.from_bytes(h1.digest(), "little") % (1 << _DIGEST_BITS)
        d2 = int.from_bytes(h2.digest(), "little") % (1 << _DIGEST_BITS)
        header = torch.tensor([1, d1, d1 * d1, d2, d2 * d2], dtype=torch.int64)
        counts = torch.cat([header] + [it.counts for it in items])
        floats = torch.cat([torch.zeros(0)] + [it.floats for it in items])
        all_items = items + [_Item(o, lab, None) for o, lab in extra_observers]
        counts = _all_reduce(counts, "SUM", group, "range counters", caller, all_items)
        world = _dist().get_world_size(group)
        hd = counts[:_HEADER].tolist()
        if hd[0] != world or hd[1] != world * d1 or hd[2] != world * d1 * d1:
            raise SyncError(
                f"qkit.distributed: {caller}: the ranks disagree on what they sync "
                f"({_rank_text(group)} syncs {_names(all_items)}; another rank syncs other "
                "observers, another number of batches, other slot counts or another gate). "
                "Every rank must sync the same observers in the same order. No observer was "
                "changed.")
        if hd[3] != world * d2 or hd[4] != world * d2 * d2:
            raise SyncError(
                f"qkit.distributed: {caller}: the observers' states differ between ranks "
                f"before the sync ({_rank_text(group)}: {_names(all_items)}). Synced observers "
                "must start from identical states (a checkpoint loaded on one rank only, or an "
                "observer updated outside the sync?). No observer was changed.")
        if floats.numel():  # (same on every rank: the layout digest agreed)
            floats = _all_reduce(floats, "MIN", group, "batch ranges", caller, all_items)
        fo, co = 0, _HEADER
        for it in items:
            nf, nc = it.floats.numel(), it.counts.numel()
            it.merged = type(it.stats).unflatten(floats[fo:fo + nf], counts[co:co + nc])
            fo, co = fo + nf, co + nc
    else:
        for it in items:
            it.merged = it.stats
    # ---- phases 2 and 3, round by round; all-or-nothing across rounds and observers
    snap = _snapshot(uniq.values(), state) if needs_snapshot else None
    try:
        for r in rounds:
            hist = [it for it in r if getattr(it.obs, "needs_counts", False)]
            merged_counts: Dict[int, Tensor] = {}
            if hist:
                local = [it.obs.batch_counts(it.x, it.merged).detach().reshape(-1)
                         .to("cpu", torch.int64) for it in hist]
                if active:
                    buf = _all_reduce(torch.cat(local), "SUM", group, "histogram counts",
                                      caller, hist)
                    o = 0
                    for it, c in zip(hist, local):
                        merged_counts[id(it)] = buf[o:o + c.numel()]
                        o += c.numel()
                else:
                    for it, c in zip(hist, local):
                        merged_counts[id(it)] = c
            for it in r:
                if id(it) in merged_counts:
                    it.obs.commit(it.merged, merged_counts[id(it)], **it.gate)
                else:
                    it.obs.commit(it.merged, None, **it.gate)
    except BaseException:
        if snap is not None:
            _restore(snap)
        raise


# ---------------------------------------------------------------------------- public API

def sync_observe(pairs: Sequence[Sequence[Any]], group: Any = None, *,
                 check_state: bool = True) -> None:
    """Observes one batch per observer, synchronised: ``pairs`` = ``[(observer, x), ...]`` or
    ``(observer, x, {"current_train_step": s})`` for moving-average observers. Every rank passes
    the same observers in the same order with its local shard ``x``. Collectives: one
    all_reduce(SUM) of all counters, one all_reduce(MIN) of all ranges, plus one
    all_reduce(SUM) of all histogram counts if any observer needs counts. Works on plain qkit.nn
    observers and on the Sync* variants (their sync mode is not consulted). Without an
    initialised process group (or with one rank) this is each observer's forward(x)."""
    caller = "sync_observe"
    items = []
    seen = set()
    for p in pairs:
        if not isinstance(p, (tuple, list)) or len(p) not in (2, 3):
            raise TypeError(f"qkit.distributed.sync_observe: each entry must be (observer, x) "
                            f"or (observer, x, gate_kwargs), got {p!r}")
        obs, x = p[0], p[1]
        gate = dict(p[2]) if len(p) == 3 and p[2] is not None else {}
        if not hasattr(obs, "batch_range"):
            raise TypeError(f"qkit.distributed.sync_observe: {type(obs).__name__} does not "
                            "implement the distributed protocol (batch_range / commit)")
        if id(obs) in seen:
            raise ValueError(f"qkit.distributed.sync_observe: {_label(obs)} appears twice; one "
                             "batch per observer per call (call again for the next batch)")
        seen.add(id(obs))
        if _gate_open(obs, gate):
            items.append(_Item(obs, _label(obs), x, gate=gate))
    _run([items], group, caller, check_state=check_state)


class _SyncMixin:
    """forward(x) runs the protocol (sync='forward') or records the batch for
    qkit.distributed.sync_observers (sync='deferred')."""
    qkit_sync = True  # FakeQuantize / TensorQuantizer: call the observer even for an empty x

    def _qkit_init_sync(self, group: Any, sync: str) -> None:
        if sync not in _MODES:
            raise ValueError(f"{type(self).__name__}: `sync`={sync!r} must be one of {_MODES}")
        self.group = group
        self.sync = sync
        self._qkit_pending: List[Tuple[Any, Optional[Tensor], Dict[str, Any]]] = []

    @property
    def pending_batches(self) -> int:
        """Batches recorded in sync='deferred' mode and not yet committed."""
        return len(self._qkit_pending)

    def discard_pending(self) -> None:
        self._qkit_pending = []

    # A recorded batch range was taken against the state of its time (the numpy-path
    # calibrator's range depends on whether a slot already has a histogram); the state only
    # ever gains data between recording and sync, which keeps it valid. reset() and
    # load_state_dict() replace the state, so they drop what was recorded.
    def reset(self) -> None:
        self.discard_pending()
        super().reset()

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self.discard_pending()
        super()._load_from_state_dict(*args, **kwargs)

    def _qkit_gate(self, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Dict[str, Any]:
        if args or kwargs:
            raise TypeError(f"{type(self).__name__}.forward: unexpected arguments "
                            f"{args!r} {sorted(kwargs)}")
        return {}

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        gate = self._qkit_gate(args, kwargs)
        if self.sync == "deferred":
            if _gate_open(self, gate):
                stats = self.batch_range(x)  # validates now; local, no state change
                keep = x.detach().clone() if getattr(self, "needs_counts", False) else None
                self._qkit_pending.append((stats, keep, gate))
            return x
        if not _active(self.group):
            return super().forward(x, *args, **kwargs)
        if _gate_open(self, gate):
            _run([[_Item(self, _label(self), x, gate=gate)]], self.group,
                 f"{type(self).__name__}.forward")
        return x

    def observe_and_calculate_qparams(self, x: Tensor, current_train_step: Optional[int] = None
                                      ) -> Tuple[Tensor, Tensor]:
        """FakeQuantize's fused path, synchronised: forward(x) (the protocol) then
        calculate_qparams(). In sync='deferred' mode the qparams are those of the state before
        the recorded batch (it is committed by sync_observers)."""
        if current_train_step is None or not isinstance(self, _SyncGateMixin):
            self.forward(x)  # the plain kinds ignore the step, as ObserverBase does
        else:
            self.forward(x, current_train_step=current_train_step)
        return self.calculate_qparams()

    def extra_repr(self) -> str:
        base = super().extra_repr()
        more = f"sync={self.sync!r}" + (", group=<custom>" if self.group is not None else "")
        return f"{base}, {more}" if base else more


class _SyncGateMixin(_SyncMixin):
    def _qkit_gate(self, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Dict[str, Any]:
        kw = dict(kwargs)
        if args:
            if len(args) > 1 or "current_train_step" in kw:
                raise TypeError(f"{type(self).__name__}.forward(x, current_train_step=None): "
                                f"unexpected arguments {args!r} {sorted(kw)}")
            kw["current_train_step"] = args[0]
        step = kw.pop("current_train_step", None)
        step = None if step is None else int(step)
        if kw:
            raise TypeError(f"{type(self).__name__}.forward: unexpected arguments {sorted(kw)}")
        return {} if step is None else {"current_train_step": step}


def _sync_class(name: str, base: type, mixin: type) -> type:
    def __init__(self, *args: Any, group: Any = None, sync: str = "forward",
                 **kwargs: Any) -> None:
        base.__init__(self, *args, **kwargs)
        self._qkit_init_sync(group, sync)

    doc = (f"``qkit.nn.{base.__name__}`` whose statistics are synchronised across the ranks of "
           "``group`` (default: torch.distributed's default group). Extra keywords: "
           "``group=None``, ``sync='forward'`` (every forward(x) runs the protocol on the local "
           "shard x: every rank ends with the state of one process that observed the "
           "concatenation) or ``sync='deferred'`` (forward records the batch range, and the "
           "shard itself for histogram kinds; ``qkit.distributed.sync_observers(model)`` "
           "commits all recorded batches of all observers in a few flat collectives). Without "
           "an initialised process group, or with one rank, sync='forward' is the plain "
           "forward. See docs/distributed.md.")
    cls = type(name, (mixin, base), {"__init__": __init__, "__doc__": doc,
                                     "__module__": __name__})
    return cls


SyncMinMaxObserver = _sync_class("SyncMinMaxObserver", _qnn.MinMaxObserver, _SyncMixin)
SyncMovingAverageMinMaxObserver = _sync_class(
    "SyncMovingAverageMinMaxObserver", _qnn.MovingAverageMinMaxObserver, _SyncGateMixin)
SyncHistogramObserver = _sync_class("SyncHistogramObserver", _qnn.HistogramObserver, _SyncMixin)
SyncHistogramCalibrator = _sync_class("SyncHistogramCalibrator", _qnn.HistogramCalibrator,
                                      _SyncMixin)

SyncMaxCalibrator = _sync_class("SyncMaxCalibrator", _qnn.MaxCalibrator, _SyncMixin)

# plain class -> Sync variant; subclasses of these get one made on first use (_sync_of)
_SYNC_OF = {
    _qnn.MinMaxObserver: SyncMinMaxObserver,
    _qnn.MovingAverageMinMaxObserver: SyncMovingAverageMinMaxObserver,
    _qnn.HistogramObserver: SyncHistogramObserver,
    _qnn.HistogramCalibrator: SyncHistogramCalibrator,
    _qnn.MaxCalibrator: SyncMaxCalibrator,
}
_SYNCABLE = tuple(_SYNC_OF)


def _sync_of(cls: type) -> type:
    """The Sync variant of a plain observer class (made and cached for user subclasses)."""
    if cls not in _SYNC_OF:
        mixin = (_SyncGateMixin if issubclass(cls, _qnn.MovingAverageMinMaxObserver)
                 else _SyncMixin)
        _SYNC_OF[cls] = _sync_class("Sync" + cls.__name__, cls, mixin)
    return _SYNC_OF[cls]


def _observers(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, _qnn.ObserverBase)]


def convert_sync_observers(module: nn.Module, group: Any = None,
                           sync: str = "forward") -> nn.Module:
    """Turns every qkit.nn MinMaxObserver, MovingAverageMinMaxObserver, HistogramObserver and
    HistogramCalibrator in ``module`` (itself included) into its Sync variant IN PLACE (same
    module object, buffers, hooks and state; only the class changes) and returns ``module``.
    Sync variants already present get ``group`` and ``sync`` set. Other observers (e.g.
    PassiveObserver, which has nothing to sync) are left alone. Each converted observer
    remembers its qualified name for error messages (``qkit_name``)."""
    if sync not in _MODES:
        raise ValueError(f"qkit.distributed.convert_sync_observers: `sync`={sync!r} must be one "
                         f"of {_MODES}")
    for name, m in _observers(module):
        if isinstance(m, _SyncMixin):
            if m.pending_batches:
                raise RuntimeError(f"qkit.distributed.convert_sync_observers: {_label(m, name)} "
                                   f"has {m.pending_batches} uncommitted deferred batches; call "
                                   "sync_observers first")
            m.group, m.sync = group, sync
        else:
            if not isinstance(m, _SYNCABLE):
                continue
            m.__class__ = _sync_of(type(m))
            m._qkit_init_sync(group, sync)
        m.qkit_name = name or None
    return module


def sync_observers(model: nn.Module, group: Any = None, *, check_state: bool = True) -> int:
    """Commits every batch recorded by the ``sync='deferred'`` Sync observers of ``model``,
    synchronised across the ranks of ``group``, and returns how many batches were committed.

    What it syncs: batch statistics, never states. Each deferred observer's k-th recorded batch
    (since the last sync) is merged with the k-th recorded batch of the same observer on every
    other rank and committed in order, so every rank ends with the state of one process that
    observed, batch after batch, the concatenation of the ranks' shards. Collectives, whatever
    the number of observers: one all_reduce(SUM) of all counters (plus a 5-element header that
    checks the ranks agree), one all_reduce(MIN) of all ranges, and, if any histogram observer
    has recorded batches, one all_reduce(SUM) of all histogram counts per round (round k = the
    k-th recorded batch of each observer; 1 round when each observer ran once per step).

    With ``check_state`` (default) every Sync observer of the model (forward-mode ones too)
    contributes a digest of its state, and the call fails on every rank if any two ranks hold
    different states: so with nothing recorded it verifies that the ranks are in sync.

    Plain qkit.nn observers that keep statistics (MinMax, MovingAverage, Histogram*) raise
    TypeError: their rank-local states cannot be merged exactly in general (see
    docs/distributed.md); convert them with convert_sync_observers(model). Observers without
    statistics (PassiveObserver) are skipped. Every rank must call it (it is a collective).
    On failure (SyncError) no observer changed and the recorded batches are kept."""
    obs = _observers(model)
    plain = [_label(m, n) for n, m in obs
             if not isinstance(m, _SyncMixin) and isinstance(m, _SYNCABLE)]
    if plain:
        raise TypeError(
            "qkit.distributed.sync_observers: plain observers keep rank-local statistics that "
            f"cannot be merged exactly after the fact: {', '.join(plain[:6])}"
            f"{' ...' if len(plain) > 6 else ''}. Convert them with "
            "qkit.distributed.convert_sync_observers(model, sync='deferred' or 'forward') "
            "before observing (docs/distributed.md).")
    synced = [(n, m) for n, m in obs if isinstance(m, _SyncMixin)]
    rounds: List[List[_Item]] = []
    for n, m in synced:
        for k, (stats, x, gate) in enumerate(m._qkit_pending):
            while len(rounds) <= k:
                rounds.append([])
            rounds[k].append(_Item(m, _label(m, n), x, stats=stats, gate=gate))
    committed = sum(len(r) for r in rounds)
    idle = [(m, _label(m, n)) for n, m in synced if not m._qkit_pending]
    _run(rounds, group, "sync_observers", extra_observers=idle, check_state=check_state)
    for _, m in synced:
        m._qkit_pending = []
    return committed


def ddp_ignore_observer_buffers(model: nn.Module) -> List[str]:
    """Tells DistributedDataParallel (call BEFORE wrapping ``model``) to leave the buffers of
    every qkit observer alone: neither the broadcast from rank 0 at construction nor the one
    before each forward (``broadcast_buffers=True``) touches them, while other buffers
    (BatchNorm running stats) are still broadcast. Use with Sync observers, which keep the
    ranks identical themselves. Returns the ignored names (added to any already ignored).
    Uses DDP's ``_set_params_and_buffers_to_ignore_for_model`` (PyTorch >= 1.8)."""
    from torch.nn.parallel import DistributedDataParallel as DDP
    if isinstance(model, DDP):
        raise TypeError("qkit.distributed.ddp_ignore_observer_buffers: call it on the model "
                        "BEFORE wrapping it in DistributedDataParallel")
    names = [f"{n}.{b}" if n else b for n, m in _observers(model)
             for b, _ in m.named_buffers(recurse=False)]
    old = list(getattr(model, "_ddp_params_and_buffers_to_ignore", []))
    DDP._set_params_and_buffers_to_ignore_for_model(model, old + [n for n in names
                                                                  if n not in old])
    return names
