"""Results table, JSON files and the histogram picture."""
import json
import os
from typing import Dict, List, Optional

import torch

import qkit

__all__ = ["format_table", "write_json", "plot_ranges", "quant_range"]


def _pct(v: Optional[float]) -> str:
    return "     -" if v is None else f"{v:6.2f}"


def format_table(res: Dict) -> str:
    """The text table printed at the end of a run (and pasted in README.md)."""
    lines = []
    cfg = res["config"]
    lines.append(f"qkit demo: sklearn digits, {res['data']['train']} train / "
                 f"{res['data']['test']} test images, DigitsNet(width={cfg['width']}), "
                 f"seed {cfg['seed']}")
    lines.append(f"float accuracy: {res['float_accuracy']:.2f} %")
    lines.append("")
    bits = cfg["ptq_bits"]
    inp = ("image input: min/max" if cfg.get("input_calibration", "minmax") == "minmax"
           else "image input: the method too")
    lines.append("post-training quantization, test accuracy % (weights: symmetric min/max per "
                 f"tensor / per channel; activations: the method; {inp})")
    head = f"{'method':<18}" + "".join(f" W{b}A{b} tensor W{b}A{b} channel" for b in bits)
    head += "  calib s"
    lines.append(head)
    lines.append("-" * len(head))
    for m in res["ptq"]:
        row = f"{m['label']:<18}"
        for b in bits:
            r = m["accuracy"][f"W{b}A{b}"]
            row += f" {_pct(r['per_tensor']):>11} {_pct(r['per_channel']):>12}"
        row += f"  {m['calib_seconds']:7.2f}"
        lines.append(row)
    for key in res.get("missing_methods", []):
        lines.append(f"{key:<18} (not in this qkit build)")
    lines.append("")
    qbits = cfg["qat_bits"]
    lines.append(f"quantization-aware training, test accuracy % ({cfg['qat_epochs']} epochs from "
                 "the float model; weights per channel)")
    head = f"{'method':<18}" + "".join(f" {'W%dA%d' % (b, b):>8}" for b in qbits) + "  train s"
    lines.append(head)
    lines.append("-" * len(head))
    for q in res["qat"]:
        row = f"{q['label']:<18}" + "".join(
            f" {_pct(q['accuracy'].get(f'W{b}A{b}')):>8}" for b in qbits)
        row += f"  {q['train_seconds']:7.2f}"
        lines.append(row)
    lines.append("")
    lines.append("targets")
    for t in res["targets"]:
        lines.append(f"  [{'ok' if t['met'] else 'MISSED'}] {t['what']}: {t['detail']}")
    lines.append("")
    lines.append("onnx")
    for e in res["onnx"]:
        lines.append(f"  {e['file']}: {e['nodes']} nodes ({e['qdq_pairs']} Q/DQ pairs, "
                     f"{e['clips']} Clip), onnx.checker ok; reference run vs qkit fake-quant: "
                     f"max |diff| {e['max_abs_diff']:.3g}, same prediction "
                     f"{e['same_prediction']}/{e['inputs']}, accuracy {e['accuracy']:.2f} %")
    lines.append(f"total time {res['seconds']:.1f} s; files in {res['out_dir']}")
    return "\n".join(lines)


def write_json(path: str, obj) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def quant_range(qp: Dict) -> List[float]:
    """The real range ``[lo, hi]`` a per-tensor (scale, zero point) represents: qkit's
    dequantization of the codes ``quant_min`` and ``quant_max``."""
    codes = torch.tensor([qp["quant_min"], qp["quant_max"]], dtype=torch.int32)
    vals = qkit.ops.dequantize(codes, torch.as_tensor(qp["scale"], dtype=torch.float32),
                               torch.as_tensor(qp["zero_point"], dtype=torch.float32),
                               quant_min=qp["quant_min"], quant_max=qp["quant_max"])
    return [float(v) for v in vals]


def plot_ranges(path: str, values: torch.Tensor, layer: str,
                ranges: Dict[int, Dict[str, List[float]]]) -> None:
    """Histogram of ``values`` (one layer's input activations over the calibration set), one
    panel per bit width, with the upper end of the range each method chose."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    v = values.reshape(-1).numpy()
    fig, axes = plt.subplots(len(ranges), 1, figsize=(11, 3.2 * len(ranges)), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (bits, by_method) in zip(axes[:, 0], sorted(ranges.items(), reverse=True)):
        ax.hist(v, bins=200, color="0.6", log=True)
        for i, (label, (lo, hi)) in enumerate(by_method.items()):
            ax.axvline(hi, color=colors[i % len(colors)], linestyle="--", linewidth=1.5,
                       label=f"{label}: [{lo:.3g}, {hi:.3g}]")
        ax.set_title(f"{layer} input activations (calibration set), ranges chosen at "
                     f"{bits}-bit")
        ax.set_xlabel("activation value")
        ax.set_ylabel("count (log)")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
