#!/usr/bin/env python3
"""qkit's torch ops next to PyTorch's own, timed in one run, with the ratio qkit / torch.

    /usr/bin/python3 bench/torch_side_by_side.py [--sizes 1M,64M] [--threads 1,2] [--reps N]

Rows: the fused observer + fake quant (qkit.nn.FakeQuantize's fused path against
torch.fused_moving_avg_obs_fake_quant), forward and forward+backward; HistogramObserver forward
(qkit.nn.HistogramObserver, 2048 bins, against torch.ao.quantization.HistogramObserver; both
re-observe batches inside their range); fake quant per tensor and per channel, forward and
forward+backward, and the learnable (LSQ+) fake quant forward+backward; each at every size and thread count
(torch.set_num_threads, which qkit's ops follow). Both sides compute the same numbers:
qkit runs with PyTorch's options (x * f32(1/s), round half to even, NaN -> quant_min; the
learnable op with ``fused`` set to match torch's kernel build). Times are medians of --reps
runs after one warm-up; ratios below 1 mean qkit is faster. The machine may be shared: rerun
when quiet if the figures look off.
"""
import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "python"))
import qkit  # noqa: E402

QMIN, QMAX = -128, 127


def _median_ms(fn, reps):
    fn()  # warm-up (allocations, page faults, dispatch)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _torch_learnable_is_fused():
    s = torch.tensor([0.0173], requires_grad=True)
    torch._fake_quantize_learnable_per_tensor_affine(
        torch.tensor([1.3339108228683472]), s, torch.tensor([3.0]), -128, 127,
        0.7).backward(torch.ones(1))
    return s.grad.item() == -0.07326899468898773


def rows(n, gen):
    """(name, qkit callable, torch callable) for n floats."""
    c = 64
    x = torch.randn(n // c, c, generator=gen)
    dy = torch.randn(n // c, c, generator=gen)
    scale = torch.tensor([0.02])
    zp_f = torch.tensor([0.0])
    ch_scale = torch.rand(c, generator=gen) * 0.02 + 0.01
    ch_zp = torch.zeros(c, dtype=torch.int32)
    torch_opts = dict(scale_mode="multiply_reciprocal", nan_mode="to_quant_min")
    xg = x.clone().requires_grad_(True)
    fused = _torch_learnable_is_fused()
    s_l = torch.tensor([0.02], requires_grad=True)
    z_l = torch.tensor([0.0], requires_grad=True)

    def fwd_bwd(f):
        def run():
            xg.grad = None
            f().backward(dy)
        return run

    def learnable(f):
        def run():
            xg.grad = s_l.grad = z_l.grad = None
            f().backward(dy)
        return run

    # Fused observe + fake quant: PyTorch's fused_moving_avg_obs_fake_quant (moving average,
    # per-tensor affine) against qkit.nn.FakeQuantize's fused path with the same options.
    fq_q = qkit.nn.FakeQuantize(quant_min=QMIN, quant_max=QMAX, dtype=torch.qint8,
                                qscheme=torch.per_tensor_affine, averaging_constant=0.01,
                                **torch_opts)
    on = torch.tensor([1], dtype=torch.long)
    t_min, t_max = torch.tensor(float("inf")), torch.tensor(float("-inf"))
    t_scale, t_zp = torch.tensor([1.0]), torch.tensor([0], dtype=torch.int32)
    # Histogram observers (qkit: MegEngine's L2-search histogram, exact int64 counts; torch:
    # torch.ao.quantization.HistogramObserver), 2048 bins, repeated batches in range.
    h_q = qkit.nn.HistogramObserver(bins=2048)
    h_t = torch.ao.quantization.HistogramObserver(bins=2048)

    return [
        ("fused observer+fake_quant fwd",
         lambda: fq_q(x),
         lambda: torch.fused_moving_avg_obs_fake_quant(x, on, on, t_min, t_max, t_scale, t_zp,
                                                       0.01, QMIN, QMAX, 0, False, False)),
        ("fused observer+fake_quant fwd+bwd",
         fwd_bwd(lambda: fq_q(xg)),
         fwd_bwd(lambda: torch.fused_moving_avg_obs_fake_quant(
             xg, on, on, t_min, t_max, t_scale, t_zp, 0.01, QMIN, QMAX, 0, False, False))),
        ("HistogramObserver forward",
         lambda: h_q(x),
         lambda: h_t(x)),
        ("fake_quant per tensor fwd",
         lambda: qkit.fake_quantize(x, scale, zp_f, **torch_opts),
         lambda: torch.fake_quantize_per_tensor_affine(x, 0.02, 0, QMIN, QMAX)),
        ("fake_quant per tensor fwd+bwd",
         fwd_bwd(lambda: qkit.fake_quantize(xg, scale, zp_f, **torch_opts)),
         fwd_bwd(lambda: torch.fake_quantize_per_tensor_affine(xg, 0.02, 0, QMIN, QMAX))),
        ("fake_quant per channel fwd",
         lambda: qkit.fake_quantize(x, ch_scale, ch_zp, axis=1, **torch_opts),
         lambda: torch.fake_quantize_per_channel_affine(x, ch_scale, ch_zp, 1, QMIN, QMAX)),
        ("fake_quant per channel fwd+bwd",
         fwd_bwd(lambda: qkit.fake_quantize(xg, ch_scale, ch_zp, axis=1, **torch_opts)),
         fwd_bwd(lambda: torch.fake_quantize_per_channel_affine(xg, ch_scale, ch_zp, 1, QMIN,
                                                                QMAX))),
        ("learnable fake_quant (LSQ+) fwd+bwd",
         learnable(lambda: qkit.lsq(xg, s_l, z_l, quant_min=QMIN, quant_max=QMAX,
                                    grad_scale=1.0, fused=fused)),
         learnable(lambda: torch._fake_quantize_learnable_per_tensor_affine(
             xg, s_l, z_l, QMIN, QMAX, 1.0))),
    ]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="1M,64M", help="comma list, suffix K/M")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--reps", type=int, default=0, help="default: 15 for <= 1M, else 5")
    args = p.parse_args()
    units = {"K": 1 << 10, "M": 1 << 20}
    sizes = [int(s[:-1]) * units[s[-1]] if s[-1] in units else int(s)
             for s in args.sizes.split(",")]
    threads = [int(t) for t in args.threads.split(",")]
    gen = torch.Generator().manual_seed(1)
    print(f"torch {torch.__version__}, qkit {qkit.__version__} ({qkit.ops.current_target()}), "
          f"{os.cpu_count()} CPUs")
    print(f"{'row':38} {'floats':>7} {'thr':>3} {'qkit ms':>9} {'torch ms':>9} "
          f"{'qkit/torch':>10} {'speedup':>8}")
    for n in sizes:
        reps = args.reps or (15 if n <= (1 << 20) else 5)
        table = rows(n, gen)
        for name, fq, ft in table:
            for t in threads:
                torch.set_num_threads(t)
                tq = _median_ms(fq, reps)
                tt = _median_ms(ft, reps)
                label = f"{n >> 20}M" if n >= (1 << 20) else f"{n >> 10}K"
                print(f"{name:38} {label:>7} {t:>3} {tq:9.2f} {tt:9.2f} {tq / tt:10.3f} "
                      f"{tt / tq:7.1f}x", flush=True)
        del table


if __name__ == "__main__":
    main()
