"""Intel Distiller ``distiller.quantization.q_utils`` on qkit's core (SPEC §5.1).

Distiller's ``scale`` is a **multiplier** (``q = round(scale * x - zero_point)``,
``x = (q + zero_point) / scale``) and its zero point is subtracted; qkit's presets "Distiller
SYMMETRIC / SYMMETRIC_RESTRICTED / ASYMMETRIC_*" (docs/qparams.md) give the same numbers with
``scale_mode="multiplier"``, ``zero_point_mode="add_before_round"`` and qkit's zero point
``z = -zero_point``.

**Code beats documentation:** the non-restricted symmetric mode divides by
``(2^b - 1) / 2 = 127.5`` (8 bits) and :func:`linear_quantize` never clamps, so
``x = ±sat`` maps to ±128: Distiller's SYMMETRIC mode has **257 levels**, not the 256 its docs
describe. qkit reproduces it (fake-quant range ``[-2^(b-1), 2^(b-1)]``).

Distiller writes ``n / sat`` (and ``n / diff``), a Python number divided by a tensor, which
torch evaluates as ``reciprocal(sat) * n`` (two float32 roundings); the core's rule option
``reciprocal_multiplier`` forms the multiplier the same way, so the scales are Distiller's bit
for bit (a single division would differ by one ulp in about a quarter of them).

Where qkit differs (docs/compat.md):

* A NaN or infinite saturation value / range raises ``ValueError`` (Distiller returns NaN or a
  zero multiplier that later divides 0 by 0); so does a denormal one whose multiplier
  overflows.
* Codes are limited to the core's exact range ``[-2^24, 2^24]``: :func:`linear_quantize`
  saturates there (Distiller does not clamp at all; the codes of a float32 beyond 2^24 are
  not integers anyway). ±Inf inputs give ±2^24 (Distiller: ±Inf). NaN stays NaN.
* ``num_bits`` must be in [2, 16]; float64 arguments are computed in float32.
* A zero code is +0 (Distiller gives -0 for small negative inputs); values are equal.
"""
import math
from typing import Any, Optional, Tuple, Union

import torch
from torch import Tensor

from ... import ops
from .._broadcast import Slots

__all__ = [
    "symmetric_linear_quantization_params", "asymmetric_linear_quantization_params",
    "linear_quantize", "linear_quantize_clamp", "linear_dequantize", "get_tensor_min_max",
    "get_tensor_max_abs", "get_quantized_range", "update_ema", "LinearQuantizeSTE",
    "CODE_LIMIT",
]

#: The core's code range: codes must be exact in float32.
CODE_LIMIT = 2 ** 24

Number = Union[int, float]


def _check_bits(num_bits: Any) -> int:
    if isinstance(num_bits, bool) or not isinstance(num_bits, int):
        raise TypeError(f"num_bits must be an int, not {type(num_bits)}")
    if not 2 <= num_bits <= 16:
        raise ValueError(f"num_bits={num_bits} is not supported by qkit (2..16 bits)")
    return num_bits


def _prep_saturation_val_tensor(sat_val: Any) -> Tuple[bool, Tensor]:
    is_scalar = not isinstance(sat_val, torch.Tensor)
    out = torch.tensor(sat_val) if is_scalar else sat_val.clone().detach()
    if not out.is_floating_point():
        out = out.to(torch.float32)
    if out.dim() == 0:
        out = out.unsqueeze(0)
    return is_scalar, out


def _check_finite(t: Tensor, name: str) -> None:
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name}={t.tolist()} is not finite; qkit rejects it (Distiller would "
                         "compute NaN quantization parameters)")


def _symmetric_spec(num_bits: int, restrict_qrange: bool) -> dict:
    if restrict_qrange:
        return dict(bits=num_bits, is_signed=True, narrow_range=True)
    half = 2 ** (num_bits - 1)
    return dict(bits=num_bits, quant_min=-half, quant_max=half)


def symmetric_linear_quantization_params(num_bits: int, saturation_val: Any,
                                         restrict_qrange: bool = False):
    """``(scale, zero_point)`` for symmetric quantization of ``[-sat, sat]``:
    ``scale = n / sat`` (torch: ``reciprocal(sat) * n``) with ``n = (2^b - 1) / 2`` (127.5; 257
    levels, see the module doc) or, restricted, ``n = 2^(b-1) - 1`` (127); a zero saturation
    gives scale 1. Python floats in, Python floats out; tensors give tensors (at least 1-d)."""
    num_bits = _check_bits(num_bits)
    is_scalar, sat_val = _prep_saturation_val_tensor(saturation_val)
    if bool((sat_val < 0).any()):
        raise ValueError('Saturation value must be >= 0')
    _check_finite(sat_val, "saturation_val")
    sat = sat_val.to(torch.float32)
    scale, _ = ops.choose_qparams(torch.zeros_like(sat), sat,
                                  **_symmetric_spec(num_bits, restrict_qrange),
                                  scale_mode="multiplier", symmetric=True,
                                  divisor="half_range" if restrict_qrange else "half_full_range",
                                  degenerate="one_if_zero_range", reciprocal_multiplier=True)
    scale = scale.to(sat_val.dtype)
    zero_point = torch.zeros_like(scale)
    if is_scalar:
        return scale.item(), zero_point.item()
    return scale, zero_point


def asymmetric_linear_quantization_params(num_bits: int, saturation_min: Any,
                                          saturation_max: Any, integral_zero_point: bool = True,
                                          signed: bool = False):
    """``(scale, zero_point)`` for ``[min(smin, 0), max(smax, 0)]``: ``scale = (2^b - 1) /
    range`` (1 for a zero range), ``zero_point = scale * min`` rounded half to even when
    ``integral_zero_point``, plus ``2^(b-1)`` when ``signed``."""
    num_bits = _check_bits(num_bits)
    scalar_min, sat_min = _prep_saturation_val_tensor(saturation_min)
    scalar_max, sat_max = _prep_saturation_val_tensor(saturation_max)
    is_scalar = scalar_min and scalar_max
    if bool((sat_min > sat_max).any()):
        raise ValueError('saturation_min must be smaller than saturation_max')
    _check_finite(sat_min, "saturation_min")
    _check_finite(sat_max, "saturation_max")
    lo, hi = torch.broadcast_tensors(sat_min.to(torch.float32), sat_max.to(torch.float32))
    scale, z = ops.choose_qparams(lo.contiguous(), hi.contiguous(), bits=num_bits,
                                  is_signed=bool(signed), scale_mode="multiplier",
                                  zero_point_mode="add_before_round", symmetric=False,
                                  degenerate="one_if_zero_range", clamp_zero_point=False,
                                  integral_zero_point=bool(integral_zero_point),
                                  reciprocal_multiplier=True)
    zero_point = 0.0 - z   # qkit's z is the code of 0; Distiller subtracts its zero point
    dtype = torch.promote_types(sat_min.dtype, sat_max.dtype)
    scale, zero_point = scale.to(dtype), zero_point.to(dtype)
    if is_scalar:
        return scale.item(), zero_point.item()
    return scale, zero_point


def _as_param(v: Any, x: Tensor) -> Tensor:
    if isinstance(v, Tensor):
        return v.detach()
    return torch.tensor(float(v), dtype=torch.float32)


def _no_clamp_spec(axis: Optional[int]) -> dict:
    return dict(quant_min=-CODE_LIMIT, quant_max=CODE_LIMIT, scale_mode="multiplier",
                zero_point_mode="add_before_round", axis=axis)


def _params(input: Tensor, scale: Any, zero_point: Any):  # noqa: A002
    s = _as_param(scale, input)
    zp = _as_param(zero_point, input)
    if s.shape != zp.shape:
        s, zp = torch.broadcast_tensors(s, zp)
    slots = Slots(input, s, "scale")
    z = 0.0 - zp.reshape(-1).to(torch.float32)
    return slots, s.reshape(-1).to(torch.float32), z


def _quantize_codes(input: Tensor, scale: Any, zero_point: Any) -> Tensor:
    slots, s, z = _params(input, scale, zero_point)
    x = slots.to_layout(input.detach())
    # float32 codes: NaN stays NaN, as Distiller's round(scale * x - zp)
    codes = ops.quantize(x, s, z, **_no_clamp_spec(slots.axis), nan_mode="propagate",
                         dtype=torch.float32)
    out = codes.to(input.dtype if input.is_floating_point() else torch.float32)
    return slots.from_layout(out)


def linear_quantize(input: Tensor, scale: Any, zero_point: Any,  # noqa: A002
                    inplace: bool = False) -> Tensor:
    """``round(scale * input - zero_point)`` (half to even), no clamp (see the module doc for
    the ±2^24 code limit). ``scale`` / ``zero_point``: numbers or tensors broadcasting against
    ``input``."""
    out = _quantize_codes(input, scale, zero_point)
    if inplace:
        input.copy_(out)
        return input
    return out


def linear_quantize_clamp(input: Tensor, scale: Any, zero_point: Any,  # noqa: A002
                          clamp_min: Number, clamp_max: Number, inplace: bool = False) -> Tensor:
    """:func:`linear_quantize` clamped to ``[clamp_min, clamp_max]`` by the core."""
    slots, s, z = _params(input, scale, zero_point)
    x = slots.to_layout(input.detach())
    codes = ops.quantize(x, s, z, quant_min=int(clamp_min), quant_max=int(clamp_max),
                         scale_mode="multiplier", zero_point_mode="add_before_round",
                         axis=slots.axis, nan_mode="propagate", dtype=torch.float32)
    out = slots.from_layout(codes.to(input.dtype))
    if inplace:
        input.copy_(out)
        return input
    return out


def linear_dequantize(input: Tensor, scale: Any, zero_point: Any,  # noqa: A002
                      inplace: bool = False) -> Tensor:
    """``(input + zero_point) / scale`` for integer-valued codes (any float dtype), by the
    core's dequantize. Codes that are not integers raise ValueError (qkit's dequantize takes
    codes, Distiller would compute the expression anyway)."""
    slots, s, z = _params(input, scale, zero_point)
    x = slots.to_layout(input.detach())
    if x.is_floating_point():
        if not bool((torch.isfinite(x) & (x == torch.round(x))).all()):
            raise ValueError("linear_dequantize: `input` holds non-integer or non-finite codes; "
                             "qkit dequantizes integer codes only")
        codes = x.to(torch.int32)
    else:
        codes = x
    out = ops.dequantize(codes, s, z, **_no_clamp_spec(slots.axis),
                         dtype=input.dtype if input.is_floating_point() else torch.float32)
    out = slots.from_layout(out)
    if inplace:
        input.copy_(out)
        return input
    return out


def _per_dim_rows(t: Tensor, per_dim: Optional[int]):
    """Distiller's checks, then ``(x, view_dims)``: ``x`` detached and, for ``per_dim``, viewed
    as one row per slice of the leading ``per_dim + 1`` dims (``view_dims`` their sizes)."""
    if per_dim is not None and per_dim >= t.dim():
        raise ValueError('Got per_dim={0}, but tensor only has {1} dimensions'.format(
            per_dim, t.dim()))
    if t.numel() == 0:
        raise RuntimeError("min(): Expected reduction dim to be specified for input.numel() == 0.")
    x = t.detach()
    if per_dim is None:
        return x, None
    view_dims = list(t.shape[:per_dim + 1])
    return x.reshape(math.prod(view_dims), -1), view_dims


def get_tensor_min_max(t: Tensor, per_dim: Optional[int] = None):
    """``(t.min(), t.max())``, or per slice of the leading ``per_dim + 1`` dimensions. NaN
    propagates (torch.min / max)."""
    x, view_dims = _per_dim_rows(t, per_dim)
    mn, mx, _ = ops.minmax(x, axis=None if view_dims is None else 0, nonfinite="propagate")
    shape = () if view_dims is None else view_dims
    return mn.reshape(shape).to(t.dtype), mx.reshape(shape).to(t.dtype)


def get_tensor_max_abs(t: Tensor, per_dim: Optional[int] = None) -> Tensor:
    """``max(|min|, |max|)`` of :func:`get_tensor_min_max` (qkit's absmax)."""
    x, view_dims = _per_dim_rows(t, per_dim)
    a, _ = ops.absmax(x, axis=None if view_dims is None else 0, nonfinite="propagate")
    return a.reshape(() if view_dims is None else view_dims).to(t.dtype)


def get_quantized_range(num_bits: int, signed: bool = True, signed_restrict_qrange: bool = False):
    """``(qmin, qmax)``: unsigned ``[0, 2^b - 1]``, signed ``[-2^(b-1), 2^(b-1) - 1]``, or
    ``[-(2^(b-1) - 1), 2^(b-1) - 1]`` when restricted (integers, a range table)."""
    if signed:
        qmax = 2 ** (num_bits - 1) - 1
        qmin = (-qmax) if signed_restrict_qrange else -qmax - 1
        return qmin, qmax
    return 0, 2 ** num_bits - 1


def update_ema(biased_ema: Tensor, value: Tensor, decay: Any, step: Any):
    """``(biased, unbiased)`` after one bias-corrected EMA step (Distiller's Adam-style
    correction), from the core's ``MovingAverageObserver`` variant 'distiller'."""
    from .range_linear import _distiller_ema_step
    return _distiller_ema_step(biased_ema, value, decay, step)


class LinearQuantizeSTE(torch.autograd.Function):
    """``linear_quantize`` (then ``linear_dequantize`` if ``dequantize``) with a pure
    straight-through gradient (``dx = dy``; scale and zero point get none)."""

    @staticmethod
    def forward(ctx, input, scale, zero_point, dequantize, inplace):  # noqa: A002
        if inplace:
            ctx.mark_dirty(input)
        if dequantize:
            slots, s, z = _params(input, scale, zero_point)
            x = slots.to_layout(input.detach())
            out = slots.from_layout(ops.fake_quantize(x, s, z, **_no_clamp_spec(slots.axis),
                                                      ste="identity"))
        else:
            out = _quantize_codes(input, scale, zero_point)
        if inplace:
            input.copy_(out)
            return input
        return out

    @staticmethod
    def backward(ctx, grad_output):
        # Straight-through estimator
        return grad_output, None, None, None, None
