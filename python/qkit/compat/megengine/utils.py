"""``megengine.quantization.utils`` on qkit (SPEC.md §3.2, §3.4): ``QuantMode`` (with MegEngine's
spellings ``SYMMERTIC`` / ``ASYMMERTIC``), ``QParams``, ``LSQParams``, ``create_qparams``,
``fake_quant_tensor``, ``fake_quant_bias``, ``tqt_forward``, ``lsq_forward``.

The ops map onto qkit's core with MegEngine's options: rounding **half away from zero**
(MegEngine's kernels use C ``round``; its documentation only says "round", so the code wins),
true division ``x / s``, zero point added after rounding (FakeQuant) or before (LSQ), and
MegEngine's clipped gradients. Scales and zero points broadcast to the input as in MegEngine
when they have one value, or one value per index of a single input dimension (per channel);
other broadcast patterns raise ``ValueError``.

Differences (docs/compat.md): float16 / float64 inputs are computed in float32 (MegEngine's
kernels are float32 only); a NaN input to the CPU kernels gives NaN out and gradient 0, as in
MegEngine's CPU kernels (its CUDA LSQ / TQT kernels give ``(qmax - z)·s`` instead); for ±Inf
inputs LSQ / TQT parameter gradients are finite where MegEngine's 0/1-mask products give NaN.
"""
from enum import Enum
from typing import Optional, Union

import torch
from torch import Tensor

from ... import ops
from .dtype import QuantDtypeMeta, _builtin_quant_dtypes

__all__ = ["LSQParams", "QParams", "QParamsModuleMixin", "QuantMode", "create_qparams",
           "fake_quant_bias", "fake_quant_tensor", "lsq_forward", "tqt_forward"]


class QuantMode(Enum):
    """Quantization mode. The names are MegEngine's (sic); ``SYMMETRIC`` / ``ASYMMETRIC`` are
    accepted aliases of the same members."""
    SYMMERTIC = 1
    ASYMMERTIC = 2
    SYMMETRIC = 1
    ASYMMETRIC = 2


class QParams:
    """Quantization parameters: ``mode``, ``dtype_meta``, ``scale`` (tensor), ``zero_point``
    (tensor or None for symmetric)."""
    __slots__ = ("mode", "dtype_meta", "scale", "zero_point")

    def __init__(self, mode: QuantMode, dtype_meta: QuantDtypeMeta, scale: Optional[Tensor],
                 zero_point: Optional[Tensor]):
        self.mode = mode
        self.dtype_meta = dtype_meta
        self.scale = scale
        self.zero_point = zero_point

    def update(self, qparams: "QParams") -> None:
        for key in self.__slots__:
            setattr(self, key, getattr(qparams, key))

    def __eq__(self, other) -> bool:
        if not isinstance(other, QParams) or self.__slots__ != other.__slots__:
            return False
        for key in self.__slots__:
            a, b = getattr(self, key), getattr(other, key)
            if isinstance(a, Tensor) or isinstance(b, Tensor):
                if a is None or b is None or not torch.equal(torch.as_tensor(a),
                                                             torch.as_tensor(b)):
                    return False
            elif a != b:
                return False
        return True

    def __repr__(self) -> str:
        body = ", ".join(f"{k}={getattr(self, k)}" for k in self.__slots__)
        return f"{type(self).__name__}({body})"


class LSQParams(QParams):
    """QParams with LSQ's ``grad_scale``."""
    __slots__ = ("mode", "dtype_meta", "scale", "zero_point", "grad_scale")

    def __init__(self, mode: QuantMode, dtype_meta: QuantDtypeMeta, scale: Optional[Tensor],
                 zero_point: Optional[Tensor], grad_scale: Optional[Tensor]):
        super().__init__(mode, dtype_meta, scale, zero_point)
        self.grad_scale = grad_scale


class QParamsModuleMixin:
    """Modules that provide ``get_qparams()``; ``get_quantized_dtype()`` builds MegEngine's
    numpy dtype from them."""

    def get_qparams(self) -> QParams:  # pragma: no cover - overridden
        raise NotImplementedError

    def get_quantized_dtype(self):
        from .dtype import create_quantized_dtype
        qp = self.get_qparams()
        scale = float(qp.scale) if qp.scale is not None else None
        zp = int(qp.zero_point) if qp.zero_point is not None else None
        return create_quantized_dtype(qp.dtype_meta, scale, zp)


def create_qparams(mode: QuantMode = QuantMode.SYMMERTIC,
                   dtype_meta: Union[str, QuantDtypeMeta, None] = None,
                   scale: Optional[Tensor] = None,
                   zero_point: Optional[Tensor] = None) -> QParams:
    """``QParams(mode, dtype_meta, scale, zero_point)``; a string dtype is looked up among the
    builtin dtypes (KeyError if unknown, as MegEngine). ``mode`` must be a QuantMode or None."""
    if isinstance(dtype_meta, str):
        if dtype_meta not in _builtin_quant_dtypes:  # MegEngine indexes the dict: KeyError
            raise KeyError(f"create_qparams: unknown `dtype_meta`={dtype_meta!r}, builtin "
                           f"dtypes are {list(_builtin_quant_dtypes)}")
        dtype_meta = _builtin_quant_dtypes[dtype_meta]
    if mode is not None and not isinstance(mode, QuantMode):
        raise AssertionError(f"create_qparams: `mode`={mode!r} is not a QuantMode")
    return QParams(mode, dtype_meta, scale, zero_point)


def _tensor(v, name: str) -> Tensor:
    if v is None:
        raise AssertionError(f"Can not get an initialized {name}")
    return torch.as_tensor(v, dtype=torch.float32) if not isinstance(v, Tensor) else v


def _axis(param: Tensor, x: Tensor, name: str) -> Optional[int]:
    """The input dimension a parameter broadcasts along: None for one value; else the single
    dimension where the (right-aligned) parameter shape is not 1 and equals the input's."""
    if param.numel() == 1:
        return None
    shape = list(param.shape)
    if len(shape) > x.dim():
        raise ValueError(f"`{name}` of shape {tuple(shape)} does not broadcast to the input of "
                         f"shape {tuple(x.shape)}")
    shape = [1] * (x.dim() - len(shape)) + shape
    dims = [d for d, n in enumerate(shape) if n != 1]
    if len(dims) != 1 or shape[dims[0]] != x.shape[dims[0]]:
        raise ValueError(f"`{name}` of shape {tuple(param.shape)} against the input of shape "
                         f"{tuple(x.shape)}: qkit supports one value, or one value per index of "
                         "a single input dimension")
    return dims[0]


def _common_axis(x: Tensor, **params) -> Optional[int]:
    axes = {n: _axis(p, x, n) for n, p in params.items() if p is not None}
    per_channel = {a for a in axes.values() if a is not None}
    if len(per_channel) > 1:
        raise ValueError(f"parameters {axes} vary along different input dimensions")
    axis = per_channel.pop() if per_channel else None
    return axis


def _per_slot(p: Optional[Tensor], x: Tensor, axis: Optional[int]) -> Optional[Tensor]:
    """A parameter as one value per slot (a broadcast scalar is repeated per channel)."""
    if p is None:
        return None
    p = p.detach() if axis is None or p.numel() > 1 else p.detach().expand(x.shape[axis])
    return p.reshape(-1)


def fake_quant_tensor(inp: Tensor, qparams: QParams) -> Tensor:
    """MegEngine's FakeQuant: ``t = RHAZ(x / s) + z``, clamped to the dtype's [qmin, qmax],
    ``(t - z)·s``; ``z = 0`` unless the mode is ASYMMERTIC. Gradient to ``inp`` only, masked
    where ``RHAZ(x / s) + z`` is outside [qmin, qmax]."""
    scale = _tensor(qparams.scale, "scale")
    zp = None
    if qparams.mode == QuantMode.ASYMMERTIC:
        zp = _tensor(qparams.zero_point, "zero_point")
    meta = qparams.dtype_meta
    axis = _common_axis(inp, scale=scale, zero_point=zp)
    return ops.fake_quantize(inp, _per_slot(scale, inp, axis), _per_slot(zp, inp, axis),
                             quant_min=meta.qmin, quant_max=meta.qmax,
                             rounding="half_away_from_zero", axis=axis, ste="clipped")


def fake_quant_bias(bias: Tensor, inp: Tensor, w_qat: Tensor) -> Tensor:
    """Fake-quantizes ``bias`` to ``qint32`` with scale ``s_in·s_w`` when both ``inp.qparams``
    and ``w_qat.qparams`` are symmetric int8 (MegEngine's rule); otherwise returns ``bias``.
    The product of the two scales is the one piece of arithmetic here, as in MegEngine.

    Not supported yet: qkit's core fake-quantizes ranges within ±2^24 only (codes must be exact
    in float32), so the qint32 case raises ``ValueError``; the cases where MegEngine returns
    ``bias`` unchanged work."""
    inp_qp = getattr(inp, "qparams", None)
    w_qp = getattr(w_qat, "qparams", None)
    if bias is None or inp_qp is None or w_qp is None:
        return bias
    if inp_qp.scale is None or w_qp.scale is None:
        return bias
    if inp_qp.mode != QuantMode.SYMMERTIC or inp_qp.mode != w_qp.mode:
        return bias
    if inp_qp.dtype_meta.np_dtype_str != "int8" or w_qp.dtype_meta.np_dtype_str != "int8":
        return bias
    b_qp = create_qparams(w_qp.mode, _builtin_quant_dtypes["qint32"],
                          scale=_tensor(inp_qp.scale, "scale") * _tensor(w_qp.scale, "scale"))
    out = fake_quant_tensor(bias, b_qp)
    out.qparams = b_qp
    return out


def tqt_forward(qmin: int, qmax: int, inp: Tensor, scale: Tensor) -> Tensor:
    """MegEngine's TQT op: ``scale`` is ``log2(t)``; differentiable in ``inp`` and ``scale``."""
    scale = _tensor(scale, "scale")
    axis = _common_axis(inp, scale=scale)
    s = scale.reshape(-1) if axis is not None else scale.reshape(1)
    return ops.tqt(inp, s, quant_min=qmin, quant_max=qmax, axis=axis)


def lsq_forward(qmin: int, qmax: int, inp: Tensor, step_size: Tensor,
                zero_point: Optional[Tensor] = None, scale_grad: Optional[Tensor] = None) -> Tensor:
    """MegEngine's LSQ op with the step used as given (the LSQ module passes
    ``|step_size| + eps``): ``v = x / s + z`` clamped, rounded half away from zero,
    ``(q - z)·s``; gradients for ``inp`` and ``step_size`` (scaled by ``scale_grad``, which
    must be a single value in qkit)."""
    step_size = _tensor(step_size, "step_size")
    g = 1.0
    if scale_grad is not None:
        sg = torch.as_tensor(scale_grad)
        if sg.numel() != 1:
            raise ValueError(f"lsq_forward: `scale_grad` has {sg.numel()} values; qkit supports "
                             "a single gradient scale")
        g = float(sg)
    zp = None if zero_point is None else _tensor(zero_point, "zero_point")
    axis = _common_axis(inp, step_size=step_size, zero_point=zp)
    shape = (-1,) if axis is not None else (1,)
    step = step_size.reshape(shape) if step_size.numel() > 1 or axis is None else \
        step_size.reshape(1).expand(inp.shape[axis])
    if zp is not None:
        zp = _per_slot(zp, inp, axis)
    return ops.lsq(inp, step, zp, quant_min=qmin, quant_max=qmax, variant="megengine",
                   grad_scale=g, axis=axis)
