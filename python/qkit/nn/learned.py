"""Learned-range fake-quantization modules: LSQ (PyTorch LSQ+ and MegEngine variants), TQT,
PACT and NVIDIA's learned-amax clip. The range parameters are ``nn.Parameter``s; forward and
gradients come from ``torch.ops.qkit`` (C++ autograd)."""
from typing import Optional, Sequence, Union

import torch
from torch import Tensor, nn

from .. import ops

__all__ = ["LSQ", "TQT", "PACT", "LearnedClip"]

Number = Union[float, int]


def _param_values(value: Union[Number, Sequence[Number], Tensor], count: int,
                  name: str) -> Tensor:
    """A float32 tensor of ``count`` values from a number (filled), a sequence or a tensor."""
    if isinstance(value, Tensor):
        t = value.detach().to(torch.float32).reshape(-1).clone()
    elif isinstance(value, (int, float)):
        t = torch.full((count,), float(value), dtype=torch.float32)
    else:
        t = torch.tensor([float(v) for v in value], dtype=torch.float32)
    if t.numel() != count:
        raise ValueError(f"{name}: {t.numel()} value(s) given, expected {count}")
    return t


class _FakeQuantEnabled(nn.Module):
    """The ``fake_quant_enabled`` uint8 buffer shared by the modules here."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("fake_quant_enabled", torch.tensor([1], dtype=torch.uint8))

    @torch.jit.export
    def enable_fake_quant(self, enabled: bool = True) -> None:
        self.fake_quant_enabled[0] = 1 if enabled else 0

    @torch.jit.export
    def disable_fake_quant(self) -> None:
        self.enable_fake_quant(False)


class LSQ(_FakeQuantEnabled):
    """Learned step size quantization.

    ``variant="pytorch"`` follows ``torch.ao.quantization._LearnableFakeQuantize`` (LSQ+):
    ``scale`` and ``zero_point`` are Parameters, ``use_grad_scaling=True`` scales both
    gradients by ``1 / sqrt(numel * quant_max)`` (computed by the core per call).
    ``variant="megengine"`` follows MegEngine's ``LSQ`` module: the Parameter ``step_size``
    (initial 1.0) enters as ``|step_size| + eps`` (eps 1e-5), the zero point is a buffer (no
    gradient), ``grad_scale`` is a fixed factor.

    ``ch_axis=None`` is per tensor; otherwise ``channel_len`` values along ``ch_axis``.
    ``fused=True`` reproduces torch's FMA-contracted kernel builds bit for bit (see qkit.lsq).
    """

    def __init__(self, quant_min: int = -128, quant_max: int = 127, *,
                 variant: str = "pytorch", scale: Union[Number, Sequence[Number], Tensor] = 1.0,
                 zero_point: Union[Number, Sequence[Number], Tensor] = 0.0,
                 ch_axis: Optional[int] = None, channel_len: int = 1,
                 use_grad_scaling: bool = False, grad_scale: float = 1.0,
                 eps: Optional[float] = None, fused: bool = False) -> None:
        super().__init__()
        if variant not in ("pytorch", "megengine"):
            raise ValueError(f"LSQ: `variant`={variant!r} is not one of 'pytorch', 'megengine'")
        if ch_axis is None and channel_len != 1:
            raise ValueError(f"LSQ: `channel_len`={channel_len} needs a `ch_axis`")
        self.quant_min = int(quant_min)
        self.quant_max = int(quant_max)
        self.variant = variant
        self.ch_axis = ch_axis
        self.use_grad_scaling = bool(use_grad_scaling)
        self.grad_scale = float(grad_scale)
        self.fused = bool(fused)
        count = channel_len if ch_axis is not None else 1
        if variant == "megengine":
            self.eps = 1e-5 if eps is None else float(eps)
            self.step_size = nn.Parameter(_param_values(scale, count, "LSQ: `scale`"))
            self.register_buffer("zero_point", _param_values(zero_point, count,
                                                             "LSQ: `zero_point`"))
        else:
            self.eps = float(torch.finfo(torch.float32).eps) if eps is None else float(eps)
            self.step_size = nn.Parameter(_param_values(scale, count, "LSQ: `scale`"))
            self.zero_point = nn.Parameter(_param_values(zero_point, count, "LSQ: `zero_point`"))

    @property
    def scale(self) -> Tensor:
        """The step parameter (named ``scale`` in PyTorch's module, ``step_size`` in
        MegEngine's)."""
        return self.step_size

    @torch.no_grad()
    def set_qparams(self, scale: Union[Number, Sequence[Number], Tensor],
                    zero_point: Optional[Union[Number, Sequence[Number], Tensor]] = None) -> None:
        """Sets the step (and zero point; None keeps it). MegEngine's rule: the Parameter
        becomes ``scale - eps`` (0 when ``scale < eps``) so that ``|step| + eps == scale``."""
        values = _param_values(scale, self.step_size.numel(), "LSQ.set_qparams: `scale`")
        if self.variant == "megengine":
            values = torch.where(values < self.eps, torch.zeros_like(values), values - self.eps)
        self.step_size.copy_(values)
        if zero_point is not None:
            self.zero_point.copy_(_param_values(zero_point, self.zero_point.numel(),
                                                "LSQ.set_qparams: `zero_point`"))

    def forward(self, x: Tensor) -> Tensor:
        if not bool(self.fake_quant_enabled[0]):
            return x
        if self.variant == "pytorch":
            # As _LearnableFakeQuantize: keep the learned scale positive (a data clamp).
            with torch.no_grad():
                self.step_size.clamp_(min=self.eps)
        g = self.grad_scale
        if self.use_grad_scaling:
            g = g * ops.lsq_grad_scale(x.numel(), self.quant_max)
        megengine = self.variant == "megengine"
        return ops.lsq(x, self.step_size, self.zero_point, quant_min=self.quant_min,
                       quant_max=self.quant_max, variant=self.variant, grad_scale=g,
                       axis=self.ch_axis,
                       step_transform="abs_plus_eps" if megengine else "identity",
                       step_eps=self.eps if megengine else 0.0, fused=self.fused)

    def extra_repr(self) -> str:
        return (f"variant={self.variant}, quant_min={self.quant_min}, "
                f"quant_max={self.quant_max}, ch_axis={self.ch_axis}, "
                f"use_grad_scaling={self.use_grad_scaling}, grad_scale={self.grad_scale}")


class TQT(_FakeQuantEnabled):
    """MegEngine's TQT: the Parameter ``log2_t`` (MegEngine's ``scale``, initial 0: t = 1) holds
    log2 of the threshold, which need not be a power of two."""

    def __init__(self, quant_min: int = -127, quant_max: int = 127, *,
                 log2_t: Union[Number, Sequence[Number], Tensor] = 0.0,
                 ch_axis: Optional[int] = None, channel_len: int = 1) -> None:
        super().__init__()
        self.quant_min = int(quant_min)
        self.quant_max = int(quant_max)
        self.ch_axis = ch_axis
        count = channel_len if ch_axis is not None else 1
        self.log2_t = nn.Parameter(_param_values(log2_t, count, "TQT: `log2_t`"))

    @torch.no_grad()
    def set_qparams(self, scale: Union[Number, Sequence[Number], Tensor]) -> None:
        """Sets the threshold from a (symmetric) scale: ``log2_t = log2(scale)``."""
        values = _param_values(scale, self.log2_t.numel(), "TQT.set_qparams: `scale`")
        if bool((values <= 0).any()):
            raise ValueError("TQT.set_qparams: `scale` must be > 0")
        self.log2_t.copy_(torch.log2(values))

    def forward(self, x: Tensor) -> Tensor:
        if not bool(self.fake_quant_enabled[0]):
            return x
        return ops.tqt(x, self.log2_t, quant_min=self.quant_min, quant_max=self.quant_max,
                       axis=self.ch_axis)

    def extra_repr(self) -> str:
        return f"quant_min={self.quant_min}, quant_max={self.quant_max}, ch_axis={self.ch_axis}"


class PACT(_FakeQuantEnabled):
    """Distiller's PACT (``LearnedClippedLinearQuantization``): the Parameter ``alpha``
    (Distiller's ``clip_val``; PACTQuantizer initialises it to 8.0) clips ``relu(x)``, which is
    quantized unsigned to ``bits`` bits. Put ``alpha`` in its own optimizer group for weight
    decay, as PACTQuantizer does."""

    def __init__(self, bits: int = 8, alpha: Union[Number, Sequence[Number], Tensor] = 8.0, *,
                 ch_axis: Optional[int] = None, channel_len: int = 1) -> None:
        super().__init__()
        self.bits = int(bits)
        self.ch_axis = ch_axis
        count = channel_len if ch_axis is not None else 1
        self.alpha = nn.Parameter(_param_values(alpha, count, "PACT: `alpha`"))

    def forward(self, x: Tensor) -> Tensor:
        if not bool(self.fake_quant_enabled[0]):
            return x
        return ops.pact(x, self.alpha, bits=self.bits, axis=self.ch_axis)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, ch_axis={self.ch_axis}"


class LearnedClip(nn.Module):
    """pytorch-quantization's ``nn.Clip(min, max, learn_min, learn_max)``: ``clamp(x, cmin,
    cmax)`` with learnable bounds (Parameters when learned, buffers otherwise) and the strict
    PACT-style gradients. ``TensorQuantizer(learn_amax=True)`` uses ``LearnedClip(-a, a, True,
    True)``."""

    def __init__(self, cmin: Union[Number, Tensor] = -1.0, cmax: Union[Number, Tensor] = 1.0,
                 learn_min: bool = False, learn_max: bool = False, *,
                 ch_axis: Optional[int] = None, channel_len: int = 1) -> None:
        super().__init__()
        self.ch_axis = ch_axis
        count = channel_len if ch_axis is not None else 1
        lo = _param_values(cmin, count, "LearnedClip: `cmin`")
        hi = _param_values(cmax, count, "LearnedClip: `cmax`")
        if learn_min:
            self.cmin = nn.Parameter(lo)
        else:
            self.register_buffer("cmin", lo)
        if learn_max:
            self.cmax = nn.Parameter(hi)
        else:
            self.register_buffer("cmax", hi)

    def forward(self, x: Tensor) -> Tensor:
        return ops.learned_clip(x, self.cmin, self.cmax, axis=self.ch_axis)

    def extra_repr(self) -> str:
        return (f"learn_min={isinstance(self.cmin, nn.Parameter)}, "
                f"learn_max={isinstance(self.cmax, nn.Parameter)}, ch_axis={self.ch_axis}")
