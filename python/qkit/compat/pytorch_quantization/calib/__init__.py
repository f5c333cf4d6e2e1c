"""``pytorch_quantization.calib``: ``MaxCalibrator`` and ``HistogramCalibrator``."""
from .max import MaxCalibrator
from .histogram import HistogramCalibrator

__all__ = ["MaxCalibrator", "HistogramCalibrator"]
