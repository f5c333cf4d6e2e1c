"""The calibration methods of the post-training table, one registry entry each: which qkit
observer module observes a layer's input activation, and how its qparams are read. Adding a
method is adding an entry to ``METHODS``.

Activations are non-negative (see ``quant.act_range``): the observers get the unsigned affine
range ``[0, 2^bits - 1]``; NVIDIA-style calibrators (``HistogramCalibrator``) give an ``amax``,
whose range ``[0, amax]`` goes through ``qkit.ops.choose_qparams`` like every other range.
"""
from dataclasses import dataclass
from typing import Callable, List, Tuple

import torch
from torch import Tensor, nn

import qkit

from .quant import act_range, observer_class

__all__ = ["Method", "METHODS", "available_methods"]


@dataclass(frozen=True)
class Method:
    key: str                                       # machine name (JSON, --methods)
    label: str                                     # table row
    follows: str                                   # whose semantics (docs)
    observer: str                                  # qkit.nn class it needs
    make: Callable[[int], nn.Module]               # bits -> fresh observer module
    qparams: Callable[[nn.Module, int], Tuple[Tensor, Tensor]]

    def available(self) -> bool:
        return observer_class(self.observer) is not None


def _observer_kwargs(bits: int):
    qmin, qmax = act_range(bits)
    return dict(quant_min=qmin, quant_max=qmax, dtype=torch.quint8,
                qscheme=torch.per_tensor_affine)


def _calculate(obs: nn.Module, bits: int) -> Tuple[Tensor, Tensor]:
    return obs.calculate_qparams()


def _from_amax(kind: str, **kw):
    def qparams(cal: nn.Module, bits: int) -> Tuple[Tensor, Tensor]:
        amax = cal.compute_amax(kind, **kw)
        if amax is None:
            raise RuntimeError(f"qkit demo: the {kind} calibrator has no data")
        amax = torch.as_tensor(amax, dtype=torch.float32).reshape(-1)
        qmin, qmax = act_range(bits)
        return qkit.ops.choose_qparams(torch.zeros_like(amax), amax, quant_min=qmin,
                                       quant_max=qmax, symmetric=False)
    return qparams


def _histogram_calibrator(bits: int) -> nn.Module:
    return qkit.nn.HistogramCalibrator(num_bits=bits, unsigned=True)


def _minmax(bits: int) -> nn.Module:
    cls = observer_class("MinMaxObserver") or qkit.nn.RunningMinMaxObserver
    return cls(**_observer_kwargs(bits))


METHODS: List[Method] = [
    Method("minmax", "min/max", "running min / max (all five systems)", "MinMaxObserver",
           _minmax, _calculate),
    Method("moving_average", "moving average", "PyTorch / Horizon EMA, c = 0.01",
           "MovingAverageMinMaxObserver",
           lambda b: qkit.nn.MovingAverageMinMaxObserver(variant="torch", **_observer_kwargs(b)),
           _calculate),
    Method("histogram_l2", "histogram L2", "MegEngine / PyTorch HistogramObserver (L2 search)",
           "HistogramObserver",
           lambda b: qkit.nn.HistogramObserver(**_observer_kwargs(b)), _calculate),
    Method("entropy", "entropy (KL)", "NVIDIA HistogramCalibrator, method='entropy'",
           "HistogramCalibrator", _histogram_calibrator, _from_amax("entropy")),
    Method("mse", "MSE", "NVIDIA HistogramCalibrator, method='mse'", "HistogramCalibrator",
           _histogram_calibrator, _from_amax("mse")),
    Method("percentile", "percentile 99.99", "NVIDIA HistogramCalibrator, method='percentile'",
           "HistogramCalibrator", _histogram_calibrator,
           _from_amax("percentile", percentile=99.99)),
]


def available_methods() -> List[Method]:
    """The registry entries whose observer module this qkit build has."""
    return [m for m in METHODS if m.available()]
