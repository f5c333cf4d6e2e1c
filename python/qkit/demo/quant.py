"""The quantized model: the float ``DigitsNet`` with a qkit quantizer on the input and on the
weight of every conv / linear layer, and the factories for those quantizers. Numbers come from
the quantizer modules (``qkit.nn.FakeQuantize``, ``qkit.nn.LSQ``); this file only wires them."""
from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import qkit

from .model import WEIGHT_LAYERS, DigitsNet

__all__ = ["QuantNet", "act_range", "weight_range", "fake_quant_act", "fake_quant_weight",
           "lsq_quantizer", "quantizer_qparams", "observer_class"]


def act_range(bits: int) -> Tuple[int, int]:
    """Activations are non-negative here (the image in [0, 1], then ReLU outputs): unsigned
    codes ``[0, 2^bits - 1]`` with an affine zero point."""
    return 0, (1 << bits) - 1


def weight_range(bits: int) -> Tuple[int, int]:
    """Weights: signed symmetric codes ``[-2^(bits-1), 2^(bits-1) - 1]``."""
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def observer_class(name: str):
    """A qkit observer module class by name, or None when this qkit build lacks it."""
    return getattr(qkit.nn, name, None)


def _minmax_observer():
    return observer_class("MinMaxObserver") or qkit.nn.RunningMinMaxObserver


def fake_quant_act(bits: int, observer: Optional[Callable] = None, **observer_kwargs
                   ) -> qkit.nn.FakeQuantize:
    """Per-tensor affine activation quantizer (observer off, qparams set by calibration, unless
    ``observer`` is given for QAT)."""
    qmin, qmax = act_range(bits)
    fq = qkit.nn.FakeQuantize(observer=observer or _minmax_observer(), quant_min=qmin,
                              quant_max=qmax, dtype=torch.quint8,
                              qscheme=torch.per_tensor_affine, **observer_kwargs)
    if observer is None:
        fq.disable_observer()
    return fq


def fake_quant_weight(bits: int, per_channel: bool, channels: int,
                      observer: Optional[Callable] = None, **observer_kwargs
                      ) -> qkit.nn.FakeQuantize:
    """Symmetric weight quantizer, per output channel (axis 0) or per tensor; min/max observer
    unless ``observer`` is given."""
    qmin, qmax = weight_range(bits)
    if per_channel:
        return qkit.nn.FakeQuantize(observer=observer or _minmax_observer(), quant_min=qmin,
                                    quant_max=qmax, dtype=torch.qint8,
                                    qscheme=torch.per_channel_symmetric, ch_axis=0,
                                    channel_len=channels, **observer_kwargs)
    return qkit.nn.FakeQuantize(observer=observer or _minmax_observer(), quant_min=qmin,
                                quant_max=qmax, dtype=torch.qint8,
                                qscheme=torch.per_tensor_symmetric, **observer_kwargs)


def lsq_quantizer(qmin: int, qmax: int, scale: Tensor, zero_point: Tensor,
                  per_channel: bool) -> qkit.nn.LSQ:
    """LSQ+ (PyTorch variant) with a learned step initialised from ``scale``; the zero point is
    kept fixed (its Parameter gets no gradient), with gradient scaling as in the LSQ paper."""
    n = scale.numel()
    q = qkit.nn.LSQ(qmin, qmax, variant="pytorch", scale=scale.float(),
                    zero_point=zero_point.float(), ch_axis=0 if per_channel else None,
                    channel_len=n if per_channel else 1, use_grad_scaling=True)
    q.zero_point.requires_grad_(False)
    return q


class QuantNet(nn.Module):
    """Runs ``net.layers`` in order; before each conv / linear layer the input goes through
    ``act_q[name]`` and the weight through ``weight_q[name]``. ``taps[name]`` (plain dict, not
    state) sees the float input of that layer first: calibration observers hang there."""

    def __init__(self, net: DigitsNet, act_q: Dict[str, nn.Module],
                 weight_q: Dict[str, nn.Module]) -> None:
        super().__init__()
        if set(act_q) != set(WEIGHT_LAYERS) or set(weight_q) != set(WEIGHT_LAYERS):
            raise ValueError(f"QuantNet: quantizers needed for exactly {WEIGHT_LAYERS}")
        self.net = net
        self.act_q = nn.ModuleDict(act_q)
        self.weight_q = nn.ModuleDict(weight_q)
        self.taps: Dict[str, Callable[[Tensor], object]] = {}

    def forward(self, x: Tensor) -> Tensor:
        for name, layer in self.net.layers.named_children():
            if name not in self.weight_q:
                x = layer(x)
                continue
            tap = self.taps.get(name)
            if tap is not None:
                tap(x.detach())
            x = self.act_q[name](x)
            w = self.weight_q[name](layer.weight)
            if isinstance(layer, nn.Conv2d):
                x = F.conv2d(x, w, layer.bias, layer.stride, layer.padding)
            else:
                x = F.linear(x, w, layer.bias)
        return x

    def set_fake_quant(self, enabled: bool) -> None:
        for q in list(self.act_q.values()) + list(self.weight_q.values()):
            q.enable_fake_quant(enabled)


def quantizer_qparams(q: nn.Module) -> Dict[str, object]:
    """``{scale, zero_point, quant_min, quant_max, axis}`` of a FakeQuantize or LSQ module (the
    values it quantizes with now)."""
    if isinstance(q, qkit.nn.LSQ):
        scale, zp, axis = q.step_size.detach(), q.zero_point.detach(), q.ch_axis
    else:
        scale, zp, axis = q.scale, q.zero_point, q.ch_axis
    return {"scale": [float(v) for v in scale.reshape(-1)],
            "zero_point": [int(v) for v in zp.reshape(-1).to(torch.int64)],
            "quant_min": int(q.quant_min), "quant_max": int(q.quant_max),
            "axis": None if axis is None else int(axis)}
