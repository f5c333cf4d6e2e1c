"""``HistogramCalibrator`` on qkit's core NVIDIA histogram calibrator (``qkit.nn``'s
``HistogramCalibrator``, C++ ``qkit::HistogramCalibrator``; SPEC §4.6, docs/calibration.md §4-5).

Everything numeric (the growing ``|x|`` histogram with torch.histc's or numpy's binning, and the
entropy / mse / percentile searches) is the core's. Differences from upstream:

* NaN and ±Inf elements are skipped (and counted) instead of breaking the histogram.
* ``compute_amax("mse")`` runs on the CPU (upstream hard-codes ``.cuda()``); it evaluates the CUDA
  kernel's arithmetic (narrow range), so it gives upstream's amax without a GPU.
* On the torch path the edges are ATen's scalar ``linspace`` / ``arange`` formulas; torch's
  vectorised CPU loops can round an interior edge differently in the last bit, so an amax can
  be one float32 ulp from upstream's (same bin; docs/calibration.md §4).
* ``compute_amax("entropy")`` never writes ``bins[0] = bins[1]`` into the stored histogram (the
  numpy path upstream does, through a view), so calling it twice gives the same answer.
"""
import logging

import torch

from ....nn.observers import HistogramCalibrator as _CoreHistogramCalibrator
from .calibrator import _Calibrator

__all__ = ["HistogramCalibrator"]

_METHODS = ("entropy", "mse", "percentile")


class HistogramCalibrator(_Calibrator):
    """Unified histogram calibrator.

    Args:
        num_bits, axis (must be None), unsigned: as the quantizer.
        num_bins: int, number of histogram bins (2048).
        grow_method: deprecated, ignored.
        skip_zeros: bool, leave exact zeros out of the histogram.
        torch_hist: bool, torch.histc binning (True, the 2.2 default) or numpy's.
        torch_binning: (qkit keyword) which torch.histc: "histc" (current PyTorch, multiply then
            divide; SPEC §4.6) or "histc_divide_first" (PyTorch <= 1.13, e.g. Debian's).
    """

    def __init__(self, num_bits, axis, unsigned, num_bins=2048, grow_method=None,
                 skip_zeros=False, torch_hist=True, *, torch_binning="histc"):
        super().__init__(num_bits, axis, unsigned)
        self._num_bins = num_bins
        self._skip_zeros = skip_zeros
        self._torch_hist = torch_hist
        if grow_method is not None:
            logging.warning("grow_method is deprecated. Got %s, ingored!", grow_method)
        if axis is not None:
            raise NotImplementedError(
                "Calibrator histogram collection only supports per tensor scaling")
        self._core = _CoreHistogramCalibrator(num_bins=num_bins, unsigned=unsigned,
                                              num_bits=num_bits, skip_zeros=skip_zeros,
                                              torch_hist=torch_hist,
                                              torch_binning=torch_binning)

    def collect(self, x):
        """Collect the histogram of ``|x|`` (growing it when ``x`` exceeds its range)."""
        if x.numel() == 0:
            raise RuntimeError(
                "min(): Expected reduction dim to be specified for input.numel() == 0.")
        with torch.no_grad():
            self._core(x.detach())

    def reset(self):
        """Reset the collected histogram."""
        self._core.reset()

    def compute_amax(self, method: str, *, stride: int = 1, start_bin: int = 128,
                     percentile: float = 99.99):
        """amax (a 0-d float32 tensor) by ``method`` in ('entropy', 'mse', 'percentile'), or
        None when nothing was collected. Unknown method: TypeError; percentile outside
        [0, 100]: ValueError."""
        if method not in _METHODS:
            raise TypeError("Unknown calibration method {}".format(method))
        if method == "percentile" and not 0 <= percentile <= 100:
            raise ValueError("Invalid percentile. Must be in range 0 <= percentile <= 100.")
        amax = self._core.compute_amax(method, stride=stride, start_bin=start_bin,
                                       percentile=percentile)
        return None if amax is None else amax.reshape(())

    # pylint:disable=missing-docstring
    def __str__(self):
        s = "HistogramCalibrator("
        s += "num_bins={_num_bins}"
        s += " skip_zeros={_skip_zeros}"
        s += " torch_hist={_torch_hist}"
        s += ")"
        return s.format(**self.__dict__)

    def __repr__(self):
        s = "HistogramCalibrator("
        s += super(HistogramCalibrator, self).__repr__()
        s += " num_bins={_num_bins}"
        s += " skip_zeros={_skip_zeros}"
        s += " torch_hist={_torch_hist}"
        s += ")"
        return s.format(**self.__dict__)
    # pylint:enable=missing-docstring
