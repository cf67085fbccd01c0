"""Caffe deploy prototxt + caffemodel -> ONNX, through rknnlink's own caffe.proto (no Caffe install needed).

The prototxt gives the structure (read by field name with protobuf's text format); the caffemodel gives the
weights, matched to layers by name (read by field number, so a caffemodel of any fork yields its blobs).
``blobs=None`` builds with random weights, as the toolkit does, for trying a network's structure. In-place
layers (``top == bottom``) get SSA names: every version of a blob but the last is named after the layer
that wrote it, the last keeps the blob's name, so graph outputs carry Caffe's blob names.

Caffe semantics kept: pooling rounds its output size up (unless ``round_mode: FLOOR``) and clips the last
window to the padded input; BatchNorm divides its statistics by the third blob and merges with a
following Scale; PriorBox is evaluated here into a constant (it only depends on shapes), as the toolkit
does; Normalize (SSD) is written as x / sqrt(sum x^2 + eps) * scale.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from ..errors import BuildError
from .common import Conversion, LayerError, OnnxGraph, Unsupported, check_file

LOG = logging.getLogger(__name__)

ADVICE = ("Remove them from the deploy prototxt and run them on the CPU (as the toolkit's examples do for "
          "DetectionOutput), or convert the model to ONNX and use load_onnx.")
V1_ADVICE = ("The prototxt uses Caffe's old V1 'layers' format, which is not supported: upgrade it with Caffe's "
             "tools (upgrade_net_proto_text for the prototxt, upgrade_net_proto_binary for the caffemodel) and "
             "load the upgraded files.")
_SKIPPED = ("Dropout", "Silence", "Split")  # identity at inference (Split: every top is the bottom)


def _pb2():
    try:
        from . import caffe_pb2
    except ImportError as exc:  # pragma: no cover - protobuf missing
        raise BuildError("load_caffe needs the protobuf package: pip install protobuf") from exc
    return caffe_pb2


def _blob_array(blob: Any) -> np.ndarray:
    data = np.array(blob.data if len(blob.data) else blob.double_data, dtype=np.float32)
    if blob.HasField("shape"):
        shape = [int(d) for d in blob.shape.dim]
    else:
        shape = [d for d in (blob.num, blob.channels, blob.height, blob.width)]
        while len(shape) > 1 and shape[0] in (0, 1) and int(np.prod([max(d, 1) for d in shape[1:]])) == data.size:
            shape = shape[1:]
        shape = [max(d, 1) for d in shape]
    if int(np.prod(shape)) != data.size:
        shape = [data.size]
    return data.reshape(shape)


class _Converter:
    def __init__(self, net: Any, weights: Optional[Dict[str, List[np.ndarray]]], name: str,
                 input_name: Optional[Any]) -> None:
        self.net = net
        self.weights = weights
        self.g = OnnxGraph(name)
        self.rng = np.random.default_rng(0)
        self.blob: Dict[str, str] = {}  # caffe blob -> current ONNX name
        self.shape: Dict[str, tuple] = {}  # ONNX name -> shape
        self.consumed: set = set()
        self.unsupported = Unsupported("Caffe", ADVICE)
        self.input_name = input_name
        self.constants: Dict[str, np.ndarray] = {}  # blobs computed here (PriorBox)
        self.bn_nodes: Dict[str, Any] = {}  # ONNX output name -> BatchNormalization node (Scale merges in)
        layers = list(net.layer)
        self.layers = [layer for layer in layers if not any(r.phase == 0 for r in layer.include)]
        writes: Dict[str, int] = {}
        for layer in self.layers:
            for top in layer.top:
                writes[top] = writes.get(top, 0) + 1
        self.remaining_writes = writes
        for top in writes:
            self.g.claim(top)

    # ------------------------------------------------------------------ tensors

    def x(self, layer: Any, i: int = 0) -> str:
        bottom = layer.bottom[i]
        if bottom not in self.blob:
            raise LayerError(f"bottom {bottom!r} is not produced by an earlier layer")
        name = self.blob[bottom]
        self.consumed.add(name)
        return name

    def xshape(self, layer: Any, i: int = 0) -> tuple:
        return self.shape[self.blob[layer.bottom[i]]]

    def top_name(self, layer: Any, i: int = 0) -> str:
        top = layer.top[i]
        self.remaining_writes[top] -= 1
        if self.remaining_writes[top] == 0:
            return top
        return self.g.fresh(layer.name or top)

    def set_top(self, layer: Any, name: str, shape: Sequence[int], i: int = 0) -> None:
        self.blob[layer.top[i]] = name
        self.shape[name] = tuple(int(d) for d in shape)

    def out(self, layer: Any, op: str, inputs: list, shape: Sequence[int], **attrs: Any) -> str:
        name = self.top_name(layer)
        self.g.node(op, inputs, name, name=layer.name or None, **attrs)
        self.set_top(layer, name, shape)
        return name

    def params(self, layer: Any, shapes: List[tuple], kinds: Sequence[str] = ()) -> List[np.ndarray]:
        """The layer's blobs from the caffemodel, or random ones of the expected shapes (blobs=None)."""
        if self.weights is None:
            out = []
            for k, shape in enumerate(shapes):
                kind = kinds[k] if k < len(kinds) else "weight"
                if kind == "var":
                    out.append(self.rng.uniform(0.5, 1.5, shape).astype(np.float32))
                elif kind == "one":
                    out.append(np.ones(shape, np.float32))
                else:
                    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
                    out.append(self.rng.normal(0, (2.0 / max(fan_in, 1)) ** 0.5 if kind == "weight" else 0.1,
                                               shape).astype(np.float32))
            return out
        blobs = self.weights.get(layer.name)
        if blobs is None or len(blobs) < len(shapes):
            raise LayerError(f"the caffemodel has {0 if blobs is None else len(blobs)} blobs for layer "
                             f"{layer.name!r}, {len(shapes)} expected; check that prototxt and caffemodel match")
        out = []
        for b, shape in zip(blobs, shapes):
            if b.size != int(np.prod(shape)):
                raise LayerError(f"blob of shape {list(b.shape)} where {list(shape)} is expected; check that "
                                 "prototxt and caffemodel match")
            out.append(b.reshape(shape))
        return out

    def const(self, layer: Any, suffix: str, value: np.ndarray) -> str:
        return self.g.const(f"{layer.name}_{suffix}", value)

    # ------------------------------------------------------------------ conversion

    def inputs(self) -> None:
        net = self.net
        declared: List[tuple] = []
        for k, name in enumerate(net.input):
            if k < len(net.input_shape):
                shape = [int(d) for d in net.input_shape[k].dim]
            else:
                shape = [int(d) for d in net.input_dim[4 * k:4 * k + 4]]
            declared.append((name, shape))
        for layer in self.layers:
            if layer.type == "Input":
                for k, top in enumerate(layer.top):
                    shapes = layer.input_param.shape
                    shape = [int(d) for d in shapes[min(k, len(shapes) - 1)].dim] if shapes else []
                    declared.append((top, shape))
        if not declared:
            raise BuildError("the prototxt declares no input (input:/input_shape: or an Input layer)")
        if self.input_name is not None:
            wanted = [self.input_name] if isinstance(self.input_name, str) else list(self.input_name)
            known = [n for n, _ in declared]
            missing = [n for n in wanted if n not in known]
            if missing:
                raise BuildError(f"input_name {missing} is not an input of the prototxt (inputs: {known})")
            declared = [d for n in wanted for d in declared if d[0] == n]
        for name, shape in declared:
            if not shape or any(d < 1 for d in shape):
                raise BuildError(f"Caffe input {name!r} has no fixed shape ({shape}); give input_shape "
                                 "{ dim: 1 dim: 3 dim: H dim: W } in the prototxt")
            self.remaining_writes[name] = self.remaining_writes.get(name, 1) - (1 if name in self.remaining_writes
                                                                                 else 0)
            self.g.add_input(name, shape)
            self.blob[name] = name
            self.shape[name] = tuple(shape)

    def run(self) -> Conversion:
        self.inputs()
        for layer in self.layers:
            if layer.type == "Input":
                continue
            handler = _HANDLERS.get(layer.type)
            if handler is None:
                self.unsupported.add(layer.type, layer.name)
                continue
            if any(b not in self.blob for b in layer.bottom):
                continue  # fed by a layer that failed: reported there
            try:
                handler(self, layer)
            except LayerError as exc:
                self.unsupported.add(layer.type, layer.name, str(exc))
        self.unsupported.raise_if_any()
        finals = []
        for layer in self.layers:
            for top in layer.top:
                name = self.blob.get(top)
                if name is not None and name not in self.consumed and name not in finals \
                        and name not in [i.name for i in self.g.inputs]:
                    finals.append(name)
        for name in finals:
            if name in self.constants:
                LOG.info("Caffe blob %r is a constant (e.g. PriorBox): not a model output", name)
                continue
            self.g.add_output(name)
        return Conversion(self.g.model("rknnlink.caffe"), {})


# ---------------------------------------------------------------------- layer translations


def _pair(values: Sequence[int], h: int, w: int, default: int) -> tuple:
    if h or w:
        return int(h), int(w)
    if len(values) == 0:
        return default, default
    if len(values) == 1:
        return int(values[0]), int(values[0])
    return int(values[0]), int(values[1])


def _conv_geometry(p: Any) -> tuple:
    k = _pair(p.kernel_size, p.kernel_h, p.kernel_w, 1)
    s = _pair(p.stride, p.stride_h, p.stride_w, 1)
    pad = _pair(p.pad, p.pad_h, p.pad_w, 0)
    d = _pair(p.dilation, 0, 0, 1)
    return k, s, pad, d


def _convolution(c: _Converter, layer: Any) -> None:
    p = layer.convolution_param
    n, ch, h, w = c.xshape(layer)
    k, s, pad, d = _conv_geometry(p)
    group = int(p.group)
    o = int(p.num_output)
    shapes = [(o, ch // group, k[0], k[1])] + ([(o,)] if p.bias_term else [])
    blobs = c.params(layer, shapes, ("weight", "bias"))
    inputs = [c.x(layer), c.const(layer, "weight", blobs[0])] + ([c.const(layer, "bias", blobs[1])]
                                                               if p.bias_term else [])
    oh = (h + 2 * pad[0] - (d[0] * (k[0] - 1) + 1)) // s[0] + 1
    ow = (w + 2 * pad[1] - (d[1] * (k[1] - 1) + 1)) // s[1] + 1
    c.out(layer, "Conv", inputs, (n, o, oh, ow), kernel_shape=list(k), strides=list(s), dilations=list(d),
          pads=[pad[0], pad[1], pad[0], pad[1]], group=group)


def _deconvolution(c: _Converter, layer: Any) -> None:
    p = layer.convolution_param
    n, ch, h, w = c.xshape(layer)
    k, s, pad, d = _conv_geometry(p)
    group = int(p.group)
    o = int(p.num_output)
    shapes = [(ch, o // group, k[0], k[1])] + ([(o,)] if p.bias_term else [])
    blobs = c.params(layer, shapes, ("weight", "bias"))
    inputs = [c.x(layer), c.const(layer, "weight", blobs[0])] + ([c.const(layer, "bias", blobs[1])]
                                                               if p.bias_term else [])
    oh = (h - 1) * s[0] - 2 * pad[0] + d[0] * (k[0] - 1) + 1
    ow = (w - 1) * s[1] - 2 * pad[1] + d[1] * (k[1] - 1) + 1
    c.out(layer, "ConvTranspose", inputs, (n, o, oh, ow), kernel_shape=list(k), strides=list(s),
          dilations=list(d), pads=[pad[0], pad[1], pad[0], pad[1]], group=group)


def _inner_product(c: _Converter, layer: Any) -> None:
    p = layer.inner_product_param
    shape = c.xshape(layer)
    axis = int(p.axis) % len(shape)
    rows, k = int(np.prod(shape[:axis])), int(np.prod(shape[axis:]))
    o = int(p.num_output)
    wshape = (k, o) if p.transpose else (o, k)
    blobs = c.params(layer, [wshape] + ([(o,)] if p.bias_term else []), ("weight", "bias"))
    x = c.x(layer)
    if len(shape) != 2 or axis != 1:
        x = c.g.node("Flatten", [x], axis=axis)  # batch-agnostic, so rknn_batch_size works
    inputs = [x, c.const(layer, "weight", blobs[0])] + ([c.const(layer, "bias", blobs[1])] if p.bias_term else [])
    c.out(layer, "Gemm", inputs, (rows, o), transB=0 if p.transpose else 1)


def _pooling(c: _Converter, layer: Any) -> None:
    p = layer.pooling_param
    n, ch, h, w = c.xshape(layer)
    if p.pool == 2:
        raise LayerError("STOCHASTIC pooling is a training-time layer")
    op = "MaxPool" if p.pool == 0 else "AveragePool"
    if p.global_pooling:
        c.out(layer, "Global" + op, [c.x(layer)], (n, ch, 1, 1))
        return
    k = _pair([p.kernel_size] if p.HasField("kernel_size") else [], p.kernel_h, p.kernel_w, 1)
    s = _pair([p.stride], p.stride_h, p.stride_w, 1)
    pad = _pair([p.pad], p.pad_h, p.pad_w, 0)
    ceil = p.round_mode == 0 and (not p.HasField("ceil_mode") or p.ceil_mode)
    size = []
    for i, n_in in enumerate((h, w)):
        span = n_in + 2 * pad[i] - k[i]
        out = (-(-span // s[i]) if ceil else span // s[i]) + 1
        if pad[i] and (out - 1) * s[i] >= n_in + pad[i]:
            out -= 1  # the last window must start inside the input or its left padding
        size.append(out)
    # explicit end padding reproduces Caffe's size; ONNX then clips windows exactly like Caffe does
    ends = [max((size[i] - 1) * s[i] + k[i] - n_in - pad[i], 0) for i, n_in in enumerate((h, w))]
    extra: Dict[str, Any] = {}
    if op == "AveragePool":
        # Caffe divides by the window clipped to the padded input: with padding that counts the pad,
        # without padding it is the window clipped to the image
        extra["count_include_pad"] = 1 if any(pad) else 0
    if any(e > pad[i] for i, e in enumerate(ends)) and op == "AveragePool" and any(pad):
        raise LayerError("average pooling whose last window runs past the padding is not supported")
    c.out(layer, op, [c.x(layer)], (n, ch, size[0], size[1]), kernel_shape=list(k), strides=list(s),
          pads=[pad[0], pad[1], ends[0], ends[1]], **extra)


def _relu(c: _Converter, layer: Any) -> None:
    slope = float(layer.relu_param.negative_slope)
    if slope:
        c.out(layer, "LeakyRelu", [c.x(layer)], c.xshape(layer), alpha=slope)
    else:
        c.out(layer, "Relu", [c.x(layer)], c.xshape(layer))


def _prelu(c: _Converter, layer: Any) -> None:
    shape = c.xshape(layer)
    shared = layer.prelu_param.channel_shared
    (slope,) = c.params(layer, [(1,) if shared else (shape[1],)], ("one",))
    slope = slope * (0.25 if c.weights is None else 1.0)
    slope = slope.reshape((-1,) + (1,) * (len(shape) - 2)) if not shared else slope
    c.out(layer, "PRelu", [c.x(layer), c.const(layer, "slope", slope.astype(np.float32))], shape)


def _simple(op: str) -> Callable:
    def convert(c: _Converter, layer: Any) -> None:
        c.out(layer, op, [c.x(layer)], c.xshape(layer))
    return convert


def _elu(c: _Converter, layer: Any) -> None:
    c.out(layer, "Elu", [c.x(layer)], c.xshape(layer), alpha=float(layer.elu_param.alpha))


def _power(c: _Converter, layer: Any) -> None:
    p = layer.power_param
    x = c.x(layer)
    if p.scale != 1.0:
        x = c.g.node("Mul", [x, c.const(layer, "scale", np.float32(p.scale))])
    if p.shift != 0.0:
        x = c.g.node("Add", [x, c.const(layer, "shift", np.float32(p.shift))])
    if p.power != 1.0:
        x = c.g.node("Pow", [x, c.const(layer, "power", np.float32(p.power))])
    c.out(layer, "Identity", [x], c.xshape(layer))


def _batchnorm(c: _Converter, layer: Any) -> None:
    shape = c.xshape(layer)
    ch = shape[1]
    mean, var, factor = c.params(layer, [(ch,), (ch,), (1,)], ("bias", "var", "one"))
    f = float(factor.ravel()[0])
    f = 0.0 if f == 0 else 1.0 / f
    name = c.out(layer, "BatchNormalization",
                 [c.x(layer), c.const(layer, "gamma", np.ones(ch, np.float32)),
                  c.const(layer, "beta", np.zeros(ch, np.float32)), c.const(layer, "mean", mean * f),
                  c.const(layer, "var", var * f)], shape, epsilon=float(layer.batch_norm_param.eps))
    c.bn_nodes[name] = c.g.nodes[-1]


def _scale(c: _Converter, layer: Any) -> None:
    p = layer.scale_param
    shape = c.xshape(layer)
    if len(layer.bottom) > 1:
        c.out(layer, "Mul", [c.x(layer), c.x(layer, 1)], shape)
        return
    axis = int(p.axis) % len(shape)
    num_axes = int(p.num_axes) if p.num_axes >= 0 else len(shape) - axis
    pshape = tuple(shape[axis:axis + num_axes])
    blobs = c.params(layer, [pshape] + ([pshape] if p.bias_term else []), ("one", "bias"))
    gamma = blobs[0]
    beta = blobs[1] if p.bias_term else np.zeros(pshape, np.float32)
    src = c.blob[layer.bottom[0]]
    bn = c.bn_nodes.get(src)
    if bn is not None and axis == 1 and num_axes == 1 and src not in c.consumed:
        # BatchNorm + Scale is one BatchNormalization (which prepare then folds into the convolution)
        for slot, value in ((1, gamma), (2, beta)):
            init = next(i for i in c.g.initializers if i.name == bn.input[slot])
            init.CopyFrom(c.g.numpy_helper.from_array(value.astype(np.float32).ravel(), init.name))
        c.x(layer)
        top = c.top_name(layer)
        c.g.node("Identity", [src], top, name=layer.name)
        c.set_top(layer, top, shape)
        del c.bn_nodes[src]
        return
    full = pshape + (1,) * (len(shape) - axis - num_axes)
    x = c.g.node("Mul", [c.x(layer), c.const(layer, "gamma", gamma.reshape(full))])
    if p.bias_term:
        x = c.g.node("Add", [x, c.const(layer, "beta", beta.reshape(full))])
    c.out(layer, "Identity", [x], shape)


def _bias(c: _Converter, layer: Any) -> None:
    shape = c.xshape(layer)
    if len(layer.bottom) > 1:
        c.out(layer, "Add", [c.x(layer), c.x(layer, 1)], shape)
        return
    (b,) = c.params(layer, [(shape[1],)], ("bias",))
    c.out(layer, "Add", [c.x(layer), c.const(layer, "bias", b.reshape((-1,) + (1,) * (len(shape) - 2)))], shape)


def _eltwise(c: _Converter, layer: Any) -> None:
    p = layer.eltwise_param
    shape = c.xshape(layer)
    xs = [c.x(layer, i) for i in range(len(layer.bottom))]
    if p.operation == 1 and len(p.coeff):
        if len(p.coeff) != len(xs):
            raise LayerError("Eltwise SUM needs one coeff per bottom")
        xs = [x if float(k) == 1.0 else c.g.node("Mul", [x, c.const(layer, f"coeff{i}", np.float32(k))])
              for i, (x, k) in enumerate(zip(xs, p.coeff))]
    op = {0: "Mul", 1: "Add", 2: "Max"}[int(p.operation)]
    acc = xs[0]
    for x in xs[1:-1]:
        acc = c.g.node(op, [acc, x])
    c.out(layer, op, [acc, xs[-1]] if len(xs) > 1 else [acc], shape)


def _concat(c: _Converter, layer: Any) -> None:
    p = layer.concat_param
    shapes = [c.xshape(layer, i) for i in range(len(layer.bottom))]
    axis = int(p.axis if p.HasField("axis") or not p.HasField("concat_dim") else p.concat_dim) % len(shapes[0])
    out = list(shapes[0])
    out[axis] = sum(s[axis] for s in shapes)
    names = [c.blob[b] for b in layer.bottom]
    if all(n in c.constants for n in names):  # e.g. SSD's mbox_priorbox: all PriorBox outputs
        _constant_top(c, layer, np.concatenate([c.constants[n] for n in names], axis=axis))
        return
    c.out(layer, "Concat", [c.x(layer, i) for i in range(len(layer.bottom))], out, axis=axis)


def _slice(c: _Converter, layer: Any) -> None:
    p = layer.slice_param
    shape = c.xshape(layer)
    axis = int(p.axis if p.HasField("axis") or not p.HasField("slice_dim") else p.slice_dim) % len(shape)
    n = len(layer.top)
    points = [0] + [int(v) for v in p.slice_point] + [shape[axis]] if len(p.slice_point) else \
        [shape[axis] * i // n for i in range(n + 1)]
    sizes = [b - a for a, b in zip(points, points[1:])]
    if len(sizes) != n:
        raise LayerError(f"{len(p.slice_point)} slice points for {n} tops")
    names = [c.top_name(layer, i) for i in range(n)]
    c.g.node("Split", [c.x(layer), c.const(layer, "split", np.array(sizes, np.int64))], names[0], outputs=names,
             name=layer.name, axis=axis)
    for i, (name, size) in enumerate(zip(names, sizes)):
        s = list(shape)
        s[axis] = size
        c.set_top(layer, name, s, i)


def _softmax(c: _Converter, layer: Any) -> None:
    shape = c.xshape(layer)
    c.out(layer, "Softmax", [c.x(layer)], shape, axis=int(layer.softmax_param.axis) % len(shape))


def _reshape_to(c: _Converter, layer: Any, out: Sequence[int]) -> None:
    c.out(layer, "Reshape", [c.x(layer), c.const(layer, "shape", np.array(out, np.int64))], out)


def _flatten(c: _Converter, layer: Any) -> None:
    p = layer.flatten_param
    shape = c.xshape(layer)
    a, e = int(p.axis) % len(shape), int(p.end_axis) % len(shape)
    _reshape_to(c, layer, list(shape[:a]) + [int(np.prod(shape[a:e + 1]))] + list(shape[e + 1:]))


def _reshape(c: _Converter, layer: Any) -> None:
    p = layer.reshape_param
    shape = list(c.xshape(layer))
    axis = int(p.axis) % (len(shape) + 1)
    end = len(shape) if p.num_axes < 0 else axis + int(p.num_axes)
    dims = [int(d) for d in p.shape.dim]
    new = [shape[axis + i] if d == 0 else d for i, d in enumerate(dims)]
    out = shape[:axis] + new + shape[end:]
    if -1 in out:
        known = int(np.prod([d for d in out if d != -1]))
        out[out.index(-1)] = int(np.prod(shape)) // known
    _reshape_to(c, layer, out)


def _permute(c: _Converter, layer: Any) -> None:
    shape = c.xshape(layer)
    order = [int(o) for o in layer.permute_param.order]
    order += [i for i in range(len(shape)) if i not in order]
    c.out(layer, "Transpose", [c.x(layer)], [shape[o] for o in order], perm=order)


def _upsample(c: _Converter, layer: Any) -> None:
    if len(layer.bottom) > 1:
        raise LayerError("Upsample with pooling indices (SegNet) is not supported; use nearest scale upsampling")
    p = layer.upsample_param
    n, ch, h, w = c.xshape(layer)
    sh, sw = (int(p.scale_h) or int(p.scale)), (int(p.scale_w) or int(p.scale))
    out = (n, ch, h * sh, w * sw)
    c.out(layer, "Resize", [c.x(layer), "", "", c.const(layer, "sizes", np.array(out, np.int64))], out,
          mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")


def _interp(c: _Converter, layer: Any) -> None:
    p = layer.interp_param
    n, ch, h, w = c.xshape(layer)
    if p.pad_beg or p.pad_end:
        raise LayerError("Interp with pad_beg/pad_end is not supported")
    if p.height and p.width:
        oh, ow = int(p.height), int(p.width)
    elif p.zoom_factor > 1:
        oh, ow = h + (h - 1) * (int(p.zoom_factor) - 1), w + (w - 1) * (int(p.zoom_factor) - 1)
    elif p.shrink_factor > 1:
        oh, ow = (h - 1) // int(p.shrink_factor) + 1, (w - 1) // int(p.shrink_factor) + 1
    else:
        oh, ow = h, w
    out = (n, ch, oh, ow)
    c.out(layer, "Resize", [c.x(layer), "", "", c.const(layer, "sizes", np.array(out, np.int64))], out,
          mode="linear", coordinate_transformation_mode="align_corners")


def _lrn(c: _Converter, layer: Any) -> None:
    p = layer.lrn_param
    if p.norm_region != 0:
        raise LayerError("WITHIN_CHANNEL LRN is not supported")
    c.out(layer, "LRN", [c.x(layer)], c.xshape(layer), size=int(p.local_size), alpha=float(p.alpha),
          beta=float(p.beta), bias=float(p.k))


def _normalize(c: _Converter, layer: Any) -> None:
    p = layer.norm_param
    shape = c.xshape(layer)
    (scale,) = c.params(layer, [(1,) if p.channel_shared else (shape[1],)], ("one",))
    if c.weights is None:
        scale = scale * 20.0  # SSD's customary initial scale
    x = c.x(layer)
    sq = c.g.node("Mul", [x, x])
    axes = list(range(1, len(shape))) if p.across_spatial else [1]
    total = c.g.reduce("ReduceSum", sq, axes, 1)
    norm = c.g.node("Sqrt", [c.g.node("Add", [total, c.const(layer, "eps", np.float32(p.eps))])])
    y = c.g.node("Div", [x, norm])
    s = scale.reshape((-1,) + (1,) * (len(shape) - 2)) if not p.channel_shared else scale.reshape(())
    c.out(layer, "Mul", [y, c.const(layer, "scale", s.astype(np.float32))], shape)


def prior_boxes(feature_hw: tuple, image_hw: tuple, p: Any) -> np.ndarray:
    """SSD's PriorBox output (1, 2, H*W*priors*4): corner boxes, then the variances, for one feature map."""
    fh, fw = feature_hw
    ih, iw = (p.img_h, p.img_w) if p.img_h or p.img_w else ((p.img_size, p.img_size) if p.img_size else image_hw)
    sh, sw = (p.step_h, p.step_w) if p.step_h or p.step_w else ((p.step, p.step) if p.step else
                                                                (ih / fh, iw / fw))
    ratios = [1.0]
    for r in p.aspect_ratio:
        for v in ([r, 1.0 / r] if p.flip else [r]):
            if all(abs(v - e) > 1e-6 for e in ratios):
                ratios.append(v)
    boxes = []
    for y in range(fh):
        for x in range(fw):
            cx, cy = (x + p.offset) * sw, (y + p.offset) * sh
            for k, min_size in enumerate(p.min_size):
                sizes = [(min_size, min_size)]
                if k < len(p.max_size):
                    s = (min_size * p.max_size[k]) ** 0.5
                    sizes.append((s, s))
                sizes += [(min_size * r ** 0.5, min_size / r ** 0.5) for r in ratios[1:]]
                for bw, bh in sizes:
                    boxes.append([(cx - bw / 2) / iw, (cy - bh / 2) / ih, (cx + bw / 2) / iw, (cy + bh / 2) / ih])
    arr = np.array(boxes, np.float32).reshape(-1)
    if p.clip:
        arr = np.clip(arr, 0.0, 1.0)
    var = list(p.variance) or [0.1]
    variances = np.tile(np.array(var if len(var) == 4 else var[:1] * 4, np.float32), arr.size // 4)
    return np.stack([arr, variances])[None]


def _prior_box(c: _Converter, layer: Any) -> None:
    feature, image = c.xshape(layer, 0), c.xshape(layer, 1)
    _constant_top(c, layer, prior_boxes(feature[2:4], image[2:4], layer.prior_box_param))
    c.consumed.update(c.blob[b] for b in layer.bottom)


def _constant_top(c: _Converter, layer: Any, value: np.ndarray) -> None:
    """A blob that depends only on shapes: an initializer (a constant graph output is left out of the
    model, as the toolkit does for SSD's priors: post-processing computes or loads them)."""
    name = c.top_name(layer)
    c.g.initializers.append(c.g.numpy_helper.from_array(value.astype(np.float32), name))
    c.set_top(layer, name, value.shape)
    c.constants[name] = value


def _identity(c: _Converter, layer: Any) -> None:
    src = c.x(layer)
    for top in layer.top:
        if top == layer.bottom[0]:
            c.remaining_writes[top] -= 1
            continue
        c.blob[top] = src
        c.remaining_writes[top] -= 1


_HANDLERS: Dict[str, Callable] = {
    "Convolution": _convolution, "Deconvolution": _deconvolution, "InnerProduct": _inner_product,
    "Pooling": _pooling, "ReLU": _relu, "PReLU": _prelu, "Sigmoid": _simple("Sigmoid"), "TanH": _simple("Tanh"),
    "AbsVal": _simple("Abs"), "ELU": _elu, "Power": _power, "BatchNorm": _batchnorm, "Scale": _scale,
    "Bias": _bias, "Eltwise": _eltwise, "Concat": _concat, "Slice": _slice, "Softmax": _softmax,
    "Flatten": _flatten, "Reshape": _reshape, "Permute": _permute, "Upsample": _upsample, "Interp": _interp,
    "LRN": _lrn, "Normalize": _normalize, "PriorBox": _prior_box,
    **{t: _identity for t in _SKIPPED},
}


def supported_layers() -> List[str]:
    return sorted(_HANDLERS)


def read_caffemodel(path: Path) -> Dict[str, List[np.ndarray]]:
    """Layer name -> blobs of a binary caffemodel."""
    pb2 = _pb2()
    net = pb2.NetParameter()
    try:
        net.ParseFromString(path.read_bytes())
    except Exception as exc:
        raise BuildError(f"cannot parse {str(path)!r} as a caffemodel: {exc}") from exc
    if len(net.layers) and not len(net.layer):
        raise BuildError(V1_ADVICE)
    return {layer.name: [_blob_array(b) for b in layer.blobs] for layer in net.layer}


def convert_caffe(model: Any, blobs: Optional[Any] = None, input_name: Optional[Any] = None) -> Conversion:
    """Read a deploy prototxt and (optionally) its caffemodel into an ONNX model."""
    from google.protobuf import text_format

    pb2 = _pb2()
    path = check_file(model, "Model file")
    weights = None
    if blobs is not None:
        weights = read_caffemodel(check_file(blobs, "Blobs file"))
    else:
        LOG.warning("load_caffe: blobs=None: the model is built with random weights (its outputs are meaningless)")
    net = pb2.NetParameter()
    text = path.read_text(errors="replace")
    try:
        text_format.Parse(text, net, allow_unknown_field=True)
    except text_format.ParseError as exc:
        raise BuildError(f"cannot parse {str(path)!r} as a Caffe prototxt: {exc}") from exc
    if len(net.layers) and not len(net.layer):
        raise BuildError(V1_ADVICE)
    conversion = _Converter(net, weights, net.name or Path(path).stem, input_name).run()
    LOG.info("Caffe %s: %d layers -> %d ONNX nodes", path.name, len(net.layer), len(conversion.model.graph.node))
    return conversion
