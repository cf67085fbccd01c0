"""Lowering of a prepared ONNX graph into simulator operators (docs/model-format.md's operator table).

Every opset-dependent detail (auto_pad, negative axes, constant inputs that are really attributes, Resize
and Slice parameters, pre-13 Softmax) is resolved here into the explicit attributes the runtime reads, so
an unsupported operator or attribute fails the build with the node named, never the run. Afterwards two
fusion passes run on the lowered list: Mul(x, Sigmoid(x)) -> SiLU, then activations into their producer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from .errors import UnsupportedNode, UnsupportedOperatorError
from .prepare import PreparedGraph

FLOAT_TYPES = (1, 10)  # onnx FLOAT, FLOAT16
INTEGER_VALUE_TYPES = (2, 3, 4, 5, 6, 7, 9, 12, 13)  # the integer types and BOOL
FUSE_INTO = ("Conv", "ConvTranspose", "Gemm", "MatMul", "Add")
FUSABLE_ACTS = ("Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSwish", "SiLU", "HardSigmoid", "Tanh")
WHAT_TO_DO = ("replace it with supported operators, or cut the graph before it with "
               "load_onnx(outputs=[...]) and run the rest on the CPU")


@dataclass
class LNode:
    """A lowered operator: simulator op type, tensor names and explicit attributes."""

    op_type: str
    name: str
    onnx_type: str
    inputs: list
    outputs: list
    attrs: dict = field(default_factory=dict)
    act: Optional[str] = None
    act_params: tuple = (0.0, 0.0)


class _Ctx:
    """What a lowering function may ask about the node it lowers."""

    def __init__(self, node: Any, pg: PreparedGraph) -> None:
        from onnx import helper
        self.node, self.pg = node, pg
        self.opset = pg.opset
        self.attrs = {}
        for a in node.attribute:
            v = helper.get_attribute_value(a)
            if isinstance(v, bytes):
                v = v.decode("utf-8", "replace")
            elif isinstance(v, list) and v and isinstance(v[0], bytes):
                v = [x.decode("utf-8", "replace") for x in v]
            self.attrs[a.name] = v

    def fail(self, reason: str) -> None:
        raise UnsupportedOperatorError(self.node.op_type, self.node.name, reason)

    def inp(self, i: int) -> Optional[str]:
        return self.node.input[i] if i < len(self.node.input) and self.node.input[i] else None

    def shape(self, name: str) -> tuple:
        return tuple(self.pg.shapes[name])

    def in_shape(self, i: int = 0) -> tuple:
        return self.shape(self.node.input[i])

    def out_shape(self, i: int = 0) -> tuple:
        return self.shape(self.node.output[i])

    def const(self, i: int, what: str) -> Optional[np.ndarray]:
        """The constant value of input i (None if absent); fails if it is computed at run time."""
        name = self.inp(i)
        if name is None:
            return None
        if name not in self.pg.constants:
            self.fail(f"its {what} input {name!r} must be a constant (it is computed at run time); "
                      f"{WHAT_TO_DO}")
        return self.pg.constants[name]

    def is_const(self, i: int) -> bool:
        name = self.inp(i)
        return name is not None and name in self.pg.constants

    def axis(self, value: int, rank: int) -> int:
        a = value + rank if value < 0 else value
        if not 0 <= a < max(rank, 1):
            self.fail(f"axis {value} is out of range for rank {rank}")
        return a

    def make(self, op_type: str, inputs: list, attrs: Optional[dict] = None,
             outputs: Optional[list] = None) -> LNode:
        return LNode(op_type=op_type, name=self.node.name, onnx_type=self.node.op_type,
                     inputs=[n if n else None for n in inputs],
                     outputs=list(outputs if outputs is not None else [o for o in self.node.output if o]),
                     attrs=attrs or {})


def _pads_for(ctx: _Ctx, in_shape: tuple, kernel: list, strides: list, dilations: list) -> list:
    n = len(kernel)
    auto_pad = ctx.attrs.get("auto_pad", "NOTSET")
    if auto_pad in ("NOTSET", ""):
        pads = list(ctx.attrs.get("pads", [0] * 2 * n))
        if len(pads) != 2 * n:
            ctx.fail(f"pads {pads} need {2 * n} entries")
        return [int(p) for p in pads]
    if auto_pad == "VALID":
        return [0] * 2 * n
    if auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        ctx.fail(f"auto_pad {auto_pad!r} is not an ONNX value")
    begins, ends = [], []
    for i in range(n):
        size = in_shape[2 + i]
        out = -(-size // strides[i])
        total = max(0, (out - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - size)
        small, big = total // 2, total - total // 2
        begins.append(small if auto_pad == "SAME_UPPER" else big)
        ends.append(big if auto_pad == "SAME_UPPER" else small)
    return begins + ends


def _spatial(ctx: _Ctx, kernel: list) -> tuple:
    n = len(kernel)
    if not 1 <= n <= 3:
        ctx.fail(f"{n} spatial dimensions; the NPU supports 1 to 3")
    strides = [int(s) for s in ctx.attrs.get("strides", [1] * n)]
    dilations = [int(d) for d in ctx.attrs.get("dilations", [1] * n)]
    return strides, dilations


def _check_weight(ctx: _Ctx, w: np.ndarray, kernel: list, channels_axis: int) -> int:
    """Weight rank, kernel and channel count must agree with the input (else the runtime would refuse)."""
    group = int(ctx.attrs.get("group", 1))
    x_shape = ctx.in_shape()
    if w.ndim != len(x_shape) or list(w.shape[2:]) != kernel:
        ctx.fail(f"weight shape {list(w.shape)} does not match kernel_shape {kernel} for input {list(x_shape)}")
    in_channels = w.shape[1] * group if channels_axis == 1 else w.shape[0]
    if group < 1 or x_shape[1] != in_channels:
        ctx.fail(f"input has {x_shape[1]} channels but the weight {list(w.shape)} with group {group} "
                 f"expects {in_channels}")
    return group


def _conv(ctx: _Ctx) -> LNode:
    w = ctx.const(1, "weight")
    kernel = [int(k) for k in ctx.attrs.get("kernel_shape", w.shape[2:])]
    _check_weight(ctx, w, kernel, 1)
    strides, dilations = _spatial(ctx, kernel)
    pads = _pads_for(ctx, ctx.in_shape(), kernel, strides, dilations)
    if ctx.inp(2) is not None:
        ctx.const(2, "bias")
    return ctx.make("Conv", list(ctx.node.input[:3]),
                    {"kernel_shape": kernel, "strides": strides, "pads": pads, "dilations": dilations,
                     "group": int(ctx.attrs.get("group", 1))})


def _conv_transpose(ctx: _Ctx) -> LNode:
    w = ctx.const(1, "weight")
    kernel = [int(k) for k in ctx.attrs.get("kernel_shape", w.shape[2:])]
    _check_weight(ctx, w, kernel, 0)
    strides, dilations = _spatial(ctx, kernel)
    n = len(kernel)
    out_pad = [int(p) for p in ctx.attrs.get("output_padding", [0] * n)]
    in_shape, out_shape = ctx.in_shape(), ctx.out_shape()
    auto_pad = ctx.attrs.get("auto_pad", "NOTSET")
    if "output_shape" in ctx.attrs or auto_pad not in ("NOTSET", "", "VALID"):
        begins, ends = [], []
        for i in range(n):
            full = strides[i] * (in_shape[2 + i] - 1) + out_pad[i] + (kernel[i] - 1) * dilations[i] + 1
            total = full - out_shape[2 + i]
            if total < 0:
                # Larger requested outputs are expressed through output_padding.
                out_pad[i] += -total
                total = 0
            if auto_pad == "SAME_UPPER":
                begins.append(total // 2)
                ends.append(total - total // 2)
            else:
                begins.append(total - total // 2)
                ends.append(total // 2)
        pads = begins + ends
    elif auto_pad == "VALID":
        pads = [0] * 2 * n
    else:
        pads = [int(p) for p in ctx.attrs.get("pads", [0] * 2 * n)]
    if ctx.inp(2) is not None:
        ctx.const(2, "bias")
    return ctx.make("ConvTranspose", list(ctx.node.input[:3]),
                    {"kernel_shape": kernel, "strides": strides, "pads": pads, "dilations": dilations,
                     "group": int(ctx.attrs.get("group", 1)), "output_padding": out_pad})


def _gemm(ctx: _Ctx) -> LNode:
    if len(ctx.in_shape(0)) != 2 or len(ctx.in_shape(1)) != 2:
        ctx.fail("Gemm needs 2-D A and B")
    return ctx.make("Gemm", list(ctx.node.input[:3]),
                    {"alpha": float(ctx.attrs.get("alpha", 1.0)), "beta": float(ctx.attrs.get("beta", 1.0)),
                     "transA": int(ctx.attrs.get("transA", 0)), "transB": int(ctx.attrs.get("transB", 0))})


def _passthrough(op: str) -> Callable:
    def lower(ctx: _Ctx) -> LNode:
        return ctx.make(op, list(ctx.node.input))
    return lower


def _clip(ctx: _Ctx) -> LNode:
    if ctx.opset < 11:
        lo, hi = ctx.attrs.get("min", -math.inf), ctx.attrs.get("max", math.inf)
    else:
        lo_c, hi_c = ctx.const(1, "min"), ctx.const(2, "max")
        lo = -math.inf if lo_c is None else float(lo_c)
        hi = math.inf if hi_c is None else float(hi_c)
    return ctx.make("Clip", [ctx.node.input[0]], {"min": float(lo), "max": float(hi)})


def _with_defaults(op: str, defaults: dict) -> Callable:
    def lower(ctx: _Ctx) -> LNode:
        attrs = {k: type(v)(ctx.attrs.get(k, v)) for k, v in defaults.items()}
        return ctx.make(op, list(ctx.node.input), attrs)
    return lower


def _softmax(op: str) -> Callable:
    def lower(ctx: _Ctx) -> LNode:
        shape = ctx.in_shape()
        rank = len(shape)
        if ctx.opset >= 13:
            axis = ctx.axis(int(ctx.attrs.get("axis", -1)), rank)
        else:
            first = ctx.axis(int(ctx.attrs.get("axis", 1)), rank)
            # Pre-13 semantics flatten dims [first:] into one; equal to one axis when the others are 1.
            big = [a for a in range(first, rank) if shape[a] != 1]
            if len(big) > 1:
                ctx.fail(f"opset-{ctx.opset} {op} over the flattened dims {list(shape[first:])} is not a "
                         "single-axis softmax; re-export the model with opset >= 13 or reshape to 2-D before it")
            axis = big[0] if big else rank - 1
        return ctx.make(op, [ctx.node.input[0]], {"axis": axis})
    return lower


def _pool(op: str) -> Callable:
    def lower(ctx: _Ctx) -> LNode:
        if len([o for o in ctx.node.output if o]) > 1:
            ctx.fail("the Indices output of MaxPool is not supported; use only the pooled values")
        kernel = [int(k) for k in ctx.attrs["kernel_shape"]]
        strides, dilations = _spatial(ctx, kernel)
        pads = _pads_for(ctx, ctx.in_shape(), kernel, strides, dilations)
        attrs = {"kernel_shape": kernel, "strides": strides, "pads": pads,
                 "ceil_mode": int(ctx.attrs.get("ceil_mode", 0))}
        if op == "MaxPool":
            attrs["dilations"] = dilations
        else:
            if any(d != 1 for d in dilations):
                ctx.fail("dilated AveragePool is not supported; use dilations of 1")
            attrs["count_include_pad"] = int(ctx.attrs.get("count_include_pad", 0))
        return ctx.make(op, [ctx.node.input[0]], attrs)
    return lower


def _lrn(ctx: _Ctx) -> LNode:
    return ctx.make("LRN", [ctx.node.input[0]],
                    {"size": int(ctx.attrs["size"]), "alpha": float(ctx.attrs.get("alpha", 1e-4)),
                     "beta": float(ctx.attrs.get("beta", 0.75)), "bias": float(ctx.attrs.get("bias", 1.0))})


def _batchnorm(ctx: _Ctx) -> LNode:
    if len([o for o in ctx.node.output if o]) > 1 or int(ctx.attrs.get("training_mode", 0)):
        ctx.fail("training-mode BatchNormalization is not supported; export the model with model.eval()")
    for i, what in enumerate(("scale", "bias", "mean", "var"), start=1):
        ctx.const(i, what)
    return ctx.make("BatchNormalization", list(ctx.node.input[:5]),
                    {"epsilon": float(ctx.attrs.get("epsilon", 1e-5))})


def _concat(ctx: _Ctx) -> LNode:
    return ctx.make("Concat", list(ctx.node.input),
                    {"axis": ctx.axis(int(ctx.attrs["axis"]), len(ctx.out_shape()))})


def _split(ctx: _Ctx) -> LNode:
    return ctx.make("Split", [ctx.node.input[0]],
                    {"axis": ctx.axis(int(ctx.attrs.get("axis", 0)), len(ctx.in_shape()))})


def _slice(ctx: _Ctx) -> LNode:
    shape = ctx.in_shape()
    rank = len(shape)
    if ctx.opset < 10:
        starts, ends = list(ctx.attrs["starts"]), list(ctx.attrs["ends"])
        axes = list(ctx.attrs.get("axes", range(len(starts))))
        steps = [1] * len(starts)
    else:
        starts, ends = ctx.const(1, "starts").tolist(), ctx.const(2, "ends").tolist()
        axes_c, steps_c = ctx.const(3, "axes"), ctx.const(4, "steps")
        axes = list(range(len(starts))) if axes_c is None else axes_c.tolist()
        steps = [1] * len(starts) if steps_c is None else steps_c.tolist()
    n_starts, n_ends, n_axes, n_steps = [], [], [], []
    for s, e, a, st in zip(starts, ends, axes, steps):
        a = ctx.axis(int(a), rank)
        dim = shape[a]
        if st == 0:
            ctx.fail("Slice step 0 is invalid")
        s = s + dim if s < 0 else s
        e = e + dim if e < 0 else e
        if st > 0:
            s, e = min(max(s, 0), dim), min(max(e, 0), dim)
        else:
            s, e = min(max(s, 0), dim - 1), min(max(e, -1), dim - 1)
            if e == -1:
                # "Through index 0". Written as -(dim + 1): a reader that re-applies ONNX's negative-index
                # rule (adding dim) and one that takes the clamped value both end up at -1.
                e = -dim - 1
        n_starts.append(int(s))
        n_ends.append(int(e))
        n_axes.append(a)
        n_steps.append(int(st))
    return ctx.make("Slice", [ctx.node.input[0]],
                    {"starts": n_starts, "ends": n_ends, "axes": n_axes, "steps": n_steps})


def _reshape(ctx: _Ctx) -> LNode:
    if int(np.prod(ctx.in_shape())) != int(np.prod(ctx.out_shape())):
        ctx.fail("input and output element counts differ")
    return ctx.make("Reshape", [ctx.node.input[0]])


def _transpose(ctx: _Ctx) -> LNode:
    rank = len(ctx.in_shape())
    perm = [int(p) for p in ctx.attrs.get("perm", list(range(rank))[::-1])]
    return ctx.make("Transpose", [ctx.node.input[0]], {"perm": [ctx.axis(p, rank) for p in perm]})


def _pad(ctx: _Ctx) -> LNode:
    rank = len(ctx.in_shape())
    mode = ctx.attrs.get("mode", "constant")
    modes = {"constant": 0, "reflect": 1, "edge": 2}
    if mode not in modes:
        ctx.fail(f"Pad mode {mode!r} is not supported (constant, reflect and edge are)")
    if ctx.opset < 11:
        pads = [int(p) for p in ctx.attrs["pads"]]
        value = float(ctx.attrs.get("value", 0.0))
    else:
        pads = [int(p) for p in ctx.const(1, "pads").tolist()]
        v = ctx.const(2, "constant_value")
        value = 0.0 if v is None else float(np.asarray(v).ravel()[0]) if np.asarray(v).size else 0.0
        axes_c = ctx.const(3, "axes")
        if axes_c is not None:
            axes = [ctx.axis(int(a), rank) for a in axes_c.tolist()]
            full = [0] * 2 * rank
            for k, a in enumerate(axes):
                full[a], full[rank + a] = pads[k], pads[len(axes) + k]
            pads = full
    if len(pads) != 2 * rank:
        ctx.fail(f"pads {pads} need {2 * rank} entries")
    if any(p < 0 for p in pads):
        ctx.fail("negative pads (cropping) are not supported; use Slice")
    return ctx.make("Pad", [ctx.node.input[0]], {"pads": pads, "mode": modes[mode], "value": value})


_COORD = {"half_pixel": 0, "asymmetric": 1, "align_corners": 2, "pytorch_half_pixel": 3}
_NEAREST = {"round_prefer_floor": 0, "round_prefer_ceil": 1, "floor": 2, "ceil": 3}


def _resize(ctx: _Ctx) -> LNode:
    mode = ctx.attrs.get("mode", "nearest")
    if mode not in ("nearest", "linear", "bilinear"):
        ctx.fail(f"Resize mode {mode!r} is not supported (nearest and linear are)")
    mode_id = 0 if mode == "nearest" else 1
    if ctx.node.op_type == "Upsample" or ctx.opset < 11:
        coord, nearest = _COORD["asymmetric"], _NEAREST["floor"]
    else:
        coord_name = ctx.attrs.get("coordinate_transformation_mode", "half_pixel")
        if coord_name not in _COORD:
            ctx.fail(f"coordinate_transformation_mode {coord_name!r} is not supported "
                     f"(supported: {sorted(_COORD)})")
        coord = _COORD[coord_name]
        nearest = _NEAREST.get(ctx.attrs.get("nearest_mode", "round_prefer_floor"))
        if nearest is None:
            ctx.fail(f"nearest_mode {ctx.attrs.get('nearest_mode')!r} is not an ONNX value")
        if int(ctx.attrs.get("antialias", 0)) or int(ctx.attrs.get("exclude_outside", 0)):
            ctx.fail("antialias / exclude_outside Resize is not supported")
        if ctx.attrs.get("keep_aspect_ratio_policy", "stretch") != "stretch":
            ctx.fail("keep_aspect_ratio_policy other than 'stretch' is not supported")
    in_shape, out_shape = ctx.in_shape(), ctx.out_shape()
    if len(in_shape) != len(out_shape):
        ctx.fail("Resize changes the rank")
    if any(i != o for i, o in zip(in_shape[:2], out_shape[:2])) and len(in_shape) >= 3:
        ctx.fail("resizing the batch or channel dimension is not supported")
    scales_slot = 1 if (ctx.node.op_type == "Upsample" or ctx.opset < 11) else 2
    scales = ctx.const(scales_slot, "scales") if ctx.inp(scales_slot) else None
    if scales is not None and scales.size and coord != _COORD["align_corners"]:
        # The runtime derives the scale from the stored sizes; ONNX uses the given one. They agree only
        # when every output size is exactly input size x scale.
        for i, o, sc in zip(in_shape, out_shape, np.asarray(scales, np.float64).ravel()):
            if abs(i * sc - o) > 1e-6 * max(1.0, o):
                ctx.fail(f"scale {float(sc)} of a dimension of {i} gives a fractional size ({i * sc:g}); pass "
                         "integer 'sizes' instead of 'scales', or scales with an integral result")
    return ctx.make("Resize", [ctx.node.input[0]], {"mode": mode_id, "coord": coord, "nearest": nearest})


def _reduce(op: str) -> Callable:
    def lower(ctx: _Ctx) -> LNode:
        rank = len(ctx.in_shape())
        axes_from_input = (op == "ReduceSum" and ctx.opset >= 13) or ctx.opset >= 18
        if axes_from_input:
            c = ctx.const(1, "axes")
            axes = None if c is None else c.tolist()
        else:
            axes = ctx.attrs.get("axes")
        if not axes:
            if int(ctx.attrs.get("noop_with_empty_axes", 0)):
                return ctx.make("Reshape", [ctx.node.input[0]])
            axes = list(range(rank))
        axes = sorted({ctx.axis(int(a), rank) for a in axes})
        return ctx.make(op, [ctx.node.input[0]], {"axes": axes, "keepdims": int(ctx.attrs.get("keepdims", 1))})
    return lower


def _gather(ctx: _Ctx) -> LNode:
    rank = len(ctx.in_shape())
    axis = ctx.axis(int(ctx.attrs.get("axis", 0)), rank)
    if not ctx.is_const(1):  # run-time indices (embeddings): checked by the runtime
        return ctx.make("Gather", list(ctx.node.input[:2]), {"axis": axis})
    idx = ctx.const(1, "indices")
    dim = ctx.in_shape()[axis]
    if idx.dtype.kind not in "iu":
        ctx.fail("Gather indices must be integers")
    if np.any(idx < -dim) or np.any(idx >= dim):
        ctx.fail(f"Gather indices are out of range for a dimension of {dim}")
    fixed = np.where(idx < 0, idx + dim, idx).astype(idx.dtype if idx.dtype in (np.int32, np.int64) else np.int64)
    name = ctx.node.input[1]
    if not np.array_equal(fixed, idx):
        name = name + "__normalised"
        ctx.pg.constants[name] = fixed
        ctx.pg.shapes[name] = tuple(fixed.shape)
    return ctx.make("Gather", [ctx.node.input[0], name], {"axis": axis})


def _prelu(ctx: _Ctx) -> LNode:
    """PRelu; a legacy per-channel slope of shape (C,) that does not broadcast numpy-style becomes (C,1..1)."""
    x_shape = ctx.in_shape()
    slope = ctx.inp(1)
    if ctx.is_const(1):
        arr = ctx.pg.constants[slope]
        try:
            np.broadcast_shapes(tuple(x_shape), arr.shape)
        except ValueError:
            if arr.ndim == 1 and len(x_shape) >= 2 and arr.shape[0] == x_shape[1]:
                name = slope + "__per_channel"
                ctx.pg.constants[name] = arr.reshape((-1,) + (1,) * (len(x_shape) - 2))
                ctx.pg.shapes[name] = tuple(ctx.pg.constants[name].shape)
                slope = name
            else:
                ctx.fail(f"slope shape {list(arr.shape)} does not broadcast to the input {list(x_shape)}")
    return ctx.make("PRelu", [ctx.node.input[0], slope])


def _elu(ctx: _Ctx) -> LNode:
    return ctx.make("Elu", [ctx.node.input[0]], {"alpha": float(ctx.attrs.get("alpha", 1.0))})


def _selu(ctx: _Ctx) -> LNode:
    return ctx.make("Selu", [ctx.node.input[0]],
                    {"alpha": float(ctx.attrs.get("alpha", 1.6732632423543772)),
                     "gamma": float(ctx.attrs.get("gamma", 1.0507009873554805))})


def _single_output(ctx: _Ctx, what: str) -> None:
    if len([o for o in ctx.node.output if o]) > 1:
        ctx.fail(f"only the first output of {ctx.node.op_type} is supported ({what} are not); "
                 "use only the normalised result")


def _per_elements(ctx: _Ctx, slot: int, what: str, shape: tuple) -> Optional[str]:
    """Constant input ``slot`` broadcast to exactly ``shape`` (a new constant when it had another shape)."""
    value = ctx.const(slot, what)
    if value is None:
        return None
    name = ctx.node.input[slot]
    try:
        full = np.broadcast_to(np.asarray(value, np.float32), shape)
    except ValueError:
        ctx.fail(f"its {what} of shape {list(value.shape)} does not broadcast to {list(shape)}")
    if tuple(value.shape) != tuple(shape):
        name = f"{name}__{ctx.node.name}_full"
        ctx.pg.constants[name] = np.ascontiguousarray(full)
        ctx.pg.shapes[name] = tuple(shape)
    return name


def _layer_norm(ctx: _Ctx) -> LNode:
    _single_output(ctx, "Mean and InvStdDev")
    shape = ctx.in_shape()
    axis = ctx.axis(int(ctx.attrs.get("axis", -1)), len(shape))
    tail = tuple(shape[axis:])
    ins = [ctx.node.input[0], _per_elements(ctx, 1, "scale", tail), _per_elements(ctx, 2, "bias", tail)]
    return ctx.make("LayerNormalization", ins, {"axis": axis, "epsilon": float(ctx.attrs.get("epsilon", 1e-5))})


def _group_norm(ctx: _Ctx) -> LNode:
    """GroupNormalization (opset 18-20: scale/bias per group, 21: per channel) and InstanceNormalization
    (one group per channel) as the runtime's GroupNormalization with per-channel scale and bias."""
    shape = ctx.in_shape()
    if len(shape) < 3:
        ctx.fail(f"input {list(shape)} needs [N, C, spatial...]")
    channels = shape[1]
    groups = channels if ctx.node.op_type == "InstanceNormalization" else int(ctx.attrs["num_groups"])
    if groups < 1 or channels % groups:
        ctx.fail(f"{channels} channels do not split into {groups} groups")
    ins = [ctx.node.input[0]]
    for slot, what in ((1, "scale"), (2, "bias")):
        value = np.asarray(ctx.const(slot, what), np.float32).reshape(-1)
        if value.size == groups and ctx.node.op_type == "GroupNormalization" and ctx.opset < 21:
            value = np.repeat(value, channels // groups)
        if value.size != channels:
            ctx.fail(f"its {what} has {value.size} values for {channels} channels")
        name = f"{ctx.node.input[slot]}__{ctx.node.name}_per_channel"
        ctx.pg.constants[name] = value
        ctx.pg.shapes[name] = (channels,)
        ins.append(name)
    return ctx.make("GroupNormalization", ins,
                    {"num_groups": groups, "epsilon": float(ctx.attrs.get("epsilon", 1e-5))})


def _gelu(ctx: _Ctx) -> LNode:
    approx = ctx.attrs.get("approximate", "none")
    if approx not in ("none", "tanh"):
        ctx.fail(f"approximate={approx!r} is not an ONNX value (none or tanh)")
    return ctx.make("Gelu", [ctx.node.input[0]], {"approximate": int(approx == "tanh")})


_CAST_KINDS = {1: 0, 11: 0, 10: 1, 9: 3}  # FLOAT, DOUBLE -> as is; FLOAT16 -> rounded; BOOL -> != 0
_INTEGER_TYPES = (2, 3, 4, 5, 6, 7, 12, 13)  # UINT8 INT8 UINT16 INT16 INT32 INT64 UINT32 UINT64


def _cast(ctx: _Ctx) -> LNode:
    to = int(ctx.attrs["to"])
    kind = 2 if to in _INTEGER_TYPES else _CAST_KINDS.get(to)
    if kind is None:
        ctx.fail(f"Cast to ONNX data type {to} is not supported (float, float16, integers and bool are)")
    return ctx.make("Cast", [ctx.node.input[0]], {"to": kind})


def _expand(ctx: _Ctx) -> LNode:
    return ctx.make("Expand", [ctx.node.input[0]])


def _tile(ctx: _Ctx) -> LNode:
    return ctx.make("Tile", [ctx.node.input[0]])


def _gather_elements(ctx: _Ctx) -> LNode:
    rank = len(ctx.in_shape())
    return ctx.make("GatherElements", list(ctx.node.input[:2]),
                    {"axis": ctx.axis(int(ctx.attrs.get("axis", 0)), rank)})


def _arg(op: str) -> Callable:
    def lower(ctx: _Ctx) -> LNode:
        rank = len(ctx.in_shape())
        return ctx.make(op, [ctx.node.input[0]],
                        {"axis": ctx.axis(int(ctx.attrs.get("axis", 0)), rank),
                         "keepdims": int(ctx.attrs.get("keepdims", 1)),
                         "select_last_index": int(ctx.attrs.get("select_last_index", 0))})
    return lower


def _topk(ctx: _Ctx) -> LNode:
    rank = len(ctx.in_shape())
    if ctx.opset < 10:
        k = int(ctx.attrs["k"])
    else:
        k = int(np.asarray(ctx.const(1, "K")).reshape(-1)[0])
    axis = ctx.axis(int(ctx.attrs.get("axis", -1)), rank)
    if not 1 <= k <= ctx.in_shape()[axis]:
        ctx.fail(f"K={k} is out of range for a dimension of {ctx.in_shape()[axis]}")
    return ctx.make("TopK", [ctx.node.input[0]],
                    {"axis": axis, "k": k, "largest": int(ctx.attrs.get("largest", 1))})


_DIRECTIONS = {"forward": 0, "reverse": 1, "bidirectional": 2}
_DEFAULT_ACTS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"]}


def _rnn(ctx: _Ctx) -> LNode:
    """One-layer LSTM / GRU with the default activations; sequence_lens only when every sequence is full."""
    op = ctx.node.op_type
    direction = _DIRECTIONS.get(ctx.attrs.get("direction", "forward"))
    if direction is None:
        ctx.fail(f"direction {ctx.attrs.get('direction')!r} is not an ONNX value")
    acts = [a.lower() for a in ctx.attrs.get("activations", [])]
    if acts and acts != [a.lower() for a in _DEFAULT_ACTS[op] * (2 if direction == 2 else 1)]:
        ctx.fail(f"activations {ctx.attrs['activations']} are not supported (only the default "
                 f"{_DEFAULT_ACTS[op]})")
    if "clip" in ctx.attrs or int(ctx.attrs.get("input_forget", 0)) or int(ctx.attrs.get("layout", 0)):
        ctx.fail("clip, input_forget and layout=1 are not supported; export with the defaults")
    if op == "LSTM" and ctx.inp(7) is not None:
        ctx.fail("peephole weights (input P) are not supported")
    for slot, what in ((1, "W"), (2, "R"), (3, "B")):
        ctx.const(slot, what)
    seq = ctx.const(4, "sequence_lens")
    steps = ctx.in_shape()[0]
    if seq is not None and np.any(np.asarray(seq) != steps):
        ctx.fail(f"sequence_lens {np.asarray(seq).tolist()} shorter than the {steps} steps are not supported")
    ins = list(ctx.node.input[:4]) + [ctx.inp(5)] + ([ctx.inp(6)] if op == "LSTM" else [])
    attrs = {"hidden_size": int(ctx.attrs["hidden_size"]), "direction": direction}
    if op == "GRU":
        attrs["linear_before_reset"] = int(ctx.attrs.get("linear_before_reset", 0))
    return ctx.make(op, ins, attrs, outputs=list(ctx.node.output))


LOWERINGS: dict = {
    "Conv": _conv, "ConvTranspose": _conv_transpose, "Gemm": _gemm, "MatMul": _passthrough("MatMul"),
    "Add": _passthrough("Add"), "Sub": _passthrough("Sub"), "Mul": _passthrough("Mul"),
    "Div": _passthrough("Div"), "Sum": _passthrough("Sum"), "Max": _passthrough("Max"),
    "Min": _passthrough("Min"), "Pow": _passthrough("Pow"), "PRelu": _prelu,
    "Relu": _passthrough("Relu"), "Sigmoid": _passthrough("Sigmoid"), "Tanh": _passthrough("Tanh"),
    "Exp": _passthrough("Exp"), "Neg": _passthrough("Neg"), "Abs": _passthrough("Abs"),
    "Softplus": _passthrough("Softplus"), "Sqrt": _passthrough("Sqrt"), "HardSwish": _passthrough("HardSwish"),
    "GlobalAveragePool": _passthrough("GlobalAveragePool"), "GlobalMaxPool": _passthrough("GlobalMaxPool"),
    "Clip": _clip, "LeakyRelu": _with_defaults("LeakyRelu", {"alpha": 0.01}),
    "HardSigmoid": _with_defaults("HardSigmoid", {"alpha": 0.2, "beta": 0.5}),
    "Elu": _elu, "Selu": _selu, "Softmax": _softmax("Softmax"), "LogSoftmax": _softmax("LogSoftmax"),
    "MaxPool": _pool("MaxPool"), "AveragePool": _pool("AveragePool"), "LRN": _lrn,
    "BatchNormalization": _batchnorm, "Concat": _concat, "Split": _split, "Slice": _slice,
    "Reshape": _reshape, "Flatten": _reshape, "Squeeze": _reshape, "Unsqueeze": _reshape,
    "Identity": _reshape, "Dropout": _reshape, "Transpose": _transpose, "Pad": _pad,
    "Resize": _resize, "Upsample": _resize, "ReduceMean": _reduce("ReduceMean"),
    "ReduceMax": _reduce("ReduceMax"), "ReduceSum": _reduce("ReduceSum"), "Gather": _gather,
    "ReduceMin": _reduce("ReduceMin"), "ReduceProd": _reduce("ReduceProd"), "ReduceL2": _reduce("ReduceL2"),
    "LayerNormalization": _layer_norm, "GroupNormalization": _group_norm, "InstanceNormalization": _group_norm,
    "Gelu": _gelu, "Cast": _cast, "Expand": _expand, "Tile": _tile, "GatherElements": _gather_elements,
    "ArgMax": _arg("ArgMax"), "ArgMin": _arg("ArgMin"), "TopK": _topk, "LSTM": _rnn, "GRU": _rnn,
    **{op: _passthrough(op) for op in ("Erf", "Mish", "Reciprocal", "Log", "Sin", "Cos", "Not", "Where", "Equal",
                                       "Greater", "GreaterOrEqual", "Less", "LessOrEqual", "And", "Or", "Xor")},
}
# Ops that may read integer or boolean tensors computed at run time (carried as exact float32 values):
# data movement, selection, comparisons and the arithmetic that stays exact on integers.
INTEGER_INPUT_OPS = frozenset((
    "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Transpose", "Concat", "Slice", "Split", "Gather",
    "GatherElements", "Expand", "Tile", "Cast", "Where", "Equal", "Greater", "GreaterOrEqual", "Less",
    "LessOrEqual", "And", "Or", "Xor", "Not", "Add", "Sub", "Mul", "Neg", "Abs", "Max", "Min", "ReduceSum",
    "ReduceMax", "ReduceMin", "ReduceProd", "ArgMax", "ArgMin", "TopK"))

def supported_onnx_ops() -> list:
    """ONNX operator types the builder can lower (for documentation and error messages)."""
    return sorted(LOWERINGS)


def lower(pg: PreparedGraph, fuse: bool = True) -> list:
    """Lower every node, then (``fuse``) apply the SiLU and activation fusions. Returns LNodes in order.

    Every node is tried: a model with unsupported nodes raises one UnsupportedOperatorError listing all
    of them (type, count, first node) and the cut points before them.
    """
    nodes, problems = lower_nodes(pg)
    if problems:
        from .prepare import cut_points
        raise UnsupportedOperatorError.from_nodes(problems, cut_points(pg.model, {p.node_name for p in problems}))
    if not fuse:
        return nodes
    nodes = fuse_silu(nodes, pg)
    return fuse_activations(nodes, pg)


def lower_nodes(pg: PreparedGraph, skip: frozenset = frozenset()) -> tuple:
    """(lowered nodes, problems): each node of the graph (except those named in ``skip``) lowered alone."""
    nodes, problems = [], []
    for node in pg.model.graph.node:
        if node.name in skip:
            continue
        fn = LOWERINGS.get(node.op_type)
        if fn is None:
            problems.append(UnsupportedNode(node.op_type, node.name,
                                            f"the simulated NPU has no {node.op_type} operator; {WHAT_TO_DO}"))
            continue
        ctx = _Ctx(node, pg)
        try:
            _check_float_activations(ctx)
            lowered = fn(ctx)
        except UnsupportedOperatorError as exc:
            problems.extend(exc.problems)
            continue
        nodes.extend(lowered if isinstance(lowered, list) else [lowered])
    return nodes, problems


def _check_float_activations(ctx: _Ctx) -> None:
    """Run-time tensors are float, or integer/boolean where the op handles them (carried as exact float32
    values: integers up to 2^24), and have static shapes."""
    ins = [n for n in ctx.node.input if n and n not in ctx.pg.constants]
    outs = [o for o in ctx.node.output if o]
    for n in ins + outs:
        et = ctx.pg.elem_types.get(n)
        if et not in FLOAT_TYPES and not (et in INTEGER_VALUE_TYPES and (n in outs or ctx.node.op_type
                                                                         in INTEGER_INPUT_OPS)):
            ctx.fail(f"tensor {n!r} has ONNX data type {et}; {ctx.node.op_type} computes float/int8 activations "
                     f"only (integer or boolean run-time tensors are supported by "
                     f"{', '.join(sorted(INTEGER_INPUT_OPS)[:6])}, ... only); {WHAT_TO_DO}")
        shape = ctx.pg.shapes.get(n)
        if shape is None:
            ctx.fail(f"the shape of tensor {n!r} is unknown; pass load_onnx(input_size_list=...)")


def _consumer_counts(nodes: list, pg: PreparedGraph) -> dict:
    counts: dict = {}
    for n in nodes:
        for i in n.inputs:
            if i:
                counts[i] = counts.get(i, 0) + 1
    for o in pg.outputs:
        counts[o] = counts.get(o, 0) + 1
    return counts


def fuse_silu(nodes: list, pg: PreparedGraph) -> list:
    """Mul(x, Sigmoid(x)) -> SiLU(x) when the Sigmoid feeds only that Mul."""
    counts = _consumer_counts(nodes, pg)
    by_output = {o: n for n in nodes for o in n.outputs}
    removed = set()
    for mul in nodes:
        if mul.op_type != "Mul" or len(mul.inputs) != 2:
            continue
        for x, s in (mul.inputs, mul.inputs[::-1]):
            sig = by_output.get(s)
            if (sig is not None and sig.op_type == "Sigmoid" and sig.inputs[0] == x and counts.get(s) == 1
                    and id(sig) not in removed and pg.shapes.get(x) == pg.shapes.get(mul.outputs[0])):
                mul.op_type, mul.inputs, mul.attrs = "SiLU", [x], {}
                removed.add(id(sig))
                break
    return [n for n in nodes if id(n) not in removed]


_ACT_PARAMS: dict = {
    "Relu": lambda a: (0.0, 0.0), "Sigmoid": lambda a: (0.0, 0.0), "HardSwish": lambda a: (0.0, 0.0),
    "SiLU": lambda a: (0.0, 0.0), "Tanh": lambda a: (0.0, 0.0),
    "Clip": lambda a: (a["min"], a["max"]), "LeakyRelu": lambda a: (a["alpha"], 0.0),
    "HardSigmoid": lambda a: (a["alpha"], a["beta"]),
}


def fuse_activations(nodes: list, pg: PreparedGraph) -> list:
    """An activation right after Conv/ConvTranspose/Gemm/MatMul/Add fuses into it.

    Only when the producer's output has that single consumer and is not a graph output; the fused op
    takes over the activation's output tensor (name included), so the pre-activation tensor vanishes.
    """
    counts = _consumer_counts(nodes, pg)
    by_output = {o: n for n in nodes for o in n.outputs}
    removed = set()
    for act in nodes:
        if act.op_type not in FUSABLE_ACTS:
            continue
        src = by_output.get(act.inputs[0])
        if (src is None or src.op_type not in FUSE_INTO or src.act is not None or len(src.outputs) != 1
                or counts.get(act.inputs[0]) != 1 or id(src) in removed):
            continue
        src.act, src.act_params = act.op_type, _ACT_PARAMS[act.op_type](act.attrs)
        src.outputs = list(act.outputs)
        by_output[act.outputs[0]] = src
        removed.add(id(act))
    return [n for n in nodes if id(n) not in removed]
