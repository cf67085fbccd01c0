"""Empirical bias correction of int8 builds: each Conv/ConvTranspose/Gemm's int32 bias is corrected by the
mean per-channel error of its output, measured on the calibration set in the simulator itself.

Why: the analytic correction (builder._Assembler.bias_corrected, Nagel et al. 2019) sees the weight rounding
error applied to the fp32 input's channel means. It does not see the int8 *input* error, whose mean is not
zero behind nonlinear ops (an activation of noisy values, a clipped range, requantised elementwise ops).
PP-OCRv4 det's p2o.Conv.6 is the case that showed it (docs/quantization.md).

How: the Conv/Gemm layers are grouped by depth (the number of corrected layers on the longest path from an
input). Depth by depth, the built model runs in the simulator over the calibration samples with the biases
corrected so far (each layer is fed with its corrected, quantised upstream), and every layer of that depth
gets ``b -= mean(y_int8 - y_fp32)`` per output channel, measured where it is visible: the simulator only
shows a fused activation's output, so the pre-activation shift is estimated from positions where both
outputs lie in a monotone region of the activation, divided by its slope there, and int8 outputs at the ends
of their range (clipped) are left out. The fp32 values come from onnxruntime on the prepared graph, as
calibration's do.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

from . import format as fmt
from .dataset import read_dataset
from .prepare import PreparedGraph, make_session
from .rewrite import derived_value, source_tensor

LOG = logging.getLogger(__name__)

CORRECTED_OPS = ("Conv", "ConvTranspose", "Gemm")
# positions a channel needs (summed slope) before its measured mean is trusted
MIN_WEIGHT = 4.0
# Every visible position counts (no margin): keeping positions 2 error RMS inside the activation's monotone
# region and the int8 range lost on det (0.98641 -> 0.98490) and MobileNetV3-S (0.70972 -> 0.70964).
# Per-channel builds keep a channel's measured shift only where the two halves of the calibration samples
# (even / odd) measure shifts of one sign within CROSS_CHECK_RATIO of each other (cross_checked): with
# per-channel weights what is left to correct is small, of the size of one calibration set's noise, and
# a shift the other half does not confirm moved the logits of the random-weight classifiers as noise
# does. Corpus v2, normal/channel, fidelity / margin top-1, before -> after: det 0.98635 -> 0.98725,
# rec 0.96274 -> 0.96497, EfficientNet-B0 0.96190 -> 0.96242 / 0.625 -> 0.875, ResNet-18 top-1 m 0.923 ->
# 1.000, MobileNetV3-S 0.71906 -> 0.71795 / 0.727 -> 0.818; on two held-out sets (seeds 5000, 9000) the
# margin top-1 of the five classifiers is equal or higher, fidelity within -1e-3 (MobileNetV3-S) to
# +3e-3 (EfficientNet-B0). Per-tensor builds keep every shift: their weight rounding leaves larger,
# real biases, and the same check lost there (det/layer 0.97857 -> 0.98078 but rec 0.95974 -> 0.95262,
# MobileNetV3-S 0.72280 -> 0.71594; ratio 1.5: rec 0.94951, ratio 3: rec 0.95513).
CROSS_CHECK_RATIO = 2.0
# Per-tensor builds leave these ops with the analytic correction where their output holds one value per
# channel (a classifier's fully connected head; Gemms over tokens, as in ViT, DETR and the recogniser, stay
# corrected). There the measured shift is the mean of as many values as there are calibration images (16 in
# the corpus), and for a classifier's 1000 classes that mean follows the calibration images' own errors:
# the corrected logits were closer to fp32 on average (fidelity) while the top class flipped to the classes
# the calibration images had pushed down. EfficientNet-B0/layer (corpus v2, fidelity / margin top-1, test
# seeds 1000 / 5000 / 9000): 0.95656 / 0.91852 / 0.95542 and 5 / 8 / 5 of 8 / 10 / 11 -> 0.95599 / 0.91720 /
# 0.95414 and 6 / 9 / 7 (RKNN-Toolkit2: 0.95542 / 0.90737 / 0.94560 and 6 / 7 / 9, 22 of 29 both); ResNet-18,
# ConvNeXt-T, ViT-Ti within 1e-4, MobileNetV3-S -2e-3 (above the toolkit on every set), det and rec
# unchanged. Per-channel builds correct them, cross-checked. Squeeze-excitation Convs (also one position per
# image) stay corrected: with them too rec/layer lost 0.95974 -> 0.95484, MobileNetV3-S 0.72280 -> 0.71904.
PER_TENSOR_ANALYTIC_HEADS: tuple = ("Gemm",)
# layers with these fused activations keep the analytic correction: corrected, every SiLU network lost
# (YOLOv8n 0.99246 -> 0.99133, EfficientNet-B0 0.95768 -> 0.95504; without them 0.99245 and 0.95806)
SKIP_ACTS: tuple = ("SiLU",)


@dataclass
class _Layer:
    """One corrected layer: its op, bias and output tensor indices in the SimModel, and running sums."""

    op: int
    bias: int
    out: int
    name: str
    depth: int = 0
    num: Optional[np.ndarray] = None  # per channel: sum over visible positions of (int8 - fp32)
    den: Optional[np.ndarray] = None  # per channel: sum of the activation's slope at those positions
    shifts: list = field(default_factory=list)


def correctable_layers(sim: fmt.SimModel, skip_heads: Sequence[str] = ()) -> list:
    """The Conv/ConvTranspose/Gemm ops whose bias is an int32 constant (quant_bias made it) and whose output
    is an int8 or float16 activation (not after an activation of SKIP_ACTS), each with its depth (see the
    module docstring); ``skip_heads``: op types left out where their output holds one value per channel."""
    producer = {o: k for k, op in enumerate(sim.ops) for o in op.outputs}
    users: dict = {}
    for op in sim.ops:
        for i in op.inputs:
            if i is not None:
                users[i] = users.get(i, 0) + 1
    layers: dict = {}
    depth: dict = {}
    for k, op in enumerate(sim.ops):
        d = 0
        for i in op.inputs:
            p = producer.get(i) if i is not None else None
            if p is not None:
                d = max(d, depth[p] + (1 if p in layers else 0))
        depth[k] = d
        if (op.op_type not in CORRECTED_OPS or op.act in SKIP_ACTS or len(op.inputs) < 3 or op.inputs[2] is None
                or len(op.outputs) != 1):
            continue
        b = sim.tensors[op.inputs[2]]
        out = sim.tensors[op.outputs[0]]
        if (b.dtype != fmt.INT32 or b.data is None or b.qnt_type not in (fmt.QNT_AFFINE, fmt.QNT_CHANNEL)
                or out.dtype not in (fmt.INT8, fmt.FLOAT16) or len(out.shape) < 2 or users.get(op.inputs[2]) != 1
                or b.data.size != out.shape[1]):
            continue  # a shared bias constant would be corrected for two layers at once: left as it is
        if op.op_type in skip_heads and int(np.prod(out.shape)) == out.shape[1]:  # a batch-1 model
            continue
        layers[k] = _Layer(op=k, bias=op.inputs[2], out=op.outputs[0], name=op.name, depth=d)
    return list(layers.values())


def bias_scales(t: fmt.SimTensor) -> np.ndarray:
    """Per element, the float value of one step of the int32 bias ``t``."""
    if t.qnt_type == fmt.QNT_CHANNEL:
        return np.asarray(t.quant_scales, np.float64)
    return np.full(t.data.size, float(t.scale))


def visible_shift(act: Optional[str], params: Sequence[float], q: np.ndarray, ref: np.ndarray,
                  margin: np.ndarray | float = 0.0, ends: Optional[tuple] = None) -> Optional[tuple]:
    """Per channel (axis 1): (sum of q - ref, sum of the activation's slope) over
    the positions where the fp32 value ``ref`` lies in a monotone region of ``act``, ``margin`` (per channel)
    inside it and inside the int8 range ``ends`` (lo, hi, step), whose int8 value is not clipped; None for
    an unknown activation.

    q and ref are post-activation values; sum / slope estimates the shift before the activation (a shift
    of the bias by delta moves the output by slope * delta there). The activation's region is chosen on
    ref alone: a choice on q too would keep only the positions whose error pushed q into it (biased)."""
    m = np.asarray(margin, np.float64)
    if m.ndim:
        m = m.reshape((1, -1) + (1,) * (ref.ndim - 2))
    ones = np.ones_like(ref)
    if act is None:
        mask, slope = np.ones(ref.shape, bool), ones
    elif act in ("Relu", "HardSwish", "SiLU"):
        mask = ref > m  # x > 0, where all three are increasing
        if act == "Relu":
            slope = ones
        elif act == "HardSwish":
            # y = x (x + 3) / 6 below 3, y = x above; x from y, then the slope (2x + 3) / 6
            x = np.where(ref >= 3, ref, (-3 + np.sqrt(9 + 24 * np.maximum(ref, 0))) / 2)
            slope = np.where(ref >= 3, 1.0, (2 * x + 3) / 6)
        else:
            # invert y = x sigmoid(x) by Newton steps, then the slope s (1 + x (1 - s))
            y = np.maximum(ref, 1e-6)
            x = np.maximum(y, 0.5)
            for _ in range(12):
                sg = 1 / (1 + np.exp(-x))
                x = np.maximum(x - (x * sg - y) / (sg * (1 + x * (1 - sg))), 1e-6)
            sg = 1 / (1 + np.exp(-x))
            slope = sg * (1 + x * (1 - sg))
    elif act == "Clip":
        lo, hi = float(params[0]), float(params[1])
        mask, slope = (ref > lo + m) & (ref < hi - m), ones
    elif act == "LeakyRelu":
        alpha = float(params[0])
        mask = (ref > m) | (ref < -alpha * m)
        slope = np.where(ref > 0, 1.0, alpha)
    elif act == "Sigmoid":
        mask, slope = (ref > 0.02) & (ref < 0.98), ref * (1 - ref)
    elif act == "Tanh":
        mask, slope = np.abs(ref) < 0.96, 1 - ref * ref
    elif act == "HardSigmoid":
        alpha = float(params[0])
        mask, slope = (ref > alpha * m) & (ref < 1 - alpha * m), alpha * ones
    else:
        return None
    if ends is not None:
        # int8 range (lo, hi, step): the fp32 value inside it, the int8 one not clipped at its ends (an
        # output the range clips is off by the clipping, not by a shift the bias can undo)
        lo, hi, step = ends
        mask &= (ref > lo + m) & (ref < hi - m) & (q > lo + 0.5 * step) & (q < hi - 0.5 * step)
    axes = tuple(a for a in range(ref.ndim) if a != 1)
    err = np.where(mask, q.astype(np.float64) - ref, 0.0)
    return err.sum(axis=axes), np.where(mask, slope, 0.0).sum(axis=axes, dtype=np.float64)


def estimate_shift(parts: Sequence[tuple]) -> np.ndarray:
    """The per-channel pre-activation shift from visible_shift's sums over the samples; 0 where the
    channel has too few visible positions."""
    num = sum(p[0] for p in parts)
    den = sum(p[1] for p in parts)
    return np.where(den >= MIN_WEIGHT, num / np.maximum(den, 1e-12), 0.0)


class _Reference:
    """fp32 values of the layers' outputs for every calibration sample (onnxruntime on the prepared
    graph, as calibration computes them), and the raw samples the simulator is fed with. ``kept``: the
    values calibration already computed ([sample] -> {name: array}), used when they hold every name."""

    def __init__(self, pg: PreparedGraph, names: list, dataset: Any, config: Any,
                 kept: Optional[list] = None) -> None:
        shapes = [pg.shapes[n] for n in pg.inputs]
        mean = config.per_input(config.mean_values, len(pg.inputs), "mean_values")
        std = config.per_input(config.std_values, len(pg.inputs), "std_values")
        if kept and all(n in kept[0] for n in names):
            self.values = kept
            self.raw = [[np.asarray(x, np.float32) for x in sample.raw]
                        for sample in read_dataset(dataset, shapes, mean, std, config.quant_img_rgb2bgr, False)]
            if len(self.raw) == len(kept):
                return
        onnx_names = list(dict.fromkeys(source_tensor(pg, n) or n for n in names))
        sess = make_session(pg.model, onnx_names)
        ort_types = {"tensor(float16)": np.float16, "tensor(int64)": np.int64, "tensor(int32)": np.int32,
                     "tensor(bool)": np.bool_}
        feed_types = {i.name: ort_types.get(i.type, np.float32) for i in sess.get_inputs()}
        self.raw: list = []
        self.values: list = []  # [sample] -> {name: fp32 array}
        progress = "bias correction (fp32)" if config.progress else False
        for sample in read_dataset(dataset, shapes, mean, std, config.quant_img_rgb2bgr, progress):
            feeds = {n: x.astype(feed_types.get(n, np.float32)) for n, x in zip(pg.inputs, sample.normalised)}
            out = dict(zip(onnx_names, sess.run(onnx_names, feeds)))
            self.values.append({n: np.asarray(derived_value(pg, n, out[source_tensor(pg, n) or n]), np.float32)
                                for n in names})
            self.raw.append([np.asarray(x, np.float32) for x in sample.raw])


def segment_model(sim: fmt.SimModel, ops: Sequence[int], outputs: Sequence[int]) -> tuple:
    """The model of the ops ``ops`` of ``sim`` (indices in its topological order) alone: the tensors they
    read that none of them writes become its inputs (graph inputs keep their normalisation; others are fed
    with values computed earlier), ``outputs`` its outputs; the tensors they do not use are dropped (the
    format wants every intermediate produced). Returns (model, the fed tensors' indices in ``sim``)."""
    ops = sorted(ops)
    produced = {o for k in ops for o in sim.ops[k].outputs}
    read = [i for k in ops for i in sim.ops[k].inputs if i is not None]
    fed = sorted({i for i in read if i not in produced and sim.tensors[i].kind != fmt.KIND_CONSTANT})
    keep = sorted(set(read) | produced)
    new_index = {t: k for k, t in enumerate(keep)}
    fed_set, out_set = set(fed), set(outputs)
    tensors = []
    for t in keep:
        ts = sim.tensors[t]
        kind = (fmt.KIND_INPUT if t in fed_set else fmt.KIND_OUTPUT if t in out_set
                else fmt.KIND_INTERMEDIATE if t in produced else ts.kind)
        tensors.append(ts if kind == ts.kind else dataclasses.replace(ts, kind=kind))
    new_ops = [dataclasses.replace(sim.ops[k], inputs=[None if i is None else new_index[i] for i in sim.ops[k].inputs],
                                   outputs=[new_index[o] for o in sim.ops[k].outputs]) for k in ops]
    graph_inputs = {io.tensor: io for io in sim.inputs}
    inputs = [dataclasses.replace(graph_inputs[t], tensor=new_index[t]) if t in graph_inputs
              else fmt.IoSpec(tensor=new_index[t], layout=fmt.LAYOUT_NCHW) for t in fed]
    model = dataclasses.replace(sim, tensors=tensors, ops=new_ops, inputs=inputs,
                                outputs=[fmt.IoSpec(tensor=new_index[t]) for t in outputs])
    return model, fed


class _Runner:
    """Runs the ops a depth's layers need in the simulator, reusing every tensor already computed with the
    current biases: each op runs about once over the whole correction instead of once per depth.

    Values are kept as the simulator writes them (int8 codes, float16, float32) for every sample."""

    def __init__(self, sim: fmt.SimModel, raw: list) -> None:
        self.sim, self.raw = sim, raw
        self.producer = {o: k for k, op in enumerate(sim.ops) for o in op.outputs}
        self.consumers: dict = {}
        for k, op in enumerate(sim.ops):
            for i in op.inputs:
                if i is not None:
                    self.consumers.setdefault(i, []).append(k)
        self.graph_inputs = {io.tensor: pos for pos, io in enumerate(sim.inputs)}
        self.values: list = [{} for _ in raw]
        self.valid: set = set()  # ops whose outputs in self.values were computed with the current biases
        self.passes = 0

    def _closure(self, start: Sequence[int], step: Any) -> set:
        seen, todo = set(), list(start)
        while todo:
            k = todo.pop()
            if k not in seen:
                seen.add(k)
                todo.extend(step(k))
        return seen

    def invalidate(self, ops: Sequence[int]) -> None:
        """``ops`` changed (their biases): they and everything downstream must run again."""
        self.valid -= self._closure(ops, lambda k: [c for o in self.sim.ops[k].outputs
                                                     for c in self.consumers.get(o, [])])

    def run(self, ops: Sequence[int]) -> None:
        """Compute the outputs of ``ops`` (and what they need) for every sample."""
        from ..runtime.library import RuntimeLibrary
        need = self._closure(ops, lambda k: [self.producer[i] for i in self.sim.ops[k].inputs
                                             if i is not None and i in self.producer])
        todo = sorted(need - self.valid)
        if not todo:
            return
        outputs = sorted({o for k in todo for o in self.sim.ops[k].outputs})
        model, fed = segment_model(self.sim, todo, outputs)
        lib = RuntimeLibrary.load(backend="sim")
        with lib.init(fmt.write_model(model)) as ctx:
            for sample, store in zip(self.raw, self.values):
                feeds = [sample[self.graph_inputs[t]] if t in self.graph_inputs else self.as_float(store, t)
                         for t in fed]
                got = ctx.infer(feeds, formats=["nchw" if np.ndim(x) == 4 else None for x in feeds],
                                want_float=False)
                for t, v in zip(outputs, got):
                    store[t] = np.asarray(v).reshape(self.sim.tensors[t].shape)
        self.valid |= set(todo)
        self.passes += 1

    def as_float(self, store: dict, t: int) -> np.ndarray:
        """Tensor ``t``'s values as float32 (int8 codes dequantised with the tensor's scale)."""
        v, ts = store[t], self.sim.tensors[t]
        if ts.dtype == fmt.INT8:
            return ((v.astype(np.float32) - np.float32(ts.zero_point)) * np.float32(ts.scale)).astype(np.float32)
        return v.astype(np.float32)


def cross_checked(parts: Sequence[tuple]) -> np.ndarray:
    """estimate_shift over all the samples, kept per channel only where the even and the odd samples each
    measure a shift of the same sign, neither more than CROSS_CHECK_RATIO times the other (0 elsewhere);
    with fewer than 4 samples, estimate_shift as it is."""
    full = estimate_shift(parts)
    if len(parts) < 4:
        return full
    even, odd = estimate_shift(parts[0::2]), estimate_shift(parts[1::2])
    agree = ((even * odd > 0) & (np.abs(even) < CROSS_CHECK_RATIO * np.abs(odd))
             & (np.abs(odd) < CROSS_CHECK_RATIO * np.abs(even)))
    return np.where(agree, full, 0.0)


def _layer_shift(op: fmt.SimOp, out: fmt.SimTensor, outs: list, refs: list,
                 cross_check: bool = False) -> Optional[np.ndarray]:
    """One layer's per-channel pre-activation shift from its int8 outputs ``outs`` and fp32 ones ``refs``
    over the samples (``cross_check``: only what both halves of them confirm, :func:`cross_checked`); None
    when its activation is not handled."""
    qs = [np.asarray(q, np.float32).reshape(r.shape) for q, r in zip(outs, refs)]
    ends = None
    if out.dtype == fmt.INT8:
        ends = ((-128 - out.zero_point) * out.scale, (127 - out.zero_point) * out.scale, out.scale)
    parts = [visible_shift(op.act, op.act_params, q, r, ends=ends) for q, r in zip(qs, refs)]
    if any(p is None for p in parts):
        return None
    return cross_checked(parts) if cross_check else estimate_shift(parts)


def correct_biases(sim: fmt.SimModel, pg: PreparedGraph, dataset: Any, config: Any,
                   kept: Optional[list] = None) -> dict:
    """Correct the int32 biases of ``sim`` in place, depth by depth (module docstring); returns
    {layer name: per-channel shift in float} for the layers it changed. The model must be a batch-1 int8
    build. On any simulator failure the biases are left as they were (logged). ``kept``: calibration's
    fp32 values of the layers' outputs (builder.calibrate's ``keep``), else onnxruntime runs again."""
    per_tensor = config.quantized_method == "layer"
    layers = correctable_layers(sim, PER_TENSOR_ANALYTIC_HEADS if per_tensor else ())
    if not layers:
        return {}
    t0 = time.perf_counter()
    names = [sim.tensors[ly.out].name for ly in layers]
    ref = _Reference(pg, names, dataset, config, kept)
    by_depth: dict = {}
    for ly in layers:
        by_depth.setdefault(ly.depth, []).append(ly)
    done: dict = {}
    runner = _Runner(sim, ref.raw)
    cross_check = not per_tensor  # see CROSS_CHECK_RATIO
    for depth in sorted(by_depth):
        group = by_depth[depth]
        try:
            runner.run([ly.op for ly in group])
        except Exception as exc:  # noqa: BLE001 - the analytic correction alone is still a valid build
            LOG.warning("empirical bias correction stopped at depth %d (%s); the remaining biases keep the "
                        "analytic correction", depth, exc)
            break
        results = [[runner.as_float(store, ly.out) for ly in group] for store in runner.values]
        for pos, ly in enumerate(group):
            try:
                shift = _layer_shift(sim.ops[ly.op], sim.tensors[ly.out],
                                     [got[pos] for got in results], [v[sim.tensors[ly.out].name] for v in ref.values],
                                     cross_check)
            except ValueError as exc:  # shapes that do not match: this layer keeps its analytic bias
                LOG.debug("empirical bias correction skips %s: %s", ly.name, exc)
                continue
            if shift is None or not np.all(np.isfinite(shift)):
                continue
            b = sim.tensors[ly.bias]
            scales = bias_scales(b)
            # a channel whose bias scale is 0 (all-zero weights) has no int32 step to move by
            ok = np.isfinite(scales) & (scales > 0)
            steps = np.zeros(np.broadcast(shift, scales).shape)
            np.divide(shift, scales, out=steps, where=ok)
            steps = np.clip(np.round(steps), -2**31, 2**31 - 1)
            if not steps.any():
                continue
            new = np.clip(b.data.reshape(-1).astype(np.int64) - steps.astype(np.int64), -2**31, 2**31 - 1)
            b.data = new.astype(np.int32).reshape(b.data.shape)
            done[ly.name] = steps * scales
        runner.invalidate([ly.op for ly in group if ly.name in done])  # op names are unique
    LOG.info("empirical bias correction: %d layers over %d depths (%d simulator passes of %d samples) in "
             "%.1f s", len(done), len(by_depth), runner.passes, len(ref.raw), time.perf_counter() - t0)
    return done
