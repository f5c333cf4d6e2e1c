"""Intel Distiller's quantization-aware training pieces on qkit: ``q_utils`` (parameter
functions, linear_quantize / dequantize, min / max, EMA) and ``range_linear``
(``LinearQuantMode``, ``FakeLinearQuantization``, ``FakeQuantizationWrapper``). Replace
``from distiller.quantization import q_utils`` by ``from qkit.compat.distiller import q_utils``.
Status of every public name: docs/compat.md."""
from . import q_utils  # noqa: F401
from . import range_linear  # noqa: F401
from .range_linear import FakeLinearQuantization, FakeQuantizationWrapper, LinearQuantMode  # noqa

__all__ = ["FakeLinearQuantization", "FakeQuantizationWrapper", "LinearQuantMode", "q_utils",
           "range_linear"]
