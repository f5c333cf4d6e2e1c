"""NVIDIA pytorch-quantization style ``TensorQuantizer`` (descriptor keywords, calibration mode,
amax, learned amax) over qkit's ops: amax -> multiplier through ``qkit.ops.choose_qparams``
(NVIDIA TensorQuantizer preset of docs/qparams.md: symmetric, kMultiplier, divisor quant_max,
zero below eps 2^-24), fake quantization through ``qkit.ops.fake_quantize``, the max calibrator
through :class:`MinMaxObserver` and ``qkit.ops.absmax``, the histogram calibrator through
:class:`HistogramCalibrator`.
"""
from typing import Any, Dict, List, Optional, Union

import torch
from torch import Tensor, nn

from .. import ops
from .observers import HistogramCalibrator, MinMaxObserver

__all__ = ["MaxCalibrator", "TensorQuantizer"]

_NVIDIA_EPS = 2.0 ** -24


class MaxCalibrator(MinMaxObserver):
    """NVIDIA MaxCalibrator: running max of |x| per tensor or along ``axis``. A
    :class:`MinMaxObserver` (so it has the distributed protocol and its buffers); amax is the
    core ``absmax`` of the running [min, max] per slot (NaN / ±Inf skipped and counted)."""
    _axis_arg = "axis"

    def __init__(self, axis: Optional[int] = None, **kwargs: Any) -> None:
        qscheme = torch.per_tensor_symmetric if axis is None else torch.per_channel_symmetric
        super().__init__(dtype=torch.qint8, qscheme=qscheme, ch_axis=axis, **kwargs)
        self.axis = axis

    def collect(self, x: Tensor) -> None:
        self.forward(x)

    def compute_amax(self) -> Optional[Tensor]:
        """amax per slot (float32[slots]), or None when nothing was collected."""
        if self.num_batches.numel() == 0:
            return None
        amax, _ = ops.absmax(torch.stack([self.min_val, self.max_val]), axis=1)
        return amax


class TensorQuantizer(nn.Module):
    """Descriptor-style fake quantizer (NVIDIA ``TensorQuantizer(QuantDescriptor(...))``):
    ``num_bits``, ``axis`` (None: per tensor), ``unsigned``, ``narrow_range``, ``amax``
    (initial value), ``learn_amax`` (amax is a Parameter trained through
    ``qkit.ops.learned_clip``), ``calib_method`` ('max' | 'histogram'; histogram keywords
    ``num_bins``, ``skip_zeros``, ``torch_hist``).

    ``enable_calib()`` collects statistics in forward; ``enable_quant()`` fake-quantizes with
    the current amax; ``load_calib_amax(method=None, **kw)`` sets amax from the calibrator
    ('entropy' | 'mse' | 'percentile' for histograms, with ``stride``, ``start_bin``,
    ``percentile``). The ``amax`` buffer (or parameter) round-trips through state_dict.
    """

    _version = 1

    def __init__(self, num_bits: int = 8, axis: Optional[int] = None, unsigned: bool = False,
                 narrow_range: bool = False, amax: Optional[Union[float, Tensor]] = None,
                 learn_amax: bool = False, calib_method: str = "max", *, num_bins: int = 2048,
                 skip_zeros: bool = False, torch_hist: bool = True, fake_quant: bool = True,
                 if_quant: bool = True, if_calib: bool = False) -> None:
        super().__init__()
        if calib_method not in ("max", "histogram"):
            raise ValueError(f"qkit.nn.TensorQuantizer: `calib_method`='{calib_method}' is not "
                             "one of ('max', 'histogram')")
        if not fake_quant:
            raise ValueError("qkit.nn.TensorQuantizer: only fake quantization "
                             "(`fake_quant`=True) is supported")
        if learn_amax and amax is None:
            raise ValueError("qkit.nn.TensorQuantizer: `learn_amax`=True needs an initial "
                             "`amax`")
        self.num_bits = int(num_bits)
        self.axis = axis
        self.unsigned = bool(unsigned)
        self.narrow_range = bool(narrow_range)
        self.learn_amax = bool(learn_amax)
        self.calib_method = calib_method
        self._if_quant = bool(if_quant)
        self._if_calib = bool(if_calib)
        init = torch.zeros(0) if amax is None else \
            torch.as_tensor(amax, dtype=torch.float32).reshape(-1).clone()
        if learn_amax:
            self.amax_param = nn.Parameter(init)
        else:
            self.register_buffer("_amax", init)
        if calib_method == "max":
            self._calibrator: nn.Module = MaxCalibrator(axis=axis)
        else:
            self._calibrator = HistogramCalibrator(num_bins=num_bins, unsigned=unsigned,
                                                   num_bits=num_bits, skip_zeros=skip_zeros,
                                                   torch_hist=torch_hist, axis=axis)
        # The fake-quant spec and the amax -> multiplier rule (NVIDIA preset).
        self._spec = dict(bits=self.num_bits, is_signed=not self.unsigned,
                          narrow_range=self.narrow_range and not self.unsigned,
                          scale_mode="multiplier", axis=axis)

    # ---- modes ---------------------------------------------------------------------------------
    def enable_calib(self) -> None:
        self._if_calib = True

    def disable_calib(self) -> None:
        self._if_calib = False

    def enable_quant(self) -> None:
        self._if_quant = True

    def disable_quant(self) -> None:
        self._if_quant = False

    @property
    def calibrator(self) -> nn.Module:
        return self._calibrator

    # ---- amax --------------------------------------------------------------------------------
    @property
    def amax(self) -> Optional[Tensor]:
        t = self.amax_param if self.learn_amax else self._amax
        return None if t.numel() == 0 else t

    @amax.setter
    def amax(self, value: Union[float, Tensor]) -> None:
        v = torch.as_tensor(value, dtype=torch.float32).detach().reshape(-1)
        t = self.amax_param if self.learn_amax else self._amax
        with torch.no_grad():
            if t.shape != v.shape:
                t.data = torch.empty(v.shape) if self.learn_amax else t.resize_(v.shape)
            t.copy_(v)

    def load_calib_amax(self, method: Optional[str] = None, **kwargs: Any) -> None:
        """amax from the calibrator: 'max' takes no method; histograms need one of 'entropy',
        'mse', 'percentile' (keywords ``stride``, ``start_bin``, ``percentile``)."""
        if self.calib_method == "max":
            if method is not None or kwargs:
                raise ValueError("qkit.nn.TensorQuantizer.load_calib_amax: the max calibrator "
                                 f"takes no method / keywords (got {method!r}, {kwargs})")
            amax = self._calibrator.compute_amax()
        else:
            if method is None:
                raise ValueError("qkit.nn.TensorQuantizer.load_calib_amax: the histogram "
                                 "calibrator needs `method` ('entropy', 'mse' or 'percentile')")
            amax = self._calibrator.compute_amax(method, **kwargs)
        if amax is None:
            raise RuntimeError("qkit.nn.TensorQuantizer.load_calib_amax: the calibrator has "
                               "collected nothing (run forward with enable_calib() first)")
        self.amax = amax

    def _multiplier(self, amax: Tensor) -> Tensor:
        scale, _ = ops.choose_qparams(torch.neg(amax), amax, symmetric=True,
                                      divisor="quant_max", degenerate="zero_below_eps",
                                      eps=_NVIDIA_EPS, **self._spec)
        return scale

    # ---- forward -------------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        if self._if_calib:
            self._calibrator(x)
        if not self._if_quant:
            return x
        amax = self.amax
        if amax is None:
            raise RuntimeError("qkit.nn.TensorQuantizer: no amax yet (set `amax`, or calibrate "
                               "and call load_calib_amax())")
        if self.learn_amax:
            x = ops.learned_clip(x, torch.neg(amax), amax, axis=self.axis)
        return ops.fake_quantize(x, self._multiplier(amax.detach()), None, ste="identity"
                                 if self.learn_amax else "clipped", **self._spec)

    def extra_repr(self) -> str:
        return (f"num_bits={self.num_bits}, axis={self.axis}, unsigned={self.unsigned}, "
                f"narrow_range={self.narrow_range}, learn_amax={self.learn_amax}, "
                f"calib_method='{self.calib_method}', quant={self._if_quant}, "
                f"calib={self._if_calib}")

    def _load_from_state_dict(self, state_dict: Dict[str, Any], prefix: str,
                              local_metadata: Dict[str, Any], strict: bool,
                              missing_keys: List[str], unexpected_keys: List[str],
                              error_msgs: List[str]) -> None:
        version = local_metadata.get("version", None)
        if version != self._version:
            error_msgs.append(f"qkit.nn.TensorQuantizer at '{prefix}': state_dict version "
                              f"{version} is not supported (this qkit writes and reads version "
                              f"{self._version})")
            return
        name = "amax_param" if self.learn_amax else "_amax"
        saved = state_dict.get(prefix + name)
        if isinstance(saved, Tensor):
            if saved.dim() != 1 or (self.axis is None and saved.numel() > 1):
                error_msgs.append(f"qkit.nn.TensorQuantizer at '{prefix}': `{name}` has shape "
                                  f"{tuple(saved.shape)} in the state_dict, expected one value "
                                  "per slot")
                return
            own = getattr(self, name)
            if own.shape != saved.shape:
                with torch.no_grad():
                    if self.learn_amax:
                        own.data = torch.empty(saved.shape)
                    else:
                        own.resize_(saved.shape)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
