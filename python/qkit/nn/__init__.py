"""qkit.nn: modules that own quantization state (parameters and registered buffers) and call
``torch.ops.qkit``."""
from .fake_quantize import FakeQuantize, RunningMinMaxObserver
from .learned import LSQ, PACT, TQT, LearnedClip
from .observers import (HistogramCalibrator, HistogramObserver, MinMaxObserver,
                        MovingAverageMinMaxObserver, ObserverBase, PassiveObserver, RangeStats)
from .tensor_quantizer import MaxCalibrator, TensorQuantizer

__all__ = ["FakeQuantize", "HistogramCalibrator", "HistogramObserver", "LSQ", "LearnedClip",
           "MaxCalibrator", "MinMaxObserver", "MovingAverageMinMaxObserver", "ObserverBase",
           "PACT", "PassiveObserver", "RangeStats", "RunningMinMaxObserver", "TQT",
           "TensorQuantizer"]
