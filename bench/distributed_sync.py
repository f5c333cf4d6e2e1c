#!/usr/bin/env python3
"""Sync cost of qkit.distributed for a model with many observers: one flat collective for all
observers vs one protocol run (its own collectives) per observer.

    PYTHONPATH=python /usr/bin/python3 bench/distributed_sync.py [--world 2] [--observers 100]
        [--iters 30] [--numel 4096] [--kinds minmax,ema,hist]

Spawns --world processes on localhost (gloo, CPU, 1 thread each) and, per kind, times one
"step" (every observer observes its own small local batch) as:
  local      plain qkit.nn observers, no sync at all (the compute floor);
  per-obs    Sync* observers in sync='forward' mode: each forward runs the protocol, so
             2 collectives per observer (3 for histograms);
  flat       qkit.distributed.sync_observe(all pairs): 2 collectives for all observers
             (3 with histograms);
  deferred   Sync* observers in sync='deferred' mode, forward on each, then
             qkit.distributed.sync_observers(model) (same collectives as flat).
Reports the median and the minimum over --iters steps (after 3 warm-up steps) on rank 0, and
checks that every variant left every rank with identical, equal states.
"""
import argparse
import datetime
import os
import socket
import statistics
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "python"))
import qkit.distributed as qd  # noqa: E402
from qkit.nn import HistogramObserver, MinMaxObserver, MovingAverageMinMaxObserver  # noqa: E402

KINDS = {
    "minmax": (MinMaxObserver, {}),
    "ema": (MovingAverageMinMaxObserver, dict(variant="torch")),
    "hist": (HistogramObserver, dict(bins=2048, upsample_rate=128)),
}


def _port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def _time(fn, iters):
    for _ in range(3):
        fn()
    dist.barrier()
    out = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def _worker(rank, world, port, args):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world, timeout=datetime.timedelta(seconds=120))
    g = torch.Generator().manual_seed(1234 + rank)
    xs = [torch.randn(args.numel, generator=g) for _ in range(args.observers)]
    rows = []
    for kind in args.kinds.split(","):
        cls, kw = KINDS[kind]
        sync_cls = qd._SYNC_OF[cls]
        plain = [cls(**kw) for _ in range(args.observers)]
        fwd = [sync_cls(**kw) for _ in range(args.observers)]
        flat = [cls(**kw) for _ in range(args.observers)]
        dfr = nn.ModuleList([sync_cls(**kw, sync="deferred") for _ in range(args.observers)])

        def local():
            for o, x in zip(plain, xs):
                o(x)

        def per_obs():
            for o, x in zip(fwd, xs):
                o(x)

        def flat_step():
            qd.sync_observe(list(zip(flat, xs)))

        def deferred():
            for o, x in zip(dfr, xs):
                o(x)
            qd.sync_observers(dfr)

        for name, fn in (("local", local), ("per-obs", per_obs), ("flat", flat_step),
                         ("deferred", deferred)):
            t = _time(fn, args.iters)
            rows.append((kind, name, statistics.median(t), min(t)))
        # every synced variant saw the same batches: identical states
        for a, b, c in zip(fwd, flat, dfr):
            for (k, va), vb, vc in zip(a.state_dict().items(), b.state_dict().values(),
                                       c.state_dict().values()):
                assert torch.equal(va, vb) and torch.equal(va, vc), (kind, k)
    if rank == 0:
        print(f"world={world} observers={args.observers} numel/observer/rank={args.numel} "
              f"iters={args.iters} backend=gloo (localhost, 1 thread per rank)")
        print(f"{'kind':<8}{'variant':<10}{'median ms':>11}{'min ms':>9}{'ms/observer':>13}")
        for kind, name, med, mn in rows:
            print(f"{kind:<8}{name:<10}{med * 1e3:>11.2f}{mn * 1e3:>9.2f}"
                  f"{med * 1e3 / args.observers:>13.3f}")
    dist.barrier()
    dist.destroy_process_group()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--world", type=int, default=2)
    ap.add_argument("--observers", type=int, default=100)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--numel", type=int, default=4096)
    ap.add_argument("--kinds", default="minmax,ema,hist")
    args = ap.parse_args()
    for k in args.kinds.split(","):
        if k not in KINDS:
            ap.error(f"--kinds: unknown kind {k!r} (one of {sorted(KINDS)})")
    mp.spawn(_worker, args=(args.world, _port(), args), nprocs=args.world, join=True)


if __name__ == "__main__":
    main()
