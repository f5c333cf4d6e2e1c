"""NVIDIA pytorch-quantization (2.2.1) on qkit: ``tensor_quant``, ``nn.TensorQuantizer``,
``calib.{MaxCalibrator, HistogramCalibrator}``. Replace ``from pytorch_quantization import
tensor_quant`` by ``from qkit.compat.pytorch_quantization import tensor_quant`` and so on.
Status of every public name: docs/compat.md."""
from . import tensor_quant  # noqa: F401
from . import calib  # noqa: F401
from . import nn  # noqa: F401

__all__ = ["calib", "nn", "tensor_quant"]
