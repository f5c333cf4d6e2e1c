"""OneFlow compatibility: ``import qkit.compat.oneflow as flow`` in place of ``import oneflow as
flow`` for OneFlow's quantization modules (``flow.nn.MinMaxObserver``,
``flow.nn.MovingAverageMinMaxObserver``, ``flow.nn.FakeQuantization``, ``flow.nn.Quantization``;
see :mod:`qkit.compat.oneflow.nn` for the semantics and where qkit differs).

Tensors are torch tensors: ``flow.tensor`` is ``torch.tensor`` and the dtype names map to
torch's, so OneFlow's documented examples run unchanged. Everything else in OneFlow is out of
scope (docs/compat.md).
"""
import torch as _torch

from . import nn

tensor = _torch.tensor
float32 = _torch.float32
float64 = _torch.float64
float = _torch.float32
double = _torch.float64
int32 = _torch.int32
int64 = _torch.int64

__all__ = ["double", "float", "float32", "float64", "int32", "int64", "nn", "tensor"]
