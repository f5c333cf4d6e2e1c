"""MegEngine's quantized dtypes (``megengine.core.tensor.dtype``, SPEC.md §3.1).

``QuantDtypeMeta`` describes a quantized dtype (name, C name, numpy storage type, qmin, qmax);
the builtin ones are in ``_builtin_quant_dtypes`` and are singletons (copying returns the same
object, so ``qparams.dtype_meta is observer.dtype`` checks work as in MegEngine). The functions
``qint8(scale)``, ``quint8(scale, zero_point)``, ``qint4``, ``quint4``, ``qint32``, ``qint1``
build MegEngine's numpy dtypes with ``{"mgb_dtype": {name, scale[, zero_point]}}`` metadata.

There is no ``narrow_range`` option in MegEngine: the narrow 8-bit range is the dtype
``qint8_narrow`` ([-127, 127]).
"""
from collections import namedtuple
from typing import Optional, Union

import numpy as np

__all__ = ["QuantDtypeMeta", "create_quantized_dtype", "get_scale", "get_zero_point",
           "is_quantize", "qint1", "qint32", "qint4", "qint8", "quint4", "quint8"]


class QuantDtypeMeta(namedtuple("QuantDtypeMeta",
                                ["name", "cname", "np_dtype_str", "qmin", "qmax",
                                 "is_unsigned"])):
    """Metadata of a quantized dtype; immutable, compared by value, copied by identity.
    ``is_unsigned`` defaults to whether ``np_dtype_str`` starts with ``"u"``."""

    def __new__(cls, name: str, cname: Optional[str], np_dtype_str: str, qmin: int, qmax: int,
                is_unsigned: Optional[bool] = None):
        if not isinstance(np_dtype_str, str):
            raise AssertionError(f"QuantDtypeMeta: `np_dtype_str`={np_dtype_str!r} must be a str")
        if is_unsigned is None:
            is_unsigned = np_dtype_str.startswith("u")
        return super().__new__(cls, name, cname, np_dtype_str, int(qmin), int(qmax),
                               bool(is_unsigned))

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self


_builtin_quant_dtypes = {
    "quint8": QuantDtypeMeta("quint8", "Quantized8Asymm", "uint8", 0, 255),
    "qint8": QuantDtypeMeta("qint8", "QuantizedS8", "int8", -128, 127),
    "qint8_narrow": QuantDtypeMeta("qint8_narrow", "QuantizedS8", "int8", -127, 127),
    "quint4": QuantDtypeMeta("quint4", "Quantized4Asymm", "uint8", 0, 15),
    "qint4": QuantDtypeMeta("qint4", "QuantizedS4", "int8", -8, 7),
    "qint1": QuantDtypeMeta("qint1", "QuantizedS1", "int8", 0, 1),
    "qint32": QuantDtypeMeta("qint32", "QuantizedS32", "int32", -(2 ** 31), 2 ** 31 - 1),
    "quint2": QuantDtypeMeta("quint2", None, "uint8", 0, 3),
    "qint2": QuantDtypeMeta("qint2", None, "int8", -2, 1),
}


def _lookup(dtype: Union[str, QuantDtypeMeta]) -> QuantDtypeMeta:
    """A builtin dtype by name (ValueError listing the known names), or the meta itself."""
    if isinstance(dtype, QuantDtypeMeta):
        return dtype
    if isinstance(dtype, str) and dtype in _builtin_quant_dtypes:
        return _builtin_quant_dtypes[dtype]
    raise ValueError(f"unknown dtype: {dtype!r}, only support {list(_builtin_quant_dtypes)}")


def create_quantized_dtype(dtype_meta: QuantDtypeMeta, scale: float, zp: Optional[int]):
    """MegEngine's numpy quantized dtype. Unsigned dtypes need an integral zero point inside
    [qmin, qmax]; signed ones must have ``zp=None``. ValueError otherwise."""
    if dtype_meta.cname is None:
        raise ValueError(f"dtype {dtype_meta.name} without cname attr is not supported.")
    info = {"name": dtype_meta.cname, "scale": float(scale)}
    if dtype_meta.is_unsigned:
        if zp is None or int(zp) != zp:
            raise ValueError(f"zero_point should be an integer, got {zp!r}")
        if not dtype_meta.qmin <= int(zp) <= dtype_meta.qmax:
            raise ValueError(f"zero_point should be within [{dtype_meta.qmin}, "
                             f"{dtype_meta.qmax}] for {dtype_meta.name}, got {zp!r}")
        info["zero_point"] = int(zp)
    elif zp is not None:
        raise ValueError(f"'{dtype_meta.name}' only supports symmetric quantization, "
                         f"zero_point should be None, but actually got '{zp}'")
    return np.dtype(dtype_meta.np_dtype_str, metadata={"mgb_dtype": info})


def quint8(scale, zero_point):
    return create_quantized_dtype(_builtin_quant_dtypes["quint8"], scale, zero_point)


def qint8(scale):
    return create_quantized_dtype(_builtin_quant_dtypes["qint8"], scale, None)


def quint4(scale, zero_point):
    return create_quantized_dtype(_builtin_quant_dtypes["quint4"], scale, zero_point)


def qint4(scale):
    return create_quantized_dtype(_builtin_quant_dtypes["qint4"], scale, None)


def qint32(scale):
    return create_quantized_dtype(_builtin_quant_dtypes["qint32"], scale, None)


def qint1(scale):
    return create_quantized_dtype(_builtin_quant_dtypes["qint1"], scale, None)


def is_quantize(dtype) -> bool:
    md = getattr(dtype, "metadata", None)
    return bool(md) and "mgb_dtype" in md


def get_scale(dtype) -> float:
    if not is_quantize(dtype):
        raise ValueError(f"{dtype!r} is not a quantized dtype")
    return dtype.metadata["mgb_dtype"]["scale"]


def get_zero_point(dtype) -> int:
    if not is_quantize(dtype) or "zero_point" not in dtype.metadata["mgb_dtype"]:
        raise ValueError(f"{dtype!r} is not an asymmetric quantized dtype")
    return dtype.metadata["mgb_dtype"]["zero_point"]
