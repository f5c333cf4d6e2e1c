"""Plain-torch / numpy references of the observers' update rules, written from SPEC.md (2.3
OneFlow, 3.3 MegEngine, 4.6 NVIDIA, 5.2 Distiller) and the systems' documentation, not from
qkit's code. Every arithmetic step is a float32 tensor operation in the system's order."""
import numpy as np
import torch

F32 = torch.float32


def f32(v):
    return torch.tensor(v, dtype=F32)


def batch_minmax(x, axis=None):
    """Per-slot min / max of the finite elements (qkit's 'skip' policy)."""
    if axis is None:
        x = x.reshape(1, -1)
    else:
        x = x.movedim(axis, 0).reshape(x.shape[axis], -1)
    fin = torch.isfinite(x)
    inf = torch.tensor(float("inf"))
    mn = torch.where(fin, x, inf).amin(dim=1)
    mx = torch.where(fin, x, -inf).amax(dim=1)
    return mn, mx


class OneFlowMovingAverage:
    """SPEC 2.3: v = cur if v == 0 else v*m + cur*(1 - m) (float32); symmetric tracks the abs
    max into moving_max and copies it to moving_min; updates only when training and
    current_train_step <= stop_update_after_iters."""

    def __init__(self, momentum=0.95, symmetric=True, stop_update_after_iters=1):
        self.m = f32(momentum)
        self.symmetric = symmetric
        self.stop = stop_update_after_iters
        self.moving_max = None
        self.moving_min = None

    def _avg(self, v, cur):
        upd = v * self.m + cur * (f32(1.0) - self.m)
        return torch.where(v == 0, cur, upd)

    def update(self, x, step, training=True, axis=None):
        mn, mx = batch_minmax(x, axis)
        if self.moving_max is None:
            self.moving_max = torch.zeros_like(mx)
            self.moving_min = torch.zeros_like(mn)
        if not training or step > self.stop:
            return
        if self.symmetric:
            a = torch.maximum(mn.abs(), mx.abs())
            self.moving_max = self._avg(self.moving_max, a)
            self.moving_min = self.moving_max.clone()
        else:
            self.moving_max = self._avg(self.moving_max, mx)
            self.moving_min = self._avg(self.moving_min, mn)


class MegEngineEma:
    """SPEC 3.3 ExponentialMovingAverageObserver: the first update copies (runtime momentum
    0), then v = v*m + (1 - m)*cur."""

    def __init__(self, momentum=0.9):
        self.m = f32(momentum)
        self.min_val = None
        self.max_val = None

    def update(self, x, axis=None):
        mn, mx = batch_minmax(x, axis)
        if self.min_val is None:
            self.min_val, self.max_val = mn.clone(), mx.clone()
            return
        one_m = f32(1.0) - self.m
        self.min_val = self.min_val * self.m + one_m * mn
        self.max_val = self.max_val * self.m + one_m * mx


class DistillerEma:
    """SPEC 5.2: biased = biased*d + (1 - d)*cur; value = biased / (1 - d^t), t counting the
    updates (float32 pow)."""

    def __init__(self, decay=0.999):
        self.d = f32(decay)
        self.t = 0
        self.biased_min = None
        self.biased_max = None

    def update(self, x, axis=None):
        mn, mx = batch_minmax(x, axis)
        if self.biased_min is None:
            self.biased_min = torch.zeros_like(mn)
            self.biased_max = torch.zeros_like(mx)
        self.t += 1
        one_d = f32(1.0) - self.d
        self.biased_min = self.biased_min * self.d + one_d * mn
        self.biased_max = self.biased_max * self.d + one_d * mx
        corr = f32(1.0) - torch.pow(self.d, f32(float(self.t)))
        self.min_val = self.biased_min / corr
        self.max_val = self.biased_max / corr


class NvidiaHistogram:
    """NVIDIA HistogramCalibrator.collect, torch path (calib/histogram.py 2.2.1) with the local
    torch.histc, per tensor."""

    def __init__(self, num_bins=2048):
        self.num_bins = num_bins
        self.hist = None
        self.edges = None

    def collect(self, x):
        x = x.abs().float()
        x_max = x.max()
        if self.edges is None:
            self.hist = torch.histc(x, bins=self.num_bins, min=0, max=x_max)
            self.edges = torch.linspace(0, x_max, self.num_bins + 1)
            return
        if x_max > self.edges[-1]:
            width = self.edges[1] - self.edges[0]
            self.num_bins = int(torch.ceil(x_max / width).item())
            self.edges = torch.arange(0, x_max + width, width)
        hist = torch.histc(x, bins=self.num_bins, min=0, max=self.edges[-1])
        hist[:self.hist.numel()] += self.hist
        self.hist = hist

    def percentile_amax(self, percentile):
        """SPEC 4.6: cdf = cumsum(hist / total) in float64 (numpy); left searchsorted."""
        hist = self.hist.numpy().astype(np.int64)
        cdf = np.cumsum(hist / hist.sum())
        idx = int(np.searchsorted(cdf, percentile / 100, side="left"))
        return self.edges[idx]


def megengine_first_histogram(x, bins):
    """MegEngine's first batch: np.histogram over [min, max] of the (finite) batch."""
    a = x.numpy().reshape(-1)
    mn, mx = np.float32(a.min()), np.float32(a.max())
    hist, _ = np.histogram(a, bins=bins, range=(mn, mx))
    return torch.from_numpy(hist.astype(np.int64))


def nvidia_entropy_amax(hist, edges, num_bits=8, unsigned=False, stride=1, start_bin=128):
    """SPEC 4.6 `_compute_amax_entropy` (numpy float64, vectorised per candidate i):
    bins[0] = bins[1]; for i = start_bin..len(bins) (inclusive, step stride): P = bins[:i] with
    the tail folded into bin i-1; Q = per target bucket floor(j * nbins / i) the mean of the
    non-empty source bins, expanded back; KL(P || Q) normalised (scipy.stats.entropy); the
    LAST argmin; amax = edges[index * stride + start_bin]."""
    bins = np.asarray(hist, dtype=np.int64).copy()
    bins[0] = bins[1]
    nbins = 1 << (num_bits - 1 + int(unsigned))
    divs = []
    for i in range(start_bin, len(bins) + 1, stride):
        p = bins[:i].astype(np.float64)
        p[i - 1] += bins[i:].sum()
        digit = np.digitize(np.arange(i), np.linspace(0, i, num=nbins + 1)) - 1
        keep = bins[:i] != 0
        sums = np.bincount(digit[keep], weights=bins[:i][keep].astype(np.float64),
                           minlength=nbins)
        cnt = np.bincount(digit[keep], minlength=nbins)
        mean = np.divide(sums, cnt, out=np.zeros(nbins), where=cnt > 0)
        q = np.where(keep, mean[np.clip(digit, 0, nbins - 1)], 0.0)
        ph, qh = p / p.sum(), q / q.sum()
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(ph > 0, ph * np.log(ph / qh), 0.0)
        divs.append(terms.sum())
    divs = np.array(divs)
    last = len(divs) - 1 - int(np.argmin(divs[::-1]))
    return float(np.float32(edges[last * stride + start_bin]))


def nvidia_mse_amax(hist, edges, num_bits=8, unsigned=False, start_bin=128):
    """SPEC 4.6 `_compute_amax_mse` in float32 torch: centers of the edges; for each candidate
    amax = centers[i] the narrow-range fake quant of the centers (scale = max_bound / amax,
    round half to even, clamp, divide); mse = mean((qc - centers)^2 * counts); FIRST argmin."""
    counts = torch.as_tensor(np.asarray(hist), dtype=F32)
    e = torch.as_tensor(np.asarray(edges), dtype=torch.float64).to(F32)
    centers = (e[1:] + e[:-1]) / 2
    max_bound = f32(2.0 ** (num_bits - 1 + int(unsigned)) - 1)
    min_bound = f32(0.0) if unsigned else -max_bound
    mses = []
    for i in range(start_bin, len(centers)):
        amax = centers[i]
        scale = max_bound / amax
        qc = torch.clamp(torch.round(centers * scale), min_bound, max_bound) / scale
        mses.append(torch.mean((qc - centers) ** 2 * counts).item())
    return centers[start_bin + int(np.argmin(mses))].item()
