"""``megengine.quantization.observer`` on qkit's observer modules (SPEC.md §3.3, seed 001):
``Observer``, ``MinMaxObserver``, ``SyncMinMaxObserver``, ``ExponentialMovingAverageObserver``,
``SyncExponentialMovingAverageObserver``, ``HistogramObserver``, ``PassiveObserver``.

Observers return their input unchanged; ``get_qparams()`` returns a ``QParams`` (``scale`` a
float32 0-d tensor, ``zero_point`` a float32 0-d tensor or None for symmetric mode).
``enable()`` / ``disable()`` switch observation; ``train(mode)`` also enables / disables, so
eval mode stops observation (as MegEngine). Parameters come from qkit's ``ChooseQParams`` with
MegEngine's ``_calculate_qparams`` preset: range widened to include 0, divisor
``(qmax - qmin) / 2`` (127.5 for qint8), scale floored at ``eps`` (default 1e-5), asymmetric
zero point ``qmin - round(min / scale)`` rounded **half away from zero** (``F.round``) and not
clamped, returned as a float tensor.

Reproduced quirks (the code, not the docs): ``SyncMinMaxObserver`` observes even when disabled
or in eval mode (upstream tests the bound method ``self.enable``); ``HistogramObserver`` always
observes; after ``set_momentum`` the EMA's next update still uses the previous momentum (the
``runtime_momentum`` lag). An observer that has seen nothing returns the parameters of MegEngine's
sentinels (``min = FLT_MAX``, ``max = -FLT_MAX``, widened to ``[0, 0]``): scale ``eps``.

Differences (docs/compat.md): NaN input elements are skipped and counted (MegEngine's min/max
would propagate them); ±Inf enter the range and then make ``get_qparams`` raise ``ValueError``
(MegEngine returns an infinite scale). ``HistogramObserver`` keeps exact integer counts: when the
range grows, re-binned counts are within 1 of MegEngine's fractional float32 counts (docs/
calibration.md §2), and a constant stream does not crash. Sync variants all-reduce through
``torch.distributed`` when it is initialised (one MIN and one SUM collective on the batch
ranges); the all-reduce of MegEngine's ``WORLD`` group is the default group.
"""
import copy
import math
from typing import Optional, Union

import numpy as np
import torch
from torch import Tensor

from ... import ops
from ...nn import HistogramObserver as _CoreHistogram
from ...nn import MinMaxObserver as _CoreMinMax
from ...nn import MovingAverageMinMaxObserver as _CoreMovingAverage
from ...nn import PassiveObserver as _CorePassive
from .dtype import QuantDtypeMeta, _lookup
from .fake_quant import _dtype_and_kwargs
from .utils import QParams, QParamsModuleMixin, QuantMode, create_qparams

__all__ = ["ExponentialMovingAverageObserver", "HistogramObserver", "MinMaxObserver",
           "Observer", "PassiveObserver", "SyncExponentialMovingAverageObserver",
           "SyncMinMaxObserver"]

_FLT_MAX = float(np.finfo(np.float32).max)


class Observer(QParamsModuleMixin, torch.nn.Module):
    """Base class: ``dtype`` (a builtin name or ``QuantDtypeMeta``; ValueError listing the
    names if unknown), ``qmin`` / ``qmax``, ``enabled``; ``narrow_range=`` is ignored with a
    warning, as MegEngine."""

    def __init__(self, dtype: Union[str, QuantDtypeMeta], **kwargs) -> None:
        torch.nn.Module.__init__(self)
        self.dtype = _dtype_and_kwargs(type(self).__name__, dtype, kwargs)
        self.qmin = self.dtype.qmin
        self.qmax = self.dtype.qmax
        self.enabled = True

    def enable(self) -> None:
        self.enabled = True

    def disable(self) -> None:
        self.enabled = False

    def train(self, mode: bool = True, recursive: bool = True) -> "Observer":
        if recursive:
            torch.nn.Module.train(self, mode)
        else:
            self.training = mode
        if mode:
            self.enable()
        else:
            self.disable()
        return self

    def forward(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


def _rule(mode: QuantMode, meta: QuantDtypeMeta, eps: float) -> dict:
    """MegEngine's ``_calculate_qparams`` as qkit core options (docs/qparams.md preset)."""
    if not isinstance(mode, QuantMode):
        raise ValueError(f"`mode`={mode!r} is not a QuantMode")
    eps32 = float(np.float32(eps))
    if not eps32 > 0 or not math.isfinite(eps32):
        raise ValueError(f"`eps`={eps!r} must be a positive finite float")
    symmetric = mode == QuantMode.SYMMERTIC
    return dict(quant_min=meta.qmin, quant_max=meta.qmax,
                qscheme=torch.per_tensor_symmetric if symmetric else torch.per_tensor_affine,
                dtype=torch.qint8 if meta.qmin < 0 else torch.quint8,
                eps=eps32, rounding="half_away_from_zero", divisor="half_range",
                widen_to_zero=True, degenerate="floor_at_eps",
                zero_point_rounding="half_away_from_zero", clamp_zero_point=False,
                symmetric_zero_point="zero")


class MinMaxObserver(Observer):
    """Running min / max (``MinMaxObserver(mode=QuantMode.SYMMERTIC, eps=1e-5,
    dtype="qint8")``), on ``qkit.nn.MinMaxObserver``."""

    _core_cls = _CoreMinMax

    def __init__(self, mode: QuantMode = QuantMode.SYMMERTIC, eps: float = 0.00001,
                 dtype: Union[str, QuantDtypeMeta] = "qint8", **kwargs) -> None:
        super().__init__(dtype, **kwargs)
        self.mode = mode
        self.scale_limit = eps
        self._rule_kw = _rule(mode, self.dtype, eps)
        self.observer = self._make_core()

    def _make_core(self, **extra) -> torch.nn.Module:
        return self._core_cls(nonfinite="skip_nan", **self._rule_kw, **extra)

    # MegEngine's state, read from the core observer (sentinels while empty).
    @property
    def min_val(self) -> Tensor:
        return self._stat("min_val", _FLT_MAX)

    @property
    def max_val(self) -> Tensor:
        return self._stat("max_val", -_FLT_MAX)

    def _has_data(self) -> bool:
        counts = getattr(self.observer, "num_batches", None)
        if counts is None:
            counts = self.observer.num_updates
        return counts.numel() > 0 and bool((counts > 0).all())

    def _stat(self, name: str, empty: float) -> Tensor:
        if not self._has_data():
            return torch.tensor(empty, dtype=torch.float32)
        return getattr(self.observer, name).detach().clone().reshape(())

    def _observe(self, x: Tensor) -> None:
        self.observer(x.detach())

    def forward(self, x_orig: Tensor) -> Tensor:
        if self.enabled:
            self._observe(x_orig)
        return x_orig

    def _calculate_qparams(self, inp_min_val, inp_max_val) -> QParams:
        """MegEngine's ``_calculate_qparams`` on a given range (widened to include 0)."""
        mn = torch.as_tensor(inp_min_val, dtype=torch.float32).reshape(1)
        mx = torch.as_tensor(inp_max_val, dtype=torch.float32).reshape(1)
        # MegEngine's empty-state sentinels widen to [0, 0]: a range of 0 (scale eps).
        if bool((mn > mx).any()):
            mn, mx = torch.zeros(1), torch.zeros(1)
        r = self._rule_kw
        scale, zp = ops.choose_qparams(
            mn, mx, quant_min=r["quant_min"], quant_max=r["quant_max"],
            rounding=r["rounding"], symmetric=self.mode == QuantMode.SYMMERTIC,
            divisor=r["divisor"], widen_to_zero=True, degenerate=r["degenerate"],
            eps=r["eps"], zero_point_rounding=r["zero_point_rounding"],
            clamp_zero_point=False)
        return self._qparams(scale, zp)

    def _qparams(self, scale: Tensor, zp: Tensor) -> QParams:
        zero_point = None if self.mode == QuantMode.SYMMERTIC else \
            zp.to(torch.float32).reshape(())
        return create_qparams(self.mode, self.dtype, scale=scale.reshape(()),
                              zero_point=zero_point)

    def get_qparams(self) -> QParams:
        if not self._has_data():
            return self._calculate_qparams(_FLT_MAX, -_FLT_MAX)
        scale, zp = self.observer.calculate_qparams()
        return self._qparams(scale, zp)

    def extra_repr(self) -> str:
        return f"mode={self.mode}, eps={self.scale_limit}, dtype={self.dtype.name}"


def _sync_observe(core: torch.nn.Module, x: Tensor, **commit_kw) -> None:
    """One observation through the distributed protocol: the batch ranges of every rank are
    merged with one all_reduce(MIN) and one all_reduce(SUM), then committed."""
    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()):
        core(x, **commit_kw) if commit_kw else core(x)
        return
    from ...nn import RangeStats
    floats, counts = core.batch_range(x).flatten()
    dist.all_reduce(floats, op=dist.ReduceOp.MIN)
    dist.all_reduce(counts, op=dist.ReduceOp.SUM)
    core.commit(RangeStats.unflatten(floats, counts), None, **commit_kw)


class SyncMinMaxObserver(MinMaxObserver):
    """Distributed MinMaxObserver (all-reduced batch min / max). As MegEngine's code, it
    observes **even when disabled or in eval mode**."""

    def forward(self, x_orig: Tensor) -> Tensor:
        _sync_observe(self.observer, x_orig.detach())
        return x_orig


class ExponentialMovingAverageObserver(MinMaxObserver):
    """``ExponentialMovingAverageObserver(momentum=0.9, mode=SYMMERTIC, eps=1e-5,
    dtype="qint8")``: ``min = min·rm + (1 - rm)·min(x)`` (the same for max) with ``rm = 0`` on
    the first update (a copy) and the momentum afterwards; on ``qkit.nn.MovingAverageMinMaxObserver``
    (variant ``megengine``)."""

    _core_cls = _CoreMovingAverage

    def __init__(self, momentum: float = 0.9, mode: QuantMode = QuantMode.SYMMERTIC,
                 eps: float = 0.00001, dtype: Union[str, QuantDtypeMeta] = "qint8",
                 **kwargs) -> None:
        self._momentum = float(np.float32(momentum))
        self._pending_momentum: Optional[float] = None
        super().__init__(mode, eps, dtype, **kwargs)

    def _make_core(self, **extra) -> torch.nn.Module:
        return super()._make_core(variant="megengine", momentum=self._momentum,
                                  gate_on_training=False, **extra)

    @property
    def momentum(self) -> Tensor:
        m = self._momentum if self._pending_momentum is None else self._pending_momentum
        return torch.tensor(m, dtype=torch.float32)

    def set_momentum(self, momentum: float) -> None:
        """Takes effect after the next update, as MegEngine's ``runtime_momentum``."""
        self._pending_momentum = float(np.float32(momentum))
        if not self._has_data():
            self._apply_pending()

    def _apply_pending(self) -> None:
        if self._pending_momentum is None:
            return
        self._momentum = self._pending_momentum
        self._pending_momentum = None
        state = self.observer.state_dict()
        new = self._make_core()
        new.load_state_dict(state)
        new.train(self.observer.training)
        self.observer = new

    def _observe(self, x: Tensor) -> None:
        before = self._has_data()
        self.observer(x.detach())
        if self._has_data() or before:
            self._apply_pending()


class SyncExponentialMovingAverageObserver(ExponentialMovingAverageObserver):
    """Distributed ExponentialMovingAverageObserver (observes only while enabled)."""

    def _observe(self, x: Tensor) -> None:
        before = self._has_data()
        _sync_observe(self.observer, x.detach())
        if self._has_data() or before:
            self._apply_pending()


class HistogramObserver(MinMaxObserver):
    """``HistogramObserver(bins=2048, upsample_rate=128, mode=SYMMERTIC, eps=1e-5,
    dtype="qint8")``: histogram of the running range and the L2 range search
    (``_non_linear_param_search``), ``dst_nbins = qmax - qmin + 1``; on
    ``qkit.nn.HistogramObserver``. Always observes (MegEngine ignores ``enabled`` here)."""

    _core_cls = _CoreHistogram

    def __init__(self, bins: int = 2048, upsample_rate: int = 128,
                 mode: QuantMode = QuantMode.SYMMERTIC, eps: float = 0.00001,
                 dtype: Union[str, QuantDtypeMeta] = "qint8", **kwargs) -> None:
        self.bins = bins
        self.upsample_rate = upsample_rate
        super().__init__(mode, eps, dtype, **kwargs)
        self.dst_nbins = self.qmax - self.qmin + 1

    def _make_core(self, **extra) -> torch.nn.Module:
        return super()._make_core(bins=self.bins, upsample_rate=self.upsample_rate,
                                  dst_nbins=self.dtype.qmax - self.dtype.qmin + 1, **extra)

    @property
    def histogram(self) -> Tensor:
        """The counts as float32 (MegEngine's ``[-1, 0, ...]`` before the first batch)."""
        if not self._has_data():
            h = torch.zeros(self.bins)
            h[0] = -1
            return h
        return self.observer.histogram.reshape(-1).to(torch.float32)

    def forward(self, x_orig: Tensor) -> Tensor:
        self._observe(x_orig)
        return x_orig

    def _non_linear_param_search(self):
        """The searched ``(new_min, new_max)`` (float32 0-d tensors)."""
        if not self._has_data():
            raise ValueError("HistogramObserver: no data observed yet (MegEngine's search "
                             "runs on its [-1, 0, ...] sentinel histogram)")
        mn, mx = self.observer.calculate_range()
        return mn.reshape(()), mx.reshape(())

    def get_qparams(self) -> QParams:
        if not self._has_data():
            return self._calculate_qparams(_FLT_MAX, -_FLT_MAX)
        return super().get_qparams()


class PassiveObserver(Observer):
    """Holds externally set ``QParams`` (``set_qparams``); forward is the identity. Its scale
    and zero point are validated and kept by ``qkit.nn.PassiveObserver`` (scale finite and
    > 0, zero point inside [qmin, qmax]; ``ValueError`` otherwise)."""

    def __init__(self, dtype: Union[str, QuantDtypeMeta], **kwargs) -> None:
        super().__init__(dtype, **kwargs)
        self.qparams: Optional[QParams] = None
        self.orig_scale: Optional[np.ndarray] = None
        self.observer = _CorePassive(dtype=torch.qint8 if self.qmin < 0 else torch.quint8,
                                     qscheme=torch.per_tensor_affine,
                                     quant_min=self.qmin, quant_max=self.qmax)

    @property
    def scale(self) -> Tensor:
        if self.qparams is None:
            raise AttributeError("PassiveObserver: no qparams set")
        return self.qparams.scale

    @scale.setter
    def scale(self, value) -> None:
        v = torch.as_tensor(value, dtype=torch.float32)
        if not bool((v > 0).all()):
            raise AssertionError(f"PassiveObserver: `scale`={value!r} must be > 0")
        if self.qparams is None:
            raise AttributeError("PassiveObserver: no qparams set")
        self.observer.set_scale(v.reshape(-1))
        self.qparams.scale = self.observer.scale.clone().reshape(v.shape)

    def get_qparams(self) -> Optional[QParams]:
        return self.qparams

    def set_qparams(self, qparams: QParams) -> None:
        if qparams.scale is None:
            raise AssertionError("Can not get an initialized scale")
        if qparams.dtype_meta is not None and qparams.dtype_meta is not self.dtype:
            raise AssertionError(
                "input qparams' dtype is not equal to self.dtype.\n"
                f"qparams.dtype_meta={qparams.dtype_meta}\nself.dtype={self.dtype}")
        qp = copy.deepcopy(qparams)
        if qp.dtype_meta is None:
            qp.dtype_meta = self.dtype
        zp = qp.zero_point if qp.mode == QuantMode.ASYMMERTIC else None
        scale = torch.as_tensor(qp.scale, dtype=torch.float32)
        self.observer.set_qparams(scale.reshape(-1),
                                  None if zp is None else
                                  torch.as_tensor(zp, dtype=torch.float32).reshape(-1))
        self.qparams = qp
        self.orig_scale = scale.numpy().copy()

    def forward(self, x: Tensor) -> Tensor:
        return x
