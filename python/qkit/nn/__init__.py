"""qkit.nn: modules that own quantization state (parameters and registered buffers) and call
``torch.ops.qkit``."""
from .fake_quantize import FakeQuantize, RunningMinMaxObserver
from .learned import LSQ, PACT, TQT, LearnedClip

__all__ = ["FakeQuantize", "LSQ", "LearnedClip", "PACT", "RunningMinMaxObserver", "TQT"]
