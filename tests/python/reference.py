"""Plain-torch references for qkit's ops, written from SPEC.md (§3.4, §4.3, §5.3, §7.5), one
float32 tensor operation per arithmetic step (torch's CPU kernels round every op to float32, as
the formulas require). Independent of qkit: nothing here calls torch.ops.qkit.

Each learned-range reference returns ``(out, dx, t0, t1)``: the forward output, the input
gradient and the per-element parameter-gradient terms, from which the parameter gradients are
sums (see ``ordered_sum`` for qkit's documented order).
"""
import math

import torch
import torch.nn.functional as F


def rhaz(v):
    """Round half away from zero, exactly (v - trunc(v) is exact in float32)."""
    t = torch.trunc(v)
    return torch.where((v - t).abs() >= 0.5, t + torch.sign(v), t)


def clamp_keep_nan(v, lo, hi):
    lo_t, hi_t = torch.full_like(v, lo), torch.full_like(v, hi)
    return torch.where(v < lo, lo_t, torch.where(v > hi, hi_t, v))


def _param(p, x, axis):
    """A parameter vector shaped to broadcast against x (per tensor or along axis)."""
    p = p.detach().to(torch.float32).reshape(-1)
    if axis is None:
        return p.reshape(())
    shape = [1] * x.dim()
    shape[axis] = -1
    return p.reshape(shape)


# ---- MegEngine LSQ ---------------------------------------------------------------------------
def lsq_megengine(x, dy, step, zp, qmin, qmax, g, axis=None):
    x = x.float()
    dy = dy.float()
    s = _param(step, x, axis)
    z = _param(zp, x, axis)
    v = x / s + z
    out = (rhaz(clamp_keep_nan(v, qmin, qmax)) - z) * s
    below = v < qmin
    above = v > qmax
    dx = torch.where(below | above, torch.zeros_like(dy), dy)
    c = torch.where(below, torch.full_like(v, qmin),
                    torch.where(above, torch.full_like(v, qmax), rhaz(v) - v))
    t0 = c * g * dy
    return out, dx, t0, torch.zeros_like(t0)


# ---- PyTorch learnable (LSQ+) ---------------------------------------------------------------
def lsq_pytorch(x, dy, scale, zp, qmin, qmax, g, axis=None):
    x = x.float()
    dy = dy.float()
    s = _param(scale, x, axis)
    z = _param(zp, x, axis)
    inv = 1.0 / s
    zf = torch.clamp(torch.round(z), qmin, qmax)
    q = torch.round(x * inv) + zf
    c = torch.where(torch.isnan(q), torch.full_like(q, qmin), torch.clamp(q, qmin, qmax))
    out = (c - zf) * s
    if axis is None:  # int64(clamp(z + 0.5f)): truncation
        zb = torch.trunc(torch.clamp(z + 0.5, qmin, qmax))
    else:
        zb = zf
    xq = torch.round(zb + x * inv)
    inr = (xq >= qmin) & (xq <= qmax)
    above = xq > qmax
    dx = torch.where(inr, dy, torch.zeros_like(dy))
    xfq = (xq - zb) * s
    t_in = dy * (xfq - x) * inv * g
    t_out = dy * torch.where(above, qmax - zb, qmin - zb) * g
    t0 = torch.where(inr, t_in, t_out)
    t1 = torch.where(inr, torch.zeros_like(dy), dy * (-1.0) * s * g)
    return out, dx, t0, t1


# ---- MegEngine TQT ---------------------------------------------------------------------------
def tqt(x, dy, log2_t, qmin, qmax, axis=None):
    x = x.float()
    dy = dy.float()
    # t = f32(pow(2.0, double(log2_t))): Python's float ** is C's pow in double.
    t_values = torch.tensor([2.0 ** float(v) for v in log2_t.detach().reshape(-1)],
                            dtype=torch.float64).float()
    t = _param(t_values, x, axis)
    v = x / t
    r = clamp_keep_nan(rhaz(v), qmin, qmax)
    out = r * t
    clip = (v < qmin - 0.5) | (v > qmax + 0.5)
    dx = torch.where(clip, torch.zeros_like(dy), dy)
    w = torch.where(clip, dy * r * t, dy * (r - v) * t)
    t0 = (w.double() * math.log(2.0)).float()
    return out, dx, t0, torch.zeros_like(t0)


# ---- Distiller PACT --------------------------------------------------------------------------
def distiller_asymmetric_scale(bits, sat_max):
    """Distiller's asymmetric_linear_quantization_params(bits, 0, sat_max) in torch: (scale, zp).
    ``n / diff`` on a tensor is torch's ``reciprocal(diff) * n``."""
    n = 2 ** bits - 1
    sat_min = torch.zeros_like(sat_max)
    sat_max = torch.max(sat_max, torch.zeros_like(sat_max))
    diff = sat_max - sat_min
    diff[diff == 0] = n
    scale = n / diff
    zero_point = (scale * sat_min).round()
    return scale, zero_point


class _LinearQuantizeSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale, zero_point):
        return (torch.round(scale * x - zero_point) + zero_point) / scale

    @staticmethod
    def backward(ctx, dy):
        return dy, None, None


def distiller_pact_module(x, alpha, bits):
    """Distiller's LearnedClippedLinearQuantization.forward (dequantize=True), with autograd."""
    y = F.relu(x)
    y = torch.where(y < alpha, y, alpha)
    with torch.no_grad():
        scale, zero_point = distiller_asymmetric_scale(bits, alpha.detach().reshape(-1).clone())
    return _LinearQuantizeSTE.apply(y, scale, zero_point)


def pact(x, dy, alpha, bits, axis=None):
    xf = x.float()
    dy = dy.float()
    a = _param(alpha, xf, axis)
    scale, zero_point = distiller_asymmetric_scale(bits, alpha.detach().reshape(-1).float().clone())
    m = _param(scale, xf, axis)
    zp = _param(zero_point, xf, axis)
    y = F.relu(xf)
    y = torch.where(y < a, y, a)
    out = (torch.round(m * y - zp) + zp) / m
    dx = torch.where((y > 0) & (y < a), dy, torch.zeros_like(dy))
    t0 = torch.where(y < a, torch.zeros_like(dy), dy)
    return out, dx, t0, torch.zeros_like(t0)


# ---- NVIDIA learned-amax Clip ----------------------------------------------------------------
class NvidiaClipFunction(torch.autograd.Function):
    """pytorch-quantization's nn/functional.py ClipFunction, restated."""

    @staticmethod
    def forward(ctx, x, cmin, cmax):
        ctx.save_for_backward(x, cmin, cmax)
        return torch.max(torch.min(x, cmax), cmin)

    @staticmethod
    def backward(ctx, dy):
        x, cmin, cmax = ctx.saved_tensors
        min_mask = (x > cmin).to(dy.dtype)
        max_mask = (x < cmax).to(dy.dtype)
        return (dy * min_mask * max_mask, (dy * (1.0 - min_mask)).sum().reshape(cmin.shape),
                (dy * (1.0 - max_mask)).sum().reshape(cmax.shape))


def learned_clip(x, dy, cmin, cmax, axis=None):
    xf = x.float()
    dy = dy.float()
    lo = _param(cmin, xf, axis)
    hi = _param(cmax, xf, axis)
    a = torch.where(xf < hi, xf, hi)
    out = torch.where(torch.isnan(xf), xf, torch.where(a > lo, a, lo))
    dx = torch.where((xf > lo) & (xf < hi), dy, torch.zeros_like(dy))
    t0 = torch.where(xf > lo, torch.zeros_like(dy), dy)
    t1 = torch.where(xf < hi, torch.zeros_like(dy), dy)
    return out, dx, t0, t1


# ---- qkit's documented reduction order ------------------------------------------------------
def ordered_sum(terms):
    """Float32 sum in the order of include/qkit/ops/learned_range.h: chunks of 65536, 16 lanes by
    position in the chunk (each summed sequentially from +0), lanes folded 8/4/2/1, chunk
    results added left to right from +0."""
    terms = terms.reshape(-1).float()
    total = torch.zeros((), dtype=torch.float32)
    for start in range(0, terms.numel(), 65536):
        chunk = terms[start:start + 65536]
        pad = (-chunk.numel()) % 16
        if pad:  # +0 leaves every lane unchanged (a lane is never -0)
            chunk = torch.cat([chunk, torch.zeros(pad)])
        lanes = torch.zeros(16)
        for row in chunk.view(-1, 16):
            lanes = lanes + row
        for w in (8, 4, 2, 1):
            lanes = lanes[:w] + lanes[w:2 * w]
        total = total + lanes[0]
    return total


def slot_sums(terms, axis):
    """ordered_sum per slot: all elements (axis None) or each index along ``axis``."""
    if axis is None:
        return ordered_sum(terms).reshape(1)
    per = terms.movedim(axis, 0).reshape(terms.shape[axis], -1)
    return torch.stack([ordered_sum(row) for row in per])


def sum_tolerance(terms, axis):
    """Bound on |qkit's sum - any other float32 summation| of the same terms: both orders are
    within (n_eff * 2^-24) * sum|t| of the exact sum to first order, where qkit's lanes add at
    most 4096 terms sequentially, plus 4 fold steps and one add per chunk, and torch's
    cascade sum adds O(log n); n_eff = 4096 + 4 + chunks + 64 covers both (SPEC-independent)."""
    if axis is None:
        mags = terms.abs().sum().reshape(1)
        n = terms.numel()
    else:
        mags = terms.abs().movedim(axis, 0).reshape(terms.shape[axis], -1).sum(1)
        n = terms.numel() // max(terms.shape[axis], 1)
    n_eff = min(n, 4096) + 4 + (n + 65535) // 65536 + 64
    return 2.0 * n_eff * 2.0 ** -24 * mags.double() + 1e-30


# ---- fake quantization (docs/numerics.md, SPEC §9.1-9.2, §7.5) --------------------------------
def _round(v, rounding):
    if rounding == "half_to_even":
        return torch.round(v)
    if rounding == "half_away_from_zero":
        return rhaz(v)
    return torch.floor(v + 0.5)  # floor_add_half: the add is rounded to float32 first


def fake_quant(x, scale, zero_point, qmin, qmax, rounding="half_to_even", scale_mode="divide",
               zero_point_mode="add_after_round", nan_mode="propagate", axis=None,
               group_size=0, codes=False):
    """(out, in_range mask) of qkit's fake quantization, written from docs/numerics.md; with
    codes=True, the clamped integer codes (as float32) instead of out."""
    xf = x.float()
    if group_size:
        # Per group along `axis`: expand each parameter over its group.
        shape = list(xf.shape)
        groups = (shape[axis] + group_size - 1) // group_size
        pshape = shape[:axis] + [groups] + shape[axis + 1:]
        idx = torch.arange(shape[axis]) // group_size
        s = scale.float().reshape(pshape).index_select(axis, idx)
        z = (zero_point.float().reshape(pshape).index_select(axis, idx)
             if zero_point is not None else torch.zeros_like(s))
    else:
        s = _param(scale, xf, axis)
        z = _param(zero_point, xf, axis) if zero_point is not None else torch.zeros_like(s)
    z = z + 0.0  # a -0 zero point counts as +0
    if scale_mode == "divide":
        v = xf / s
    elif scale_mode == "multiply_reciprocal":
        v = xf * (1.0 / s)
    else:  # multiplier; m == 0 gives the code z for every non-NaN element
        v = torch.where(s == 0, torch.where(torch.isnan(xf), xf, torch.zeros_like(xf)), xf * s)
    if zero_point_mode == "add_after_round":
        q = _round(v, rounding) + z
    else:
        q = _round(v + z, rounding) + 0.0  # a -0 code is +0
    mask = (q >= qmin) & (q <= qmax)
    c = torch.where(q < qmin, torch.full_like(q, qmin),
                    torch.where(q > qmax, torch.full_like(q, qmax), q))
    nan = torch.isnan(q)
    if nan_mode == "to_quant_min":
        c = torch.where(nan, torch.full_like(c, qmin), c)
    if codes:
        return c, mask
    if scale_mode == "multiplier":
        out = (c - z) / torch.where(s == 0, torch.ones_like(s), s)
    else:
        out = (c - z) * s
    if nan_mode == "propagate":
        out = torch.where(nan, xf, out)
    return out, mask


def pack_mask(mask):
    """qkit's packed mask: bit i % 8 of byte i // 8 is element i (row-major)."""
    bits = mask.reshape(-1).to(torch.uint8)
    pad = (-bits.numel()) % 8
    bits = torch.cat([bits, torch.zeros(pad, dtype=torch.uint8)]).view(-1, 8)
    weights = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8)
    return (bits * weights).sum(1).to(torch.uint8)
