"""``megengine.quantization.fake_quant`` on qkit (SPEC.md §3.4): ``FakeQuantize``, ``TQT``,
``LSQ``.

All three take ``dtype`` (a builtin name such as ``"qint8"`` / ``"qint8_narrow"`` or a
``QuantDtypeMeta``) and ``enable=True``; ``enable()`` / ``disable()`` switch between fake
quantization and the identity. ``narrow_range=`` is accepted and ignored with a warning, as in
MegEngine (use the dtype ``qint8_narrow``). ``forward(inp, qparams=None)``.

* ``FakeQuantize``: ``fake_quant_tensor(inp, qparams)``; the qparams' ``dtype_meta`` must be
  this module's dtype (AssertionError otherwise, as MegEngine).
* ``TQT``: the Parameter ``scale`` holds ``log2(t)`` (initial 0, t = 1; not rounded to an
  integer). ``set_qparams`` takes symmetric qparams and sets ``scale = log2(qparams.scale)``
  (qkit takes the exact ``log2``; MegEngine computes ``log(s) / log(2)`` in float32, which can
  differ by one ulp); ``get_qparams`` returns ``2 ** scale``. Built on ``qkit.nn.TQT``.
* ``LSQ(dtype, enable=True, eps=1e-5)``: the Parameter ``step_size`` (initial 1.0) enters as
  ``|step_size| + eps``; ``zero_point`` and ``grad_scale`` are set by ``set_qparams`` (an
  ``LSQParams`` carries ``grad_scale``; a plain ``QParams`` keeps the current one, where
  MegEngine's code raises AttributeError). Built on ``qkit.nn.LSQ(variant="megengine")``.
"""
import logging
import warnings
from typing import Optional, Union

import torch
from torch import Tensor

from ...nn import LSQ as _CoreLSQ
from ...nn import TQT as _CoreTQT
from .dtype import QuantDtypeMeta, _lookup
from .utils import LSQParams, QParams, QParamsModuleMixin, QuantMode, create_qparams, \
    fake_quant_tensor

__all__ = ["FakeQuantize", "LSQ", "TQT"]

logger = logging.getLogger("qkit.compat.megengine")


def _dtype_and_kwargs(who: str, dtype, kwargs: dict) -> QuantDtypeMeta:
    meta = _lookup(dtype)
    if "narrow_range" in kwargs:
        kwargs.pop("narrow_range")
        warnings.warn(f"{who} currently has no narrow_range param so it is ignored here "
                      "(use the dtype 'qint8_narrow')", DeprecationWarning, stacklevel=3)
    if kwargs:
        raise TypeError(f"{who}: unexpected arguments {sorted(kwargs)}")
    return meta


class _Enable:
    """MegEngine's ``enabled`` flag and ``enable()`` / ``disable()`` on top of the core module's
    ``fake_quant_enabled`` buffer (or a plain attribute for FakeQuantize)."""

    def enable(self) -> None:
        self.enabled = True

    def disable(self) -> None:
        self.enabled = False

    def forward(self, inp: Tensor, qparams: Optional[QParams] = None) -> Tensor:
        if self.enabled:
            return self.fake_quant_forward(inp, qparams=qparams)
        return self.normal_forward(inp, qparams=qparams)

    def normal_forward(self, inp: Tensor, qparams: Optional[QParams] = None) -> Tensor:
        return inp


class FakeQuantize(_Enable, torch.nn.Module):
    """Fake quantization with the observer's qparams (``fake_quant_tensor``)."""

    def __init__(self, dtype: Union[str, QuantDtypeMeta] = "qint8", enable: bool = True,
                 **kwargs) -> None:
        super().__init__()
        self.dtype = _dtype_and_kwargs("FakeQuantize", dtype, kwargs)
        self.qmin, self.qmax = self.dtype.qmin, self.dtype.qmax
        self.enabled = bool(enable)

    def fake_quant_forward(self, inp: Tensor, qparams: Optional[QParams] = None) -> Tensor:
        if qparams is None:
            raise AssertionError("FakeQuantize: `qparams` is None (call it with the observer's "
                                 "get_qparams())")
        if qparams.dtype_meta is not self.dtype:
            raise AssertionError(
                "input qparams' dtype is not equal to self.dtype.\n"
                f"qparams.dtype_meta={qparams.dtype_meta}\nself.dtype={self.dtype}")
        return fake_quant_tensor(inp, qparams)

    def extra_repr(self) -> str:
        return f"dtype={self.dtype.name}, enabled={self.enabled}"


class TQT(_Enable, QParamsModuleMixin, _CoreTQT):
    """Trained quantization thresholds; see the module docstring."""

    def __init__(self, dtype: Union[str, QuantDtypeMeta] = "qint8", enable: bool = True,
                 **kwargs) -> None:
        meta = _dtype_and_kwargs("TQT", dtype, kwargs)
        _CoreTQT.__init__(self, meta.qmin, meta.qmax, log2_t=0.0)
        self.dtype = meta
        self.qmin, self.qmax = meta.qmin, meta.qmax
        self.enabled = bool(enable)

    @property
    def enabled(self) -> bool:
        return bool(self.fake_quant_enabled[0])

    @enabled.setter
    def enabled(self, value: bool) -> None:
        self.enable_fake_quant(bool(value))

    @property
    def scale(self) -> torch.nn.Parameter:
        """MegEngine's name for the log2-threshold Parameter."""
        return self.log2_t

    def fake_quant_forward(self, inp: Tensor, qparams: Optional[QParams] = None) -> Tensor:
        return _CoreTQT.forward(self, inp)

    def set_qparams(self, qparams: QParams) -> None:
        if qparams.mode != QuantMode.SYMMERTIC:
            raise AssertionError("only symmetric quantization is supported by TQT")
        if qparams.scale is None:
            raise AssertionError("Can not get an initialized scale")
        _CoreTQT.set_qparams(self, torch.as_tensor(qparams.scale, dtype=torch.float32))

    def get_qparams(self) -> QParams:
        return create_qparams(QuantMode.SYMMERTIC, self.dtype,
                              scale=torch.exp2(self.log2_t.detach()))

    def extra_repr(self) -> str:
        return f"dtype={self.dtype.name}, enabled={self.enabled}"


class LSQ(_Enable, QParamsModuleMixin, _CoreLSQ):
    """Learned step size quantization (MegEngine's variant); see the module docstring."""

    def __init__(self, dtype: Union[str, QuantDtypeMeta] = "qint8", enable: bool = True,
                 eps: float = 1e-5, **kwargs) -> None:
        meta = _dtype_and_kwargs("LSQ", dtype, kwargs)
        _CoreLSQ.__init__(self, meta.qmin, meta.qmax, variant="megengine", scale=1.0,
                          zero_point=0.0, eps=eps)
        self.dtype = meta
        self.qmin, self.qmax = meta.qmin, meta.qmax
        self.mode = None
        self.enabled = bool(enable)

    @property
    def enabled(self) -> bool:
        return bool(self.fake_quant_enabled[0])

    @enabled.setter
    def enabled(self, value: bool) -> None:
        self.enable_fake_quant(bool(value))

    def set_qparams(self, qparams: QParams) -> None:
        if qparams.scale is None:
            raise AssertionError("Can not get an initialized scale")
        self.mode = qparams.mode
        zp = qparams.zero_point if qparams.mode == QuantMode.ASYMMERTIC else 0.0
        if zp is None:
            raise AssertionError("ASYMMERTIC qparams without a zero_point")
        _CoreLSQ.set_qparams(self, torch.as_tensor(qparams.scale, dtype=torch.float32),
                             torch.as_tensor(zp, dtype=torch.float32))
        if isinstance(qparams, LSQParams) and qparams.grad_scale is not None:
            g = torch.as_tensor(qparams.grad_scale, dtype=torch.float32)
            if g.numel() != 1:
                raise ValueError(f"LSQ.set_qparams: `grad_scale` has {g.numel()} values; qkit "
                                 "supports a single gradient scale")
            self.grad_scale = float(g)

    def fake_quant_forward(self, inp: Tensor, qparams: Optional[QParams] = None) -> Tensor:
        return _CoreLSQ.forward(self, inp)

    def get_qparams(self) -> LSQParams:
        # MegEngine's reported scale |step_size| + eps (the step the kernel uses).
        step = self.step_size.detach().abs() + torch.tensor(self.eps, dtype=torch.float32)
        return LSQParams(mode=self.mode, dtype_meta=self.dtype, scale=step,
                         zero_point=self.zero_point.clone(),
                         grad_scale=torch.tensor([self.grad_scale], dtype=torch.float32))

    def extra_repr(self) -> str:
        return f"dtype={self.dtype.name}, enabled={self.enabled}, eps={self.eps}"
