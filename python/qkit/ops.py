"""Typed wrappers over ``torch.ops.qkit.*``: keyword arguments with defaults and docs, nothing
else. Every formula is in the C++ core (include/qkit/ops/*.h; semantics in SPEC.md); autograd
is implemented in C++ (the ops are differentiable as they are, also from TorchScript).

Common options of the fake-quantization family (the fields of ``qkit::QuantSpec``):

* ``bits`` (2..16), ``is_signed``, ``narrow_range`` (signed only: [-(2^(b-1)-1), 2^(b-1)-1]), or
  an explicit ``quant_min`` / ``quant_max`` pair (both or neither).
* ``rounding``: ``"half_to_even"`` (default), ``"half_away_from_zero"``, ``"floor_add_half"``.
* ``scale_mode``: ``"divide"`` (x / s, default), ``"multiply_reciprocal"`` (x * f32(1/s),
  PyTorch), ``"multiplier"`` (scale is m = 1/step: x * m, NVIDIA / Distiller).
* ``zero_point_mode``: ``"add_after_round"`` (default) or ``"add_before_round"``.
* ``nan_mode``: ``"propagate"`` (default), ``"to_quant_min"`` (PyTorch), ``"error"``.
* ``allow_zero_point_outside_range``: accept zero points outside ``[quant_min, quant_max]``
  (integral, within 2^24 of both ends; OneFlow's affine zero point with fewer than 8 bits).
* layout: ``axis=None`` per tensor; ``axis=k`` per channel (scale has ``shape[k]`` entries);
  ``axis=k, group_size=g`` per group.

Scale and zero point are tensors (any real dtype; converted to float32). Tensors must be on
the CPU and dense; float16 / bfloat16 are computed in float32 and rounded back; float64 is
computed in float32 and returned as float64.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor

__all__ = [
    "absmax", "available_targets", "choose_qparams", "current_target", "dequantize",
    "fake_quantize", "fake_quantize_", "fake_quantize_backward", "fake_quantize_backward_clipped",
    "fake_quantize_with_mask", "force_target", "learned_clip", "learned_clip_backward", "lsq",
    "lsq_backward", "lsq_grad_scale", "minmax", "pact", "pact_backward", "quantize", "tqt",
    "tqt_backward",
]

_ops = torch.ops.qkit


def _spec(bits, is_signed, narrow_range, quant_min, quant_max, rounding, scale_mode,
          zero_point_mode, nan_mode, axis, group_size, allow_zero_point_outside_range=False):
    return dict(bits=bits, is_signed=is_signed, narrow_range=narrow_range, quant_min=quant_min,
                quant_max=quant_max, rounding=rounding, scale_mode=scale_mode,
                zero_point_mode=zero_point_mode, nan_mode=nan_mode, axis=axis,
                group_size=group_size,
                allow_zero_point_outside_range=allow_zero_point_outside_range)


def fake_quantize(x: Tensor, scale: Tensor, zero_point: Optional[Tensor] = None, *,
                  bits: int = 8, is_signed: bool = True, narrow_range: bool = False,
                  quant_min: Optional[int] = None, quant_max: Optional[int] = None,
                  rounding: str = "half_to_even", scale_mode: str = "divide",
                  zero_point_mode: str = "add_after_round", nan_mode: str = "propagate",
                  axis: Optional[int] = None, group_size: int = 0,
                  allow_zero_point_outside_range: bool = False,
                  ste: str = "clipped") -> Tensor:
    """Quantize then dequantize ``x`` (qkit::FakeQuantize). Gradient to ``x`` only:
    ``ste="clipped"`` masks it with the bit-packed in-range mask saved by the forward,
    ``"clipped_recompute"`` recomputes that mask from the saved input, ``"identity"`` passes it
    through. Scale and zero point get no gradient."""
    return _ops.fake_quantize(x, scale, zero_point, ste=ste, **_spec(
        bits, is_signed, narrow_range, quant_min, quant_max, rounding, scale_mode,
        zero_point_mode, nan_mode, axis, group_size, allow_zero_point_outside_range))


def fake_quantize_(x: Tensor, scale: Tensor, zero_point: Optional[Tensor] = None, *,
                   bits: int = 8, is_signed: bool = True, narrow_range: bool = False,
                   quant_min: Optional[int] = None, quant_max: Optional[int] = None,
                   rounding: str = "half_to_even", scale_mode: str = "divide",
                   zero_point_mode: str = "add_after_round", nan_mode: str = "propagate",
                   axis: Optional[int] = None, group_size: int = 0,
                   allow_zero_point_outside_range: bool = False,
                   ste: str = "clipped") -> Tensor:
    """In-place :func:`fake_quantize` (returns ``x``). Differentiable when ``ste`` is
    ``"clipped"`` (the mask is saved) or ``"identity"``; ``"clipped_recompute"`` cannot be used
    in place (the input is overwritten)."""
    return _ops.fake_quantize_(x, scale, zero_point, ste=ste, **_spec(
        bits, is_signed, narrow_range, quant_min, quant_max, rounding, scale_mode,
        zero_point_mode, nan_mode, axis, group_size, allow_zero_point_outside_range))


def fake_quantize_with_mask(x: Tensor, scale: Tensor, zero_point: Optional[Tensor] = None, *,
                            bits: int = 8, is_signed: bool = True, narrow_range: bool = False,
                            quant_min: Optional[int] = None, quant_max: Optional[int] = None,
                            rounding: str = "half_to_even", scale_mode: str = "divide",
                            zero_point_mode: str = "add_after_round",
                            nan_mode: str = "propagate", axis: Optional[int] = None,
                            group_size: int = 0,
                            allow_zero_point_outside_range: bool = False) -> Tuple[Tensor, Tensor]:
    """``(out, mask)``: ``mask`` is uint8 with ``ceil(numel / 8)`` bytes; bit ``i % 8`` of byte
    ``i // 8`` is 1 when element ``i`` (row-major) was inside the range. Not differentiable."""
    return _ops.fake_quantize_with_mask(x, scale, zero_point, **_spec(
        bits, is_signed, narrow_range, quant_min, quant_max, rounding, scale_mode,
        zero_point_mode, nan_mode, axis, group_size, allow_zero_point_outside_range))


def fake_quantize_backward(dy: Tensor, mask: Tensor) -> Tensor:
    """Clipped straight-through backward from a packed mask: ``dx = mask ? dy : 0``."""
    return _ops.fake_quantize_backward(dy, mask)


def fake_quantize_backward_clipped(dy: Tensor, x: Tensor, scale: Tensor,
                                   zero_point: Optional[Tensor] = None, *, bits: int = 8,
                                   is_signed: bool = True, narrow_range: bool = False,
                                   quant_min: Optional[int] = None,
                                   quant_max: Optional[int] = None,
                                   rounding: str = "half_to_even", scale_mode: str = "divide",
                                   zero_point_mode: str = "add_after_round",
                                   nan_mode: str = "propagate", axis: Optional[int] = None,
                                   group_size: int = 0,
                                   allow_zero_point_outside_range: bool = False) -> Tensor:
    """Clipped straight-through backward recomputing the mask from ``x``."""
    return _ops.fake_quantize_backward_clipped(dy, x, scale, zero_point, **_spec(
        bits, is_signed, narrow_range, quant_min, quant_max, rounding, scale_mode,
        zero_point_mode, nan_mode, axis, group_size, allow_zero_point_outside_range))


def quantize(x: Tensor, scale: Tensor, zero_point: Optional[Tensor] = None, *, bits: int = 8,
             is_signed: bool = True, narrow_range: bool = False,
             quant_min: Optional[int] = None, quant_max: Optional[int] = None,
             rounding: str = "half_to_even", scale_mode: str = "divide",
             zero_point_mode: str = "add_after_round", nan_mode: str = "propagate",
             axis: Optional[int] = None, group_size: int = 0,
             allow_zero_point_outside_range: bool = False,
             dtype: Optional[torch.dtype] = None) -> Tensor:
    """Integer codes ``clamp(q, quant_min, quant_max)`` in ``dtype`` (default: the smallest of
    int8 / uint8 / int16 / int32 that holds the range). ``dtype=torch.float32`` gives the codes
    as floats, where ``nan_mode="propagate"`` keeps NaN (integer codes raise on NaN unless
    ``nan_mode="to_quant_min"``)."""
    return _ops.quantize(x, scale, zero_point, dtype=dtype, **_spec(
        bits, is_signed, narrow_range, quant_min, quant_max, rounding, scale_mode,
        zero_point_mode, nan_mode, axis, group_size, allow_zero_point_outside_range))


def dequantize(q: Tensor, scale: Tensor, zero_point: Optional[Tensor] = None, *, bits: int = 8,
               is_signed: bool = True, narrow_range: bool = False,
               quant_min: Optional[int] = None, quant_max: Optional[int] = None,
               rounding: str = "half_to_even", scale_mode: str = "divide",
               zero_point_mode: str = "add_after_round", nan_mode: str = "propagate",
               axis: Optional[int] = None, group_size: int = 0,
               allow_zero_point_outside_range: bool = False,
               dtype: Optional[torch.dtype] = None) -> Tensor:
    """``(q - z) * s`` (or ``/ m``) as ``dtype`` (default float32) from integer codes."""
    return _ops.dequantize(q, scale, zero_point, dtype=dtype, **_spec(
        bits, is_signed, narrow_range, quant_min, quant_max, rounding, scale_mode,
        zero_point_mode, nan_mode, axis, group_size, allow_zero_point_outside_range))


def minmax(x: Tensor, *, axis: Optional[int] = None, group_size: int = 0,
           nonfinite: str = "skip", min_acc: Optional[Tensor] = None,
           max_acc: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, int]:
    """``(min, max, skipped)`` per slot (float32, shape ``[slots]``), folded into the given
    accumulators (not modified; new tensors are returned). ``nonfinite``: ``"skip"`` (NaN and
    ±Inf left out and counted), ``"skip_nan"``, ``"propagate"``. A slot with no element keeps
    its accumulator (+inf / -inf for fresh ones)."""
    return _ops.minmax(x, axis=axis, group_size=group_size, nonfinite=nonfinite,
                       min_acc=min_acc, max_acc=max_acc)


def absmax(x: Tensor, *, axis: Optional[int] = None, group_size: int = 0,
           nonfinite: str = "skip", amax_acc: Optional[Tensor] = None) -> Tuple[Tensor, int]:
    """``(amax, skipped)``: max |x| per slot folded into ``amax_acc`` (default 0)."""
    return _ops.absmax(x, axis=axis, group_size=group_size, nonfinite=nonfinite,
                       amax_acc=amax_acc)


def choose_qparams(min: Tensor, max: Tensor, *, bits: int = 8, is_signed: bool = True,
                   narrow_range: bool = False, quant_min: Optional[int] = None,
                   quant_max: Optional[int] = None, rounding: str = "half_to_even",
                   scale_mode: str = "divide", zero_point_mode: str = "add_after_round",
                   nan_mode: str = "propagate", axis: Optional[int] = None, group_size: int = 0,
                   symmetric: bool = True, divisor: str = "half_range",
                   widen_to_zero: bool = True, degenerate: str = "floor_at_eps",
                   eps: float = 2.0 ** -23, zero_point_rounding: str = "half_to_even",
                   integral_zero_point: bool = True, clamp_zero_point: bool = True,
                   restriction: str = "none", symmetric_zero_point: str = "zero",
                   reciprocal_multiplier: bool = False) -> Tuple[Tensor, Tensor]:
    """``(scale, zero_point)`` (float32, min's shape) from ranges (qkit::ChooseQParams):
    ``divisor`` ``"half_range"`` | ``"quant_max"``, ``degenerate`` ``"floor_at_eps"`` |
    ``"none"`` | ``"zero_below_eps"`` | ``"one_if_zero_range"``, ``restriction`` ``"none"`` |
    ``"pow2_floor_log2_amax"`` | ``"pow2_bernoulli"``, ``symmetric_zero_point`` ``"zero"`` |
    ``"midpoint_up"`` (PyTorch quint8 symmetric: 128) | ``"midpoint_down"``.
    ``reciprocal_multiplier`` (``scale_mode="multiplier"`` only): the multiplier is
    ``f32(1 / range) * d``, torch's ``number / tensor`` (Distiller), not ``f32(d / range)``."""
    return _ops.choose_qparams(
        min, max, symmetric=symmetric, divisor=divisor, widen_to_zero=widen_to_zero,
        degenerate=degenerate, eps=eps, zero_point_rounding=zero_point_rounding,
        integral_zero_point=integral_zero_point, clamp_zero_point=clamp_zero_point,
        restriction=restriction, symmetric_zero_point=symmetric_zero_point,
        reciprocal_multiplier=reciprocal_multiplier,
        **_spec(bits, is_signed, narrow_range, quant_min, quant_max, rounding, scale_mode,
                zero_point_mode, nan_mode, axis, group_size))


# ---- learned-range fake quantization --------------------------------------------------------

def lsq(x: Tensor, step: Tensor, zero_point: Optional[Tensor] = None, *, quant_min: int = -128,
        quant_max: int = 127, variant: str = "pytorch", grad_scale: float = 1.0,
        axis: Optional[int] = None, step_transform: str = "identity",
        step_eps: float = 0.0, fused: bool = False) -> Tensor:
    """LSQ fake quantization, differentiable in ``x``, ``step`` and (``variant="pytorch"``)
    ``zero_point``.

    ``variant="pytorch"``: torch's ``_fake_quantize_learnable_per_{tensor,channel}_affine``
    (LSQ+): ``x * f32(1/s)``, RNE, zero point rounded and clamped; gradients with
    ``quant_min - z`` / ``quant_max - z`` slopes, the rounded range test, and the zero point's
    gradient. ``variant="megengine"``: MegEngine's ``lsq``: ``x / s + z`` rounded half away from
    zero, the unrounded range test, ``quant_min`` / ``quant_max`` slopes, no zero-point
    gradient. ``grad_scale`` multiplies the step (and zero point) gradients; see
    :func:`lsq_grad_scale`. ``step_transform="abs_plus_eps"`` uses ``|step| + step_eps`` as the
    step (MegEngine's module, eps 1e-5). ``fused=True`` (pytorch variant) rounds
    ``z + x * inv`` and ``xfq - x`` once each in the backward, as torch's kernels compiled with
    FMA contraction (its AVX2 / AVX-512 builds) do."""
    return _ops.lsq(x, step, zero_point, quant_min=quant_min, quant_max=quant_max,
                    variant=variant, grad_scale=grad_scale, axis=axis,
                    step_transform=step_transform, step_eps=step_eps, fused=fused)


def lsq_backward(dy: Tensor, x: Tensor, step: Tensor, zero_point: Optional[Tensor] = None, *,
                 quant_min: int = -128, quant_max: int = 127, variant: str = "pytorch",
                 grad_scale: float = 1.0, axis: Optional[int] = None,
                 step_transform: str = "identity", step_eps: float = 0.0,
                 fused: bool = False) -> Tuple[Tensor, Tensor, Tensor]:
    """``(dx, dstep, dzero_point)`` of :func:`lsq` (the zero point's is zeros for MegEngine)."""
    return _ops.lsq_backward(dy, x, step, zero_point, quant_min=quant_min, quant_max=quant_max,
                             variant=variant, grad_scale=grad_scale, axis=axis,
                             step_transform=step_transform, step_eps=step_eps, fused=fused)


def lsq_grad_scale(numel: int, quant_max: int) -> float:
    """The LSQ paper's gradient scale ``1 / sqrt(numel * quant_max)`` (PyTorch's
    ``use_grad_scaling``), as float32."""
    return _ops.lsq_grad_scale(numel, quant_max)


def tqt(x: Tensor, log2_t: Tensor, *, quant_min: int = -127, quant_max: int = 127,
        axis: Optional[int] = None) -> Tensor:
    """MegEngine's TQT: threshold ``t = 2^log2_t`` (not rounded), ``x / t`` rounded half away
    from zero and clamped; differentiable in ``x`` and ``log2_t``."""
    return _ops.tqt(x, log2_t, quant_min=quant_min, quant_max=quant_max, axis=axis)


def tqt_backward(dy: Tensor, x: Tensor, log2_t: Tensor, *, quant_min: int = -127,
                 quant_max: int = 127, axis: Optional[int] = None) -> Tuple[Tensor, Tensor]:
    """``(dx, dlog2_t)`` of :func:`tqt`."""
    return _ops.tqt_backward(dy, x, log2_t, quant_min=quant_min, quant_max=quant_max, axis=axis)


def pact(x: Tensor, alpha: Tensor, *, bits: int = 8, axis: Optional[int] = None) -> Tensor:
    """Distiller's PACT (LearnedClippedLinearQuantization): ``relu``, clip at ``alpha``, unsigned
    ``bits``-bit quantization of ``[0, alpha]``; differentiable in ``x`` and ``alpha``."""
    return _ops.pact(x, alpha, bits=bits, axis=axis)


def pact_backward(dy: Tensor, x: Tensor, alpha: Tensor, *, bits: int = 8,
                  axis: Optional[int] = None) -> Tuple[Tensor, Tensor]:
    """``(dx, dalpha)`` of :func:`pact`."""
    return _ops.pact_backward(dy, x, alpha, bits=bits, axis=axis)


def learned_clip(x: Tensor, cmin: Tensor, cmax: Tensor, *, axis: Optional[int] = None) -> Tensor:
    """pytorch-quantization's learned-amax ``Clip``: ``max(min(x, cmax), cmin)`` with the strict
    (PACT / ``clip_by_value``) gradients for ``x``, ``cmin`` and ``cmax``."""
    return _ops.learned_clip(x, cmin, cmax, axis=axis)


def learned_clip_backward(dy: Tensor, x: Tensor, cmin: Tensor, cmax: Tensor, *,
                          axis: Optional[int] = None) -> Tuple[Tensor, Tensor, Tensor]:
    """``(dx, dcmin, dcmax)`` of :func:`learned_clip`."""
    return _ops.learned_clip_backward(dy, x, cmin, cmax, axis=axis)


# ---- SIMD target control (tests, benchmarks) --------------------------------------------------

def available_targets():
    """SIMD targets compiled in and supported by this CPU, best first."""
    return list(_ops.available_targets())


def force_target(name: str = "") -> None:
    """Restrict dispatch to one target (``""`` restores the default). Not thread-safe."""
    _ops.force_target(name)


def current_target() -> str:
    return _ops.current_target()
