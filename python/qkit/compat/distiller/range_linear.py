"""Intel Distiller ``distiller.quantization.range_linear`` (the QAT parts, SPEC §5.2):
``LinearQuantMode``, ``FakeLinearQuantization`` and ``FakeQuantizationWrapper``.

The activation range is tracked by the core's ``MovingAverageObserver`` variant 'distiller'
(bias-corrected EMA, ``b = b*d + (1-d)*v``, ``u = b / (1 - d^t)``; docs/observers.md) through
``qkit.nn.MovingAverageMinMaxObserver``; the parameters come from :mod:`.q_utils` (core
``choose_qparams``) and the fake quantization from the core's ``fake_quantize`` (multiplier,
zero point subtracted before rounding, no clamp on the codes).

Modes follow Distiller's final code (SPEC §5.2): SYMMETRIC and SYMMETRIC_RESTRICTED take the
symmetric branch (restricted: [-127, 127]); releases before SYMMETRIC_RESTRICTED existed tested
``mode == SYMMETRIC`` only. ``mode`` may also be given by name (upstream stores it unchecked).

**Code beats documentation:** mode SYMMETRIC uses ``scale = 127.5 / max_abs`` (8 bits) and no
clamp on the codes, so ``±max_abs`` becomes ±128: 257 levels (10.2 H: 2.0 -> 2.0078433).
SYMMETRIC_RESTRICTED gives [-127, 127].

Where qkit differs (docs/compat.md): a training batch holding NaN or ±Inf raises ValueError
before any buffer changes (Distiller lets the NaN poison its EMA for good, and every later
output is NaN). The EMA's ``1 - d^t`` uses the C library's float32 ``powf``, torch uses its own
``pow``; they agree for the tested steps and within one float32 ulp in general (SPEC §11.11).
"""
from enum import Enum
from typing import Any, Tuple

import torch
from torch import Tensor, nn

from ...nn.observers import MovingAverageMinMaxObserver
from .q_utils import (LinearQuantizeSTE, asymmetric_linear_quantization_params,
                      get_tensor_min_max, symmetric_linear_quantization_params)

__all__ = ["LinearQuantMode", "FakeLinearQuantization", "FakeQuantizationWrapper", "clamp",
           "update_ema"]


class LinearQuantMode(Enum):
    SYMMETRIC = 1
    SYMMETRIC_RESTRICTED = 2
    ASYMMETRIC_UNSIGNED = 3
    ASYMMETRIC_SIGNED = 4


def _verify_quant_mode(mode):
    """A LinearQuantMode from a LinearQuantMode or its name (ValueError otherwise). Upstream
    stores ``mode`` unchecked, so a name or a typo silently selects the asymmetric branch."""
    if isinstance(mode, LinearQuantMode):
        return mode
    try:
        return LinearQuantMode[mode]
    except KeyError:
        raise ValueError('Unknown quantization mode string')


def clamp(input, min, max, inplace=False):  # noqa: A002
    """torch.clamp (Distiller's helper; its gradient is the inclusive clamp mask)."""
    if inplace:
        input.clamp_(min, max)
        return input
    return torch.clamp(input, min, max)


def _ema_observer(decay: float, per_channel: bool):
    kw = dict(variant="distiller", momentum=float(decay), nonfinite="propagate")
    if per_channel:
        kw.update(qscheme=torch.per_channel_affine, ch_axis=0)
    else:
        kw.update(qscheme=torch.per_tensor_affine)
    return MovingAverageMinMaxObserver(**kw)


def _distiller_ema_step(biased_ema: Any, value: Any, decay: Any, step: Any
                        ) -> Tuple[Tensor, Tensor]:
    """One bias-corrected EMA step per element, by the core observer: its state is loaded with
    ``biased_ema`` and ``step - 1`` updates, then it observes ``value``."""
    b = torch.as_tensor(biased_ema, dtype=torch.float32)
    v = torch.as_tensor(value, dtype=torch.float32)
    b, v = torch.broadcast_tensors(b, v)
    shape = b.shape
    b = b.reshape(-1).contiguous()
    v = v.reshape(-1).contiguous()
    d = float(decay.item() if isinstance(decay, Tensor) else decay)
    t = int(step.item() if isinstance(step, Tensor) else step)
    if t < 1:
        raise ValueError(f"update_ema: `step`={step} must be >= 1 (the bias correction divides "
                         "by 1 - decay^step)")
    obs = _ema_observer(d, per_channel=True)
    n = b.numel()
    state = obs.state_dict()
    state.update(min_val=b.clone(), max_val=b.clone(), biased_min=b.clone(),
                 biased_max=b.clone(), num_updates=torch.full((n,), t - 1, dtype=torch.int64))
    obs.load_state_dict(state)
    obs.train()
    obs(v)
    return obs.biased_min.reshape(shape).clone(), obs.min_val.reshape(shape).clone()


def update_ema(biased_ema, value, decay, step):
    """``(biased, unbiased)`` after one bias-corrected EMA step (range_linear.py is where
    Distiller defines it; also exported from :mod:`.q_utils`)."""
    return _distiller_ema_step(biased_ema, value, decay, step)


class FakeLinearQuantization(nn.Module):
    """Activation fake quantization for QAT with an EMA-tracked range.

    Args:
        num_bits (8), mode (LinearQuantMode.SYMMETRIC), ema_decay (0.999), dequantize (True),
        inplace (False; unused, as upstream).

    Buffers (float32; Distiller's names, so checkpoints load): ``ema_decay`` (0-d),
    ``tracked_min_biased``, ``tracked_min``, ``tracked_max_biased``, ``tracked_max``,
    ``iter_count``, ``scale``, ``zero_point`` (shape (1,)).
    """

    def __init__(self, num_bits=8, mode=LinearQuantMode.SYMMETRIC, ema_decay=0.999,
                 dequantize=True, inplace=False):
        super(FakeLinearQuantization, self).__init__()
        self.num_bits = num_bits
        self.mode = _verify_quant_mode(mode)
        self.dequantize = dequantize
        self.inplace = inplace

        # We track activations ranges with exponential moving average, as proposed by Jacob et
        # al., 2017 (https://arxiv.org/abs/1712.05877), with bias correction.
        self.register_buffer('ema_decay', torch.tensor(ema_decay))
        self.register_buffer('tracked_min_biased', torch.zeros(1))
        self.register_buffer('tracked_min', torch.zeros(1))
        self.register_buffer('tracked_max_biased', torch.zeros(1))
        self.register_buffer('tracked_max', torch.zeros(1))
        self.register_buffer('iter_count', torch.zeros(1))
        self.register_buffer('scale', torch.ones(1))
        self.register_buffer('zero_point', torch.zeros(1))
        # Checks the decay now (the core rejects decay 1: the correction would divide by 0).
        _ema_observer(float(ema_decay), per_channel=False)

    def _update_ema(self, input: Tensor) -> None:
        obs = _ema_observer(float(self.ema_decay), per_channel=False)
        state = obs.state_dict()
        step = int(self.iter_count.item())
        if step > 0:
            state.update(min_val=self.tracked_min.clone(), max_val=self.tracked_max.clone(),
                         biased_min=self.tracked_min_biased.clone(),
                         biased_max=self.tracked_max_biased.clone(),
                         num_updates=torch.tensor([step], dtype=torch.int64))
            obs.load_state_dict(state)
        obs.train()
        obs(input.detach())
        self.iter_count += 1
        self.tracked_min_biased.data.copy_(obs.biased_min)
        self.tracked_min.data.copy_(obs.min_val)
        self.tracked_max_biased.data.copy_(obs.biased_max)
        self.tracked_max.data.copy_(obs.max_val)

    def forward(self, input):
        if self.training:
            with torch.no_grad():
                current_min, current_max = get_tensor_min_max(input)
            if not (bool(torch.isfinite(current_min)) and bool(torch.isfinite(current_max))):
                raise ValueError(
                    f"FakeLinearQuantization: the batch holds NaN or Inf (min {current_min.item()},"
                    f" max {current_max.item()}); qkit refuses to let it poison the EMA")
            self._update_ema(input)

        if self.mode in (LinearQuantMode.SYMMETRIC, LinearQuantMode.SYMMETRIC_RESTRICTED):
            max_abs = max(abs(self.tracked_min), abs(self.tracked_max))
            actual_min, actual_max = -max_abs, max_abs
            if self.training:
                self.scale.data, self.zero_point.data = symmetric_linear_quantization_params(
                    self.num_bits, max_abs,
                    restrict_qrange=self.mode == LinearQuantMode.SYMMETRIC_RESTRICTED)
        else:
            actual_min, actual_max = self.tracked_min, self.tracked_max
            signed = self.mode == LinearQuantMode.ASYMMETRIC_SIGNED
            if self.training:
                self.scale.data, self.zero_point.data = asymmetric_linear_quantization_params(
                    self.num_bits, self.tracked_min, self.tracked_max, signed=signed)

        input = clamp(input, actual_min.item(), actual_max.item(), False)
        input = LinearQuantizeSTE.apply(input, self.scale, self.zero_point, self.dequantize,
                                        False)
        return input

    def extra_repr(self):
        mode_str = str(self.mode).split('.')[1]
        return 'mode={0}, num_bits={1}, ema_decay={2:.4f})'.format(mode_str, self.num_bits,
                                                                    self.ema_decay)


class FakeQuantizationWrapper(nn.Module):
    """``y = wrapped_module(*input)`` then :class:`FakeLinearQuantization` (dequantize=True)."""

    def __init__(self, wrapped_module, num_bits, quant_mode, ema_decay):
        super(FakeQuantizationWrapper, self).__init__()
        self.wrapped_module = wrapped_module
        self.fake_q = FakeLinearQuantization(num_bits, quant_mode, ema_decay, dequantize=True,
                                             inplace=getattr(wrapped_module, 'inplace', False))

    def forward(self, *input):
        res = self.wrapped_module(*input)
        res = self.fake_q(res)
        return res
