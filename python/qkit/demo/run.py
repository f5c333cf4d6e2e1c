"""The demo's flow: train, calibrate (every registered method), evaluate, QAT, export, report."""
import argparse
import copy
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import qkit

from .methods import METHODS, Method, available_methods
from .model import WEIGHT_LAYERS, DigitsNet, load_digits_split
from .onnx_io import export_onnx, run_reference
from .quant import (QuantNet, act_range, fake_quant_act, fake_quant_weight, lsq_quantizer,
                    observer_class, quantizer_qparams, weight_range)
from .report import format_table, plot_ranges, quant_range, write_json

__all__ = ["DemoConfig", "run_demo", "main"]


@dataclass
class DemoConfig:
    seed: int = 0
    width: int = 6                  # conv1 channels (conv2 has twice as many); small on purpose:
    hidden: int = 24                #   fc1 outputs; a wide net loses nothing at W4A4 post-training
    epochs: int = 40                # float training
    batch_size: int = 32
    lr: float = 3e-3
    qat_epochs: int = 20
    qat_lr: float = 1e-3
    calib_batches: int = 8          # calibration: the first calib_batches * calib_batch_size
    calib_batch_size: int = 64      #   training images
    ptq_bits: Sequence[int] = (8, 4, 2)
    qat_bits: Sequence[int] = (4, 2)
    methods: Optional[Sequence[str]] = None   # None: every method this qkit build has
    plot_layer: str = "conv2"
    # The image input (conv1's input: 17 discrete pixel levels in [0, 1]) is calibrated with
    # min/max in every row ("minmax"), or with each row's method too ("method"): NVIDIA's
    # entropy method then picks amax = 1/16 (see docs/demo.md).
    input_calibration: str = "minmax"
    threads: int = 1                # tiny ops: one thread is fastest (and steady on a shared machine)
    progress: bool = True


def _bar(iterable, cfg: DemoConfig, **kw):
    from tqdm import tqdm
    return tqdm(iterable, disable=not cfg.progress, file=sys.stderr, dynamic_ncols=True, **kw)


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    model.eval()
    pred = model(x).argmax(dim=1)
    return 100.0 * float((pred == y).sum()) / y.numel()


def train(model: nn.Module, params, x: Tensor, y: Tensor, epochs: int, lr: float,
          cfg: DemoConfig, desc: str, seed: int, on_epoch=None) -> float:
    """Adam + cosine schedule, cross entropy, fixed-seed shuffling; returns seconds."""
    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(params, lr=lr)
    steps = epochs * ((x.shape[0] + cfg.batch_size - 1) // cfg.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1))
    bar = _bar(range(epochs), cfg, desc=desc, leave=False)
    for epoch in bar:
        if on_epoch is not None:
            on_epoch(epoch)
        model.train()
        perm = torch.randperm(x.shape[0], generator=g)
        total = 0.0
        for i in range(0, x.shape[0], cfg.batch_size):
            idx = perm[i:i + cfg.batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss) * idx.numel()
        bar.set_postfix(loss=f"{total / x.shape[0]:.4f}")
    model.eval()
    return time.perf_counter() - t0


def _weight_layers(net: DigitsNet) -> Dict[str, nn.Module]:
    return {name: getattr(net.layers, name) for name in WEIGHT_LAYERS}


def ptq_net(net: DigitsNet, bits: int, per_channel: bool,
            act_qparams: Optional[Dict[str, Tuple[Tensor, Tensor]]] = None) -> QuantNet:
    """The float ``net`` with min/max-calibrated weight quantizers and activation quantizers
    set to ``act_qparams`` (fake quantization off until they are set)."""
    wq = {}
    for name, layer in _weight_layers(net).items():
        fq = fake_quant_weight(bits, per_channel, layer.weight.shape[0])
        with torch.no_grad():
            fq(layer.weight.detach())           # observe the weight once
        fq.disable_observer()
        wq[name] = fq
    aq = {name: fake_quant_act(bits) for name in WEIGHT_LAYERS}
    qnet = QuantNet(net, aq, wq)
    if act_qparams is None:
        qnet.set_fake_quant(False)
    else:
        for name, (scale, zp) in act_qparams.items():
            aq[name].set_qparams(scale, zp)
    return qnet


def calibrate(net: DigitsNet, method: Method, bits: int, x_cal: Tensor, cfg: DemoConfig
              ) -> Tuple[Dict[str, Tuple[Tensor, Tensor]], float]:
    """Feeds the calibration images through the float model; one ``method`` observer per
    layer input; returns ({layer: (scale, zero_point)}, seconds)."""
    t0 = time.perf_counter()
    per_layer = {name: method for name in WEIGHT_LAYERS}
    if cfg.input_calibration == "minmax":
        per_layer[WEIGHT_LAYERS[0]] = METHODS[0]
    observers = {name: m.make(bits) for name, m in per_layer.items()}
    qnet = ptq_net(net, bits, per_channel=True)
    qnet.taps = dict(observers)
    with torch.no_grad():
        for i in _bar(range(0, x_cal.shape[0], cfg.calib_batch_size), cfg, leave=False,
                      desc=f"calibrate {method.label} {bits}-bit"):
            qnet(x_cal[i:i + cfg.calib_batch_size])
    qnet.taps = {}
    qparams = {name: m.qparams(observers[name], bits) for name, m in per_layer.items()}
    return qparams, time.perf_counter() - t0


def _qparams_of(qnet: QuantNet) -> Dict[str, Dict[str, Dict]]:
    return {name: {"input": quantizer_qparams(qnet.act_q[name]),
                   "weight": quantizer_qparams(qnet.weight_q[name])} for name in WEIGHT_LAYERS}


def qat_ste(net: DigitsNet, bits: int, x: Tensor, y: Tensor, cfg: DemoConfig
            ) -> Tuple[QuantNet, float]:
    """PyTorch's QAT recipe with qkit.nn.FakeQuantize (clipped STE): moving-average observers
    on the activations (frozen after half the epochs), per-channel weights observed at every
    step."""
    net = copy.deepcopy(net)
    ema = observer_class("MovingAverageMinMaxObserver")
    act_kw = dict(variant="torch") if ema else {}
    w_kw = dict(variant="torch", averaging_constant=1.0) if ema else {}
    aq = {n: fake_quant_act(bits, observer=ema or qkit.nn.RunningMinMaxObserver, **act_kw)
          for n in WEIGHT_LAYERS}
    wq = {n: fake_quant_weight(bits, True, layer.weight.shape[0],
                               observer=ema or qkit.nn.RunningMinMaxObserver, **w_kw)
          for n, layer in _weight_layers(net).items()}
    qnet = QuantNet(net, aq, wq)

    def freeze(epoch: int) -> None:
        if epoch == max(1, cfg.qat_epochs // 2):
            for q in aq.values():
                q.disable_observer()

    secs = train(qnet, net.parameters(), x, y, cfg.qat_epochs, cfg.qat_lr, cfg,
                 f"QAT STE W{bits}A{bits}", cfg.seed + 1, on_epoch=freeze)
    for q in list(aq.values()) + list(wq.values()):
        q.disable_observer()
    return qnet, secs


def qat_lsq(net: DigitsNet, bits: int, act_init: Dict[str, Tuple[Tensor, Tensor]],
            x: Tensor, y: Tensor, cfg: DemoConfig) -> Tuple[QuantNet, float]:
    """LSQ (qkit.nn.LSQ, learned step sizes) for weights (per channel, from min/max) and
    activations (per tensor, from the best post-training calibration at this bit width)."""
    net = copy.deepcopy(net)
    init = ptq_net(net, bits, per_channel=True)
    wmin, wmax = weight_range(bits)
    amin, amax = act_range(bits)
    wq = {n: lsq_quantizer(wmin, wmax, init.weight_q[n].scale, init.weight_q[n].zero_point, True)
          for n in WEIGHT_LAYERS}
    aq = {n: lsq_quantizer(amin, amax, act_init[n][0], act_init[n][1], False)
          for n in WEIGHT_LAYERS}
    qnet = QuantNet(net, aq, wq)
    params = [p for p in qnet.parameters() if p.requires_grad]
    secs = train(qnet, params, x, y, cfg.qat_epochs, cfg.qat_lr, cfg,
                 f"QAT LSQ W{bits}A{bits}", cfg.seed + 2)
    return qnet, secs


def lsq_to_fake_quant(qnet: QuantNet, bits: int) -> QuantNet:
    """The same model with each LSQ module replaced by a FakeQuantize holding its learned
    step and zero point (what gets exported)."""
    aq, wq = {}, {}
    for n in WEIGHT_LAYERS:
        a = fake_quant_act(bits)
        a.set_qparams(qnet.act_q[n].step_size.detach(), qnet.act_q[n].zero_point.detach())
        lw = qnet.weight_q[n]
        w = fake_quant_weight(bits, True, lw.step_size.numel())
        w.disable_observer()
        w.set_qparams(lw.step_size.detach(), lw.zero_point.detach())
        aq[n], wq[n] = a, w
    return QuantNet(qnet.net, aq, wq)


def _export(qnet: QuantNet, path: str, x: Tensor, y: Tensor, doc: str) -> Dict:
    model = export_onnx(qnet, path, doc=doc)
    with torch.no_grad():
        ours = qnet.eval()(x).numpy()
    ref = run_reference(model, x.numpy())
    ops = [n.op_type for n in model.graph.node]
    pred = ref.argmax(axis=1)
    return {"file": os.path.basename(path), "nodes": len(ops),
            "qdq_pairs": ops.count("QuantizeLinear"), "clips": ops.count("Clip"),
            "max_abs_diff": float(np.abs(ours - ref).max()),
            "same_prediction": int((pred == ours.argmax(axis=1)).sum()), "inputs": int(len(x)),
            "accuracy": 100.0 * float((pred == y.numpy()).sum()) / len(y), "description": doc}


def run_demo(cfg: DemoConfig, out_dir: str) -> Dict:
    """Runs everything, writes the files into ``out_dir``; returns the results dict (what
    results.json holds, plus ``table`` and ``models``: {onnx file name: exported QuantNet})."""
    t_start = time.perf_counter()
    os.makedirs(out_dir, exist_ok=True)
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    x_tr, y_tr, x_te, y_te = load_digits_split(cfg.seed)

    methods = available_methods()
    missing = [m.key for m in METHODS if not m.available()]
    if cfg.methods is not None:
        known = {m.key for m in METHODS}
        bad = [k for k in cfg.methods if k not in known]
        if bad:
            raise ValueError(f"qkit demo: unknown method(s) {bad}; known: {sorted(known)}")
        missing = [k for k in missing if k in cfg.methods]
        methods = [m for m in methods if m.key in cfg.methods]
    if not methods:
        raise ValueError("qkit demo: no calibration method to run")
    if cfg.input_calibration not in ("minmax", "method"):
        raise ValueError(f"qkit demo: `input_calibration`={cfg.input_calibration!r} is not "
                         "'minmax' or 'method'")

    net = DigitsNet(cfg.width, cfg.hidden)
    float_secs = train(net, net.parameters(), x_tr, y_tr, cfg.epochs, cfg.lr, cfg,
                       "train float", cfg.seed)
    float_acc = accuracy(net, x_te, y_te)
    print(f"float model: {float_acc:.2f} % test accuracy ({float_secs:.1f} s)", file=sys.stderr)

    x_cal = x_tr[:cfg.calib_batches * cfg.calib_batch_size]
    all_qparams: Dict[str, Dict] = {}
    act_qp: Dict[Tuple[str, int], Dict] = {}
    ptq_rows: List[Dict] = []
    for m in methods:
        row = {"key": m.key, "label": m.label, "follows": m.follows, "accuracy": {},
               "calib_seconds": 0.0}
        for b in cfg.ptq_bits:
            act_qp[(m.key, b)], secs = calibrate(net, m, b, x_cal, cfg)
            row["calib_seconds"] += secs
            res = {}
            for pc in (False, True):
                qnet = ptq_net(net, b, pc, act_qp[(m.key, b)])
                gran = "per_channel" if pc else "per_tensor"
                res[gran] = accuracy(qnet, x_te, y_te)
                all_qparams[f"ptq/{m.key}/W{b}A{b}/{gran}"] = _qparams_of(qnet)
            row["accuracy"][f"W{b}A{b}"] = res
        ptq_rows.append(row)

    def best_ptq(b: int) -> Tuple[str, str, float]:
        return max(((r["key"], g, r["accuracy"][f"W{b}A{b}"][g]) for r in ptq_rows
                    for g in ("per_tensor", "per_channel")), key=lambda t: t[2])

    qat_models: Dict[Tuple[str, int], QuantNet] = {}
    qat_rows = [{"key": "ste", "label": "STE (clipped)", "accuracy": {}, "train_seconds": 0.0},
                {"key": "lsq", "label": "LSQ", "accuracy": {}, "train_seconds": 0.0}]
    for b in cfg.qat_bits:
        qnet, secs = qat_ste(net, b, x_tr, y_tr, cfg)
        qat_rows[0]["accuracy"][f"W{b}A{b}"] = accuracy(qnet, x_te, y_te)
        qat_rows[0]["train_seconds"] += secs
        qat_models[("ste", b)] = qnet
        all_qparams[f"qat/ste/W{b}A{b}/per_channel"] = _qparams_of(qnet)
        # LSQ starts from the best per-channel post-training activation ranges at b bits
        # (or min/max when b was not in the post-training sweep).
        if b in cfg.ptq_bits:
            key = max(ptq_rows, key=lambda r: r["accuracy"][f"W{b}A{b}"]["per_channel"])["key"]
            init = act_qp[(key, b)]
        else:
            init, _ = calibrate(net, METHODS[0], b, x_cal, cfg)
        qnet, secs = qat_lsq(net, b, init, x_tr, y_tr, cfg)
        qat_rows[1]["accuracy"][f"W{b}A{b}"] = accuracy(qnet, x_te, y_te)
        qat_rows[1]["train_seconds"] += secs
        qat_models[("lsq", b)] = qnet
        all_qparams[f"qat/lsq/W{b}A{b}/per_channel"] = _qparams_of(qnet)

    # ---- targets ----
    targets = []
    if 8 in cfg.ptq_bits:
        w8 = [(r["label"], g, r["accuracy"]["W8A8"][g]) for r in ptq_rows
              for g in ("per_tensor", "per_channel")]
        worst = min(w8, key=lambda t: t[2])
        targets.append({"what": "W8A8 post-training within 1 point of float (every method)",
                        "met": worst[2] >= float_acc - 1.0,
                        "detail": f"worst {worst[2]:.2f} % ({worst[0]}, {worst[1]}), float "
                                  f"{float_acc:.2f} %"})
    if 4 in cfg.qat_bits:
        qat4 = max((r["accuracy"]["W4A4"], r["label"]) for r in qat_rows)
        targets.append({"what": "W4A4 QAT within 2 points of float", "met":
                        qat4[0] >= float_acc - 2.0,
                        "detail": f"best {qat4[0]:.2f} % ({qat4[1]}), float {float_acc:.2f} %"})
        if 4 in cfg.ptq_bits:
            ptq4 = best_ptq(4)
            others = ", ".join(f"{r['label']} {r['accuracy']['W4A4']:.2f} %" for r in qat_rows
                               if r["label"] != qat4[1])
            targets.append({"what": "W4A4 QAT better than the best W4A4 post-training result",
                            "met": qat4[0] > ptq4[2],
                            "detail": f"QAT {qat4[0]:.2f} % ({qat4[1]}; {others}) vs "
                                      f"post-training {ptq4[2]:.2f} % ({ptq4[0]}, {ptq4[1]})"})

    # ---- ONNX ----
    onnx_rows, exported = [], {}
    if 8 in cfg.ptq_bits:
        key = max(ptq_rows, key=lambda r: r["accuracy"]["W8A8"]["per_channel"])["key"]
        qnet = ptq_net(net, 8, True, act_qp[(key, 8)])
        onnx_rows.append(_export(qnet, os.path.join(out_dir, "model_w8a8.onnx"), x_te, y_te,
                                 f"W8A8 post-training, activations by {key}, weights per channel"))
        exported["model_w8a8.onnx"] = qnet
    for b in cfg.qat_bits:
        lsq_acc = qat_rows[1]["accuracy"][f"W{b}A{b}"]
        ste_acc = qat_rows[0]["accuracy"][f"W{b}A{b}"]
        if lsq_acc >= ste_acc:
            qnet, doc = lsq_to_fake_quant(qat_models[("lsq", b)], b), "LSQ"
        else:
            qnet, doc = qat_models[("ste", b)], "STE"
        onnx_rows.append(_export(qnet, os.path.join(out_dir, f"model_w{b}a{b}.onnx"), x_te,
                                 y_te, f"W{b}A{b} QAT ({doc}), weights per channel, "
                                       "Clip between Q and DQ"))
        exported[f"model_w{b}a{b}.onnx"] = qnet

    # ---- picture: one layer's input activations and the range each method chose ----
    values = []
    probe = ptq_net(net, 8, True)
    probe.taps = {cfg.plot_layer: values.append}
    with torch.no_grad():
        for i in range(0, x_cal.shape[0], cfg.calib_batch_size):
            probe(x_cal[i:i + cfg.calib_batch_size])
    ranges = {}
    for b in [b for b in cfg.ptq_bits if b in (8, 4)]:
        ranges[b] = {}
        for m in methods:
            scale, zp = act_qp[(m.key, b)][cfg.plot_layer]
            qmin, qmax = act_range(b)
            ranges[b][m.label] = quant_range({"scale": scale, "zero_point": zp,
                                              "quant_min": qmin, "quant_max": qmax})
    plot_ranges(os.path.join(out_dir, "activation_ranges.png"), torch.cat(values),
                cfg.plot_layer, ranges)

    cfg_dict = asdict(cfg)
    cfg_dict["ptq_bits"] = list(cfg.ptq_bits)
    cfg_dict["qat_bits"] = list(cfg.qat_bits)
    res = {"config": cfg_dict, "qkit_version": qkit.__version__, "torch": torch.__version__,
           "data": {"train": int(len(y_tr)), "test": int(len(y_te)),
                    "calibration": int(len(x_cal))},
           "float_accuracy": float_acc, "float_train_seconds": float_secs,
           "ptq": ptq_rows, "missing_methods": missing, "qat": qat_rows, "targets": targets,
           "onnx": onnx_rows, "activation_ranges": {str(b): r for b, r in ranges.items()},
           "out_dir": out_dir}
    res["seconds"] = time.perf_counter() - t_start
    write_json(os.path.join(out_dir, "qparams.json"),
               {"note": "scale and zero point of every quantizer: <layer>.input (activation, "
                        "per tensor) and <layer>.weight (axis 0 when per channel)",
                "models": all_qparams})
    write_json(os.path.join(out_dir, "results.json"), res)
    table = format_table(res)
    with open(os.path.join(out_dir, "results.txt"), "w") as f:
        f.write(table + "\n")
    res["table"] = table
    res["models"] = exported      # the exported QuantNets (not in results.json)
    return res


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m qkit.demo", description=(
        "Train a small conv net on scikit-learn's digits, quantize it with every qkit "
        "calibration method and with QAT (STE, LSQ), export ONNX, print the results table."))
    d = DemoConfig()
    p.add_argument("--out", default="out/demo", help="output directory (default out/demo)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--epochs", type=int, default=d.epochs, help="float training epochs")
    p.add_argument("--qat-epochs", type=int, default=d.qat_epochs)
    p.add_argument("--width", type=int, default=d.width, help="conv1 channels")
    p.add_argument("--methods", default=None,
                   help="comma-separated subset of: " + ",".join(m.key for m in METHODS))
    p.add_argument("--input-calibration", choices=("minmax", "method"),
                   default=d.input_calibration,
                   help="calibrate the image input with min/max in every row (default) or "
                        "with the row's method")
    p.add_argument("--threads", type=int, default=d.threads)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    a = p.parse_args(argv)
    for name in ("epochs", "qat_epochs", "width", "threads"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(a, name)}")
    cfg = DemoConfig(seed=a.seed, epochs=a.epochs, qat_epochs=a.qat_epochs, width=a.width,
                     threads=a.threads, progress=not a.no_progress,
                     input_calibration=a.input_calibration,
                     methods=None if a.methods is None else [s.strip() for s in
                                                             a.methods.split(",") if s.strip()])
    if os.path.exists(a.out) and not os.path.isdir(a.out):
        print(f"error: --out {a.out!r} exists and is not a directory", file=sys.stderr)
        return 2
    try:
        res = run_demo(cfg, a.out)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(res["table"])
    return 0 if all(t["met"] for t in res["targets"]) else 1
