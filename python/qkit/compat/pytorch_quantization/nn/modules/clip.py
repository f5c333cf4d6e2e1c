"""``pytorch_quantization.nn.Clip`` on qkit's ``learned_clip`` op (SPEC §4.3): ``clamp(x, min,
max)`` whose learnable bounds get TensorFlow ``clip_by_value``-style gradients
(``dmax = sum(dy * [x >= max])``, ``dmin = sum(dy * [x <= min])``,
``dx = dy * [min < x < max]``)."""
import torch
from torch import nn
from torch.nn.parameter import Parameter

from ..... import ops

__all__ = ["Clip"]


def _bound(value, learn, name):
    if learn:
        if not isinstance(value, float) and getattr(value, "size", 1) != 1 \
                and not (isinstance(value, torch.Tensor) and value.numel() == 1):
            raise ValueError(
                "clip_value_min/clip_value_max must be scalar for initilizing learnable range.")
        if isinstance(value, torch.Tensor):
            return Parameter(value.detach().clone().to(torch.float32).reshape(()))
        return Parameter(torch.tensor(value, dtype=torch.float32).reshape(()))
    return value


class Clip(nn.Module):
    """Clip tensor.

    Args:
        clip_value_min: A number or tensor of lower bound to clip.
        clip_value_max: A number or tensor of upper bound to clip.
        learn_min: bool, learn the lower bound (it must be a scalar).
        learn_max: bool, learn the upper bound (it must be a scalar).

    Raises:
        ValueError: a learnable bound that is not a scalar.
    """

    def __init__(self, clip_value_min, clip_value_max, learn_min=False, learn_max=False):
        super().__init__()
        self.clip_value_min = _bound(clip_value_min, learn_min, "clip_value_min")
        self.clip_value_max = _bound(clip_value_max, learn_max, "clip_value_max")

    @staticmethod
    def _as_tensor(v):
        if isinstance(v, torch.Tensor):
            return v.reshape(-1) if v.numel() == 1 else v
        return torch.tensor([float(v)], dtype=torch.float32)

    def forward(self, inputs):
        lo = self._as_tensor(self.clip_value_min)
        hi = self._as_tensor(self.clip_value_max)
        if lo.numel() != 1 or hi.numel() != 1:
            raise ValueError("Clip: qkit's learned_clip takes scalar bounds; got shapes "
                             f"{tuple(lo.shape)} and {tuple(hi.shape)}")
        return ops.learned_clip(inputs, lo, hi)
