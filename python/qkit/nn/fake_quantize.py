"""``FakeQuantize``: observe, choose qparams, fake-quantize, as a ``torch.ao.quantization``
FakeQuantizeBase (so PyTorch's ``enable_observer`` / ``disable_fake_quant`` helpers and
``with_args`` factories work on it), with Horizon's options (``saturate``, ``in_place``,
``compat_mask``, ``channel_len``).

The observer is any qkit.nn observer (default :class:`MovingAverageMinMaxObserver`, variant
'torch') or any torch.ao observer class / ``with_args`` factory.
"""
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor
from torch.ao.quantization.fake_quantize import FakeQuantizeBase

from .. import ops
from .observers import MinMaxObserver, MovingAverageMinMaxObserver, ObserverBase

__all__ = ["FakeQuantize", "RunningMinMaxObserver"]

class RunningMinMaxObserver(MinMaxObserver):
    """Kept for compatibility: :class:`qkit.nn.MinMaxObserver` with the earlier defaults
    (qint8, per-tensor symmetric)."""

    def __init__(self, quant_min: Optional[int] = None, quant_max: Optional[int] = None,
                 dtype: torch.dtype = torch.qint8,
                 qscheme: torch.qscheme = torch.per_tensor_symmetric, **kwargs: Any) -> None:
        super().__init__(dtype=dtype, qscheme=qscheme, quant_min=quant_min,
                         quant_max=quant_max, **kwargs)


class FakeQuantize(FakeQuantizeBase):
    """Observe ``x`` (while ``observer_enabled``), copy the observer's qparams into the
    ``scale`` / ``zero_point`` buffers, and fake-quantize (while ``fake_quant_enabled``).

    * ``observer``: a qkit.nn observer class or ``with_args`` factory (default
      :class:`MovingAverageMinMaxObserver`, variant 'torch'), or a torch.ao observer. Keywords
      not listed here (``dtype`` (default qint8), ``qscheme`` (default per-tensor symmetric),
      ``ch_axis``, ``averaging_constant``, ``variant``, the QParamsRule keywords, ...) go to it.
    * fused path: with a qkit observer, observing and choosing the qparams are one op call
      (``torch.ops.qkit.observer_observe_qparams``), then one fake-quant call.
    * ``saturate=True``: clipped straight-through gradient (zero outside the range, tested on the
      rounded value); ``False``: plain straight-through.
    * ``compat_mask=True``: the clipped gradient uses the bit-packed mask saved by the forward
      (numel / 8 bytes); ``False`` recomputes it from the saved input (same numbers).
    * ``in_place=True``: fake-quantize into ``x`` itself (the packed mask is then always used).
    * ``ch_axis`` / ``channel_len``: per-channel parameters (``channel_len`` sizes the buffers
      before the first batch; they are resized on the first observation otherwise).
    * ``rounding``, ``scale_mode``, ``zero_point_mode``, ``nan_mode``: the core's QuantSpec
      options (see qkit.ops); qkit observers get them too (the scale mode changes the qparams).

    Like PyTorch's FakeQuantize (and unlike Horizon's) the observer also runs in eval mode
    unless disabled (or unless the observer gates on training, as the non-'torch' moving
    averages do).
    """

    _version = 1
    scale: Tensor
    zero_point: Tensor

    def __init__(self, observer: Any = MovingAverageMinMaxObserver,
                 quant_min: Optional[int] = None, quant_max: Optional[int] = None, *,
                 saturate: bool = True, in_place: bool = False, compat_mask: bool = True,
                 channel_len: int = 1, rounding: str = "half_to_even",
                 scale_mode: str = "divide", zero_point_mode: str = "add_after_round",
                 nan_mode: str = "propagate", **observer_kwargs: Any) -> None:
        super().__init__()
        if channel_len < 1:
            raise ValueError(f"FakeQuantize: `channel_len`={channel_len} must be >= 1")
        observer_kwargs.setdefault("dtype", torch.qint8)
        observer_kwargs.setdefault("qscheme", torch.per_tensor_symmetric)
        if _is_qkit_observer(observer):
            observer_kwargs.update(rounding=rounding, scale_mode=scale_mode,
                                   zero_point_mode=zero_point_mode, nan_mode=nan_mode)
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

    def forward(self, x: Tensor, current_train_step: Optional[int] = None) -> Tensor:
        # The observer's state and the qparams buffers are updated before the fake-quant op
        # checks its input. The only input the observer accepts and the op then rejects is a
        # NaN under nan_mode="error" (observers skip NaN), so only then are the buffers saved
        # and restored on failure (no half-updated state; tests/python/test_bad_input_matrix.py);
        # every other call pays no copy.
        if self.observer_enabled[0] != 1 or self.nan_mode != "error":
            return self._forward(x, current_train_step)
        saved = [(b, b.detach().clone()) for b in self.buffers()]
        try:
            return self._forward(x, current_train_step)
        except Exception:
            with torch.no_grad():
                for b, old in saved:
                    if b.shape != old.shape:
                        b.resize_(old.shape)
                    b.copy_(old)
            raise

    def _forward(self, x: Tensor, current_train_step: Optional[int]) -> Tensor:
        app = self.activation_post_process
        # Sync observers (qkit.distributed, `qkit_sync`) must enter their collectives on every
        # rank, even with an empty local shard.
        if self.observer_enabled[0] == 1 and (x.numel() > 0 or getattr(app, "qkit_sync", False)):
            if isinstance(app, ObserverBase):  # fused: observe + qparams in one op call
                scale, zero_point = app.observe_and_calculate_qparams(x, current_train_step)
            else:
                app(x.detach())
                scale, zero_point = self.calculate_qparams()
            with torch.no_grad():
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


def _is_qkit_observer(factory: Any) -> bool:
    """Whether ``factory`` (a class or a torch.ao ``with_args`` partial) builds a qkit
    observer."""
    cls = factory
    while hasattr(cls, "p") and hasattr(cls.p, "func"):  # torch.ao _PartialWrapper
        cls = cls.p.func
    while hasattr(cls, "func"):  # functools.partial
        cls = cls.func
    return isinstance(cls, type) and issubclass(cls, ObserverBase)
