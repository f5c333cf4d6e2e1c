"""Abstract base of the calibrators (``pytorch_quantization.calib.calibrator._Calibrator``)."""


class _Calibrator:
    """Abstract base class of calibrators.

    Args:
        num_bits: int, number of bits used by the quantizer.
        axis: None or int or tuple, the axes that keep their own amax.
        unsigned: bool, whether the quantizer is unsigned.
    """

    def __init__(self, num_bits, axis, unsigned):
        self._num_bits = num_bits
        self._axis = axis
        self._unsigned = unsigned

    def collect(self, x):
        """Abstract method: collect tensor statistics."""
        raise NotImplementedError

    def reset(self):
        """Abstract method: reset the calibrator."""
        raise NotImplementedError

    def compute_amax(self, *args, **kwargs):
        """Abstract method: compute amax from the collected data (None if nothing)."""
        raise NotImplementedError

    def __repr__(self):
        s = "num_bits={_num_bits}"
        s += " axis={_axis}"
        s += " unsigned={_unsigned}"
        return s.format(**self.__dict__)
