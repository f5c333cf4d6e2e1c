"""MegEngine compatibility (``megengine.quantization``, SPEC.md §3): replace
``from megengine.quantization import observer, fake_quant, utils`` by
``from qkit.compat.megengine import observer, fake_quant, utils``; the quantized dtypes are in
``qkit.compat.megengine.dtype`` (MegEngine's ``megengine.core.tensor.dtype``).

Tensors are torch tensors. Where MegEngine's documentation and its kernels disagree the kernels
win: rounding is **half away from zero** (C ``round``) in FakeQuant, TQT and LSQ and in the
zero point of ``_calculate_qparams``. The status of every public name is in docs/compat.md.
"""
import importlib as _importlib

from . import dtype, utils
from .utils import QuantMode

__all__ = ["QuantMode", "dtype", "fake_quant", "observer", "utils"]


def __getattr__(name):
    if name in ("fake_quant", "observer"):
        module = _importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
