"""``oneflow.nn`` quantization modules on qkit: ``MinMaxObserver``, ``MovingAverageMinMaxObserver``,
``FakeQuantization``, ``Quantization`` (SPEC.md §2; OneFlow @ 25c8978c).

Every number comes from qkit's core (``qkit.ops`` / ``qkit.nn``); this module only maps OneFlow's
argument names, defaults, shapes and dtypes onto core options:

=============================  =================================================================
OneFlow                        qkit core options
=============================  =================================================================
google, symmetric              signed ``b`` bits ``[-2^(b-1), 2^(b-1)-1]``, RNE, ``x / s``;
                               qparams divisor ``quant_max``, no epsilon (``degenerate="none"``)
google, affine                 unsigned ``[0, 2^b-1]``, zero point added before rounding;
                               qparams unwidened, unclamped zero point (RNE for MinMaxObserver,
                               half-away for MovingAverageMinMaxObserver, as OneFlow's kernels)
cambricon                      signed ``b`` bits; qparams ``restriction="pow2_floor_log2_amax"``;
                               the ``scale`` slot holds the shift exponent, as in OneFlow
=============================  =================================================================

Where OneFlow's documentation and its kernels disagree, **the kernels win** (SPEC "Decisions"):

* symmetric fake quantization clamps to **[-128, 127]** for 8 bits (the docstring says
  ``quant_min = -quant_max``; the kernel is not narrow);
* affine ``Quantization`` returns ``clamp(round(x / s + zero_point), 0, 2^b - 1)`` **without**
  subtracting the zero point (the docstring subtracts it);
* the moving average is (re-)initialised whenever the stored value is exactly 0, not only on
  the first batch.

CPU semantics are the reference. OneFlow's CUDA affine kernels use the float zero point as
is; its CPU kernels round it half away from zero and cast it to ``uint8``. qkit follows the CPU
kernels. **Undefined behaviour is not reproduced, it raises** ``ValueError``:

* a zero point whose rounded value is outside ``[0, 255]`` (OneFlow's CPU ``uint8`` cast is
  undefined there; GCC wraps ``-3`` to ``253``). For ``b < 8`` a rounded zero point in
  ``(2^b - 1, 255]`` is defined (the unwidened range of an all-negative tensor gives one) and
  used as OneFlow does: codes are still clamped to ``[0, 2^b - 1]`` (the core's
  ``allow_zero_point_outside_range``);
* a zero scale (OneFlow divides ``0 / 0`` and returns NaN: the all-zero tensor in symmetric
  mode), a constant tensor in affine mode (zero point ``-round(min / 0)``), cambricon with
  ``amax == 0`` (``log2(0)`` cast to int), NaN or ±Inf in an observed tensor (OneFlow's CPU
  min/max then depends on where the NaN sits), a NaN or infinite cambricon shift.

Other differences: float64 inputs are computed in float32 precision (OneFlow computes in
double). ``Quantization`` of a NaN gives NaN, as OneFlow's float result (the core's float32
codes with ``nan_mode="propagate"``).

Bad attributes (``quantization_bit`` outside 2..8, unknown scheme or formula,
``stop_update_after_iters <= 0``) raise :class:`CheckFailedException` (a ``RuntimeError``), as
OneFlow's op checks do; cambricon with per-channel observation raises
:class:`UnimplementedException`.
"""
import math
from typing import Optional, Tuple

import torch
from torch import Tensor

from ... import ops

__all__ = ["CheckFailedException", "FakeQuantization", "MinMaxObserver",
           "MovingAverageMinMaxObserver", "Quantization", "UnimplementedException"]


class CheckFailedException(RuntimeError):
    """OneFlow's ``CHECK`` failure (an op attribute out of range)."""


class UnimplementedException(RuntimeError):
    """OneFlow's ``UNIMPLEMENTED`` (e.g. cambricon per-channel)."""


_FORMULAS = ("google", "cambricon")
_SCHEMES = ("symmetric", "affine")


def _check_attrs(who: str, formula: str, bit: int, scheme: str) -> None:
    if formula not in _FORMULAS:
        raise CheckFailedException(
            f"oneflow.nn.{who}: `quantization_formula`={formula!r} is not one of {_FORMULAS}")
    if isinstance(bit, bool) or not isinstance(bit, int) or not 1 < bit <= 8:
        raise CheckFailedException(
            f"oneflow.nn.{who}: `quantization_bit`={bit!r} must be an int with 1 < bit <= 8")
    if scheme not in _SCHEMES:
        raise CheckFailedException(
            f"oneflow.nn.{who}: `quantization_scheme`={scheme!r} is not one of {_SCHEMES}")


def _check_input(who: str, x: Tensor) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"oneflow.nn.{who}: `input` must be a tensor, got {type(x).__name__}")
    if x.dtype not in (torch.float32, torch.float64):
        raise CheckFailedException(
            f"oneflow.nn.{who}: `input` has dtype {x.dtype}; OneFlow's kernels are registered "
            "for float32 and float64 only")


def _qparams_options(formula: str, bit: int, scheme: str, zero_point_rounding: str) -> dict:
    """The core spec + QParamsRule of OneFlow's preset (docs/qparams.md)."""
    if formula == "cambricon":
        return dict(bits=bit, is_signed=True, symmetric=True, degenerate="none",
                    restriction="pow2_floor_log2_amax")
    if scheme == "symmetric":
        return dict(bits=bit, is_signed=True, symmetric=True, divisor="quant_max",
                    degenerate="none")
    return dict(bits=bit, is_signed=False, symmetric=False, widen_to_zero=False,
                degenerate="none", zero_point_rounding=zero_point_rounding,
                clamp_zero_point=False)


def _to_oneflow_slots(formula: str, scale: Tensor, zero_point: Tensor,
                      dtype: torch.dtype) -> Tuple[Tensor, Tensor]:
    """qkit's (step, zero point) -> OneFlow's (scale, zero_point) tensors of the input dtype.
    Cambricon stores the shift exponent: log2 of the power-of-two step (exact)."""
    if formula == "cambricon":
        scale = torch.log2(scale)
    return scale.to(dtype), zero_point.to(dtype)


def _cambricon_step(who: str, scale: Tensor) -> Tensor:
    """OneFlow's ``pow(2.0, (int)scale[0])``: the shift of the first slot only, truncated."""
    shift = float(scale.reshape(-1)[0])
    if not math.isfinite(shift) or abs(shift) >= 2 ** 31:
        raise ValueError(f"oneflow.nn.{who}: cambricon shift `scale`[0]={shift} is not a finite "
                         "int32 (OneFlow's int conversion is undefined)")
    return torch.tensor([math.ldexp(1.0, int(shift))], dtype=torch.float32)


def _affine_zero_point(who: str, zero_point: Tensor, bit: int) -> Tensor:
    """OneFlow CPU: ``(uint8_t) std::round(zero_point)``. Defined only when the rounded value
    lies in [0, 255], which may exceed the ``b``-bit range [0, 2^b - 1] (the core accepts it with
    ``allow_zero_point_outside_range``). The rounding is the core's half-away-from-zero
    rounding (quantize with step 1)."""
    zp = zero_point.detach().reshape(-1).to(torch.float32)
    bad = ~((zp > -0.5) & (zp < 255.5))
    if bool(bad.any()):
        i = int(bad.nonzero()[0])
        raise ValueError(
            f"oneflow.nn.{who}: `zero_point`[{i}]={float(zp[i])} rounds outside [0, 255]; "
            "OneFlow's CPU cast of it to uint8 is undefined behaviour (CUDA uses the float "
            "value), so qkit refuses it")
    codes = ops.quantize(zp, torch.ones(1), quant_min=0, quant_max=255,
                         rounding="half_away_from_zero", dtype=torch.int32)
    return codes.to(torch.float32)


class _QuantOp(torch.nn.Module):
    """Shared attributes and argument mapping of FakeQuantization and Quantization."""

    def __init__(self, quantization_formula: str = "google", quantization_bit: int = 8,
                 quantization_scheme: str = "symmetric") -> None:
        super().__init__()
        _check_attrs(type(self).__name__, quantization_formula, quantization_bit,
                     quantization_scheme)
        self.quantization_formula = quantization_formula
        self.quantization_bit = quantization_bit
        self.quantization_scheme = quantization_scheme

    def _core_args(self, x: Tensor, scale: Tensor, zero_point: Optional[Tensor]):
        who = type(self).__name__
        _check_input(who, x)
        b = self.quantization_bit
        if self.quantization_formula == "cambricon":
            return (_cambricon_step(who, scale), None,
                    dict(bits=b, is_signed=True, rounding="half_to_even", axis=None))
        axis = 0 if scale.numel() > 1 else None
        if axis is not None and (x.dim() == 0 or scale.numel() != x.shape[0]):
            raise CheckFailedException(
                f"oneflow.nn.{who}: per-channel `scale` has {scale.numel()} values but `input` "
                f"has shape {tuple(x.shape)} (OneFlow quantizes per channel along axis 0)")
        if self.quantization_scheme == "symmetric":
            return (scale.detach(), None,
                    dict(bits=b, is_signed=True, rounding="half_to_even", axis=axis))
        if zero_point is None:
            raise TypeError(f"oneflow.nn.{who}: affine quantization needs `zero_point`")
        if zero_point.numel() != scale.numel():
            raise CheckFailedException(
                f"oneflow.nn.{who}: `zero_point` has {zero_point.numel()} values, `scale` "
                f"{scale.numel()}")
        zp = _affine_zero_point(who, zero_point, b)
        return (scale.detach(), zp,
                dict(bits=b, is_signed=False, rounding="half_to_even",
                     zero_point_mode="add_before_round", axis=axis,
                     allow_zero_point_outside_range=True))

    def extra_repr(self) -> str:
        return (f"quantization_formula={self.quantization_formula!r}, "
                f"quantization_bit={self.quantization_bit}, "
                f"quantization_scheme={self.quantization_scheme!r}")


class FakeQuantization(_QuantOp):
    """``oneflow.nn.FakeQuantization(quantization_formula="google", quantization_bit=8,
    quantization_scheme="symmetric")``, called as ``fq(input, scale, zero_point)``.

    * google symmetric: ``clamp(RNE(x / s), -2^(b-1), 2^(b-1) - 1) * s`` (the kernel's full
      signed range, not the documented ``[-qmax, qmax]``);
    * google affine: ``(clamp(RNE(x / s + zp), 0, 2^b - 1) - zp) * s`` with OneFlow CPU's
      rounded zero point;
    * cambricon: step ``2^int(scale[0])`` (``scale`` holds the shift), signed ``b`` bits.

    Per channel (axis 0) when ``scale`` has more than one value (google only; cambricon uses
    ``scale[0]``). The gradient is the identity straight-through estimator (no clipping mask);
    ``scale`` and ``zero_point`` get none. Undefined cases raise ``ValueError`` (module doc).
    """

    def forward(self, input: Tensor, scale: Tensor, zero_point: Optional[Tensor] = None) -> Tensor:
        s, z, kw = self._core_args(input, scale, zero_point)
        return ops.fake_quantize(input, s, z, ste="identity", **kw)


class Quantization(_QuantOp):
    """``oneflow.nn.Quantization``: as :class:`FakeQuantization` but returns the clamped integer
    codes stored in the input's dtype. Affine codes keep the zero point added (OneFlow's kernel;
    its docstring says it is subtracted). Not differentiable (OneFlow registers no gradient).
    A NaN input gives NaN (OneFlow's ternary clamps let it through)."""

    def forward(self, input: Tensor, scale: Tensor, zero_point: Optional[Tensor] = None) -> Tensor:
        s, z, kw = self._core_args(input, scale, zero_point)
        codes = ops.quantize(input.detach(), s, z, nan_mode="propagate", dtype=torch.float32,
                             **kw)
        return codes.to(input.dtype)


class MinMaxObserver(torch.nn.Module):
    """``oneflow.nn.MinMaxObserver(quantization_formula="google", quantization_bit=8,
    quantization_scheme="symmetric", per_layer_quantization=True)``: stateless; ``obs(input)``
    returns ``(scale, zero_point)`` of the batch, tensors of the input's dtype with shape
    ``(1,)`` (per layer) or ``(input.shape[0],)`` (per channel, always axis 0).

    google symmetric: ``scale = amax / (2^(b-1) - 1)``, zero point 0; google affine:
    ``scale = (max - min) / (2^b - 1)``, ``zero_point = -RNE(min / scale)`` (the range is *not*
    widened to include 0, so the zero point can be negative or exceed ``2^b - 1``); cambricon:
    ``scale = floor(log2(amax)) - (b - 2)`` (the shift), zero point 0.
    An all-zero tensor gives scale 0 in symmetric mode, as OneFlow (fake-quantizing with it then
    raises). Constant affine tensors, cambricon ``amax == 0``, NaN / ±Inf and empty inputs raise
    ``ValueError``; cambricon with per-channel raises :class:`UnimplementedException`."""

    def __init__(self, quantization_formula: str = "google", quantization_bit: int = 8,
                 quantization_scheme: str = "symmetric",
                 per_layer_quantization: bool = True) -> None:
        super().__init__()
        _check_attrs("MinMaxObserver", quantization_formula, quantization_bit,
                     quantization_scheme)
        if quantization_formula == "cambricon" and not per_layer_quantization:
            raise UnimplementedException(
                "oneflow.nn.MinMaxObserver: cambricon with `per_layer_quantization`=False is "
                "not implemented (OneFlow's kernel raises UNIMPLEMENTED)")
        self.quantization_formula = quantization_formula
        self.quantization_bit = quantization_bit
        self.quantization_scheme = quantization_scheme
        self.per_layer_quantization = bool(per_layer_quantization)

    def forward(self, input: Tensor) -> Tuple[Tensor, Tensor]:
        _check_input("MinMaxObserver", input)
        x = input.detach()
        axis = None if self.per_layer_quantization else 0
        if axis is not None and x.dim() == 0:
            raise CheckFailedException(
                "oneflow.nn.MinMaxObserver: per-channel observation needs an input with at "
                "least one dimension")
        mn, mx, _ = ops.minmax(x, axis=axis, nonfinite="propagate")
        scale, zero_point = ops.choose_qparams(
            mn, mx, **_qparams_options(self.quantization_formula, self.quantization_bit,
                                       self.quantization_scheme, "half_to_even"))
        return _to_oneflow_slots(self.quantization_formula, scale, zero_point, input.dtype)

    def extra_repr(self) -> str:
        return (f"quantization_formula={self.quantization_formula!r}, "
                f"quantization_bit={self.quantization_bit}, "
                f"quantization_scheme={self.quantization_scheme!r}, "
                f"per_layer_quantization={self.per_layer_quantization}")


class MovingAverageMinMaxObserver(torch.nn.Module):
    """``oneflow.nn.MovingAverageMinMaxObserver(stop_update_after_iters=1,
    quantization_formula="google", quantization_bit=8, quantization_scheme="symmetric",
    momentum=0.95)``, called as ``obs(input, current_train_step)`` and returning
    ``(scale, zero_point)`` (shape ``(1,)``, the input's dtype). Per layer only.

    The statistics update only when ``self.training`` and ``current_train_step <=
    stop_update_after_iters`` (the caller advances the step, e.g. from the optimizer; with the
    default 1 and a counter from 0, steps 0 and 1 update and later ones are frozen). The
    parameters are recomputed from the stored values on every call. Symmetric / cambricon track
    ``max(|min(x)|, |max(x)|)``; affine tracks min and max. A stored value of exactly 0 is
    re-initialised from the batch (OneFlow's kernel), otherwise
    ``v = v * momentum + cur * (1 - momentum)``. The affine zero point rounds half away from
    zero (OneFlow's kernel; its MinMaxObserver rounds half to even).

    Before any update the stored values are 0 and, as in OneFlow, symmetric scale is 0; the
    affine zero point would be ``-round(0 / 0)`` and raises ``ValueError`` instead. The state is
    qkit's core ``MovingAverageObserver`` (variant ``oneflow``) held by ``self.observer``;
    ``moving_max`` / ``moving_min`` read it as OneFlow's buffers.
    """

    def __init__(self, stop_update_after_iters: int = 1, quantization_formula: str = "google",
                 quantization_bit: int = 8, quantization_scheme: str = "symmetric",
                 momentum: float = 0.95) -> None:
        super().__init__()
        _check_attrs("MovingAverageMinMaxObserver", quantization_formula, quantization_bit,
                     quantization_scheme)
        if isinstance(stop_update_after_iters, bool) or not isinstance(
                stop_update_after_iters, int) or stop_update_after_iters <= 0:
            raise CheckFailedException(
                "oneflow.nn.MovingAverageMinMaxObserver: `stop_update_after_iters`="
                f"{stop_update_after_iters!r} must be an int > 0")
        self.stop_update_after_iters = stop_update_after_iters
        self.quantization_formula = quantization_formula
        self.quantization_bit = quantization_bit
        self.quantization_scheme = quantization_scheme
        self.momentum = float(momentum)
        self._options = _qparams_options(quantization_formula, quantization_bit,
                                         quantization_scheme, "half_away_from_zero")
        absmax = quantization_formula == "cambricon" or quantization_scheme == "symmetric"
        from ...nn import MovingAverageMinMaxObserver as _Core  # qkit.nn observer module
        self.observer = _Core(variant="oneflow", momentum=self.momentum,
                              stop_update_after_iters=stop_update_after_iters,
                              range="absmax" if absmax else "minmax",
                              nonfinite="propagate", **self._observer_spec())

    def _observer_spec(self) -> dict:
        o = dict(self._options)
        signed = o.pop("is_signed")
        symmetric = o.pop("symmetric")
        bits = o.pop("bits")
        lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)
        o.update(quant_min=lo, quant_max=hi, bits=bits,
                 dtype=torch.qint8 if signed else torch.quint8,
                 qscheme=torch.per_tensor_symmetric if symmetric else torch.per_tensor_affine)
        return o

    @property
    def moving_max(self) -> Tensor:
        return self._state("max_val")

    @property
    def moving_min(self) -> Tensor:
        return self._state("min_val")

    def _state(self, name: str) -> Tensor:
        v = getattr(self.observer, name)
        return v.clone() if v.numel() else torch.zeros(1)

    def reset_running_stats(self) -> None:
        self.observer.reset()

    def forward(self, input: Tensor, current_train_step: Tensor) -> Tuple[Tensor, Tensor]:
        _check_input("MovingAverageMinMaxObserver", input)
        step = torch.as_tensor(current_train_step)
        if step.numel() != 1:
            raise CheckFailedException(
                "oneflow.nn.MovingAverageMinMaxObserver: `current_train_step` must have one "
                f"element, got shape {tuple(step.shape)}")
        self.observer.train(self.training)
        self.observer(input.detach(), current_train_step=int(step.reshape(-1)[0]))
        scale, zero_point = self.observer.calculate_qparams()
        return _to_oneflow_slots(self.quantization_formula, scale.to(torch.float32),
                                 zero_point.to(torch.float32), input.dtype)

    def extra_repr(self) -> str:
        return (f"stop_update_after_iters={self.stop_update_after_iters}, "
                f"quantization_formula={self.quantization_formula!r}, "
                f"quantization_bit={self.quantization_bit}, "
                f"quantization_scheme={self.quantization_scheme!r}, momentum={self.momentum}")
