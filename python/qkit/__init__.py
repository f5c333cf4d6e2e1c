"""qkit: quantization toolkit (PyTorch front end).

The numerics live in the C++ core; this package is a thin layer over ``torch.ops.qkit.*``
(loaded from the compiled extension ``_C.so`` next to this file) plus ``nn.Module`` wrappers
that own the state (parameters and registered buffers).

Import with Debian's ``/usr/bin/python3`` after ``scripts/build.sh`` (see docs/torch.md):
the build writes ``qkit.pth`` into Python's site directory, or use ``PYTHONPATH=python``.
"""
import os as _os

import torch as _torch

__version__ = "0.1.0"


def _load_library():
    path = _os.environ.get("QKIT_LIBRARY") or _os.path.join(_os.path.dirname(__file__), "_C.so")
    if not _os.path.exists(path):
        raise ImportError(
            f"qkit: the compiled extension {path!r} was not found. Build it with "
            "scripts/build.sh (it needs Debian's libtorch-dev; the build places _C.so in "
            "python/qkit/), or point QKIT_LIBRARY at an existing build.")
    _torch.ops.load_library(path)
    return path


library_path = _load_library()

from . import ops  # noqa: E402
from . import nn  # noqa: E402
from .ops import (  # noqa: E402,F401
    absmax,
    choose_qparams,
    dequantize,
    fake_quantize,
    fake_quantize_,
    fake_quantize_backward,
    fake_quantize_backward_clipped,
    fake_quantize_with_mask,
    learned_clip,
    lsq,
    lsq_grad_scale,
    minmax,
    pact,
    quantize,
    tqt,
)

__all__ = [
    "absmax", "choose_qparams", "dequantize", "fake_quantize", "fake_quantize_",
    "fake_quantize_backward", "fake_quantize_backward_clipped", "fake_quantize_with_mask",
    "learned_clip", "library_path", "lsq", "lsq_grad_scale", "minmax", "nn", "ops", "pact",
    "quantize", "tqt",
]
