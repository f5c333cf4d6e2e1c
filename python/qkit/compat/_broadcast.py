"""Layout adapter shared by the compat layers whose parameters *broadcast* against the input
(NVIDIA's ``amax`` of shape ``(C, 1, 1, 1)`` or ``(1, C, 1, H)``, Distiller's per-channel
``scale``), while qkit's ops take one parameter per slot along one ``axis``.

No arithmetic: the input is only viewed, permuted and reshaped so that every dimension on which
the parameter varies becomes one leading slot dimension, and the result is put back the same
way (autograd passes through the permute / reshape).
"""
from typing import List, Optional, Tuple

from torch import Tensor

__all__ = ["Slots"]


class Slots:
    """How a parameter tensor ``p`` broadcasts against ``x`` (without growing ``x``).

    ``values`` is ``p`` as a 1-d float tensor, one entry per slot; ``axis`` is the qkit ``axis``
    to use on ``to_layout(x)`` (None: per tensor); ``from_layout`` undoes ``to_layout``.
    Raises RuntimeError (torch's broadcasting error type) when ``p`` does not broadcast.
    """

    def __init__(self, x: Tensor, p: Tensor, what: str) -> None:
        n = x.dim()
        shape = list(p.shape)
        if len(shape) > n:
            if any(s != 1 for s in shape[:len(shape) - n]):
                raise RuntimeError(f"{what}: shape {tuple(p.shape)} does not broadcast to the "
                                   f"input's shape {tuple(x.shape)}")
            shape = shape[len(shape) - n:]
        shape = [1] * (n - len(shape)) + shape
        kept = [d for d in range(n) if shape[d] != 1]
        for d in kept:
            if shape[d] != x.shape[d]:
                raise RuntimeError(f"{what}: shape {tuple(p.shape)} does not broadcast to the "
                                   f"input's shape {tuple(x.shape)} (dimension {d})")
        self.kept: List[int] = kept
        self.values: Tensor = p.reshape(-1)
        self.perm: Optional[List[int]] = None
        self.shape: Tuple[int, ...] = tuple(x.shape)
        if not kept:
            self.axis: Optional[int] = None
        elif len(kept) == 1:
            self.axis = kept[0]
        else:
            self.axis = 0
            self.perm = kept + [d for d in range(n) if d not in kept]

    def to_layout(self, x: Tensor) -> Tensor:
        if self.perm is None:
            return x
        return x.permute(self.perm).reshape(self.values.numel(), -1)

    def from_layout(self, y: Tensor) -> Tensor:
        if self.perm is None:
            return y
        inverse = [0] * len(self.perm)
        for i, d in enumerate(self.perm):
            inverse[d] = i
        return y.reshape([self.shape[d] for d in self.perm]).permute(inverse)

    def shaped(self, v: Tensor, like: Tensor) -> Tensor:
        """A per-slot vector ``v`` back in the parameter's original shape ``like``."""
        return v.reshape(like.shape)
