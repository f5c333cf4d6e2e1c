"""``pytorch_quantization.utils.reduce_amax`` on qkit's ``absmax`` (NaN propagates, as
``torch.max`` does)."""
from typing import List, Optional, Sequence, Union

import torch
from torch import Tensor

from ... import ops

__all__ = ["reduce_amax"]


def _normalise(axes: Sequence[int], ndim: int) -> List[int]:
    out = []
    for a in axes:
        if not -ndim <= a < max(ndim, 1):
            raise IndexError(f"Dimension out of range (expected to be in range of "
                             f"[{-ndim}, {ndim - 1}], but got {a})")
        out.append(a % ndim if ndim else 0)
    return sorted(set(out))


def absmax_keep(x: Tensor, keep: Sequence[int], acc: Optional[Tensor] = None) -> Tensor:
    """max |x| over every dimension not in ``keep``, in keepdims shape (float32), folded into
    ``acc`` (same shape) when given. Empty inputs raise RuntimeError as torch.max does."""
    if x.numel() == 0:
        raise RuntimeError("max(): Expected reduction dim to be specified for input.numel() == 0.")
    x = x.detach()
    n = x.dim()
    keep = _normalise(keep, n) if n else []
    shape = [x.shape[d] if d in keep else 1 for d in range(n)]
    flat_acc = None if acc is None else acc.detach().to(torch.float32).reshape(-1)
    if not keep:
        a, _ = ops.absmax(x, nonfinite="propagate", amax_acc=flat_acc)
    elif len(keep) == 1:
        a, _ = ops.absmax(x, axis=keep[0], nonfinite="propagate", amax_acc=flat_acc)
    else:
        perm = keep + [d for d in range(n) if d not in keep]
        count = 1
        for d in keep:
            count *= x.shape[d]
        a, _ = ops.absmax(x.permute(perm).reshape(count, -1), axis=0, nonfinite="propagate",
                          amax_acc=flat_acc)
    return a.reshape(shape)


def reduce_amax(input: Tensor, axis: Union[None, int, Sequence[int]] = None,  # noqa: A002
                keepdims: bool = True) -> Tensor:
    """Max of ``|input|`` over ``axis`` (None: all). Squeezed to 0-d when one value remains or
    ``keepdims`` is False, as upstream. Computed in float32, returned in the input's dtype."""
    n = input.dim()
    if axis is None:
        reduce = list(range(n))
    elif isinstance(axis, int):
        reduce = [axis]
    else:
        if isinstance(axis, tuple) and len(axis) > n:
            raise ValueError("Cannot reduce more axes than tensor's dim.")
        reduce = list(axis)
    reduce = _normalise(reduce, n) if n else []
    keep = [d for d in range(n) if d not in reduce]
    out = absmax_keep(input, keep).to(input.dtype)
    if axis is None or not keepdims or out.numel() == 1:
        out = out.squeeze()
    return out
