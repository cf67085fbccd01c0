"""Graph rewrites on the lowered operator list, before quantization.

Exporters often spell one NPU layer as several small ONNX operators. Run one by one in int8, each of them
rounds to its own 8-bit grid, and a chain of them can lose a tensor entirely: PP-OCRv4's detector has 28
Paddle "learnable affine" blocks, Conv -> Mul(scalar) -> Add(scalar), whose separately quantised outputs
flattened the text map to zero. These passes turn such chains back into the one layer they mean:

* :func:`drop_identity_arithmetic`: Mul/Div by 1, Add/Sub of 0 (Paddle's Swish beta) vanish.
* :func:`fold_affine`: Conv / ConvTranspose / Gemm followed by Mul / Div / Add / Sub with a scalar or
  per-output-channel constant -> new weights and bias (exact in real arithmetic).
* :func:`fuse_hard_activations`: Add(3) -> Clip(0, 6) -> Div(6) (or Mul(1/6)) -> HardSigmoid, Mul(x, a)
  -> Add(b) -> Clip(0, 1) -> HardSigmoid, x * HardSigmoid(x) (and x * Clip(x + 3, 0, 6) / 6) -> HardSwish.
* :func:`fuse_gelu`: x * 0.5 * (1 + erf(x / sqrt 2)) and the tanh approximation -> Gelu.
* :func:`fuse_layernorm`: ReduceMean / Sub / Pow (or Mul) / ReduceMean / Add(eps) / Sqrt / Div, with
  the optional Mul(gamma) / Add(beta) -> LayerNormalization.
* :func:`fuse_mish`: x * tanh(softplus(x)) -> Mish.
* :func:`fuse_linear_bias`: MatMul(x, constant W) -> Add(constant bias per output column), how torch
  exports ``nn.Linear`` on 3-D tensors (every transformer projection), becomes Reshape -> Gemm (bias in the
  int32 accumulator) -> Reshape. In int8 the MatMul's own output was rounded to 8 bits before the bias
  was added and rounded again (ViT-Ti 0.99807 -> 0.99850). The two Reshapes only move data (their outputs
  take their input's quantisation); the new 2-D tensors are views of ONNX tensors (:func:`view_source`).

* :func:`equalize_cross_layer` (int8 builds, ``cross_layer_equalization``; by default only with
  ``quantized_method='layer'`` and only for pairs with a depthwise Conv): consecutive Conv/Gemm layers
  joined through an identity, ReLU or LeakyReLU (and MaxPool/AveragePool) get per-channel weight ranges
  balanced by a factor that cancels exactly in real arithmetic. The tensors between such a pair hold
  the ONNX tensor divided per channel, so they are renamed ``name::cle`` (:func:`source_tensor`,
  :func:`derived_value` tell calibration how to compute them from the ONNX tensor).

SiLU (x * sigmoid(x)) and the activation-into-producer fusion stay in :mod:`.lower` (``fuse_silu``,
``fuse_activations``); :func:`rewrite` runs them after these passes so that a folded Conv still takes its
activation. A fused layer takes over the output tensor (and name) of the last operator it replaces, so
the tensors accuracy_analysis compares keep their ONNX names; only the tensors inside a pattern vanish,
as the pre-activation tensor does under activation fusion. A pattern fires only when every inner tensor
has that one consumer and is not a graph output, and layers the simulator lacks (LayerNormalization,
Gelu, Mish before the operator lands) are left decomposed.
"""

from __future__ import annotations

import logging
import math
from typing import Callable, Optional

import numpy as np

from . import format as fmt
from .lower import FUSABLE_ACTS, LOWERINGS, LNode, _Ctx, fuse_activations, fuse_silu
from .prepare import PreparedGraph

LOG = logging.getLogger(__name__)

ARITH = ("Add", "Sub", "Mul", "Div")
WEIGHTED = ("Conv", "ConvTranspose", "Gemm")


class _Index:
    """Producers, consumer counts and constants of a lowered node list; rebuilt after each pass."""

    def __init__(self, nodes: list, pg: PreparedGraph) -> None:
        self.pg = pg
        self.producer = {o: n for n in nodes for o in n.outputs}
        self.uses: dict = {}
        for n in nodes:
            for i in n.inputs:
                if i:
                    self.uses[i] = self.uses.get(i, 0) + 1
        self.graph_outputs = set(pg.outputs)

    def single_use(self, name: str) -> bool:
        """Only one operator reads ``name`` and it is not a graph output: it may vanish into a fusion."""
        return self.uses.get(name, 0) == 1 and name not in self.graph_outputs

    def const(self, name: Optional[str]) -> Optional[np.ndarray]:
        if name is None or name not in self.pg.constants:
            return None
        arr = np.asarray(self.pg.constants[name])
        return arr if arr.dtype.kind == "f" else None

    def scalar(self, name: Optional[str]) -> Optional[float]:
        arr = self.const(name)
        return float(arr.reshape(-1)[0]) if arr is not None and arr.size == 1 else None

    def split_const(self, n: LNode) -> Optional[tuple]:
        """(variable input, constant value, constant_first) of a two-input Add/Sub/Mul/Div, else None."""
        if n.op_type not in ARITH or len(n.inputs) != 2 or n.act is not None:
            return None
        a, b = n.inputs
        ca, cb = self.const(a), self.const(b)
        if cb is not None and ca is None:
            return a, cb, False
        if ca is not None and cb is None:
            return b, ca, True
        return None

    def consumer_chain_head(self, name: str, nodes: list) -> Optional[LNode]:
        """The one operator reading ``name`` when it is single-use."""
        if not self.single_use(name):
            return None
        for n in nodes:
            if name in n.inputs:
                return n
        return None


def _close(value: Optional[float], target: float, tol: float = 1e-3) -> bool:
    return value is not None and abs(value - target) <= tol * max(1.0, abs(target))


def _new_const(pg: PreparedGraph, base: str, arr: np.ndarray) -> str:
    name, k = base, 1
    while name in pg.constants or name in pg.shapes:
        name, k = f"{base}_{k}", k + 1
    pg.constants[name] = arr
    pg.shapes[name] = tuple(arr.shape)
    pg.elem_types[name] = 1
    return name


def _replace(nodes: list, remove: list, new: LNode, at: LNode) -> list:
    """``nodes`` with the ``remove`` nodes gone and ``new`` standing where ``at`` stood."""
    gone = {id(n) for n in remove}
    out = []
    for n in nodes:
        if n is at:
            out.append(new)
        elif id(n) not in gone:
            out.append(n)
    return out


# ------------------------------------------------------------------------------- identity arithmetic


def drop_identity_arithmetic(nodes: list, pg: PreparedGraph) -> list:
    """Mul/Div by 1 and Add/Sub of 0 (exporters write Swish's beta = 1 as Mul(x, 1.0)) are removed, their
    readers rewired to the input, so that the patterns around them are recognised."""
    idx = _Index(nodes, pg)
    rename, keep = {}, []
    for n in nodes:
        s = idx.split_const(n)
        neutral = 1.0 if n.op_type in ("Mul", "Div") else 0.0
        if (s is not None and not s[2] and s[1].size == 1 and float(s[1].reshape(-1)[0]) == neutral
                and n.outputs[0] not in idx.graph_outputs
                and tuple(pg.shapes.get(s[0], ())) == tuple(pg.shapes.get(n.outputs[0], ()))):
            rename[n.outputs[0]] = rename.get(s[0], s[0])
            continue
        n.inputs = [rename.get(i, i) for i in n.inputs]
        keep.append(n)
    return keep


# ------------------------------------------------------------------------------------ affine folding


def _channel_vector(c: np.ndarray, out_shape: tuple, axis: int) -> Optional[np.ndarray]:
    """The constant as one value per output channel (length out_shape[axis]), or None when it varies along
    another axis or would change the output's shape by broadcasting."""
    if c.size == 1:
        return np.full(out_shape[axis], float(c.reshape(-1)[0]), np.float64)
    if c.ndim > len(out_shape):
        return None
    shape = (1,) * (len(out_shape) - c.ndim) + tuple(c.shape)
    for i, (s, o) in enumerate(zip(shape, out_shape)):
        if s != 1 and (i != axis or s != o):
            return None
    return c.reshape(-1).astype(np.float64)


def _out_channel_layout(n: LNode, pg: PreparedGraph) -> Optional[tuple]:
    """(channel axis of the output, channel axis of the weight, weight) for a foldable producer."""
    w = pg.constants.get(n.inputs[1]) if len(n.inputs) > 1 else None
    if w is None or np.asarray(w).dtype.kind != "f":
        return None
    if n.op_type == "Conv":
        return 1, 0, w
    if n.op_type == "ConvTranspose":
        return (1, 1, w) if n.attrs.get("group", 1) == 1 else None
    if n.op_type == "Gemm":
        if n.attrs.get("alpha", 1.0) != 1.0 or n.attrs.get("beta", 1.0) != 1.0:
            return None
        return 1, (0 if n.attrs.get("transB", 0) else 1), w
    return None


def fold_affine(nodes: list, pg: PreparedGraph) -> list:
    """Conv/ConvTranspose/Gemm -> Mul|Div|Add|Sub(constant per channel or scalar) folds into the layer."""
    changed = True
    count = 0
    while changed:
        changed = False
        idx = _Index(nodes, pg)
        for n in nodes:
            if n.op_type not in WEIGHTED or n.act is not None or len(n.outputs) != 1:
                continue
            y = n.outputs[0]
            nxt = idx.consumer_chain_head(y, nodes)
            split = idx.split_const(nxt) if nxt is not None else None
            layout = _out_channel_layout(n, pg)
            if split is None or layout is None:
                continue
            _, c, const_first = split
            if nxt.op_type == "Div" and const_first:
                continue  # c / y is not affine in y
            out_shape = pg.shapes[y]
            if tuple(pg.shapes[nxt.outputs[0]]) != tuple(out_shape):
                continue  # the constant broadcasts the output to a larger shape
            vec = _channel_vector(np.asarray(c), tuple(out_shape), layout[0])
            if vec is None or (nxt.op_type == "Div" and np.any(vec == 0)):
                continue
            scale, shift = np.ones_like(vec), np.zeros_like(vec)
            if nxt.op_type == "Mul":
                scale = vec
            elif nxt.op_type == "Div":
                scale = 1.0 / vec
            elif nxt.op_type == "Add":
                shift = vec
            elif const_first:  # c - y
                scale, shift = -np.ones_like(vec), vec
            else:  # y - c
                shift = -vec
            w_axis, w = layout[1], np.asarray(layout[2], np.float64)
            bshape = [1] * w.ndim
            bshape[w_axis] = -1
            new_w = (w * scale.reshape(bshape)).astype(np.float32)
            b_name = n.inputs[2] if len(n.inputs) > 2 else None
            b = idx.const(b_name)
            n_out = len(vec)
            b = np.zeros(n_out) if b is None else np.broadcast_to(np.asarray(b, np.float64).reshape(-1), (n_out,))
            new_b = (b * scale + shift).astype(np.float32)
            inputs = list(n.inputs) + [None] * (3 - len(n.inputs))
            inputs[1] = _new_const(pg, f"{n.inputs[1]}__folded_{n.name}", new_w)
            inputs[2] = _new_const(pg, f"{b_name or n.name + '_bias'}__folded_{n.name}", new_b)
            n.inputs = inputs
            n.outputs = list(nxt.outputs)
            nodes = [m for m in nodes if m is not nxt]
            count += 1
            changed = True
            break
    if count:
        LOG.info("folded %d constant Mul/Div/Add/Sub layers into Conv/ConvTranspose/Gemm weights", count)
    return nodes


# ------------------------------------------------------------------------ HardSigmoid / HardSwish


def _hard_sigmoid_from(idx: _Index, last: LNode) -> Optional[tuple]:
    """If ``last`` ends a decomposed HardSigmoid, (x, alpha, beta, replaced nodes), else None.

    Forms: Div(Clip(Add(x, 3), 0, 6), 6) / Mul(..., 1/6), and Clip(Add(Mul(x, a), b), 0, 1).
    """
    if last.op_type == "Clip" and _close(last.attrs.get("min"), 0.0) and _close(last.attrs.get("max"), 1.0):
        add = idx.producer.get(last.inputs[0])
        s = idx.split_const(add) if add is not None and idx.single_use(last.inputs[0]) else None
        if s is None or add.op_type not in ("Add", "Sub") or s[1].size != 1 or s[2] and add.op_type == "Sub":
            return None
        beta = float(s[1].reshape(-1)[0]) * (-1 if add.op_type == "Sub" else 1)
        mul = idx.producer.get(s[0])
        m = idx.split_const(mul) if mul is not None and idx.single_use(s[0]) else None
        if m is not None and mul.op_type in ("Mul", "Div") and m[1].size == 1 and not m[2]:
            alpha = float(m[1].reshape(-1)[0])
            alpha = 1.0 / alpha if mul.op_type == "Div" else alpha
            return m[0], alpha, beta, [mul, add, last]
        return None
    s = idx.split_const(last)
    if s is None or s[2] or s[1].size != 1:
        return None
    k = float(s[1].reshape(-1)[0])
    if not ((last.op_type == "Div" and _close(k, 6.0)) or (last.op_type == "Mul" and _close(k, 1 / 6))):
        return None
    clip = idx.producer.get(s[0])
    if (clip is None or clip.op_type != "Clip" or not idx.single_use(s[0]) or not _close(clip.attrs.get("min"), 0.0)
            or not _close(clip.attrs.get("max"), 6.0)):
        return None
    add = idx.producer.get(clip.inputs[0])
    a = idx.split_const(add) if add is not None and idx.single_use(clip.inputs[0]) else None
    if a is None or add.op_type != "Add" or a[1].size != 1 or not _close(float(a[1].reshape(-1)[0]), 3.0):
        return None
    return a[0], 1.0 / 6.0, 0.5, [add, clip, last]


def fuse_hard_activations(nodes: list, pg: PreparedGraph) -> list:
    """Decomposed HardSigmoid -> HardSigmoid; x * HardSigmoid(x) -> HardSwish (see the module doc)."""
    for _ in range(len(nodes)):
        idx = _Index(nodes, pg)
        for n in nodes:
            found = _hard_sigmoid_from(idx, n)
            if found is not None:
                x, alpha, beta, parts = found
                new = LNode("HardSigmoid", parts[-1].name, "HardSigmoid", [x], list(n.outputs),
                            {"alpha": alpha, "beta": beta})
                nodes = _replace(nodes, parts, new, n)
                break
            hs = _hard_swish_from(idx, n)
            if hs is not None:
                x, parts = hs
                nodes = _replace(nodes, parts, LNode("HardSwish", n.name, "HardSwish", [x], list(n.outputs)), n)
                break
        else:
            return nodes
    return nodes


def _hard_swish_from(idx: _Index, last: LNode) -> Optional[tuple]:
    """Mul(x, HardSigmoid(x; 1/6, 0.5)) -> (x, [hsig, mul]); Div(Mul(x, Clip(x+3, 0, 6)), 6) likewise."""
    if last.op_type == "Mul" and len(last.inputs) == 2 and last.act is None:
        for x, g in (last.inputs, last.inputs[::-1]):
            hs = idx.producer.get(g)
            if (hs is not None and hs.op_type == "HardSigmoid" and hs.inputs[0] == x and idx.single_use(g)
                    and _close(hs.attrs.get("alpha"), 1 / 6) and _close(hs.attrs.get("beta"), 0.5)
                    and idx.pg.shapes.get(x) == idx.pg.shapes.get(last.outputs[0])):
                return x, [hs, last]
        return None
    s = idx.split_const(last)
    if s is None or s[2] or s[1].size != 1:
        return None
    k = float(s[1].reshape(-1)[0])
    if not ((last.op_type == "Div" and _close(k, 6.0)) or (last.op_type == "Mul" and _close(k, 1 / 6))):
        return None
    mul = idx.producer.get(s[0])
    if mul is None or mul.op_type != "Mul" or len(mul.inputs) != 2 or not idx.single_use(s[0]):
        return None
    for x, r in (mul.inputs, mul.inputs[::-1]):
        clip = idx.producer.get(r)
        if (clip is None or clip.op_type != "Clip" or not idx.single_use(r) or not _close(clip.attrs.get("min"), 0.0)
                or not _close(clip.attrs.get("max"), 6.0)):
            continue
        add = idx.producer.get(clip.inputs[0])
        a = idx.split_const(add) if add is not None and idx.single_use(clip.inputs[0]) else None
        if (a is not None and add.op_type == "Add" and a[0] == x and a[1].size == 1
                and _close(float(a[1].reshape(-1)[0]), 3.0)):
            return x, [add, clip, mul, last]
    return None


# ----------------------------------------------------------------------- layers made by LOWERINGS


def _lowered(op_type: str, name: str, inputs: list, output: str, pg: PreparedGraph,
             **attrs) -> Optional[LNode]:
    """The simulator layer for one ONNX node, through the operator's own lowering (so the fused layer is
    exactly what the ONNX operator would give); None when the simulator lacks the operator."""
    from onnx import helper
    if op_type not in LOWERINGS or op_type not in fmt.OP_TYPES:
        return None
    node = helper.make_node(op_type, inputs, [output], name=name, **attrs)
    try:
        return LOWERINGS[op_type](_Ctx(node, pg))
    except Exception as exc:  # an attribute variant the lowering refuses: keep the decomposed form
        LOG.debug("not fusing %s %s: %s", op_type, name, exc)
        return None


def _x_times_half(idx: _Index, mul: LNode, inner: str) -> Optional[tuple]:
    """For mul = Mul(a, b) with one side ``inner``: the x it multiplies, allowing x*0.5 on the other side
    or a following Mul(0.5). Returns (x, half_applied_node_or_None)."""
    other = mul.inputs[1] if mul.inputs[0] == inner else mul.inputs[0]
    p = idx.producer.get(other)
    s = idx.split_const(p) if p is not None and idx.single_use(other) else None
    if s is not None and p.op_type == "Mul" and s[1].size == 1 and _close(float(s[1].reshape(-1)[0]), 0.5):
        return s[0], p
    return other, None


def _fuse_each(nodes: list, pg: PreparedGraph, match: Callable) -> list:
    """Apply one fusion until nothing matches. ``match(idx, n, nodes)`` returns None (no match at ``n``),
    or (the nodes it replaces, the fused layer or None when the simulator lacks it, the anchor node)."""
    for _ in range(len(nodes)):
        idx = _Index(nodes, pg)
        for n in nodes:
            found = match(idx, n, nodes)
            if found is None:
                continue
            parts, new, anchor = found
            if new is None:
                return nodes
            nodes = _replace(nodes, parts, new, anchor)
            break
        else:
            return nodes
    return nodes


def fuse_gelu(nodes: list, pg: PreparedGraph) -> list:
    """x * 0.5 * (1 + erf(x / sqrt(2))) and 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3))) -> Gelu."""
    def match(idx: _Index, n: LNode, nodes: list) -> Optional[tuple]:
        found = _gelu_from(idx, n, nodes)
        if found is None:
            return None
        x, parts, last, approx = found
        attrs = {"approximate": "tanh"} if approx else {}
        return parts, _lowered("Gelu", last.name, [x], last.outputs[0], pg, **attrs), last

    return _fuse_each(nodes, pg, match)


def _gelu_core(idx: _Index, core: LNode) -> Optional[tuple]:
    """(x, nodes, tanh?) when ``core`` (an Erf or Tanh) computes erf(x/sqrt2) or tanh(k(x + c x^3))."""
    t = core.inputs[0]
    if not idx.single_use(t):
        return None
    p = idx.producer.get(t)
    s = idx.split_const(p) if p is not None else None
    if s is None or s[2] or s[1].size != 1:
        return None
    k = float(s[1].reshape(-1)[0])
    k = 1.0 / k if p.op_type == "Div" else k if p.op_type == "Mul" else None
    if core.op_type == "Erf":
        return (s[0], [p, core], False) if _close(k, 1 / math.sqrt(2)) else None
    if not _close(k, math.sqrt(2 / math.pi)):
        return None
    add = idx.producer.get(s[0])
    if add is None or add.op_type != "Add" or not idx.single_use(s[0]) or len(add.inputs) != 2:
        return None
    for x, cube in (add.inputs, add.inputs[::-1]):
        m = idx.producer.get(cube)
        ms = idx.split_const(m) if m is not None and idx.single_use(cube) else None
        if ms is None or m.op_type != "Mul" or ms[1].size != 1 or not _close(float(ms[1].reshape(-1)[0]), 0.044715):
            continue
        pw = idx.producer.get(ms[0])
        if pw is None or not idx.single_use(ms[0]):
            continue
        if pw.op_type == "Pow" and pw.inputs[0] == x and _close(idx.scalar(pw.inputs[1]), 3.0):
            return x, [pw, m, add, p, core], True
    return None


def _gelu_from(idx: _Index, core: LNode, nodes: list) -> Optional[tuple]:
    if core.op_type not in ("Erf", "Tanh"):
        return None
    found = _gelu_core(idx, core)
    if found is None:
        return None
    x, parts, approx = found
    plus = idx.consumer_chain_head(core.outputs[0], nodes)
    s = idx.split_const(plus) if plus is not None else None
    if s is None or plus.op_type != "Add" or s[1].size != 1 or not _close(float(s[1].reshape(-1)[0]), 1.0):
        return None
    mul = idx.consumer_chain_head(plus.outputs[0], nodes)
    if mul is None or mul.op_type != "Mul" or len(mul.inputs) != 2 or mul.act is not None:
        return None
    other, half = _x_times_half(idx, mul, plus.outputs[0])
    if other != x:
        return None
    parts = parts + [plus, mul] + ([half] if half is not None else [])
    last = mul
    if half is None:
        h = idx.consumer_chain_head(mul.outputs[0], nodes)
        hs = idx.split_const(h) if h is not None else None
        if hs is None or hs[1].size != 1:
            return None
        k = float(hs[1].reshape(-1)[0])
        if not ((h.op_type == "Mul" and _close(k, 0.5)) or (h.op_type == "Div" and not hs[2] and _close(k, 2.0))):
            return None
        parts.append(h)
        last = h
    return x, parts, last, approx


# ------------------------------------------------------------------------------------- LayerNorm


def decomposed_layernorms(nodes: list, pg: PreparedGraph) -> list:
    """The layer names of every decomposed LayerNorm still in ``nodes`` (one list per LayerNorm): where the
    simulator has no LayerNormalization layer, precision.py keeps them in float16, as the NPU computes
    normalisation in higher precision."""
    idx = _Index(nodes, pg)
    found = []
    for n in nodes:
        hit = _layernorm_from(idx, n, nodes)
        if hit is not None:
            found.append([p.name for p in hit[1]])
    return found


def fuse_layernorm(nodes: list, pg: PreparedGraph) -> list:
    """ReduceMean/Sub/Pow(2)/ReduceMean/Add(eps)/Sqrt/Div [Mul(gamma)] [Add(beta)] -> LayerNormalization."""
    def match(idx: _Index, n: LNode, nodes: list) -> Optional[tuple]:
        found = _layernorm_from(idx, n, nodes)
        if found is None:
            return None
        x, parts, last, axis, eps, gamma, beta = found
        size = pg.shapes[x][axis:]
        g = _new_const(pg, f"{last.name}_ln_scale", np.broadcast_to(gamma, size).astype(np.float32).copy())
        b = _new_const(pg, f"{last.name}_ln_bias", np.broadcast_to(beta, size).astype(np.float32).copy())
        return parts, _lowered("LayerNormalization", last.name, [x, g, b], last.outputs[0], pg, axis=axis,
                               epsilon=float(eps)), last

    return _fuse_each(nodes, pg, match)


def _trailing_axes(n: LNode, rank: int) -> Optional[int]:
    axes = sorted(n.attrs.get("axes", []))
    if not axes or axes != list(range(axes[0], rank)) or not n.attrs.get("keepdims", 1):
        return None
    return axes[0]


def _layernorm_from(idx: _Index, div: LNode, nodes: list) -> Optional[tuple]:
    if div.op_type != "Div" or len(div.inputs) != 2 or div.act is not None:
        return None
    d, std = div.inputs
    sub = idx.producer.get(d)
    sq = idx.producer.get(std)
    if sub is None or sq is None or sub.op_type != "Sub" or sq.op_type != "Sqrt" or not idx.single_use(std):
        return None
    x, m = sub.inputs
    mean = idx.producer.get(m)
    if mean is None or mean.op_type != "ReduceMean" or mean.inputs[0] != x:
        return None
    rank = len(idx.pg.shapes[x])
    axis = _trailing_axes(mean, rank)
    if axis is None or not idx.single_use(m) or idx.uses.get(d) not in (2, 3) or d in idx.graph_outputs:
        return None
    add = idx.producer.get(sq.inputs[0])
    a = idx.split_const(add) if add is not None and idx.single_use(sq.inputs[0]) else None
    if a is None or add.op_type != "Add" or a[1].size != 1:
        return None
    eps = float(a[1].reshape(-1)[0])
    var = idx.producer.get(a[0])
    if var is None or var.op_type != "ReduceMean" or _trailing_axes(var, rank) != axis or not idx.single_use(a[0]):
        return None
    sqr = idx.producer.get(var.inputs[0])
    if sqr is None or not idx.single_use(var.inputs[0]):
        return None
    if not ((sqr.op_type == "Pow" and sqr.inputs[0] == d and _close(idx.scalar(sqr.inputs[1]), 2.0))
            or (sqr.op_type == "Mul" and sqr.inputs == [d, d])):
        return None
    if idx.uses.get(d) != (3 if sqr.op_type == "Mul" else 2):
        return None  # x - mean is read by the square and the Div only
    parts = [mean, sub, sqr, var, add, sq, div]
    last, gamma, beta = div, np.float32(1.0), np.float32(0.0)
    size = tuple(idx.pg.shapes[x][axis:])
    for op in ("Mul", "Add"):
        nxt = idx.consumer_chain_head(last.outputs[0], nodes)
        s = idx.split_const(nxt) if nxt is not None else None
        if s is None or nxt.op_type != op:
            continue  # the optional Mul(gamma) may be absent while Add(beta) follows
        c = np.asarray(s[1], np.float32)
        try:
            if c.ndim > len(size) or np.broadcast_shapes(c.shape, size) != size:
                break
        except ValueError:
            break
        if op == "Mul":
            gamma = c
        else:
            beta = c
        parts.append(nxt)
        last = nxt
    return x, parts, last, axis, eps, np.asarray(gamma, np.float32), np.asarray(beta, np.float32)


# ------------------------------------------------------------------------------------------ Mish


def fuse_mish(nodes: list, pg: PreparedGraph) -> list:
    """Mul(x, Tanh(Softplus(x))) -> Mish when the simulator has a Mish layer."""
    def match(idx: _Index, n: LNode, nodes: list) -> Optional[tuple]:
        if n.op_type != "Mul" or len(n.inputs) != 2 or n.act is not None:
            return None
        for x, t in (n.inputs, n.inputs[::-1]):
            tanh = idx.producer.get(t)
            if tanh is None or tanh.op_type != "Tanh" or not idx.single_use(t):
                continue
            sp = idx.producer.get(tanh.inputs[0])
            if sp is not None and sp.op_type == "Softplus" and sp.inputs[0] == x and idx.single_use(tanh.inputs[0]):
                return [sp, tanh, n], _lowered("Mish", n.name, [x], n.outputs[0], pg), n
        return None

    return _fuse_each(nodes, pg, match)


# ------------------------------------------------------------------------------ Linear = MatMul + Add

VIEW_2D = "::2d"  # suffix of a rewrite-made 2-D view (rows x columns) of an ONNX tensor


def view_source(name: str) -> Optional[str]:
    """The ONNX tensor whose values a rewrite-made tensor holds (reshaped), or None for ONNX tensors.
    Calibration and accuracy_analysis read the source's values for it."""
    return name[: -len(VIEW_2D)] if name.endswith(VIEW_2D) else None


def _view_2d(pg: PreparedGraph, name: str) -> str:
    view = name + VIEW_2D
    shape = tuple(pg.shapes[name])
    pg.shapes[view] = (int(np.prod(shape[:-1])), int(shape[-1]))
    pg.elem_types[view] = pg.elem_types.get(name, 1)
    return view


def _linear_from(idx: _Index, add: LNode) -> Optional[tuple]:
    """(MatMul, x, W, bias vector) when ``add`` adds a per-column constant to MatMul(x, constant 2-D W)."""
    split = idx.split_const(add)
    if split is None or add.op_type != "Add":
        return None
    y, c, _ = split
    mm = idx.producer.get(y)
    if mm is None or mm.op_type != "MatMul" or mm.act is not None or not idx.single_use(y):
        return None
    w = idx.const(mm.inputs[1])
    x_shape = tuple(idx.pg.shapes.get(mm.inputs[0], ()))
    if w is None or w.ndim != 2 or len(x_shape) < 2 or mm.inputs[0] in idx.pg.constants:
        return None
    out_shape = tuple(idx.pg.shapes[add.outputs[0]])
    if out_shape != tuple(idx.pg.shapes[y]):
        return None  # the bias broadcasts the product to a larger shape
    bias = _channel_vector(np.asarray(c), out_shape, len(out_shape) - 1)
    if bias is None:
        return None
    return mm, mm.inputs[0], w, bias


def _fold_column_affine(idx: _Index, nodes: list, add: LNode, w: np.ndarray, bias: np.ndarray) -> tuple:
    """Per-column constant Mul/Div/Add/Sub right after a Linear (ConvNeXt's layer scale) folded into W and
    the bias: (W, bias, the folded nodes)."""
    folded, end = [], add.outputs[0]
    while True:
        nxt = idx.consumer_chain_head(end, nodes)
        split = idx.split_const(nxt) if nxt is not None else None
        if split is None or tuple(idx.pg.shapes[nxt.outputs[0]]) != tuple(idx.pg.shapes[end]):
            return w, bias, folded
        _, c, const_first = split
        vec = _channel_vector(np.asarray(c), tuple(idx.pg.shapes[end]), len(idx.pg.shapes[end]) - 1)
        if vec is None or (nxt.op_type == "Div" and (const_first or np.any(vec == 0))):
            return w, bias, folded
        if nxt.op_type in ("Mul", "Div"):
            scale = vec if nxt.op_type == "Mul" else 1.0 / vec
            w, bias = w * scale[None, :], bias * scale
        elif nxt.op_type == "Add" or (nxt.op_type == "Sub" and not const_first):
            bias = bias + (vec if nxt.op_type == "Add" else -vec)
        else:  # c - y
            w, bias = -w, vec - bias
        folded.append(nxt)
        end = nxt.outputs[0]


def fuse_linear_bias(nodes: list, pg: PreparedGraph) -> list:
    """MatMul(x, W) + b (W a constant 2-D matrix, b per column) -> [Reshape ->] Gemm [-> activation] [->
    Reshape]: the bias goes into the accumulator. A following activation moves before the last Reshape so
    that it fuses into the Gemm as it would have into the Add."""
    count = 0
    for _ in range(len(nodes)):
        idx = _Index(nodes, pg)
        found = next(((add, m) for add in nodes for m in [_linear_from(idx, add)] if m is not None), None)
        if found is None:
            break
        add, (mm, x, w, bias) = found
        flat = len(pg.shapes[x]) > 2
        w, bias, affine = _fold_column_affine(idx, nodes, add, np.asarray(w, np.float64), bias)
        remove = [mm, add] + affine
        add = affine[-1] if affine else add
        w_name = _new_const(pg, f"{mm.inputs[1]}__folded_{add.name}", w.astype(np.float32)) if affine else mm.inputs[1]
        b_name = _new_const(pg, f"{mm.inputs[1]}__bias_{add.name}", bias.astype(np.float32))
        new = []
        a = x
        if flat:
            a = _view_2d(pg, x)
            if a not in idx.producer:  # one view per tensor, shared by the projections that read it
                new.append(LNode("Reshape", f"{mm.name}{VIEW_2D}", "Reshape", [x], [a]))
        end, last = add.outputs[0], add
        act = idx.consumer_chain_head(end, nodes)
        if act is not None and (act.op_type not in FUSABLE_ACTS or act.act is not None):
            act = None
        gemm_out = _view_2d(pg, end) if flat else end
        gemm = LNode("Gemm", mm.name, "MatMul", [a, w_name, b_name], [gemm_out],
                     {"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 0})
        new.append(gemm)
        if flat and act is not None:
            act_out = act.outputs[0]
            act.inputs = [gemm_out] + list(act.inputs[1:])
            act.outputs = [_view_2d(pg, act_out)]
            new.append(act)
            end, last = act_out, act
            gemm_out = act.outputs[0]
            remove.append(act)
        if flat:
            new.append(LNode("Reshape", add.name if last is add else last.name + "__view", "Reshape",
                             [gemm_out], [end]))
        gone = {id(n) for n in remove}
        out = []
        for n in nodes:
            if n is mm:
                out.extend(new)
            elif id(n) not in gone:
                out.append(n)
        nodes = out
        count += 1
    if count:
        LOG.info("%d MatMul + bias Add pairs run as Gemm layers (bias in the accumulator)", count)
    return nodes


# ------------------------------------------------------------------------- cross-layer equalisation

# Data-only layers a positive per-channel scale passes through unchanged (max and mean commute with it).
CLE_PASS = ("MaxPool", "AveragePool")
CLE_ITERATIONS = 20
RESCALED = "::cle"  # suffix of a tensor that cross-layer equalisation divided by a factor per channel
CLE_MAX_SCALE = 1e3  # bound on each channel's factor (and 1 / factor): a near-dead channel stays usable


def _homogeneous(n: LNode) -> bool:
    """The fused activation satisfies f(s x) = s f(x) for every s > 0 (identity, ReLU, LeakyReLU, and a
    Clip with no upper bound); ReLU6, SiLU, HardSwish, Sigmoid ... do not, so no scale may pass them."""
    if n.act in (None, "Relu", "LeakyRelu"):
        return True
    return n.act == "Clip" and n.act_params[0] == 0.0 and not math.isfinite(n.act_params[1])


def _cle_producer(n: LNode, pg: PreparedGraph) -> Optional[int]:
    """Weight axis of the output channels of a layer CLE may scale per output channel, else None."""
    layout = _out_channel_layout(n, pg)
    if layout is None or n.op_type == "ConvTranspose" or len(n.outputs) != 1 or not _homogeneous(n):
        return None
    if len(n.inputs) > 2 and n.inputs[2]:
        b = pg.constants.get(n.inputs[2])
        if b is None or np.asarray(b).size not in (1, np.asarray(layout[2]).shape[layout[1]]):
            return None
    return layout[1]


def _cle_consumer_view(n: LNode, pg: PreparedGraph, channels: int) -> Optional[tuple]:
    """The weight's shape as (groups, output rows, input channels per group, rest) for a Conv/Gemm whose
    input channels CLE may scale, else None."""
    w = pg.constants.get(n.inputs[1]) if len(n.inputs) > 1 else None
    if w is None or np.asarray(w).dtype.kind != "f":
        return None
    w = np.asarray(w)
    if n.op_type == "Conv":
        group = int(n.attrs.get("group", 1))
        cout, cin_g = w.shape[:2]
        if cin_g * group != channels or cout % group:
            return None
        return group, cout // group, cin_g, -1
    if n.op_type == "Gemm":
        if n.attrs.get("transA", 0) or n.attrs.get("alpha", 1.0) != 1.0 or w.ndim != 2:
            return None
        trans_b = bool(n.attrs.get("transB", 0))
        k = w.shape[1] if trans_b else w.shape[0]
        return (1, w.shape[0], k, 1) if trans_b else (1, 1, k, w.shape[1])
    return None


def _depthwise(n: LNode, pg: PreparedGraph) -> bool:
    w = pg.constants.get(n.inputs[1])
    group = int(n.attrs.get("group", 1))
    return n.op_type == "Conv" and group > 1 and w is not None and np.asarray(w).shape[1] == 1


def _cle_pairs(nodes: list, pg: PreparedGraph, depthwise_only: bool = False) -> list:
    """(producer, consumer, layers from producer to consumer) joined by one tensor that only the consumer
    reads, through CLE_PASS layers that each have one reader; ``depthwise_only``: pairs with a depthwise
    Conv on either side."""
    idx = _Index(nodes, pg)
    readers: dict = {}
    for n in nodes:
        for i in n.inputs:
            readers.setdefault(i, []).append(n)
    pairs = []
    for n in nodes:
        if _cle_producer(n, pg) is None:
            continue
        t = n.outputs[0]
        nxt = readers.get(t, [None])[0] if idx.single_use(t) else None
        while nxt is not None and nxt.op_type in CLE_PASS and nxt.act is None and idx.single_use(nxt.outputs[0]):
            t = nxt.outputs[0]
            nxt = readers[t][0] if t in readers else None
        if nxt is None or nxt.op_type not in ("Conv", "Gemm") or nxt.inputs[0] != t or t in nxt.inputs[1:]:
            continue
        channels = int(np.asarray(pg.constants[n.inputs[1]]).shape[_cle_producer(n, pg)])
        if depthwise_only and not (_depthwise(n, pg) or _depthwise(nxt, pg)):
            continue
        if _cle_consumer_view(nxt, pg, channels) is not None:
            between = [n] + [m for m in nodes if m.op_type in CLE_PASS and _feeds(m, n, nxt, readers)]
            pairs.append((n, nxt, between))
    return pairs


def _feeds(m: LNode, a: LNode, b: LNode, readers: dict) -> bool:
    """``m`` lies on the single-reader chain from ``a`` to ``b`` (data-only layers in between)."""
    t = a.outputs[0]
    while t != b.inputs[0]:
        nxt = readers[t][0]
        if nxt is m:
            return True
        t = nxt.outputs[0]
    return False


def derived_value(pg: PreparedGraph, name: str, onnx_value: np.ndarray) -> np.ndarray:
    """The value of rewrite-made tensor ``name`` given its ONNX source's value (:func:`source_tensor`)."""
    if name in pg.rescaled:
        s = pg.rescaled[name][1]
        v = np.asarray(onnx_value).reshape(pg.shapes[name])
        return (v / s.reshape((1, -1) + (1,) * (v.ndim - 2))).astype(v.dtype)
    return np.asarray(onnx_value).reshape(pg.shapes[name])


def source_tensor(pg: PreparedGraph, name: str) -> Optional[str]:
    """The ONNX tensor calibration observes for ``name`` (a view or a rescaled tensor), None for ONNX
    tensors themselves."""
    return pg.rescaled[name][0] if name in pg.rescaled else view_source(name)


def cle_default(quantized_method: str, quantized_algorithm: str = "normal") -> bool | str:
    """What int8 builds equalise when ``cross_layer_equalization`` is not given: every pair with 'mmse'
    (since session 11: with its output-aware search, corpus v2 mmse/channel rec 0.98255 -> 0.99206, det
    0.99150 -> 0.99187; mmse/layer det 0.97680 -> 0.97959, rec 0.97404 -> 0.97620), the depthwise pairs
    with per-tensor weights and min/max ranges, nothing otherwise (docs/quantization.md has the corpus
    measurements: per-channel weights lose rows with it under 'normal')."""
    if quantized_algorithm == "mmse":
        return True
    return "depthwise" if quantized_method == "layer" and quantized_algorithm == "normal" else False


def equalize_cross_layer(nodes: list, pg: PreparedGraph, depthwise_only: bool = False) -> list:
    """Cross-layer equalisation (Nagel et al., "Data-free quantization", 2019).

    For consecutive weighted layers A -> B whose joining tensor only B reads and whose activation is
    positively homogeneous, output channel i of A is divided by s_i and input channel i of B multiplied by
    it: B(f(A(x) / s) * s) = B(f(A(x))) exactly. s_i = sqrt(r_A,i / r_B,i) (r = max |w| of the channel)
    makes both ranges sqrt(r_A,i r_B,i), so per-tensor int8 weights (``quantized_method='layer'``) no longer
    spend their levels on the widest channel; a depthwise Conv followed by a pointwise one gains most.
    Layers in several pairs are balanced by repeating the sweep. The weights and biases become new
    constants; tensor names do not change (the joining tensors' values do, by a factor per channel).
    """
    pairs = _cle_pairs(nodes, pg, depthwise_only)
    if not pairs:
        return nodes
    weights: dict = {}  # node id -> float64 weight being rescaled
    biases: dict = {}
    factors = [np.ones(1) for _ in pairs]  # per pair: the product of its channel factors so far

    def weight(n: LNode) -> np.ndarray:
        if id(n) not in weights:
            weights[id(n)] = np.asarray(pg.constants[n.inputs[1]], np.float64).copy()
        return weights[id(n)]

    for _ in range(CLE_ITERATIONS):
        worst = 0.0
        for k, (a, b, _) in enumerate(pairs):
            wa, wb = weight(a), weight(b)
            axis = _cle_producer(a, pg)
            moved = np.moveaxis(wa, axis, 0)
            r_a = np.abs(moved.reshape(moved.shape[0], -1)).max(axis=1)
            view = _cle_consumer_view(b, pg, len(r_a))
            wb4 = wb.reshape(view)
            r_b = np.abs(np.moveaxis(wb4, 2, 0).reshape(wb4.shape[2], wb4.shape[0], -1))  # (cin_g, G, rest)
            r_b = r_b.transpose(1, 0, 2).reshape(len(r_a), -1).max(axis=1)
            s = np.ones_like(r_a)
            live = (r_a > 0) & (r_b > 0)
            s[live] = np.clip(np.sqrt(r_a[live] / r_b[live]), 1.0 / CLE_MAX_SCALE, CLE_MAX_SCALE)
            worst = max(worst, float(np.max(np.abs(np.log(s)))))
            factors[k] = factors[k] * s
            shape = [1] * wa.ndim
            shape[axis] = -1
            weights[id(a)] = wa / s.reshape(shape)
            if len(a.inputs) > 2 and a.inputs[2]:
                if id(a) not in biases:
                    b0 = np.asarray(pg.constants[a.inputs[2]], np.float64).reshape(-1)
                    biases[id(a)] = np.broadcast_to(b0, s.shape)
                biases[id(a)] = biases[id(a)] / s
            g = wb4.shape[0]
            weights[id(b)] = (wb4 * s.reshape(g, 1, -1, 1)).reshape(wb.shape)
        if worst < 1e-4:
            break
    for (_, _, between), s in zip(pairs, factors):
        # every tensor from A's output to B's input now holds the ONNX tensor divided by s per channel:
        # it gets a name of its own, so that nothing reads the ONNX tensor's values for it
        for m in between:
            onnx_name = view_source(m.outputs[0]) or m.outputs[0]
            new = m.outputs[0] + RESCALED
            pg.shapes[new] = pg.shapes[m.outputs[0]]
            pg.elem_types[new] = pg.elem_types.get(m.outputs[0], 1)
            pg.rescaled[new] = (onnx_name, np.broadcast_to(s, pg.shapes[new][1:2]).astype(np.float64))
            for r in nodes:
                r.inputs = [new if i == m.outputs[0] else i for i in r.inputs]
            m.outputs = [new]
    for n in {id(n): n for a, b, _ in pairs for n in (a, b)}.values():
        n.inputs = list(n.inputs)
        n.inputs[1] = _new_const(pg, f"{n.inputs[1]}__cle_{n.name}", weights[id(n)].astype(np.float32))
        if id(n) in biases:
            n.inputs[2] = _new_const(pg, f"{n.inputs[2]}__cle_{n.name}", biases[id(n)].astype(np.float32))
    LOG.info("cross-layer equalisation: %d layer pairs", len(pairs))
    return nodes


# ---------------------------------------------------------------------------------------- driver


def rewrite(nodes: list, pg: PreparedGraph, equalize: bool | str = False) -> list:
    """Every rewrite of this module, then lower's SiLU and activation fusions (the order matters: a
    folded Conv must exist before its activation can fuse into it); with ``equalize``, cross-layer
    equalisation last (it needs the activations fused to know which ones a scale may pass; "depthwise":
    only the pairs with a depthwise Conv)."""
    before = len(nodes)
    nodes = drop_identity_arithmetic(nodes, pg)
    nodes = fold_affine(nodes, pg)
    nodes = fuse_hard_activations(nodes, pg)
    nodes = fuse_gelu(nodes, pg)
    nodes = fuse_layernorm(nodes, pg)
    nodes = fuse_mish(nodes, pg)
    nodes = fuse_linear_bias(nodes, pg)
    nodes = fuse_silu(nodes, pg)
    nodes = fuse_activations(nodes, pg)
    if equalize:
        nodes = equalize_cross_layer(nodes, pg, depthwise_only=equalize == "depthwise")
    LOG.info("graph rewrites: %d -> %d layers", before, len(nodes))
    return nodes
