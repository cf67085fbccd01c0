"""Darknet .cfg + .weights -> ONNX (YOLO v2/v3/v4 style networks).

The cfg is an INI-like list of sections, each a layer reading the previous one; the weights file is a
header (version, images seen) followed by every convolutional / connected layer's float32 parameters in
cfg order (with batch_normalize: biases, scales, rolling mean, rolling variance, then the kernel).
Batch normalisation is folded into the convolution here, as darknet's fused inference does. A [yolo] or
[region] layer is not decoded: the convolution feeding it is a model output (shape 1 x A*(5+classes) x H x W),
as the toolkit's YOLO examples expect; decoding runs in the user's post-processing.
ONNX names: ``{section}_{index}`` (the index as darknet prints it), the input is ``data``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from ..errors import BuildError
from .common import Conversion, LayerError, OnnxGraph, Unsupported, check_file

LOG = logging.getLogger(__name__)

ADVICE = "Convert the model to ONNX (e.g. with the darknet2onnx tools) and use load_onnx."
BN_EPS = 1e-5


def parse_cfg(text: str) -> List[Tuple[str, Dict[str, str]]]:
    """[(section, {key: value})] in file order; comments (#, ;) and blank lines ignored."""
    sections: List[Tuple[str, Dict[str, str]]] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            if not line.endswith("]"):
                raise BuildError(f"cfg line {lineno}: {raw.strip()!r} is not a [section] header")
            sections.append((line[1:-1].strip().lower(), {}))
        elif "=" in line:
            if not sections:
                raise BuildError(f"cfg line {lineno}: option before the first [section]")
            key, value = line.split("=", 1)
            sections[-1][1][key.strip()] = value.strip()
        else:
            raise BuildError(f"cfg line {lineno}: {raw.strip()!r} is neither [section] nor key=value")
    return sections


class _Weights:
    def __init__(self, data: Optional[bytes]) -> None:
        self.values: Optional[np.ndarray] = None
        self.pos = 0
        if data is None:
            return
        if len(data) < 16:
            raise BuildError("the weights file is shorter than darknet's header")
        major, minor, _rev = np.frombuffer(data[:12], np.int32)
        header = 20 if major * 10 + minor >= 2 and major < 1000 and minor < 1000 else 16
        self.values = np.frombuffer(data[header:], np.float32)

    def take(self, n: int, rng: np.random.Generator, kind: str = "weight", fan_in: int = 1) -> np.ndarray:
        if self.values is None:
            if kind == "var":
                return rng.uniform(0.5, 1.5, n).astype(np.float32)
            if kind == "scale":
                return rng.uniform(0.5, 1.5, n).astype(np.float32)
            return rng.normal(0, (2.0 / fan_in) ** 0.5 if kind == "weight" else 0.1, n).astype(np.float32)
        if self.pos + n > self.values.size:
            raise BuildError(f"the weights file ends after {self.values.size} floats but the cfg needs more; "
                             "check that the .weights belong to this .cfg")
        out = self.values[self.pos:self.pos + n]
        self.pos += n
        return out.copy()


class _Converter:
    def __init__(self, sections: list, weights: _Weights, name: str) -> None:
        self.sections = sections
        self.w = weights
        self.g = OnnxGraph(name)
        self.rng = np.random.default_rng(0)
        self.layers: List[Tuple[str, tuple]] = []  # per layer index: (onnx name, shape)
        self.outputs: List[str] = []
        self.unsupported = Unsupported("Darknet", ADVICE)

    def prev(self) -> Tuple[str, tuple]:
        return self.layers[-1] if self.layers else self.input

    def ref(self, value: str, index: int) -> Tuple[str, tuple]:
        k = int(value)
        k = index + k if k < 0 else k
        if not 0 <= k < index:
            raise LayerError(f"refers to layer {value} which does not exist before layer {index}")
        return self.layers[k]

    def activation(self, x: str, act: str, name: str) -> str:
        if act == "linear":
            return self.g.node("Identity", [x], name)
        if act == "leaky":
            return self.g.node("LeakyRelu", [x], name, alpha=0.1)
        if act == "relu":
            return self.g.node("Relu", [x], name)
        if act == "logistic":
            return self.g.node("Sigmoid", [x], name)
        if act == "tanh":
            return self.g.node("Tanh", [x], name)
        if act == "mish":
            t = self.g.node("Tanh", [self.g.node("Softplus", [x])])
            return self.g.node("Mul", [x, t], name)
        if act in ("swish", "silu"):
            return self.g.node("Mul", [x, self.g.node("Sigmoid", [x])], name)
        raise LayerError(f"activation {act!r} is not supported (linear, leaky, relu, logistic, tanh, mish, swish)")

    def run(self) -> Conversion:
        if not self.sections or self.sections[0][0] not in ("net", "network"):
            raise BuildError("the cfg does not start with a [net] section")
        net = self.sections[0][1]
        c, h, w = int(net.get("channels", 3)), int(net.get("height", 416)), int(net.get("width", 416))
        self.g.add_input("data", [1, c, h, w])
        self.input = ("data", (1, c, h, w))
        failed = False
        for index, (kind, opts) in enumerate(self.sections[1:]):
            handler = _HANDLERS.get(kind)
            name = f"{kind}_{index}"
            if handler is None:
                self.unsupported.add(f"[{kind}]", name)
                failed = True
                self.layers.append((name, ()))
                continue
            if failed:  # shapes after a failed layer are unknown: only collect unsupported types
                self.layers.append((name, ()))
                continue
            try:
                self.layers.append(handler(self, opts, index, name))
            except LayerError as exc:
                self.unsupported.add(f"[{kind}]", name, str(exc))
                failed = True
                self.layers.append((name, ()))
        self.unsupported.raise_if_any()
        if self.w.values is not None and self.w.pos != self.w.values.size:
            LOG.warning("the weights file has %d floats more than the cfg uses; check that they belong together",
                        self.w.values.size - self.w.pos)
        outputs = self.outputs or [self.layers[-1][0]]
        for name in dict.fromkeys(outputs):
            self.g.add_output(name)
        return Conversion(self.g.model("rknnlink.darknet"), {})


def _convolutional(c: _Converter, o: dict, index: int, name: str) -> tuple:
    x, (n, ch, h, w) = c.prev()
    filters, size, stride = int(o.get("filters", 1)), int(o.get("size", 1)), int(o.get("stride", 1))
    groups = int(o.get("groups", 1))
    pad = int(o["padding"]) if "padding" in o else (size // 2 if int(o.get("pad", 0)) else 0)
    fan_in = ch // groups * size * size
    bias = c.w.take(filters, c.rng, "bias")
    kernel_shape = (filters, ch // groups, size, size)
    if int(o.get("batch_normalize", 0)):
        scales = c.w.take(filters, c.rng, "scale")
        mean = c.w.take(filters, c.rng, "bias")
        var = c.w.take(filters, c.rng, "var")
        kernel = c.w.take(int(np.prod(kernel_shape)), c.rng, "weight", fan_in).reshape(kernel_shape)
        k = scales / np.sqrt(var + BN_EPS)
        kernel = kernel * k.reshape(-1, 1, 1, 1)
        bias = bias - mean * k
    else:
        kernel = c.w.take(int(np.prod(kernel_shape)), c.rng, "weight", fan_in).reshape(kernel_shape)
    act = o.get("activation", "logistic")
    pre = c.g.node("Conv", [x, c.g.const(f"{name}_weight", kernel.astype(np.float32)),
                            c.g.const(f"{name}_bias", bias.astype(np.float32))],
                   name if act == "linear" else c.g.fresh(f"{name}_conv"), name=name,
                   kernel_shape=[size, size], strides=[stride, stride], pads=[pad] * 4, group=groups)
    out = pre if act == "linear" else c.activation(pre, act, name)
    oh, ow = (h + 2 * pad - size) // stride + 1, (w + 2 * pad - size) // stride + 1
    return out, (n, filters, oh, ow)


def _maxpool(c: _Converter, o: dict, index: int, name: str) -> tuple:
    x, (n, ch, h, w) = c.prev()
    size = int(o.get("size", 2))
    stride = int(o.get("stride", size))
    padding = int(o.get("padding", size - 1))
    oh, ow = (h + padding - size) // stride + 1, (w + padding - size) // stride + 1
    begin = padding // 2
    ends = [max((oh - 1) * stride + size - h - begin, 0), max((ow - 1) * stride + size - w - begin, 0)]
    out = c.g.node("MaxPool", [x], name, kernel_shape=[size, size], strides=[stride, stride],
                   pads=[begin, begin, ends[0], ends[1]])
    return out, (n, ch, oh, ow)


def _avgpool(c: _Converter, o: dict, index: int, name: str) -> tuple:
    x, (n, ch, _h, _w) = c.prev()
    return c.g.node("GlobalAveragePool", [x], name), (n, ch, 1, 1)


def _route(c: _Converter, o: dict, index: int, name: str) -> tuple:
    refs = [c.ref(v.strip(), index) for v in o.get("layers", "").split(",") if v.strip()]
    if not refs:
        raise LayerError("route without layers=")
    groups, group_id = int(o.get("groups", 1)), int(o.get("group_id", 0))
    if len(refs) == 1:
        x, shape = refs[0]
    else:
        x = c.g.node("Concat", [r[0] for r in refs], name if groups == 1 else None, axis=1)
        shape = (refs[0][1][0], sum(r[1][1] for r in refs)) + refs[0][1][2:]
    if groups == 1:
        if len(refs) == 1:
            x = c.g.node("Identity", [x], name)
        return x, shape
    part = shape[1] // groups
    out = c.g.node("Slice", [x, c.g.const("starts", np.array([group_id * part], np.int64)),
                             c.g.const("ends", np.array([(group_id + 1) * part], np.int64)),
                             c.g.const("axes", np.array([1], np.int64))], name)
    return out, (shape[0], part) + shape[2:]


def _shortcut(c: _Converter, o: dict, index: int, name: str) -> tuple:
    x, shape = c.prev()
    other, other_shape = c.ref(o.get("from", "-3"), index)
    if other_shape != shape:
        raise LayerError(f"shortcut of shapes {list(shape)} and {list(other_shape)} is not supported")
    act = o.get("activation", "linear")
    s = c.g.node("Add", [x, other], name if act == "linear" else c.g.fresh(f"{name}_add"))
    return (s if act == "linear" else c.activation(s, act, name)), shape


def _upsample(c: _Converter, o: dict, index: int, name: str) -> tuple:
    x, (n, ch, h, w) = c.prev()
    stride = int(o.get("stride", 2))
    out = (n, ch, h * stride, w * stride)
    return c.g.node("Resize", [x, "", "", c.g.const("sizes", np.array(out, np.int64))], name, mode="nearest",
                    coordinate_transformation_mode="asymmetric", nearest_mode="floor"), out


def _yolo(c: _Converter, o: dict, index: int, name: str) -> tuple:
    x, shape = c.prev()
    c.outputs.append(x)  # the raw head: decoding is post-processing, as the toolkit's examples do it
    return x, shape


def _dropout(c: _Converter, o: dict, index: int, name: str) -> tuple:
    return c.prev()


def _connected(c: _Converter, o: dict, index: int, name: str) -> tuple:
    x, shape = c.prev()
    k = int(np.prod(shape[1:]))
    out = int(o.get("output", 1))
    bias = c.w.take(out, c.rng, "bias")
    weight = c.w.take(out * k, c.rng, "weight", k).reshape(out, k)
    if int(o.get("batch_normalize", 0)):
        raise LayerError("batch_normalize on [connected] is not supported")
    flat = c.g.node("Flatten", [x], axis=1) if len(shape) != 2 else x
    act = o.get("activation", "logistic")
    y = c.g.node("Gemm", [flat, c.g.const(f"{name}_weight", weight), c.g.const(f"{name}_bias", bias)],
                 name if act == "linear" else c.g.fresh(f"{name}_fc"), transB=1)
    return (y if act == "linear" else c.activation(y, act, name)), (shape[0], out)


def _softmax(c: _Converter, o: dict, index: int, name: str) -> tuple:
    x, shape = c.prev()
    return c.g.node("Softmax", [x], name, axis=1), shape


_HANDLERS: Dict[str, Callable] = {
    "convolutional": _convolutional, "conv": _convolutional, "maxpool": _maxpool, "max": _maxpool,
    "avgpool": _avgpool, "avg": _avgpool, "route": _route, "shortcut": _shortcut, "upsample": _upsample,
    "yolo": _yolo, "region": _yolo, "dropout": _dropout, "connected": _connected, "softmax": _softmax,
}


def convert_darknet(model: Any, weight: Optional[Any]) -> Conversion:
    """Read a darknet cfg and its weights (None: random weights) into an ONNX model."""
    cfg = check_file(model, "Model file")
    data = check_file(weight, "Weight file").read_bytes() if weight is not None else None
    sections = parse_cfg(cfg.read_text(errors="replace"))
    conversion = _Converter(sections, _Weights(data), Path(cfg).stem).run()
    LOG.info("Darknet %s: %d layers -> %d ONNX nodes", cfg.name, len(sections) - 1,
             len(conversion.model.graph.node))
    return conversion
