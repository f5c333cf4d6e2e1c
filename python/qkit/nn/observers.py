"""Observers over qkit's C++ core observers (include/qkit/observers/*.h, docs/observers.md).

Every module keeps the core observer's state in registered buffers and runs each numeric step
as one ``torch.ops.qkit.observer_*`` call: the op rebuilds the core observer from the buffers
(validating them), runs it, and returns the new state, which is then copied into the buffers.
A call that raises returns nothing, so the buffers are never half-updated. No formula lives in
Python: this module maps PyTorch-style keywords onto the core's options.

Distributed protocol (docs/observers.md; ``qkit.distributed`` drives it): ``batch_range(x)``
-> :class:`RangeStats` (all-reduce ``flatten()`` with one MIN and one SUM), ``batch_counts(x,
merged)`` (histogram kinds: all-reduce SUM), then ``commit(merged, counts)`` on every rank.
With one participant ``commit(batch_range(x), batch_counts(x, batch_range(x)))`` equals
``forward(x)`` bit for bit.
"""
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor
from torch.ao.quantization.observer import ObserverBase as _TorchObserverBase

__all__ = [
    "HistogramCalibrator", "HistogramObserver", "MinMaxObserver", "MovingAverageMinMaxObserver",
    "ObserverBase", "PassiveObserver", "RangeStats",
]

_ops = torch.ops.qkit

_SYMMETRIC = (torch.per_tensor_symmetric, torch.per_channel_symmetric)
_PER_CHANNEL = (torch.per_channel_symmetric, torch.per_channel_affine)
_UNSIGNED = (torch.quint8, torch.uint8)

_F32, _I64, _F64, _U8 = torch.float32, torch.int64, torch.float64, torch.uint8


def _bits_of_range(quant_min: int, quant_max: int) -> Optional[int]:
    """b when [quant_min, quant_max] is a full b-bit range (unsigned [0, 2^b - 1], signed
    [-2^(b-1), 2^(b-1) - 1] or narrow [-(2^(b-1) - 1), 2^(b-1) - 1]) with 2 <= b <= 16, else
    None. A range table: the core's QuantSpec.bits for the rules that use it."""
    for b in range(2, 17):
        h = 2 ** (b - 1)
        if (quant_min, quant_max) in ((0, 2 * h - 1), (-h, h - 1), (-(h - 1), h - 1)):
            return b
    return None


# QParamsRule options that read QuantSpec.bits rather than the quant range.
_BITS_RULES = (("restriction", "pow2_floor_log2_amax"), ("divisor", "half_full_range"))


def _dtype_range(dtype: torch.dtype, reduce_range: bool) -> Tuple[int, int]:
    """PyTorch's default integer range of a quantized dtype (halved by reduce_range)."""
    if dtype in (torch.qint8, torch.int8):
        return (-64, 63) if reduce_range else (-128, 127)
    if dtype in _UNSIGNED:
        return (0, 127) if reduce_range else (0, 255)
    if dtype in (torch.qint32, torch.int32):
        return -(2 ** 31), 2 ** 31 - 1
    if dtype == torch.int16:
        return -(2 ** 15), 2 ** 15 - 1
    raise ValueError(f"qkit: `dtype`={dtype} is not a supported quantized dtype "
                     "(qint8, quint8, int8, uint8, int16, qint32, int32)")


class RangeStats(NamedTuple):
    """Per-slot batch statistics (core ``qkit::RangeStats``): ``min`` / ``max`` float32[n]
    (+inf / -inf in slots without data), ``observed`` int64[n] (participants with data),
    ``nonfinite`` int64 scalar (elements left out)."""
    min: Tensor
    max: Tensor
    observed: Tensor
    nonfinite: Tensor

    def flatten(self) -> Tuple[Tensor, Tensor]:
        """(floats f32[2n], counts i64[2n+1]): ONE all_reduce(MIN) of floats and ONE
        all_reduce(SUM) of counts merge the stats of every rank."""
        return _ops.range_stats_flatten(*self)

    @staticmethod
    def unflatten(floats: Tensor, counts: Tensor) -> "RangeStats":
        return RangeStats(*_ops.range_stats_unflatten(floats, counts))

    def merge(self, other: "RangeStats") -> "RangeStats":
        """Exact merge (min of mins, max of maxes, counters added)."""
        return RangeStats(*_ops.range_stats_merge(*self, *other))


class ObserverBase(_TorchObserverBase):
    """Common machinery: buffers <-> ``torch.ops.qkit.observer_*``.

    Keywords (PyTorch-style): ``dtype``, ``qscheme``, ``quant_min`` / ``quant_max`` (both or
    neither; default the dtype's range, halved by ``reduce_range``), ``ch_axis`` (per-channel
    schemes; default 0), ``group_size`` (per group along ``ch_axis``), ``eps``, ``nonfinite``
    ('skip' | 'skip_nan' | 'propagate'); QuantSpec keywords ``rounding``, ``scale_mode``,
    ``zero_point_mode``, ``nan_mode``; QParamsRule keywords ``divisor``, ``widen_to_zero``,
    ``degenerate``, ``zero_point_rounding``, ``integral_zero_point``, ``clamp_zero_point``,
    ``restriction``, ``symmetric_zero_point`` (default: PyTorch's: 0, or the midpoint of an
    unsigned range for symmetric schemes), ``reciprocal_multiplier``. ``bits``: the spec's bit
    width, which the rules ``restriction="pow2_floor_log2_amax"`` (OneFlow cambricon) and
    ``divisor="half_full_range"`` read; by default it is derived from a full b-bit quant range
    (``[0, 2^b - 1]``, ``[-2^(b-1), 2^(b-1) - 1]`` or the narrow signed range), and those rules
    raise ``ValueError`` on any other range unless ``bits`` is given. ``factory_kwargs``
    (torch.ao) is accepted; state is always float32 / int64 on the CPU.
    """

    _version = 1
    _kind = ""
    _axis_arg = "ch_axis"  # the constructor's name for the channel axis (error messages)
    # (buffer name, dtype, dims): the order of the op's Tensor[] state.
    _state_spec: Tuple[Tuple[str, torch.dtype, int], ...] = ()
    needs_counts = False

    def __init__(self, dtype: torch.dtype = torch.quint8,
                 qscheme: torch.qscheme = torch.per_tensor_affine,
                 quant_min: Optional[int] = None, quant_max: Optional[int] = None,
                 ch_axis: Optional[int] = None, group_size: Optional[int] = None,
                 eps: float = torch.finfo(torch.float32).eps, nonfinite: str = "skip",
                 reduce_range: bool = False, *, rounding: str = "half_to_even",
                 scale_mode: str = "divide", zero_point_mode: str = "add_after_round",
                 nan_mode: str = "propagate", divisor: str = "half_range",
                 widen_to_zero: bool = True, degenerate: str = "floor_at_eps",
                 zero_point_rounding: str = "half_to_even", integral_zero_point: bool = True,
                 clamp_zero_point: bool = True, restriction: str = "none",
                 symmetric_zero_point: Optional[str] = None,
                 reciprocal_multiplier: bool = False, bits: Optional[int] = None,
                 factory_kwargs: Optional[Dict[str, Any]] = None,
                 _obs_kw: Optional[Dict[str, Any]] = None) -> None:
        super().__init__(dtype)
        name = type(self).__name__
        if (quant_min is None) != (quant_max is None):
            raise ValueError(f"qkit.nn.{name}: `quant_min`={quant_min} and "
                             f"`quant_max`={quant_max} must be given together")
        if quant_min is None:
            self.quant_min, self.quant_max = _dtype_range(dtype, reduce_range)
        else:
            if not int(quant_min) < int(quant_max):
                raise ValueError(f"qkit.nn.{name}: `quant_min`={quant_min} must be < "
                                 f"`quant_max`={quant_max}")
            self.quant_min, self.quant_max = int(quant_min), int(quant_max)
        self.has_customized_qrange = quant_min is not None
        self.qscheme = qscheme
        self.reduce_range = reduce_range
        if qscheme not in _PER_CHANNEL + (torch.per_tensor_affine, torch.per_tensor_symmetric):
            raise ValueError(f"qkit.nn.{name}: unsupported `qscheme`={qscheme} (per_tensor_"
                             "affine / _symmetric, per_channel_affine / _symmetric)")
        if qscheme in _PER_CHANNEL:
            ch_axis = 0 if ch_axis is None else int(ch_axis)
        elif ch_axis is not None:
            raise ValueError(f"qkit.nn.{name}: `ch_axis`={ch_axis} needs a per-channel "
                             f"qscheme, got {qscheme}")
        if group_size is not None and ch_axis is None:
            raise ValueError(f"qkit.nn.{name}: `group_size`={group_size} needs a per-channel "
                             "qscheme and `ch_axis`")
        self.ch_axis = ch_axis
        self.group_size = group_size
        self.eps = float(eps)
        self.nonfinite = nonfinite
        if symmetric_zero_point is None:
            symmetric_zero_point = "zero"
            if dtype in _UNSIGNED:  # PyTorch: 128, or (qmin + qmax) // 2 for a custom range
                symmetric_zero_point = "midpoint_down" if self.has_customized_qrange \
                    else "midpoint_up"
        self._kw: Dict[str, Any] = dict(
            kind=self._kind, axis=ch_axis, group_size=group_size or 0, nonfinite=nonfinite,
            quant_min=self.quant_min, quant_max=self.quant_max, rounding=rounding,
            scale_mode=scale_mode, zero_point_mode=zero_point_mode, nan_mode=nan_mode)
        self._kw.update(_obs_kw or {})
        derived = _bits_of_range(self.quant_min, self.quant_max)
        if bits is None:
            bits = derived
            if bits is None:
                given = dict(restriction=restriction, divisor=divisor)
                for key, value in _BITS_RULES:
                    if given[key] == value:
                        raise ValueError(
                            f"qkit.nn.{name}: `{key}`='{value}' uses the bit width, which "
                            f"[`quant_min`={self.quant_min}, `quant_max`={self.quant_max}] "
                            "does not determine: pass `bits`")
        elif isinstance(bits, bool) or not isinstance(bits, int):
            raise TypeError(f"qkit.nn.{name}: `bits` must be an int, got {bits!r}")
        elif not 2 <= bits <= 16:
            raise ValueError(f"qkit.nn.{name}: `bits`={bits} outside [2, 16]")
        self.bits = bits
        if bits is not None:
            self._kw["bits"] = bits
        self._rule: Dict[str, Any] = dict(
            symmetric=qscheme in _SYMMETRIC, divisor=divisor, widen_to_zero=widen_to_zero,
            degenerate=degenerate, eps=self.eps, zero_point_rounding=zero_point_rounding,
            integral_zero_point=integral_zero_point, clamp_zero_point=clamp_zero_point,
            restriction=restriction, symmetric_zero_point=symmetric_zero_point,
            reciprocal_multiplier=bool(reciprocal_multiplier))
        for buf_name, buf_dtype, dims in self._state_spec:
            self.register_buffer(buf_name, self._empty_buffer(buf_dtype, dims))
        # Checks every option now (the core's Validate): a bad keyword fails at construction.
        _ops.observer_validate(self._state(), **self._kw)

    # ---- state ---------------------------------------------------------------------------
    def _empty_buffer(self, dtype: torch.dtype, dims: int) -> Tensor:
        if dims == 0:
            return torch.zeros((), dtype=dtype)
        if dims == 2:
            return torch.zeros((0, self._kw["bins"]), dtype=dtype)
        return torch.zeros((0,), dtype=dtype)

    def _state(self) -> List[Tensor]:
        return [getattr(self, n) for n, _, _ in self._state_spec]

    @torch.no_grad()
    def _write(self, new: Sequence[Tensor]) -> None:
        for (name, _, _), t in zip(self._state_spec, new):
            buf = getattr(self, name)
            if buf.shape != t.shape:
                buf.resize_(t.shape)
            buf.copy_(t)

    @property
    def nonfinite_count(self) -> int:
        """NaN / ±Inf elements left out so far."""
        return int(self.num_nonfinite)

    @property
    def num_slots(self) -> int:
        return int(_ops.observer_validate(self._state(), **self._kw))

    def reset(self) -> None:
        """Back to the freshly constructed state (options kept)."""
        self._write([self._empty_buffer(d, n) for _, d, n in self._state_spec])

    # ---- observing -----------------------------------------------------------------------
    def _check_axis(self, x: Tensor) -> None:
        """The channel axis against x's rank, so that the error names this module's argument
        (the core names its own, `axis`; a 0-d x keeps the core's message)."""
        a, d = self.ch_axis, x.dim()
        if a is not None and d > 0 and not -d <= a < d:
            raise IndexError(f"qkit.nn.{type(self).__name__}: `{self._axis_arg}`={a} out of "
                             f"range for an input of shape {list(x.shape)} "
                             f"(valid: [{-d}, {d - 1}])")

    def _gate(self, current_train_step: Optional[int]) -> Dict[str, Any]:
        return {}

    def forward(self, x: Tensor) -> Tensor:
        """Observes ``x`` (a no-op for an empty ``x``) and returns it unchanged."""
        if x.numel() == 0:
            return x
        self._check_axis(x)
        self._write(_ops.observer_observe(x.detach(), self._state(), **self._gate(None),
                                          **self._kw))
        return x

    def observe_and_calculate_qparams(self, x: Tensor, current_train_step: Optional[int] = None
                                      ) -> Tuple[Tensor, Tensor]:
        """forward(x) then calculate_qparams() in one op call (FakeQuantize's fused path)."""
        if x.numel() == 0:
            return self.calculate_qparams()
        self._check_axis(x)
        state, scale, zero_point = _ops.observer_observe_qparams(
            x.detach(), self._state(), **self._gate(current_train_step), **self._kw,
            **self._rule)
        self._write(state)
        return scale, self._zero_point_out(zero_point)

    def _zero_point_out(self, zero_point: Tensor) -> Tensor:
        return zero_point.to(torch.int32) if self._rule["integral_zero_point"] else zero_point

    @torch.jit.export
    def calculate_qparams(self) -> Tuple[Tensor, Tensor]:
        """(scale float32[slots], zero_point int32[slots]; float32 when integral_zero_point is
        False) from the core's ComputeQParams. RuntimeError while a slot has no data."""
        scale, zero_point = _ops.observer_qparams(self._state(), **self._kw, **self._rule)
        return scale, self._zero_point_out(zero_point)

    # ---- distributed protocol ----------------------------------------------------------------
    def batch_range(self, x: Tensor) -> RangeStats:
        """Phase 1: the local shard's range per slot (the state is not changed)."""
        self._check_axis(x)
        return RangeStats(*_ops.observer_batch_range(x.detach(), self._state(), **self._kw))

    def batch_counts(self, x: Tensor, merged_range: RangeStats) -> Tensor:
        """Phase 2 (histogram kinds): the local shard binned on the plan every rank derives
        from the state and the merged range; all_reduce(SUM) it."""
        return _ops.observer_batch_counts(x.detach(), self._state(), *merged_range, **self._kw)

    def commit(self, merged_range: RangeStats, merged_counts: Optional[Tensor] = None,
               current_train_step: Optional[int] = None) -> None:
        """Phase 3: applies the merged batch (identical on every rank)."""
        self._write(_ops.observer_commit(self._state(), *merged_range, merged_counts,
                                         **self._gate(current_train_step), **self._kw))

    def merge_counts(self, a: Tensor, b: Tensor) -> Tensor:
        return _ops.observer_merge_counts(a, b, kind=self._kind)

    @torch.no_grad()
    def merge_state_(self, other: "ObserverBase") -> None:
        """State-level merge of ``other`` into this observer (exact; minmax and histogram
        kinds only: see docs/observers.md)."""
        if type(other) is not type(self) or other._kw != self._kw:
            raise ValueError(f"qkit.nn.{type(self).__name__}.merge_state_: `other` has "
                             "different options")
        self._write(_ops.observer_merge(self._state(), other._state(), **self._kw))

    # ---- repr / state_dict -------------------------------------------------------------------
    def extra_repr(self) -> str:
        return (f"dtype={self.dtype}, qscheme={self.qscheme}, quant_min={self.quant_min}, "
                f"quant_max={self.quant_max}, ch_axis={self.ch_axis}, "
                f"nonfinite='{self.nonfinite}'")

    def _load_from_state_dict(self, state_dict: Dict[str, Any], prefix: str,
                              local_metadata: Dict[str, Any], strict: bool,
                              missing_keys: List[str], unexpected_keys: List[str],
                              error_msgs: List[str]) -> None:
        where = f"qkit.nn.{type(self).__name__} at '{prefix}'"
        version = local_metadata.get("version", None)
        if version != self._version:
            error_msgs.append(f"{where}: state_dict version {version} is not supported (this "
                              f"qkit writes and reads version {self._version})")
            return
        saved = [state_dict.get(prefix + n) for n, _, _ in self._state_spec]
        if all(t is not None for t in saved):
            for (name, dtype, dims), t in zip(self._state_spec, saved):
                if not isinstance(t, Tensor) or t.dtype != dtype or t.dim() != dims:
                    desc = f"{t.dtype} with shape {tuple(t.shape)}" if isinstance(t, Tensor) \
                        else type(t).__name__
                    error_msgs.append(f"{where}: `{name}` is {desc} in the state_dict; "
                                      f"expected {dtype} with {dims} dim(s)")
                    return
            try:
                slots = int(_ops.observer_validate([t.cpu() for t in saved], **self._kw))
            except (ValueError, RuntimeError, IndexError) as e:
                error_msgs.append(f"{where}: the state_dict holds an invalid state: {e}")
                return
            if self.ch_axis is None and slots > 1:
                error_msgs.append(f"{where}: the state_dict has {slots} slots (shape "
                                  f"{tuple(saved[0].shape)}) but this observer is per tensor")
                return
            with torch.no_grad():
                for (name, _, _), t in zip(self._state_spec, saved):
                    buf = getattr(self, name)
                    if buf.shape != t.shape:
                        buf.resize_(t.shape)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)


class MinMaxObserver(ObserverBase):
    """Running min / max per tensor, channel or group (PyTorch MinMaxObserver /
    PerChannelMinMaxObserver, MegEngine MinMaxObserver). Buffers: ``min_val``, ``max_val``
    (float32[slots]; 0 in slots without data), ``num_batches`` (int64[slots]; 0 = no data),
    ``num_nonfinite`` (int64: NaN / ±Inf left out; ``nonfinite_count`` as an int)."""
    _kind = "minmax"
    _state_spec = (("min_val", _F32, 1), ("max_val", _F32, 1), ("num_batches", _I64, 1),
                   ("num_nonfinite", _I64, 0))

    def __init__(self, dtype: torch.dtype = torch.quint8,
                 qscheme: torch.qscheme = torch.per_tensor_affine, reduce_range: bool = False,
                 quant_min: Optional[int] = None, quant_max: Optional[int] = None,
                 **kwargs: Any) -> None:
        super().__init__(dtype=dtype, qscheme=qscheme, reduce_range=reduce_range,
                         quant_min=quant_min, quant_max=quant_max, **kwargs)


_MA_VARIANTS = ("torch", "oneflow", "megengine", "distiller")


class MovingAverageMinMaxObserver(ObserverBase):
    """Moving-average min / max with each system's update rule (``variant``: 'torch' (default;
    averaging_constant 0.01), 'oneflow' (momentum 0.95, step gate stop_update_after_iters=1),
    'megengine' (EMA momentum 0.9), 'distiller' (ema_decay 0.999, bias corrected)).
    ``averaging_constant`` / ``momentum`` override the variant's constant; ``range='absmax'``
    (OneFlow symmetric) tracks max(|min|, |max|).

    Update gate: ``forward(x, current_train_step=None)``; the OneFlow step gate compares
    ``current_train_step`` (None: 0) with ``stop_update_after_iters``. ``gate_on_training``
    (default: False for 'torch', whose observer also updates in eval mode; True for the other
    variants, which observe only in training mode) makes ``self.training`` close the gate.

    Buffers: ``min_val``, ``max_val``, ``biased_min``, ``biased_max`` (Distiller only; else
    empty), ``num_updates``, ``num_nonfinite``."""
    _kind = "moving_average"
    _state_spec = (("min_val", _F32, 1), ("max_val", _F32, 1), ("biased_min", _F32, 1),
                   ("biased_max", _F32, 1), ("num_updates", _I64, 1),
                   ("num_nonfinite", _I64, 0))

    def __init__(self, averaging_constant: Optional[float] = None,
                 dtype: torch.dtype = torch.quint8,
                 qscheme: torch.qscheme = torch.per_tensor_affine, reduce_range: bool = False,
                 quant_min: Optional[int] = None, quant_max: Optional[int] = None, *,
                 variant: str = "torch", momentum: Optional[float] = None,
                 stop_update_after_iters: Optional[int] = None, range: str = "minmax",
                 gate_on_training: Optional[bool] = None, **kwargs: Any) -> None:
        if variant not in _MA_VARIANTS:
            raise ValueError(f"qkit.nn.MovingAverageMinMaxObserver: `variant`='{variant}' is "
                             f"not one of {_MA_VARIANTS}")
        if averaging_constant is not None and momentum is not None:
            raise ValueError("qkit.nn.MovingAverageMinMaxObserver: give `averaging_constant` "
                             "or `momentum`, not both")
        constant = averaging_constant if averaging_constant is not None else momentum
        self.variant = variant
        self.gate_on_training = (variant != "torch") if gate_on_training is None \
            else bool(gate_on_training)
        super().__init__(dtype=dtype, qscheme=qscheme, reduce_range=reduce_range,
                         quant_min=quant_min, quant_max=quant_max,
                         _obs_kw=dict(variant=variant, momentum=constant,
                                      stop_update_after_iters=stop_update_after_iters,
                                      running_range=range), **kwargs)
        self.averaging_constant = constant
        self.stop_update_after_iters = stop_update_after_iters
        self.range = range

    def _gate(self, current_train_step: Optional[int]) -> Dict[str, Any]:
        return dict(training=bool(self.training) or not self.gate_on_training,
                    current_train_step=int(current_train_step or 0))

    def gate_open(self, current_train_step: Optional[Union[int, Tensor]] = None) -> bool:
        """Whether an update would happen now (the core's GateOpen: training gate and step
        gate); forward / commit with a closed gate change nothing."""
        step = None if current_train_step is None else int(current_train_step)
        return bool(_ops.observer_gate_open(**self._gate(step), **self._kw))

    def forward(self, x: Tensor, current_train_step: Optional[Union[int, Tensor]] = None
                ) -> Tensor:
        if x.numel() == 0:
            return x
        step = None if current_train_step is None else int(current_train_step)
        self._check_axis(x)
        self._write(_ops.observer_observe(x.detach(), self._state(), **self._gate(step),
                                          **self._kw))
        return x

    def extra_repr(self) -> str:
        return (super().extra_repr() + f", variant='{self.variant}', "
                f"constant={self.averaging_constant}, range='{self.range}'")


class HistogramObserver(ObserverBase):
    """Histogram with the L2 range search (MegEngine's HistogramObserver, per tensor or per
    channel; exact int64 counts). Buffers: ``min_val``, ``max_val`` (the range the histogram
    covers), ``histogram`` (int64[slots, bins]), ``num_batches``, ``num_nonfinite``.
    ``calculate_qparams`` searches the range (``dst_nbins`` levels; 0: quant_max - quant_min
    + 1) and chooses qparams on it; ``calculate_range()`` returns the searched range."""
    _kind = "histogram"
    needs_counts = True
    _state_spec = (("min_val", _F32, 1), ("max_val", _F32, 1), ("histogram", _I64, 2),
                   ("num_batches", _I64, 1), ("num_nonfinite", _I64, 0))

    def __init__(self, bins: int = 2048, upsample_rate: int = 128,
                 dtype: torch.dtype = torch.quint8,
                 qscheme: torch.qscheme = torch.per_tensor_affine, reduce_range: bool = False,
                 quant_min: Optional[int] = None, quant_max: Optional[int] = None, *,
                 dst_nbins: int = 0, error_on_nonfinite: bool = False, **kwargs: Any) -> None:
        self.bins = int(bins)
        self.upsample_rate = int(upsample_rate)
        self.dst_nbins = int(dst_nbins)
        super().__init__(dtype=dtype, qscheme=qscheme, reduce_range=reduce_range,
                         quant_min=quant_min, quant_max=quant_max,
                         _obs_kw=dict(bins=self.bins, upsample_rate=self.upsample_rate,
                                      dst_nbins=self.dst_nbins,
                                      error_on_nonfinite=error_on_nonfinite), **kwargs)

    def calculate_range(self) -> Tuple[Tensor, Tensor]:
        return _ops.observer_range(self._state(), **self._kw)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", bins={self.bins}, upsample_rate={self.upsample_rate}"


class HistogramCalibrator(ObserverBase):
    """NVIDIA pytorch-quantization's HistogramCalibrator (|x| histogram from 0, growing by
    appended bins). ``compute_amax(method='entropy'|'mse'|'percentile', stride=1,
    start_bin=128, percentile=99.99)`` -> float32[slots] (NaN for a slot that collected
    nothing) or None when nothing was collected. ``axis``: per-channel along that axis.
    Buffers: ``hist`` / ``edges`` (all slots concatenated) with ``hist_len`` / ``edges_len``,
    ``edges_f64``, ``hist_num_bins`` (bins of the last histc), ``num_nonfinite``,
    ``num_dropped``."""
    _kind = "histogram_calibrator"
    _axis_arg = "axis"
    needs_counts = True
    _state_spec = (("hist", _I64, 1), ("hist_len", _I64, 1), ("edges", _F64, 1),
                   ("edges_len", _I64, 1), ("edges_f64", _U8, 1), ("hist_num_bins", _I64, 1),
                   ("num_nonfinite", _I64, 0), ("num_dropped", _I64, 0))

    def __init__(self, num_bins: int = 2048, unsigned: bool = False, num_bits: int = 8,
                 skip_zeros: bool = False, torch_hist: bool = True, axis: Optional[int] = None,
                 *, torch_binning: str = "histc", error_on_nonfinite: bool = False,
                 **kwargs: Any) -> None:
        self.num_bins = int(num_bins)
        self.unsigned = bool(unsigned)
        self.num_bits = int(num_bits)
        self.skip_zeros = bool(skip_zeros)
        self.torch_hist = bool(torch_hist)
        self.axis = axis
        qscheme = torch.per_channel_symmetric if axis is not None else torch.per_tensor_symmetric
        super().__init__(dtype=torch.qint8, qscheme=qscheme, ch_axis=axis,
                         _obs_kw=dict(bins=self.num_bins, num_bits=self.num_bits,
                                      is_unsigned=self.unsigned, skip_zeros=self.skip_zeros,
                                      torch_hist=self.torch_hist, torch_binning=torch_binning,
                                      error_on_nonfinite=error_on_nonfinite), **kwargs)

    def collect(self, x: Tensor) -> None:
        self.forward(x)

    def compute_amax(self, method: str, *, stride: int = 1, start_bin: int = 128,
                     percentile: float = 99.99) -> Optional[Tensor]:
        amax = _ops.observer_amax(self._state(), method=method, stride=stride,
                                  start_bin=start_bin, percentile=percentile, **self._kw)
        return None if amax.numel() == 0 else amax

    @torch.jit.export
    def calculate_qparams(self) -> Tuple[Tensor, Tensor]:
        raise RuntimeError("qkit.nn.HistogramCalibrator: a calibrator gives amax "
                           "(compute_amax), not qparams; use it through TensorQuantizer")

    def extra_repr(self) -> str:
        return (f"num_bins={self.num_bins}, unsigned={self.unsigned}, num_bits={self.num_bits},"
                f" skip_zeros={self.skip_zeros}, torch_hist={self.torch_hist}, "
                f"axis={self.axis}")


class PassiveObserver(ObserverBase):
    """Holds user-set qparams (MegEngine PassiveObserver, Horizon FixedScaleObserver):
    ``set_qparams(scale, zero_point=None)`` (validated against the spec), ``set_scale``;
    forward checks x and observes nothing. Buffers: ``scale``, ``zero_point`` (float32),
    ``orig_scale`` (the first scales set)."""
    _kind = "passive"
    _state_spec = (("scale", _F32, 1), ("zero_point", _F32, 1), ("orig_scale", _F32, 1))

    def __init__(self, dtype: torch.dtype = torch.qint8,
                 qscheme: torch.qscheme = torch.per_tensor_symmetric,
                 quant_min: Optional[int] = None, quant_max: Optional[int] = None,
                 **kwargs: Any) -> None:
        super().__init__(dtype=dtype, qscheme=qscheme, quant_min=quant_min,
                         quant_max=quant_max, **kwargs)

    @property
    def nonfinite_count(self) -> int:
        return 0

    @staticmethod
    def _as_tensor(v: Any) -> Tensor:
        return torch.as_tensor(v, dtype=torch.float32).reshape(-1)

    def set_qparams(self, scale: Any, zero_point: Any = None) -> None:
        zp = None if zero_point is None else self._as_tensor(zero_point)
        self._write(_ops.observer_set_qparams(self._state(), self._as_tensor(scale), zp,
                                              **self._kw))

    def set_scale(self, scale: Any) -> None:
        self._write(_ops.observer_set_qparams(self._state(), self._as_tensor(scale), None,
                                              scale_only=True, **self._kw))

    def forward(self, x: Tensor) -> Tensor:
        self._check_axis(x)
        _ops.observer_observe(x.detach(), self._state(), **self._kw)  # validates x only
        return x
