"""Horizon compatibility (``horizon_plugin_pytorch.quantization``, SPEC.md §6, §7): replace
``from horizon_plugin_pytorch.quantization import FakeQuantize`` (and the observers, dtypes and
round mode) by ``from qkit.compat.horizon import ...``.

Horizon's numeric kernels are closed source; the forward formula is public (its Python
reference helpers and the seed document), the gradient mask is inferred from PyTorch (SPEC §6.6).
The status of every public name is in docs/compat.md.
"""
from .dtype import QuantDType, qinfo, qint16, qint32, qint4, qint8, quint4
from .fake_quantize import FakeQuantize
from .observer import (FixedScaleObserver, MinMaxObserver, MovingAverageMinMaxObserver,
                       MovingAveragePerChannelMinMaxObserver, PerChannelMinMaxObserver)
from .round_mode import March, QuantRoundMode, get_march, set_march

__all__ = ["FakeQuantize", "FixedScaleObserver", "March", "MinMaxObserver",
           "MovingAverageMinMaxObserver", "MovingAveragePerChannelMinMaxObserver",
           "PerChannelMinMaxObserver", "QuantDType", "QuantRoundMode", "get_march", "qinfo",
           "qint16", "qint32", "qint4", "qint8", "quint4", "set_march"]
