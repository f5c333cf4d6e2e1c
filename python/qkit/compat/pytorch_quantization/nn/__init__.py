"""``pytorch_quantization.nn``: ``TensorQuantizer`` and ``Clip`` (the quantized layer wrappers
``QuantConv2d``, ``QuantLinear``, ... are not provided; docs/compat.md)."""
from .modules.clip import Clip
from .modules.tensor_quantizer import TensorQuantizer

__all__ = ["Clip", "TensorQuantizer"]
