"""``MaxCalibrator``: running max of ``|x|`` per tensor or per kept axes, on qkit's ``absmax``
(SPEC §4.5). NaN propagates into the running amax, as ``torch.max`` does upstream."""
import torch

from ..utils import absmax_keep
from .calibrator import _Calibrator

__all__ = ["MaxCalibrator"]


class MaxCalibrator(_Calibrator):
    """Max calibrator, tracks the maximum value globally.

    Args:
        num_bits: int, number of bits used by the quantizer.
        axis: None (per tensor) or int or tuple, the axes that keep their own amax.
        unsigned: bool.
        track_amax: bool, keep every batch's amax (as numpy arrays) in :attr:`amaxs`.
    """

    def __init__(self, num_bits, axis, unsigned, track_amax=False):
        super().__init__(num_bits, axis, unsigned)
        self._track_amax = track_amax
        if self._track_amax:
            self._amaxs = []  # shall we have a better name?
        self._calib_amax = None

    # pylint:disable=missing-docstring
    @property
    def amaxs(self):
        return self._amaxs if self._track_amax else None
    # pylint:enable=missing-docstring

    def _keep(self, x):
        if self._axis is None:
            return []
        axis = self._axis if isinstance(self._axis, (list, tuple)) else [self._axis]
        return list(axis)

    def _squeeze(self, a):
        return a.squeeze() if self._axis is None or a.numel() == 1 else a

    def collect(self, x):
        """Track the absolute max of ``x`` (per kept axis)."""
        with torch.no_grad():
            keep = self._keep(x)
            local_amax = self._squeeze(absmax_keep(x, keep))
            if self._calib_amax is None:
                self._calib_amax = local_amax
            else:
                if local_amax.shape != self._calib_amax.shape:
                    raise RuntimeError("amax shape changed!")
                self._calib_amax = self._squeeze(absmax_keep(x, keep, acc=self._calib_amax))
            if self._track_amax:
                self._amaxs.append(local_amax.cpu().numpy())

    def reset(self):
        """Reset the collected absolute max."""
        self._calib_amax = None
        if self._track_amax:
            self._amaxs = []

    def compute_amax(self):
        """The absolute max of everything collected, or None."""
        return self._calib_amax

    # pylint:disable=missing-docstring
    def __str__(self):
        s = "MaxCalibrator("
        s += "track_amax={_track_amax}"
        s += ")"
        return s.format(**self.__dict__)

    def __repr__(self):
        s = "MaxCalibrator("
        s += super(MaxCalibrator, self).__repr__()
        s += " calib_amax={_calib_amax}"
        s += " track_amax={_track_amax}"
        if self._track_amax:
            s += " amaxs={_amaxs}"
        s += ")"
        return s.format(**self.__dict__)
    # pylint:enable=missing-docstring
