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


def correctable_layers(sim: fmt.SimModel) -> list:
    """The Conv/ConvTranspose/Gemm ops whose bias is an int32 constant (quant_bias made it) and whose output
    is an int8 or float16 activation, each with its depth (see the module docstring)."""
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
        if op.op_type not in CORRECTED_OPS or len(op.inputs) < 3 or op.inputs[2] is None or len(op.outputs) != 1:
            continue
        b = sim.tensors[op.inputs[2]]
        out = sim.tensors[op.outputs[0]]
        if (b.dtype != fmt.INT32 or b.data is None or b.qnt_type not in (fmt.QNT_AFFINE, fmt.QNT_CHANNEL)
                or out.dtype not in (fmt.INT8, fmt.FLOAT16) or len(out.shape) < 2 or users.get(op.inputs[2]) != 1
                or b.data.size != out.shape[1]):
            continue  # a shared bias constant would be corrected for two layers at once: left as it is
        layers[k] = _Layer(op=k, bias=op.inputs[2], out=op.outputs[0], name=op.name, depth=d)
    return list(layers.values())


def _bias_scales(t: fmt.SimTensor) -> np.ndarray:
    if t.qnt_type == fmt.QNT_CHANNEL:
        return np.asarray(t.quant_scales, np.float64)
    return np.full(t.data.size, float(t.scale))


def visible_shift(act: Optional[str], params: Sequence[float], q: np.ndarray, ref: np.ndarray,
                  margin: np.ndarray | float = 0.0, ends: Optional[tuple] = None) -> Optional[tuple]:
    """Per channel (axis 1): (sum of q - ref, sum of the activation's slope, sum of (q - ref)^2, count) over
    the positions where the fp32 value ``ref`` lies in a monotone region of ``act``, ``margin`` (the error's
    spread, per channel) inside it and inside the int8 range ``ends``; None for an unknown activation.

    q and ref are post-activation values; sum / slope estimates the shift before the activation (a shift
    of the bias by delta moves the output by slope * delta there). The region is chosen on ref alone: a
    choice on q too would keep only the positions whose error pushed q into the region (biased)."""
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
        mask &= (ref > ends[0] + m) & (ref < ends[1] - m)
    axes = tuple(a for a in range(ref.ndim) if a != 1)
    err = np.where(mask, q.astype(np.float64) - ref, 0.0)
    return (err.sum(axis=axes), np.where(mask, slope, 0.0).sum(axis=axes, dtype=np.float64),
            (err * err).sum(axis=axes), mask.sum(axis=axes))


def estimate_shift(parts: Sequence[tuple]) -> np.ndarray:
    """The per-channel pre-activation shift from visible_shift's sums over the samples; 0 where the
    channel has too few visible positions or its mean error is within two standard errors of 0 (a
    classifier's Gemm has one position per sample: noise there would be learnt, not corrected)."""
    num, den, sq, cnt = (sum(p[k] for p in parts) for k in range(4))
    cnt = np.maximum(cnt, 1)
    mean = num / cnt
    se = np.sqrt(np.maximum(sq / cnt - mean * mean, 0.0) / cnt)
    keep = (den >= MIN_WEIGHT) & (np.abs(mean) > 2 * se)
    return np.where(keep, num / np.maximum(den, 1e-12), 0.0)


class _Reference:
    """fp32 values of the layers' outputs for every calibration sample (onnxruntime on the prepared
    graph, as calibration computes them), and the raw samples the simulator is fed with."""

    def __init__(self, pg: PreparedGraph, names: list, dataset: Any, config: Any) -> None:
        onnx_names = list(dict.fromkeys(source_tensor(pg, n) or n for n in names))
        sess = make_session(pg.model, onnx_names)
        shapes = [pg.shapes[n] for n in pg.inputs]
        mean = config.per_input(config.mean_values, len(pg.inputs), "mean_values")
        std = config.per_input(config.std_values, len(pg.inputs), "std_values")
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


def prefix_model(sim: fmt.SimModel, last_op: int, wanted: Sequence[int]) -> fmt.SimModel:
    """The model cut after op ``last_op`` with the tensors ``wanted`` as its only outputs: the ops are in
    topological order, so the first ops are a complete model of their own; the tensors they do not use
    are dropped (the format wants every intermediate produced)."""
    ops = sim.ops[: last_op + 1]
    keep = [io.tensor for io in sim.inputs]
    for op in ops:
        keep.extend(i for i in op.inputs if i is not None)
        keep.extend(op.outputs)
    keep = sorted(set(keep))
    new_index = {t: k for k, t in enumerate(keep)}
    wanted_set = set(wanted)
    tensors = []
    for t in keep:
        ts = sim.tensors[t]
        if ts.kind in (fmt.KIND_INTERMEDIATE, fmt.KIND_OUTPUT):
            kind = fmt.KIND_OUTPUT if t in wanted_set else fmt.KIND_INTERMEDIATE
            if kind != ts.kind:
                ts = dataclasses.replace(ts, kind=kind)
        tensors.append(ts)
    new_ops = [dataclasses.replace(op, inputs=[None if i is None else new_index[i] for i in op.inputs],
                                   outputs=[new_index[o] for o in op.outputs]) for op in ops]
    inputs = [dataclasses.replace(io, tensor=new_index[io.tensor]) for io in sim.inputs]
    outputs = [fmt.IoSpec(tensor=new_index[t]) for t in wanted]
    return dataclasses.replace(sim, tensors=tensors, ops=new_ops, inputs=inputs, outputs=outputs)


def _run(model: fmt.SimModel, raw: list) -> list:
    """Every sample's outputs (float32) of ``model`` in the simulator."""
    from ..runtime.library import RuntimeLibrary
    lib = RuntimeLibrary.load(backend="sim")
    with lib.init(fmt.write_model(model)) as ctx:
        return [ctx.infer(sample, formats=["nchw" if x.ndim == 4 else None for x in sample]) for sample in raw]


def correct_biases(sim: fmt.SimModel, pg: PreparedGraph, dataset: Any, config: Any) -> dict:
    """Correct the int32 biases of ``sim`` in place, depth by depth (module docstring); returns
    {layer name: per-channel shift in float} for the layers it changed. The model must be a batch-1 int8
    build. On any simulator failure the biases are left as they were (logged)."""
    layers = correctable_layers(sim)
    if not layers:
        return {}
    t0 = time.perf_counter()
    names = [sim.tensors[ly.out].name for ly in layers]
    ref = _Reference(pg, names, dataset, config)
    by_depth: dict = {}
    for ly in layers:
        by_depth.setdefault(ly.depth, []).append(ly)
    done: dict = {}
    runs = 0
    for depth in sorted(by_depth):
        group = by_depth[depth]
        outs = [ly.out for ly in group]
        try:
            results = _run(prefix_model(sim, max(ly.op for ly in group), outs), ref.raw)
        except Exception as exc:  # noqa: BLE001 - the analytic correction alone is still a valid build
            LOG.warning("empirical bias correction stopped at depth %d (%s); the remaining biases keep the "
                        "analytic correction", depth, exc)
            break
        runs += 1
        for pos, ly in enumerate(group):
            op, out = sim.ops[ly.op], sim.tensors[ly.out]
            qs = [np.asarray(got[pos], np.float32).reshape(ref.values[k][out.name].shape)
                  for k, got in enumerate(results)]
            refs = [ref.values[k][out.name] for k in range(len(results))]
            axes = tuple(a for a in range(qs[0].ndim) if a != 1)
            count = sum(int(np.prod([r.shape[a] for a in axes])) for r in refs)
            rms = np.sqrt(sum(((q.astype(np.float64) - r) ** 2).sum(axis=axes) for q, r in zip(qs, refs)) / count)
            ends = None
            if out.dtype == fmt.INT8:
                ends = ((-128 - out.zero_point) * out.scale, (127 - out.zero_point) * out.scale)
            parts = [visible_shift(op.act, op.act_params, q, r, 2 * rms, ends) for q, r in zip(qs, refs)]
            if any(p is None for p in parts):
                continue
            shift = estimate_shift(parts)
            b = sim.tensors[ly.bias]
            scales = _bias_scales(b)
            steps = np.round(shift / scales)
            new = np.clip(b.data.reshape(-1).astype(np.int64) - steps.astype(np.int64), -2**31, 2**31 - 1)
            b.data = new.astype(np.int32).reshape(b.data.shape)
            done[ly.name] = steps * scales
    LOG.info("empirical bias correction: %d layers over %d depths (%d simulator passes of %d samples) in "
             "%.1f s", len(done), len(by_depth), runs, len(ref.raw), time.perf_counter() - t0)
    return done
