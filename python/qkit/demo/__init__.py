"""qkit's end-to-end demo (issue 7): train a small conv net on scikit-learn's bundled digits,
then quantize it with every qkit calibration method (post-training) and with quantization-aware
training (clipped STE and LSQ), and export the 8-bit and 4-bit models to ONNX.

Run ``/usr/bin/python3 -m qkit.demo --out DIR`` (``scripts/run.sh`` does it). Every
quantization step is qkit's: ``qkit.nn.FakeQuantize`` / ``qkit.nn.LSQ`` and the observer
modules (``qkit.nn``), whose numbers come from the C++ core. This package holds the data, the
model, the flow, the report and the ONNX writer; no quantization formula. See docs/demo.md.
"""
from .run import DemoConfig, run_demo  # noqa: F401

__all__ = ["DemoConfig", "run_demo"]
