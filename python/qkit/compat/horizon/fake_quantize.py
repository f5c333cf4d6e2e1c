"""Horizon's ``FakeQuantize`` (``horizon_plugin_pytorch.quantization.FakeQuantize``, SPEC.md §6.4,
seed 002) on qkit's ``fake_quantize`` op.

``FakeQuantize(observer=MovingAverageMinMaxObserver, saturate=None, in_place=False,
compat_mask=True, channel_len=1, fast_training=True, **observer_kwargs)``:

* ``forward(x)``: in training with the observer enabled, the observer sees ``x`` and
  ``scale`` becomes its scale (the zero point is **never** taken from the observer). With fake
  quantization enabled, ``out = clamp(round(x / scale), quant_min, quant_max)·scale`` per
  tensor or along ``ch_axis``, with the process-global rounding of ``QuantRoundMode``
  (``HALF_TO_EVEN`` by default: the plugin's code; the seed document's
  ``floor(x / scale + 0.5)`` is ``BPU_ROUND``), true division, zero point 0.
  Returns a ``torch.Tensor`` (Horizon returns a ``QTensor`` carrying the scale: read
  ``fq.scale``).
* ``saturate`` (None: the module global ``saturate_grad``, True): the clipped straight-through
  gradient (zero where ``round(x / s)`` is outside the range; inferred from PyTorch, Horizon's
  kernels are not public) or, when False, the plain one. ``compat_mask``: the mask is saved
  bit-packed (True) or recomputed (False): same numbers. ``in_place``: the training-mode fake
  quantization writes into ``x``.
* ``fast_training``: Horizon's fused observe + fake-quantize kernel for MinMaxObserver; it
  computes the same scale and the same output, which qkit does in one pass of each (accepted,
  same numbers).
* ``set_qparams(scale, zero_point=None)``: a number fills, a sequence or tensor must have the
  buffer's size (upstream silently drops a sequence; qkit copies it); ``zero_point=None``
  resets it to 0. ``with_args``, ``enable_observer`` / ``disable_observer`` /
  ``enable_fake_quant`` / ``disable_fake_quant`` come from torch.ao's ``FakeQuantizeBase``.
* dtypes ``qint8`` and ``qint16`` (and qint4 / quint4) from the observer. ``channel_len >= 1``
  is asserted (AssertionError), as upstream.
* State dict version 2; loading an older version sets ``QuantRoundMode`` to ``BPU_ROUND``
  globally, as the plugin does.

Not reproduced: Horizon's global fake-quant switch, the checkpoint-recompute and BERNOULLI
special cases of the fast path, ``CalibFakeQuantize`` (docs/compat.md). NaN inputs propagate
(qkit's default; Horizon's behaviour is not public).
"""
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
from torch import Tensor
from torch.ao.quantization.fake_quantize import FakeQuantizeBase

from ... import ops
from .observer import MovingAverageMinMaxObserver
from .round_mode import QuantRoundMode

__all__ = ["FakeQuantize", "saturate_grad"]

saturate_grad = True


class FakeQuantize(FakeQuantizeBase):
    """See the module docstring."""

    _version = 2
    scale: Tensor
    zero_point: Tensor

    def __init__(self, observer: Any = MovingAverageMinMaxObserver,
                 saturate: Optional[bool] = None, in_place: bool = False,
                 compat_mask: bool = True, channel_len: int = 1, fast_training: bool = True,
                 **observer_kwargs: Any) -> None:
        super().__init__()
        if not (isinstance(channel_len, int) and channel_len >= 1):
            raise AssertionError(f"FakeQuantize: `channel_len`={channel_len!r} must be >= 1")
        self.activation_post_process = observer(**observer_kwargs)
        app = self.activation_post_process
        self.quant_min = app.quant_min
        self.quant_max = app.quant_max
        self.dtype = app.dtype
        self.qscheme = app.qscheme
        self.is_per_channel = self.qscheme in (torch.per_channel_symmetric,
                                               torch.per_channel_affine)
        self.ch_axis = app.ch_axis if self.is_per_channel else -1
        self.saturate = bool(saturate_grad if saturate is None else saturate)
        self.in_place = bool(in_place)
        self.compat_mask = bool(compat_mask)
        self.fast_training = bool(fast_training)
        n = channel_len if self.is_per_channel else 1
        self.register_buffer("scale", torch.ones(n, dtype=torch.float32))
        self.register_buffer("zero_point", torch.zeros(n, dtype=torch.int64))
        if type(app).__name__ == "FixedScaleObserver":
            scale, zp = app.calculate_qparams()
            self.set_qparams(scale, zp)

    @torch.jit.export
    def calculate_qparams(self):
        return self.activation_post_process.calculate_qparams()

    @torch.no_grad()
    def set_qparams(self, scale: Union[float, Sequence[float], Tensor],
                    zero_point: Optional[Union[int, Sequence[int], Tensor]] = None) -> None:
        self.scale.copy_(self._values(scale, self.scale, "scale"))
        if zero_point is None:
            self.zero_point.zero_()
        else:
            self.zero_point.copy_(self._values(zero_point, self.zero_point, "zero_point"))

    @staticmethod
    def _values(v: Any, like: Tensor, name: str) -> Tensor:
        if isinstance(v, (int, float)):
            return torch.full_like(like, v)
        t = torch.as_tensor(v).reshape(-1)
        if t.numel() != like.numel():
            raise ValueError(f"FakeQuantize.set_qparams: `{name}` has {t.numel()} value(s), "
                             f"expected {like.numel()}")
        return t.to(like.dtype)

    def _ste(self) -> str:
        if not self.saturate:
            return "identity"
        return "clipped" if (self.compat_mask or self.in_place) else "clipped_recompute"

    def forward(self, x: Tensor) -> Tensor:
        if self.training and bool(self.observer_enabled[0]):
            self.activation_post_process(x.detach())
            scale = self.activation_post_process.calculate_qparams()[0]
            with torch.no_grad():
                if self.scale.shape != scale.shape:
                    self.scale.resize_(scale.shape)
                    self.zero_point.resize_(scale.shape).zero_()
                self.scale.copy_(scale)
        if bool(self.fake_quant_enabled[0]):
            axis = self.ch_axis if self.ch_axis >= 0 else None
            kw = dict(quant_min=self.quant_min, quant_max=self.quant_max,
                      rounding=QuantRoundMode.qkit_rounding(), axis=axis, ste=self._ste())
            if self.training:
                fn = ops.fake_quantize_ if self.in_place else ops.fake_quantize
                x = fn(x, self.scale, self.zero_point, **kw)
            else:
                x = ops.fake_quantize(x, self.scale, None, **kw)
        return x

    def extra_repr(self) -> str:
        return (f"fake_quant_enabled={self.fake_quant_enabled}, "
                f"observer_enabled={self.observer_enabled}, quant_min={self.quant_min}, "
                f"quant_max={self.quant_max}, dtype={self.dtype}, qscheme={self.qscheme}, "
                f"ch_axis={self.ch_axis}, saturate={self.saturate}, in_place={self.in_place}, "
                f"compat_mask={self.compat_mask}, scale={self.scale}")

    def _load_from_state_dict(self, state_dict: Dict[str, Any], prefix: str,
                              local_metadata: Dict[str, Any], strict: bool,
                              missing_keys: List[str], unexpected_keys: List[str],
                              error_msgs: List[str]) -> None:
        version = local_metadata.get("version", None)
        if version is None or version < 2:
            QuantRoundMode.set(QuantRoundMode.BPU_ROUND)
        for name in ("scale", "zero_point"):
            key = prefix + name
            own = getattr(self, name)
            if key in state_dict and state_dict[key].shape != own.shape:
                saved = state_dict[key]
                if self.is_per_channel and saved.dim() == 1:
                    with torch.no_grad():
                        own.resize_(saved.shape)
                else:
                    error_msgs.append(f"FakeQuantize at '{prefix}': `{name}` has shape "
                                      f"{tuple(saved.shape)} in the state_dict, expected "
                                      f"{tuple(own.shape)}")
                    return
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
