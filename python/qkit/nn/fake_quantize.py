"""``FakeQuantize``: observe, choose qparams, fake-quantize, as a ``torch.ao.quantization``
FakeQuantizeBase (so PyTorch's ``enable_observer`` / ``disable_fake_quant`` helpers and
``with_args`` factories work on it), with Horizon's options (``saturate``, ``in_place``,
``compat_mask``, ``channel_len``).

The observer used until qkit's core observers are exposed is ``RunningMinMaxObserver``
(running min / max through ``qkit.ops.minmax``, qparams through ``qkit.ops.choose_qparams``).
"""
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn
from torch.ao.quantization.fake_quantize import FakeQuantizeBase

from .. import ops

__all__ = ["FakeQuantize", "RunningMinMaxObserver"]

_SYMMETRIC = (torch.per_tensor_symmetric, torch.per_channel_symmetric)
_PER_CHANNEL = (torch.per_channel_symmetric, torch.per_channel_affine)


def _dtype_range(dtype: torch.dtype) -> Tuple[int, int]:
    if dtype in (torch.qint8, torch.int8):
        return -128, 127
    if dtype in (torch.quint8, torch.uint8):
        return 0, 255
    if dtype in (torch.qint32, torch.int32):
        return -(2 ** 31), 2 ** 31 - 1
    if dtype == torch.int16:
        return -(2 ** 15), 2 ** 15 - 1
    raise ValueError(f"qkit: unsupported quantized dtype {dtype}")


def _resolve_range(quant_min: Optional[int], quant_max: Optional[int],
                   dtype: torch.dtype) -> Tuple[int, int]:
    if (quant_min is None) != (quant_max is None):
        raise ValueError("qkit: `quant_min` and `quant_max` must be given together")
    if quant_min is None:
        return _dtype_range(dtype)
    if not quant_min < quant_max:
        raise ValueError(f"qkit: `quant_min`={quant_min} must be < `quant_max`={quant_max}")
    return int(quant_min), int(quant_max)


class RunningMinMaxObserver(nn.Module):
    """Running min / max per tensor or per channel (``ch_axis``), NaN and ±Inf skipped and
    counted. State (buffers): ``min_val``, ``max_val`` (float32, one per slot; +inf / -inf while
    a slot has seen nothing), ``observed`` and ``skipped`` (int64 element counts). An observer
    that has seen nothing returns scale 1, zero point 0. ``factory_kwargs`` (passed by
    torch.ao's QAT modules) is accepted; the state stays float32 / int64 on the CPU."""

    def __init__(self, quant_min: Optional[int] = None, quant_max: Optional[int] = None,
                 dtype: torch.dtype = torch.qint8,
                 qscheme: torch.qscheme = torch.per_tensor_symmetric,
                 ch_axis: Optional[int] = None, eps: float = 2.0 ** -23,
                 divisor: str = "half_range", widen_to_zero: bool = True,
                 degenerate: str = "floor_at_eps",
                 factory_kwargs: Optional[Dict[str, Any]] = None, **unused: Any) -> None:
        super().__init__()
        if unused:
            raise TypeError(f"RunningMinMaxObserver: unexpected arguments {sorted(unused)}")
        self.dtype = dtype
        self.qscheme = qscheme
        self.quant_min, self.quant_max = _resolve_range(quant_min, quant_max, dtype)
        self.custom_range = quant_min is not None
        if qscheme in _PER_CHANNEL and ch_axis is None:
            ch_axis = 0
        if qscheme not in _PER_CHANNEL and ch_axis is not None:
            raise ValueError(f"RunningMinMaxObserver: `ch_axis`={ch_axis} with per-tensor "
                             f"qscheme {qscheme}")
        self.ch_axis = ch_axis
        self.eps = float(eps)
        self.divisor = divisor
        self.widen_to_zero = widen_to_zero
        self.degenerate = degenerate
        slots = 0 if ch_axis is not None else 1
        self.register_buffer("min_val", torch.full((slots,), math.inf))
        self.register_buffer("max_val", torch.full((slots,), -math.inf))
        self.register_buffer("observed", torch.zeros((), dtype=torch.int64))
        self.register_buffer("skipped", torch.zeros((), dtype=torch.int64))

    def forward(self, x: Tensor) -> Tensor:
        xd = x.detach()
        if self.ch_axis is not None and not -max(xd.dim(), 1) <= self.ch_axis < max(xd.dim(), 1):
            raise IndexError(f"RunningMinMaxObserver: `ch_axis`={self.ch_axis} out of range for "
                             f"an input of shape {list(xd.shape)}")
        if self.ch_axis is not None and xd.dim() == 0:
            raise IndexError(f"RunningMinMaxObserver: per-channel observation (`ch_axis`="
                             f"{self.ch_axis}) needs an input with at least one dim; got a 0-d "
                             f"tensor")
        min_acc, max_acc = self.min_val, self.max_val
        if self.ch_axis is not None and min_acc.numel() != xd.size(self.ch_axis):
            if int(self.observed) != 0:
                raise ValueError(
                    f"RunningMinMaxObserver: input has {xd.size(self.ch_axis)} channels along "
                    f"axis {self.ch_axis}, but the observer has seen {min_acc.numel()}")
            min_acc = max_acc = None
        new_min, new_max, skipped = ops.minmax(xd, axis=self.ch_axis, min_acc=min_acc,
                                               max_acc=max_acc)
        if self.min_val.shape != new_min.shape:
            self.min_val.resize_(new_min.shape)
            self.max_val.resize_(new_max.shape)
        self.min_val.copy_(new_min)
        self.max_val.copy_(new_max)
        self.observed += xd.numel() - skipped
        self.skipped += skipped
        return x

    @torch.jit.export
    def calculate_qparams(self) -> Tuple[Tensor, Tensor]:
        if int(self.observed) == 0 or self.min_val.numel() == 0:
            n = max(self.min_val.numel(), 1)
            return torch.ones(n), torch.zeros(n, dtype=torch.int32)
        if not bool(torch.isfinite(self.min_val).all()):
            raise ValueError("RunningMinMaxObserver: a channel has seen no finite value")
        # Symmetric unsigned ranges centre the zero point as PyTorch's observers do: 128 for
        # the default [0, 255], floor of the midpoint for a custom range.
        midpoint = "midpoint_down" if self.custom_range else "midpoint_up"
        scale, zero_point = ops.choose_qparams(
            self.min_val, self.max_val, quant_min=self.quant_min, quant_max=self.quant_max,
            symmetric=self.qscheme in _SYMMETRIC, divisor=self.divisor,
            widen_to_zero=self.widen_to_zero, degenerate=self.degenerate, eps=self.eps,
            symmetric_zero_point=midpoint if self.quant_min >= 0 else "zero")
        return scale, zero_point.to(torch.int32)

    def extra_repr(self) -> str:
        return (f"quant_min={self.quant_min}, quant_max={self.quant_max}, qscheme={self.qscheme}, "
                f"ch_axis={self.ch_axis}")

    def _load_from_state_dict(self, state_dict: Dict[str, Any], prefix: str,
                              local_metadata: Dict[str, Any], strict: bool,
                              missing_keys: List[str], unexpected_keys: List[str],
                              error_msgs: List[str]) -> None:
        # Per-channel state takes the saved channel count; per-tensor state must have 1 slot.
        for name in ("min_val", "max_val"):
            key = prefix + name
            if key in state_dict and state_dict[key].shape != getattr(self, name).shape:
                saved = state_dict[key]
                if self.ch_axis is not None and saved.dim() == 1:
                    getattr(self, name).resize_(saved.shape)
                else:
                    error_msgs.append(
                        f"qkit.nn.RunningMinMaxObserver at '{prefix}': `{name}` has shape "
                        f"{tuple(saved.shape)} in the state_dict, expected "
                        f"{tuple(getattr(self, name).shape)}")
                    return
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)


class FakeQuantize(FakeQuantizeBase):
    """Observe ``x`` (while ``observer_enabled``), copy the observer's qparams into the
    ``scale`` / ``zero_point`` buffers, and fake-quantize (while ``fake_quant_enabled``).

    * ``saturate=True``: clipped straight-through gradient (zero outside the range, tested on the
      rounded value); ``False``: plain straight-through.
    * ``compat_mask=True``: the clipped gradient uses the bit-packed mask saved by the forward
      (numel / 8 bytes); ``False`` recomputes it from the saved input (same numbers).
    * ``in_place=True``: fake-quantize into ``x`` itself (the packed mask is then always used).
    * ``ch_axis`` / ``channel_len``: per-channel parameters (``channel_len`` sizes the buffers
      before the first batch; they are resized on the first observation otherwise).
    * ``rounding``, ``scale_mode``, ``zero_point_mode``, ``nan_mode``: the core's QuantSpec
      options (see qkit.ops).

    Like PyTorch's FakeQuantize (and unlike Horizon's) the observer also runs in eval mode
    unless disabled.
    """

    _version = 1
    scale: Tensor
    zero_point: Tensor

    def __init__(self, observer: Any = RunningMinMaxObserver, quant_min: Optional[int] = None,
                 quant_max: Optional[int] = None, *, saturate: bool = True,
                 in_place: bool = False, compat_mask: bool = True, channel_len: int = 1,
                 rounding: str = "half_to_even", scale_mode: str = "divide",
                 zero_point_mode: str = "add_after_round", nan_mode: str = "propagate",
                 **observer_kwargs: Any) -> None:
        super().__init__()
        if channel_len < 1:
            raise ValueError(f"FakeQuantize: `channel_len`={channel_len} must be >= 1")
        self.activation_post_process = observer(quant_min=quant_min, quant_max=quant_max,
                                                **observer_kwargs)
        app = self.activation_post_process
        self.quant_min = app.quant_min
        self.quant_max = app.quant_max
        self.dtype = app.dtype
        self.qscheme = app.qscheme
        self.ch_axis = getattr(app, "ch_axis", None)
        self.is_per_channel = self.ch_axis is not None
        self.saturate = bool(saturate)
        self.in_place = bool(in_place)
        self.compat_mask = bool(compat_mask)
        self.rounding = rounding
        self.scale_mode = scale_mode
        self.zero_point_mode = zero_point_mode
        self.nan_mode = nan_mode
        n = channel_len if self.is_per_channel else 1
        self.register_buffer("scale", torch.ones(n, dtype=torch.float32))
        self.register_buffer("zero_point", torch.zeros(n, dtype=torch.int32))

    @torch.jit.export
    def calculate_qparams(self) -> Tuple[Tensor, Tensor]:
        return self.activation_post_process.calculate_qparams()

    @torch.no_grad()
    def set_qparams(self, scale: Union[float, Sequence[float], Tensor],
                    zero_point: Optional[Union[int, Sequence[int], Tensor]] = None) -> None:
        """Copies ``scale`` (a number fills; a sequence or tensor must match the buffer's size)
        and ``zero_point`` (None resets it to 0)."""
        self.scale.copy_(self._values(scale, self.scale, "scale"))
        if zero_point is None:
            self.zero_point.zero_()
        else:
            self.zero_point.copy_(self._values(zero_point, self.zero_point, "zero_point"))

    @staticmethod
    def _values(v: Any, like: Tensor, name: str) -> Tensor:
        if isinstance(v, (int, float)):
            return torch.full_like(like, v)
        t = torch.as_tensor(v, dtype=like.dtype).reshape(-1)
        if t.numel() != like.numel():
            raise ValueError(f"FakeQuantize.set_qparams: `{name}` has {t.numel()} value(s), "
                             f"expected {like.numel()}")
        return t

    def _ste(self) -> str:
        if not self.saturate:
            return "identity"
        return "clipped" if (self.compat_mask or self.in_place) else "clipped_recompute"

    def forward(self, x: Tensor) -> Tensor:
        if self.observer_enabled[0] != 1:
            return self._forward(x)
        # The observer's state and the qparams buffers are updated before the fake-quant op
        # checks its input (nan_mode="error"), so a rejected call restores them: no
        # half-updated state (tests/python/test_bad_input_matrix.py).
        saved = [(b, b.detach().clone()) for b in self.buffers()]
        try:
            return self._forward(x)
        except Exception:
            with torch.no_grad():
                for b, old in saved:
                    if b.shape != old.shape:
                        b.resize_(old.shape)
                    b.copy_(old)
            raise

    def _forward(self, x: Tensor) -> Tensor:
        if self.observer_enabled[0] == 1:
            self.activation_post_process(x.detach())
            scale, zero_point = self.calculate_qparams()
            if self.scale.shape != scale.shape:
                self.scale.resize_(scale.shape)
                self.zero_point.resize_(zero_point.shape)
            self.scale.copy_(scale)
            self.zero_point.copy_(zero_point)
        if self.fake_quant_enabled[0] == 1:
            fn = ops.fake_quantize_ if self.in_place else ops.fake_quantize
            x = fn(x, self.scale, self.zero_point, quant_min=self.quant_min,
                   quant_max=self.quant_max, rounding=self.rounding, scale_mode=self.scale_mode,
                   zero_point_mode=self.zero_point_mode, nan_mode=self.nan_mode,
                   axis=self.ch_axis, ste=self._ste())
        return x

    def extra_repr(self) -> str:
        return (f"fake_quant_enabled={self.fake_quant_enabled}, "
                f"observer_enabled={self.observer_enabled}, quant_min={self.quant_min}, "
                f"quant_max={self.quant_max}, dtype={self.dtype}, qscheme={self.qscheme}, "
                f"ch_axis={self.ch_axis}, saturate={self.saturate}, in_place={self.in_place}, "
                f"compat_mask={self.compat_mask}, scale={self.scale}, "
                f"zero_point={self.zero_point}")

    def _load_from_state_dict(self, state_dict: Dict[str, Any], prefix: str,
                              local_metadata: Dict[str, Any], strict: bool,
                              missing_keys: List[str], unexpected_keys: List[str],
                              error_msgs: List[str]) -> None:
        version = local_metadata.get("version", None)
        if version != self._version:
            error_msgs.append(
                f"qkit.nn.FakeQuantize at '{prefix}': state_dict version {version} is not "
                f"supported (this qkit writes and reads version {self._version})")
            return
        # Per-channel buffers take the saved size (like PyTorch's FakeQuantize); anything
        # else must match exactly.
        for name in ("scale", "zero_point"):
            key = prefix + name
            if key in state_dict:
                saved = state_dict[key]
                own = getattr(self, name)
                if saved.shape != own.shape:
                    if self.is_per_channel and saved.dim() == 1:
                        own.resize_(saved.shape)
                    else:
                        error_msgs.append(
                            f"qkit.nn.FakeQuantize at '{prefix}': `{name}` has shape "
                            f"{tuple(saved.shape)} in the state_dict, expected "
                            f"{tuple(own.shape)}")
                        return
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
