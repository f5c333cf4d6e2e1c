"""Horizon's observers (``horizon_plugin_pytorch.quantization.observer``, v1; SPEC.md §6.5) on
qkit's observer modules: ``MinMaxObserver``, ``PerChannelMinMaxObserver`` (running min / max),
``MovingAverageMinMaxObserver``, ``MovingAveragePerChannelMinMaxObserver`` (the first batch is
copied, then ``v + c·(cur - v)``, ``c = averaging_constant = 0.01``), and the v2
``FixedScaleObserver``.

Only the symmetric qschemes exist (``per_tensor_symmetric`` / ``per_channel_symmetric``; others
raise ``ValueError``). ``calculate_qparams()`` returns ``(scale, None)``:
``scale = max(max(-min', max') / ((qmax - qmin) / 2), eps)`` with the range widened to include 0
and ``eps`` float32's epsilon (2^-23), i.e. divisor 127.5 for qint8 and 32767.5 for qint16; the
zero point is always 0 (Horizon returns None). Before any data: ``scale = [1.0]``. Under the
BERNOULLI march the scale is restricted to ``2^-clamp(floor(-log2 s), 1, 14)``. With
``is_sync_quantize=True`` and ``torch.distributed`` initialised, ``calculate_qparams``
all-reduces the stored min (MIN) and max (MAX) in place first, as Horizon does.

Differences: NaN / ±Inf input elements are skipped and counted (Horizon's kernels are closed;
docs/compat.md); the observers update whenever called (the FakeQuantize decides when to call
them: in training with the observer enabled).
"""
from typing import Any, Dict, Optional, Tuple

import torch
from torch import Tensor
from torch.ao.quantization.observer import _with_args

from ... import ops
from ...nn import MinMaxObserver as _CoreMinMax
from ...nn import MovingAverageMinMaxObserver as _CoreMovingAverage
from .dtype import _resolve, qint8
from .round_mode import March, get_march

__all__ = ["FixedScaleObserver", "MinMaxObserver", "MovingAverageMinMaxObserver",
           "MovingAveragePerChannelMinMaxObserver", "PerChannelMinMaxObserver"]

_EPS = float(torch.finfo(torch.float32).eps)
_SYMMETRIC = (torch.per_tensor_symmetric, torch.per_channel_symmetric)


class _HorizonObserver(torch.nn.Module):
    with_args = classmethod(_with_args)
    _per_channel_default = False

    def __init__(self, dtype=qint8, qscheme: Optional[torch.qscheme] = None,
                 quant_min: Optional[int] = None, quant_max: Optional[int] = None,
                 is_sync_quantize: bool = False, ch_axis: Optional[int] = None,
                 factory_kwargs: Optional[Dict[str, Any]] = None,
                 averaging_constant: Optional[float] = None) -> None:
        super().__init__()
        name = type(self).__name__
        if qscheme is None:
            qscheme = torch.per_channel_symmetric if self._per_channel_default else \
                torch.per_tensor_symmetric
        if qscheme not in _SYMMETRIC:
            raise ValueError(f"{name}: `qscheme`={qscheme} is not supported; Horizon's "
                             "observers accept per_tensor_symmetric and per_channel_symmetric")
        self.dtype = _resolve(dtype)
        if (quant_min is None) != (quant_max is None):
            raise ValueError(f"{name}: `quant_min`={quant_min} and `quant_max`={quant_max} "
                             "must be given together")
        if quant_min is None:
            quant_min, quant_max = self.dtype.min, self.dtype.max
        elif not self.dtype.min <= quant_min <= 0 <= quant_max <= self.dtype.max:
            raise ValueError(f"{name}: [`quant_min`, `quant_max`]=[{quant_min}, {quant_max}] "
                             f"must contain 0 and lie in {self.dtype}'s "
                             f"[{self.dtype.min}, {self.dtype.max}]")
        self.quant_min, self.quant_max = int(quant_min), int(quant_max)
        self.qscheme = qscheme
        per_channel = qscheme == torch.per_channel_symmetric
        if per_channel and ch_axis is None:
            ch_axis = 0
        if per_channel and ch_axis < 0:
            raise ValueError(f"{name}: `ch_axis`={ch_axis} must be >= 0 for per-channel "
                             "observers")
        self.ch_axis = ch_axis if per_channel else -1
        self.is_sync_quantize = bool(is_sync_quantize)
        self.register_buffer("eps", torch.tensor([_EPS]))
        kw = dict(dtype=torch.qint8, qscheme=qscheme, quant_min=self.quant_min,
                  quant_max=self.quant_max, ch_axis=ch_axis if per_channel else None,
                  eps=_EPS, symmetric_zero_point="zero")
        if averaging_constant is None:
            self.observer = _CoreMinMax(**kw)
        else:
            self.averaging_constant = float(averaging_constant)
            self.observer = _CoreMovingAverage(self.averaging_constant, variant="torch",
                                               gate_on_training=False, **kw)

    def _counts(self) -> Tensor:
        c = getattr(self.observer, "num_batches", None)
        return self.observer.num_updates if c is None else c

    @property
    def min_val(self) -> Tensor:
        return self.observer.min_val if bool((self._counts() > 0).all()) else torch.tensor([])

    @property
    def max_val(self) -> Tensor:
        return self.observer.max_val if bool((self._counts() > 0).all()) else torch.tensor([])

    def forward(self, x: Tensor) -> Tensor:
        self.observer(x.detach())
        return x

    def reset_min_max_vals(self) -> None:
        self.observer.reset()

    def _sync(self) -> None:
        import torch.distributed as dist
        if self.is_sync_quantize and dist.is_available() and dist.is_initialized():
            with torch.no_grad():
                dist.all_reduce(self.observer.min_val, op=dist.ReduceOp.MIN)
                dist.all_reduce(self.observer.max_val, op=dist.ReduceOp.MAX)

    @torch.jit.export
    def calculate_qparams(self) -> Tuple[Tensor, None]:
        counts = self._counts()
        if counts.numel() == 0 or not bool((counts > 0).all()):
            return torch.ones(max(counts.numel(), 1)), None
        self._sync()
        if get_march() == March.BERNOULLI:
            scale, _ = ops.choose_qparams(
                self.observer.min_val, self.observer.max_val, quant_min=self.quant_min,
                quant_max=self.quant_max, symmetric=True, eps=_EPS,
                restriction="pow2_bernoulli")
        else:
            scale, _ = self.observer.calculate_qparams()
        return scale, None

    def extra_repr(self) -> str:
        return (f"dtype={self.dtype}, qscheme={self.qscheme}, quant_min={self.quant_min}, "
                f"quant_max={self.quant_max}, ch_axis={self.ch_axis}")


class MinMaxObserver(_HorizonObserver):
    """Running min / max (the observer FakeQuantize's fast path is defined for)."""

    def __init__(self, dtype=qint8, qscheme: torch.qscheme = torch.per_tensor_symmetric,
                 quant_min: Optional[int] = None, quant_max: Optional[int] = None,
                 is_sync_quantize: bool = False, ch_axis: Optional[int] = None,
                 factory_kwargs: Optional[Dict[str, Any]] = None) -> None:
        super().__init__(dtype, qscheme, quant_min, quant_max, is_sync_quantize, ch_axis,
                         factory_kwargs)


class PerChannelMinMaxObserver(_HorizonObserver):
    _per_channel_default = True

    def __init__(self, ch_axis: int = 0, dtype=qint8,
                 qscheme: torch.qscheme = torch.per_channel_symmetric,
                 quant_min: Optional[int] = None, quant_max: Optional[int] = None,
                 is_sync_quantize: bool = False,
                 factory_kwargs: Optional[Dict[str, Any]] = None) -> None:
        super().__init__(dtype, qscheme, quant_min, quant_max, is_sync_quantize, ch_axis,
                         factory_kwargs)


class MovingAverageMinMaxObserver(_HorizonObserver):
    """FakeQuantize's default observer: ``MovingAverageMinMaxObserver(averaging_constant=0.01,
    dtype=qint8, qscheme=torch.per_tensor_symmetric, quant_min=None, quant_max=None,
    is_sync_quantize=False)``."""

    def __init__(self, averaging_constant: float = 0.01, dtype=qint8,
                 qscheme: torch.qscheme = torch.per_tensor_symmetric,
                 quant_min: Optional[int] = None, quant_max: Optional[int] = None,
                 is_sync_quantize: bool = False, ch_axis: Optional[int] = None,
                 factory_kwargs: Optional[Dict[str, Any]] = None) -> None:
        super().__init__(dtype, qscheme, quant_min, quant_max, is_sync_quantize, ch_axis,
                         factory_kwargs, averaging_constant)


class MovingAveragePerChannelMinMaxObserver(_HorizonObserver):
    _per_channel_default = True

    def __init__(self, averaging_constant: float = 0.01, ch_axis: int = 0, dtype=qint8,
                 qscheme: torch.qscheme = torch.per_channel_symmetric,
                 quant_min: Optional[int] = None, quant_max: Optional[int] = None,
                 is_sync_quantize: bool = False,
                 factory_kwargs: Optional[Dict[str, Any]] = None) -> None:
        super().__init__(dtype, qscheme, quant_min, quant_max, is_sync_quantize, ch_axis,
                         factory_kwargs, averaging_constant)


class FixedScaleObserver(torch.nn.Module):
    """v2 ``FixedScaleObserver(scale=1, zero_point=0, dtype=qint8, qscheme=per_tensor_symmetric,
    ...)``: parameters fixed at construction (validated by ``qkit.nn.PassiveObserver``: scale
    finite and > 0); forward observes nothing."""
    with_args = classmethod(_with_args)

    def __init__(self, scale: float = 1.0, zero_point: int = 0, dtype=qint8,
                 qscheme: torch.qscheme = torch.per_tensor_symmetric,
                 quant_min: Optional[int] = None, quant_max: Optional[int] = None,
                 ch_axis: int = -1, **unused: Any) -> None:
        super().__init__()
        from ...nn import PassiveObserver
        self.dtype = _resolve(dtype)
        self.quant_min = self.dtype.min if quant_min is None else int(quant_min)
        self.quant_max = self.dtype.max if quant_max is None else int(quant_max)
        self.qscheme = qscheme
        self.ch_axis = ch_axis
        self.observer = PassiveObserver(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric,
                                        quant_min=self.quant_min, quant_max=self.quant_max)
        self.observer.set_qparams(torch.tensor([float(scale)]),
                                  torch.tensor([float(zero_point)]))

    def forward(self, x: Tensor) -> Tensor:
        return x

    @torch.jit.export
    def calculate_qparams(self) -> Tuple[Tensor, Tensor]:
        return self.observer.scale.clone(), self.observer.zero_point.to(torch.int64)
