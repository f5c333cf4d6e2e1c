"""Horizon's quantized dtypes (``horizon_plugin_pytorch.dtype``, SPEC.md §6.2) and ``qinfo``.
``torch.qint8`` is accepted wherever ``qint8`` is (Horizon maps it)."""
from typing import NamedTuple, Union

import torch

__all__ = ["QuantDType", "qinfo", "qint16", "qint32", "qint4", "qint8", "quint4"]


class QuantDType(str):
    """A Horizon quantized dtype: a string name with its integer range."""

    def __new__(cls, name: str, bits: int, qmin: int, qmax: int):
        obj = super().__new__(cls, name)
        obj.bits, obj.min, obj.max = bits, qmin, qmax
        return obj

    def __repr__(self) -> str:
        return f"horizon.{str(self)}"

    def __reduce__(self):
        return (QuantDType, (str(self), self.bits, self.min, self.max))


qint4 = QuantDType("qint4", 4, -8, 7)
quint4 = QuantDType("quint4", 4, 0, 15)
qint8 = QuantDType("qint8", 8, -128, 127)
qint16 = QuantDType("qint16", 16, -32768, 32767)
qint32 = QuantDType("qint32", 32, -(2 ** 31), 2 ** 31 - 1)

_BY_NAME = {str(d): d for d in (qint4, quint4, qint8, qint16, qint32)}


class QInfo(NamedTuple):
    bits: int
    min: int
    max: int


def _resolve(dtype: Union[QuantDType, str, torch.dtype]) -> QuantDType:
    if dtype is torch.qint8:
        return qint8
    if isinstance(dtype, str) and str(dtype) in _BY_NAME:
        return _BY_NAME[str(dtype)]
    raise ValueError(f"unsupported Horizon dtype {dtype!r}; expected one of "
                     f"{sorted(_BY_NAME)} or torch.qint8")


def qinfo(dtype) -> QInfo:
    d = _resolve(dtype)
    return QInfo(d.bits, d.min, d.max)
