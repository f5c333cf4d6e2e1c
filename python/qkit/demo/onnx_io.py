"""ONNX export of a ``QuantNet`` whose quantizers are ``qkit.nn.FakeQuantize`` modules, and a
small reference evaluator used to check the exported file.

Export (opset 13): every quantizer becomes ``QuantizeLinear -> DequantizeLinear`` with the
scale and zero point qkit computed (per-axis for per-channel weights). When the quantizer's
integer range is narrower than its 8-bit storage type (4-bit or 2-bit codes) a ``Clip`` on the
integer codes sits between the pair, so the graph holds exactly qkit's codes. The float layers
map to Conv / Relu / MaxPool / Flatten / Gemm.

Debian's onnx 1.12 has no ``onnx.reference``, and there is no onnxruntime package, so
``run_reference`` evaluates the few operators used here itself, written from the ONNX operator
specification (QuantizeLinear: ``saturate(round_half_even(x / y_scale) + y_zero_point)``;
DequantizeLinear: ``(x - x_zero_point) * x_scale``; Clip; the float ops through plain torch).
It is a checking reference, independent of qkit's kernels; qkit never uses it to quantize.
"""
from typing import Dict, List

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import qkit

from .model import WEIGHT_LAYERS
from .quant import QuantNet

__all__ = ["export_onnx", "run_reference", "OPSET"]

OPSET = 13


def _storage(qmin: int, qmax: int):
    """(numpy dtype, onnx TensorProto type, storage min, storage max) holding [qmin, qmax]."""
    from onnx import TensorProto
    if qmin >= 0 and qmax <= 255:
        return np.uint8, TensorProto.UINT8, 0, 255
    if qmin >= -128 and qmax <= 127:
        return np.int8, TensorProto.INT8, -128, 127
    raise ValueError(f"export_onnx: quant range [{qmin}, {qmax}] does not fit 8 bits")


class _Builder:
    def __init__(self) -> None:
        self.nodes: List = []
        self.inits: List = []
        self.count = 0

    def name(self, base: str) -> str:
        self.count += 1
        return f"{base}_{self.count}"

    def const(self, base: str, value: np.ndarray) -> str:
        from onnx import numpy_helper
        n = self.name(base)
        self.inits.append(numpy_helper.from_array(np.asarray(value), n))
        return n

    def node(self, op: str, inputs: List[str], base: str, **attrs) -> str:
        from onnx import helper
        out = self.name(base)
        self.nodes.append(helper.make_node(op, inputs, [out], name=out + "_" + op, **attrs))
        return out

    def qdq(self, x: str, fq: nn.Module, base: str) -> str:
        """QuantizeLinear [-> Clip] -> DequantizeLinear with ``fq``'s scale and zero point."""
        if not isinstance(fq, qkit.nn.FakeQuantize):
            raise TypeError(f"export_onnx: {base} is {type(fq).__name__}, expected "
                            "qkit.nn.FakeQuantize (convert learned quantizers first)")
        qmin, qmax = int(fq.quant_min), int(fq.quant_max)
        np_t, _, smin, smax = _storage(qmin, qmax)
        scale = fq.scale.detach().to(torch.float32).numpy().reshape(-1)
        zp = fq.zero_point.detach().to(torch.int64).numpy().reshape(-1)
        if ((zp < qmin) | (zp > qmax)).any():
            raise ValueError(f"export_onnx: {base} zero point {zp} outside [{qmin}, {qmax}]")
        attrs = {}
        if fq.ch_axis is not None:
            attrs["axis"] = int(fq.ch_axis)
        else:
            scale, zp = scale.reshape(()), zp.reshape(())
        s = self.const(base + "_scale", scale.astype(np.float32))
        z = self.const(base + "_zero_point", zp.astype(np_t))
        q = self.node("QuantizeLinear", [x, s, z], base + "_q", **attrs)
        if (qmin, qmax) != (smin, smax):
            lo = self.const(base + "_qmin", np.array(qmin, dtype=np_t))
            hi = self.const(base + "_qmax", np.array(qmax, dtype=np_t))
            q = self.node("Clip", [q, lo, hi], base + "_clip")
        return self.node("DequantizeLinear", [q, s, z], base + "_dq", **attrs)


def export_onnx(qnet: QuantNet, path: str, doc: str = ""):
    """Writes ``qnet`` (FakeQuantize quantizers) to ``path``; returns the checked ModelProto."""
    import onnx
    from onnx import TensorProto, helper

    b = _Builder()
    x = "input"
    for name, layer in qnet.net.layers.named_children():
        if name in WEIGHT_LAYERS:
            xq = b.qdq(x, qnet.act_q[name], name + "_input")
            w = b.const(name + "_weight", layer.weight.detach().numpy().astype(np.float32))
            wq = b.qdq(w, qnet.weight_q[name], name + "_weight")
            bias = b.const(name + "_bias", layer.bias.detach().numpy().astype(np.float32))
            if isinstance(layer, nn.Conv2d):
                pads = list(layer.padding) * 2
                x = b.node("Conv", [xq, wq, bias], name, kernel_shape=list(layer.kernel_size),
                           strides=list(layer.stride), pads=pads)
            else:
                x = b.node("Gemm", [xq, wq, bias], name, transB=1)
        elif isinstance(layer, nn.ReLU):
            x = b.node("Relu", [x], name)
        elif isinstance(layer, nn.MaxPool2d):
            k = layer.kernel_size
            x = b.node("MaxPool", [x], name, kernel_shape=[k, k], strides=[k, k])
        elif isinstance(layer, nn.Flatten):
            x = b.node("Flatten", [x], name, axis=1)
        else:
            raise TypeError(f"export_onnx: no mapping for layer {name} ({type(layer).__name__})")
    b.nodes[-1].output[0] = "logits"
    graph = helper.make_graph(
        b.nodes, "qkit_demo_digits",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        initializer=b.inits)
    model = helper.make_model(graph, producer_name="qkit", producer_version=qkit.__version__,
                              opset_imports=[helper.make_opsetid("", OPSET)], doc_string=doc)
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    onnx.checker.check_model(path)
    return model


# ---- reference evaluator (ONNX operator semantics; see the module docstring) ----------------

def _axis_shape(v: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    if v.ndim == 0:
        return v
    shape = [1] * ndim
    shape[axis] = v.size
    return v.reshape(shape)


def _ref_quantize_linear(x, scale, zp, axis):
    info = np.iinfo(zp.dtype)
    s = _axis_shape(scale.astype(np.float32), x.ndim, axis)
    z = _axis_shape(zp.astype(np.int64), x.ndim, axis)
    q = np.rint(x.astype(np.float32) / s).astype(np.int64) + z   # rint: half to even
    return np.clip(q, info.min, info.max).astype(zp.dtype)


def _ref_dequantize_linear(q, scale, zp, axis):
    s = _axis_shape(scale.astype(np.float32), q.ndim, axis)
    z = _axis_shape(zp.astype(np.int64), q.ndim, axis)
    return ((q.astype(np.int64) - z).astype(np.float32) * s).astype(np.float32)


def run_reference(model, x: np.ndarray) -> np.ndarray:
    """Evaluates the exported graph on ``x`` (float32 [N, 1, 8, 8]); returns the logits."""
    from onnx import numpy_helper
    env: Dict[str, np.ndarray] = {i.name: np.array(numpy_helper.to_array(i))
                                  for i in model.graph.initializer}
    env["input"] = np.asarray(x, dtype=np.float32)
    t = torch.from_numpy
    for node in model.graph.node:
        a = {at.name: onnx_attr(at) for at in node.attribute}
        ins = [env[i] for i in node.input]
        op = node.op_type
        if op == "QuantizeLinear":
            out = _ref_quantize_linear(ins[0], ins[1], ins[2], a.get("axis", 1))
        elif op == "DequantizeLinear":
            out = _ref_dequantize_linear(ins[0], ins[1], ins[2], a.get("axis", 1))
        elif op == "Clip":
            out = np.minimum(np.maximum(ins[0], ins[1]), ins[2]).astype(ins[0].dtype)
        elif op == "Conv":
            pads = a.get("pads", [0, 0, 0, 0])
            out = F.conv2d(t(ins[0]), t(ins[1]), t(ins[2]), stride=tuple(a["strides"]),
                           padding=(pads[0], pads[1])).numpy()
        elif op == "Gemm":
            if a.get("transB", 0) != 1:
                raise NotImplementedError("run_reference: Gemm without transB=1")
            out = F.linear(t(ins[0]), t(ins[1]), t(ins[2])).numpy()
        elif op == "Relu":
            out = np.maximum(ins[0], np.float32(0))
        elif op == "MaxPool":
            k = a["kernel_shape"]
            out = F.max_pool2d(t(ins[0]), kernel_size=tuple(k), stride=tuple(a["strides"])).numpy()
        elif op == "Flatten":
            out = ins[0].reshape(ins[0].shape[0], -1)
        else:
            raise NotImplementedError(f"run_reference: operator {op}")
        env[node.output[0]] = np.ascontiguousarray(out)
    return env["logits"]


def onnx_attr(at):
    from onnx import helper
    return helper.get_attribute_value(at)
