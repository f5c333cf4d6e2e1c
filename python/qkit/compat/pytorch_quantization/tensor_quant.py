"""NVIDIA pytorch-quantization ``pytorch_quantization.tensor_quant`` on qkit's core (SPEC §4.1,
§4.2, §4.7).

Every number comes from ``qkit.ops``: the multiplier ``scale = maxbound / amax`` from
``choose_qparams`` with NVIDIA's preset (``scale_mode="multiplier"``, ``divisor="quant_max"``,
``degenerate="zero_below_eps"``, ``eps=2^-24``; docs/qparams.md), the codes from
``quantize`` and the fake-quantized values from ``fake_quantize`` (round half to even,
``x * scale``, clamp, ``q / scale``).

Defaults follow NVIDIA's code, which disagrees with its own descriptor: the *functions*
``tensor_quant`` / ``fake_tensor_quant`` default to ``narrow_range=True`` ([-127, 127] at 8 bits)
while :class:`QuantDescriptor` (and therefore ``TensorQuantizer``) defaults to
``narrow_range=False`` ([-128, 127]). The CPU path is the reference: NVIDIA's CUDA kernel
ignores ``narrow_range`` (always narrow); qkit does not reproduce that.

Where qkit differs (docs/compat.md has the full table):

* ``num_bits`` must be an int in [2, 16] (NVIDIA also accepts 0, which quantizes to zeros, and
  FP8 ``(4, 3)``, which is CUDA-only there): ``ValueError`` / ``NotImplementedError``.
* ``amax`` containing NaN or ±Inf raises ``ValueError`` (NVIDIA returns all-NaN outputs).
* A zero code is returned as +0 (NVIDIA gives -0 for small negative inputs); values are equal.
* float64 inputs are computed in float32 (NVIDIA: float64); bfloat16 inputs are computed in
  float32 and rounded once (NVIDIA: in bfloat16 when amax is 0-d).
* With ``amax <= 2^-24`` an infinite input gives 0 (NVIDIA: ``inf * 0`` = NaN).
"""
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor
from torch.autograd import Function

from ... import ops
from .._broadcast import Slots

__all__ = [
    "ScaledQuantDescriptor", "QuantDescriptor", "TensorQuantFunction", "FakeTensorQuantFunction",
    "FakeAffineTensorQuantFunction", "tensor_quant", "fake_tensor_quant",
    "fake_affine_tensor_quant", "scaled_e4m3",
    "QUANT_DESC_8BIT_PER_TENSOR", "QUANT_DESC_UNSIGNED_8BIT_PER_TENSOR",
    "QUANT_DESC_8BIT_CONV1D_WEIGHT_PER_CHANNEL", "QUANT_DESC_8BIT_CONV2D_WEIGHT_PER_CHANNEL",
    "QUANT_DESC_8BIT_CONV3D_WEIGHT_PER_CHANNEL", "QUANT_DESC_8BIT_LINEAR_WEIGHT_PER_ROW",
    "QUANT_DESC_8BIT_CONVTRANSPOSE1D_WEIGHT_PER_CHANNEL",
    "QUANT_DESC_8BIT_CONVTRANSPOSE2D_WEIGHT_PER_CHANNEL",
    "QUANT_DESC_8BIT_CONVTRANSPOSE3D_WEIGHT_PER_CHANNEL",
]

#: NVIDIA's epsilon: an amax at or below it quantizes everything to 0 (CPU path).
AMAX_EPSILON = 2.0 ** -24
_FP16_MAX = 65504.0
_BITS_RANGE = (2, 16)


def _check_num_bits(num_bits: Any) -> int:
    if isinstance(num_bits, tuple) and tuple(num_bits) == (4, 3):
        raise NotImplementedError(
            "num_bits=(4, 3) (FP8 E4M3) is not supported by qkit (CUDA-only in "
            "pytorch-quantization)")
    if isinstance(num_bits, bool) or not isinstance(num_bits, int):
        raise TypeError("num_bits must be an integer, not {}.".format(type(num_bits)))
    if num_bits < 0:
        raise ValueError("num_bits must be >= 0, not {}.".format(num_bits))
    if not _BITS_RANGE[0] <= num_bits <= _BITS_RANGE[1]:
        raise ValueError(f"num_bits={num_bits} is not supported by qkit (it quantizes to "
                         f"{_BITS_RANGE[0]}..{_BITS_RANGE[1]} bits)")
    return num_bits


def _spec(num_bits: int, unsigned: bool, narrow_range: bool, axis: Optional[int]) -> Dict:
    return dict(bits=num_bits, is_signed=not unsigned,
                narrow_range=bool(narrow_range) and not unsigned, scale_mode="multiplier",
                axis=axis)


def _as_amax(amax: Any) -> Tensor:
    if isinstance(amax, Tensor):
        return amax
    return torch.tensor(amax, dtype=torch.float32)


def _multiplier(amax_values: Tensor, num_bits: int, unsigned: bool) -> Tensor:
    """NVIDIA's ``maxbound / amax`` (0 where amax <= 2^-24) per slot, from the core."""
    a = amax_values.detach().to(torch.float32)
    if not bool(torch.isfinite(a).all()):
        raise ValueError(f"amax={amax_values.tolist()} is not finite; qkit rejects a NaN / "
                         "infinite amax (pytorch-quantization would return NaN outputs)")
    scale, _ = ops.choose_qparams(torch.zeros_like(a), a, **_spec(num_bits, unsigned, False, None),
                                  symmetric=True, divisor="quant_max",
                                  degenerate="zero_below_eps", eps=AMAX_EPSILON)
    return scale


def _tensor_quant(inputs: Tensor, amax: Any, num_bits: int = 8, unsigned: bool = False,
                  narrow_range: bool = True, fake: bool = False) -> Tuple[Tensor, Tensor]:
    """Shared body: ``(outputs, scale)``; outputs are the codes (as the input's float dtype) or,
    with ``fake``, the fake-quantized values. ``scale`` has amax's shape, 1 where amax <= 2^-24
    (NVIDIA's convention), float32."""
    num_bits = _check_num_bits(num_bits)
    amax = _as_amax(amax)
    if unsigned:
        if inputs.min() < 0.:
            raise TypeError("Negative values encountered in unsigned quantization.")
    if amax.numel() and amax.min() < 0:
        raise ValueError("Negative values in amax")
    slots = Slots(inputs, amax, "amax")
    m = _multiplier(slots.values, num_bits, unsigned)
    spec = _spec(num_bits, unsigned, narrow_range, slots.axis)
    x = slots.to_layout(inputs)
    returned = torch.where(m == 0, torch.ones_like(m), m)
    if fake and inputs.dtype != torch.half:
        out = ops.fake_quantize(x, m, **spec, ste="identity")
    else:
        codes = ops.quantize(x, m, **spec, nan_mode="to_quant_min", dtype=torch.int32)
        if fake:
            # fp16: NVIDIA divides the fp16 codes by the scale cast to fp16.
            m16 = returned.to(torch.half)
            if not bool(torch.isfinite(m16).all()):
                raise ValueError(
                    "scale is too large for FP16 with amax={} (qkit refuses the fp16 division by "
                    "inf that pytorch-quantization's CPU path performs)".format(amax))
            out = ops.dequantize(codes, m16.to(torch.float32), **spec, dtype=torch.half)
        else:
            out = codes.to(inputs.dtype)
        nan = torch.isnan(x)
        if bool(nan.any()):
            out = torch.where(nan, x.to(out.dtype), out)   # NaN codes stay NaN, as upstream
    return slots.from_layout(out), returned.reshape(amax.shape)


def _clipped_ste(inputs: Tensor, amax: Tensor, grad_outputs: Tensor) -> Tensor:
    """NVIDIA's straight-through estimator with clipping: the gradient of
    ``clamp(inputs, -amax, amax)`` (inclusive bounds, 0 for NaN), taken from torch.clamp."""
    with torch.enable_grad():
        x = inputs.detach().requires_grad_(True)
        a = amax.detach()
        y = torch.clamp(x, -a, a)
        (dx,) = torch.autograd.grad(y, x, grad_outputs.to(y.dtype))
    return dx


class TensorQuantFunction(Function):
    """``(outputs, scale)``: integer codes as floats and the multiplier ``maxbound / amax``
    (``outputs / scale`` dequantizes). Backward: clipped STE, ``dx = dy`` where
    ``|x| <= amax``; amax gets no gradient."""

    @staticmethod
    def forward(ctx, inputs, amax, num_bits=8, unsigned=False, narrow_range=True):
        amax = _as_amax(amax)
        ctx.save_for_backward(inputs, amax)
        outputs, scale = _tensor_quant(inputs, amax, num_bits, unsigned, narrow_range)
        if outputs.dtype == torch.half and scale.max() > _FP16_MAX:
            raise ValueError("scale is too large for FP16 with amax={}".format(amax))
        return outputs, scale.to(inputs.dtype)

    @staticmethod
    def backward(ctx, grad_outputs, grad_scale):
        inputs, amax = ctx.saved_tensors
        return _clipped_ste(inputs, amax, grad_outputs), None, None, None, None


class FakeTensorQuantFunction(Function):
    """Fake version of :class:`TensorQuantFunction`: returns ``outputs / scale``."""

    @staticmethod
    def forward(ctx, inputs, amax, num_bits=8, unsigned=False, narrow_range=True):
        amax = _as_amax(amax)
        ctx.save_for_backward(inputs, amax)
        outputs, _ = _tensor_quant(inputs, amax, num_bits, unsigned, narrow_range, fake=True)
        return outputs

    @staticmethod
    def backward(ctx, grad_outputs):
        inputs, amax = ctx.saved_tensors
        return _clipped_ste(inputs, amax, grad_outputs), None, None, None, None


class FakeAffineTensorQuantFunction(Function):
    """Experimental affine fake quantization (per tensor): ``step = (max - min) / (2^b - 1)``,
    offset ``RNE(min / step) + 2^(b-1)``, codes clamped to the signed range (SPEC §4.2), from
    qkit's preset "NVIDIA FakeAffineTensorQuantFunction". Backward: ``dx = dy`` where
    ``min_range <= x <= max_range``."""

    @staticmethod
    def forward(ctx, inputs, min_range, max_range, num_bits=8):
        num_bits = _check_num_bits(num_bits)
        lo = _as_amax(min_range)
        hi = _as_amax(max_range)
        ctx.save_for_backward(inputs, lo, hi)
        spec = dict(bits=num_bits, is_signed=True, scale_mode="divide")
        step, zp = ops.choose_qparams(lo.detach().float().reshape(1),
                                      hi.detach().float().reshape(1), **spec, symmetric=False,
                                      widen_to_zero=False, degenerate="none",
                                      clamp_zero_point=False)
        return ops.fake_quantize(inputs, step, zp, **spec, ste="identity")

    @staticmethod
    def backward(ctx, grad_outputs):
        inputs, lo, hi = ctx.saved_tensors
        with torch.enable_grad():
            x = inputs.detach().requires_grad_(True)
            y = torch.clamp(x, lo.detach(), hi.detach())
            (dx,) = torch.autograd.grad(y, x, grad_outputs.to(y.dtype))
        return dx, None, None, None


def tensor_quant(inputs: Tensor, amax: Union[Tensor, float], num_bits: int = 8,
                 unsigned: bool = False, narrow_range: bool = True) -> Tuple[Tensor, Tensor]:
    """``TensorQuantFunction.apply`` (keywords accepted too). Example (NVIDIA's docstring)::

        torch.manual_seed(12345); x = torch.rand(10)
        quant_x, scale = tensor_quant(x, x.abs().max())
        # [126., 113., 127., 59., 11., 23., 47., 73., 43., 27.], scale 128.0057
    """
    return TensorQuantFunction.apply(inputs, amax, num_bits, unsigned, narrow_range)


def fake_tensor_quant(inputs: Tensor, amax: Union[Tensor, float], num_bits: int = 8,
                      unsigned: bool = False, narrow_range: bool = True) -> Tensor:
    """``FakeTensorQuantFunction.apply`` (keywords accepted too)."""
    return FakeTensorQuantFunction.apply(inputs, amax, num_bits, unsigned, narrow_range)


def fake_affine_tensor_quant(inputs: Tensor, min_range: Union[Tensor, float],
                             max_range: Union[Tensor, float], num_bits: int = 8) -> Tensor:
    """``FakeAffineTensorQuantFunction.apply``."""
    return FakeAffineTensorQuantFunction.apply(inputs, min_range, max_range, num_bits)


def scaled_e4m3(inputs: Tensor, amax: Optional[Tensor] = None) -> Tensor:
    """FP8 E4M3 emulation: not supported (CUDA-only upstream, no FP8 format in qkit)."""
    raise NotImplementedError("scaled_e4m3 (FP8 E4M3) is not supported by qkit")


class ScaledQuantDescriptor:
    """Supportive descriptor of quantization: how a tensor should be quantized.

    Args:
        num_bits: int in [2, 16] (qkit's range; NVIDIA also takes 0 and FP8 ``(4, 3)``).
        name: str or None.

    Keyword Arguments (NVIDIA's defaults):
        fake_quant (True), axis (None: per tensor; an int or tuple of the axes that *keep*
        their own amax), amax (None; float, list or ndarray, stored as np.float32),
        learn_amax (False; requires axis None), scale_amax (None), calib_method ("max" or
        "histogram"), unsigned (False), narrow_range (**False**, while the functions default to
        True; that is NVIDIA's code).

    Raises:
        TypeError for a wrong type or unused keys, ValueError for negative num_bits.
    """

    def __init__(self, num_bits: int = 8, name: Optional[str] = None, **kwargs: Any) -> None:
        _check_num_bits(num_bits)
        self._num_bits = num_bits
        if not isinstance(name, str) and name is not None:
            raise TypeError("name must be a string or None, not {}.".format(type(name)))
        self._name = name
        self._fake_quant = kwargs.pop('fake_quant', True)
        self._axis = kwargs.pop('axis', None)
        self._learn_amax = kwargs.pop('learn_amax', False)
        if self._learn_amax and self._axis is not None:
            raise TypeError("axis is ignored and must be None when learn_amax is true, got {}."
                            .format(type(self._axis)))
        amax = kwargs.pop('amax', None)
        if amax is not None:
            if not isinstance(amax, (float, list, np.ndarray)):
                raise TypeError("amax must be float, list or ndarray, not {}".format(type(amax)))
            self._amax = np.array(amax, dtype=np.float32)
        else:
            self._amax = amax
        self._scale_amax = kwargs.pop('scale_amax', None)
        self._calib_method = kwargs.pop('calib_method', "max")
        self._unsigned = kwargs.pop('unsigned', False)
        self._narrow_range = kwargs.pop('narrow_range', False)
        if kwargs:
            raise TypeError("Unused keys: {}".format(kwargs.keys()))

    # pylint:disable=missing-docstring
    @property
    def num_bits(self):
        return self._num_bits

    @property
    def fake_quant(self):
        return self._fake_quant

    @property
    def axis(self):
        return self._axis

    @property
    def amax(self):
        return self._amax

    @property
    def learn_amax(self):
        return self._learn_amax

    @property
    def scale_amax(self):
        return self._scale_amax

    @property
    def name(self):
        return self._name

    @property
    def calib_method(self):
        return self._calib_method

    @property
    def unsigned(self):
        return self._unsigned

    @property
    def narrow_range(self):
        return self._narrow_range
    # pylint:enable=missing-docstring

    def __str__(self) -> str:
        s = (self._name + ': ') if self._name is not None else 'QuantDescriptor'
        s += "({}{}bit".format("unsigned " if self._unsigned else "", self._num_bits)
        s += " fake" if self._fake_quant else " real"
        s += " axis={}".format(self._axis if self._axis is not None else " per-tensor")
        if isinstance(self._amax, np.ndarray):
            s += " amax={}".format(self._amax.tolist())
        elif self._amax is not None:
            s += " amax={}".format(self._amax)
        if self._learn_amax:
            s += " learn_amax"
        if self._scale_amax:
            s += " scale_amax={}".format(self._scale_amax)
        if self._narrow_range:
            s += " narrow_range"
        s += ")"
        return s

    def __eq__(self, rhs: object) -> bool:
        """Compare 2 descriptors (amax compared by value)."""
        if not isinstance(rhs, ScaledQuantDescriptor):
            return NotImplemented
        a = self.__dict__.copy()
        b = rhs.__dict__.copy()
        amax_a, amax_b = a.pop('_amax'), b.pop('_amax')
        if (amax_a is None) != (amax_b is None):
            return False
        if amax_a is not None and not np.array_equal(amax_a, amax_b):
            return False
        return a == b

    def dict(self) -> Dict[str, Any]:
        """The non-default fields (plus num_bits and name); ``QuantDescriptor(**d)`` rebuilds
        an equal descriptor."""
        obj_dict = {'num_bits': self._num_bits, 'name': self._name}
        if not self._fake_quant:
            obj_dict['fake_quant'] = self._fake_quant
        if self._axis is not None:
            obj_dict['axis'] = self._axis
        if self._amax is not None:
            obj_dict['amax'] = self._amax.tolist()
        if self._scale_amax is not None:
            obj_dict['scale_amax'] = self._scale_amax
        if self._learn_amax:
            obj_dict['learn_amax'] = self._learn_amax
        if self._unsigned:
            obj_dict['unsigned'] = self._unsigned
        if self._narrow_range:
            obj_dict['narrow_range'] = self._narrow_range
        if self._calib_method != "max":
            obj_dict['calib_method'] = self._calib_method
        return obj_dict


QuantDescriptor = ScaledQuantDescriptor

# Predefined descriptors
QUANT_DESC_8BIT_PER_TENSOR = QuantDescriptor(num_bits=8)
QUANT_DESC_UNSIGNED_8BIT_PER_TENSOR = QuantDescriptor(num_bits=8, unsigned=True)
QUANT_DESC_8BIT_CONV1D_WEIGHT_PER_CHANNEL = QuantDescriptor(num_bits=8, axis=(0))
QUANT_DESC_8BIT_CONV2D_WEIGHT_PER_CHANNEL = QuantDescriptor(num_bits=8, axis=(0))
QUANT_DESC_8BIT_CONV3D_WEIGHT_PER_CHANNEL = QuantDescriptor(num_bits=8, axis=(0))
QUANT_DESC_8BIT_LINEAR_WEIGHT_PER_ROW = QuantDescriptor(num_bits=8, axis=(0))
# ConvTranspose weights keep axis 1 (their output channels) in 2.2.1; releases before it used 0.
QUANT_DESC_8BIT_CONVTRANSPOSE1D_WEIGHT_PER_CHANNEL = QuantDescriptor(num_bits=8, axis=(1))
QUANT_DESC_8BIT_CONVTRANSPOSE2D_WEIGHT_PER_CHANNEL = QuantDescriptor(num_bits=8, axis=(1))
QUANT_DESC_8BIT_CONVTRANSPOSE3D_WEIGHT_PER_CHANNEL = QuantDescriptor(num_bits=8, axis=(1))
