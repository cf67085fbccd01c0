"""Output-aware, error-propagating activation range search (quantized_algorithm='mmse').

Why: the histogram mmse (:func:`.calibration.mmse_threshold_range`) chooses each tensor's clip range from
that tensor's own values. What matters is the error the range causes downstream: a clipped value is a
one-signed error that the next layer's weights add up coherently over their whole receptive field, while
rounding noise adds up incoherently, so a tensor's own MSE undervalues the cost of clipping on some tensors
(PP-OCRv4's recogniser, U-Net's Concats) and of rounding on others. RKNN-Toolkit2's mmse (MmseQuant2 in
its logs) is a layer-by-layer search of that kind and takes minutes to hours; this one keeps to a few
candidates per tensor.

How: the built int8 model runs op by op in the simulator over (up to MAX_SAMPLES) calibration samples, in
topological order, each op fed with the int8 values its inputs got so far (earlier tensors already
quantised with their chosen ranges), its output taken in float32 before quantisation. For every int8
activation with a range of its own (not a graph output, not a pass-through view) the candidates are
thresholds T around the histogram choice T0 (:data:`FACTORS` times T0, and max|x|), ranges
[max(min, -T), min(max, T)] as mmse's; each candidate quantises the tensor, the ops that read it run on
it (through pass-through ops such as MaxPool and Reshape), and their float outputs, cut to their own int8
range, are compared with onnxruntime's fp32 values: the candidate with the smallest sum of relative
squared errors wins if it beats T0 by MIN_GAIN (T0 stays otherwise). Inside the simulator the quantised
values are fed as FLOAT32 tensors (the same values the int8 kernels see), so one segment model serves all
candidates.

Weights (per-tensor builds, :func:`searches_weights`): in the same pass, before a Conv/Gemm with
symmetric per-tensor weights runs, its weight scale is chosen among the ratios W_RATIOS of max|w| / 127
and the current one (calibration.weight_scales' choice) by the op's own output error, given the int8
inputs chosen so far and each candidate's analytically corrected bias; the choice (W_MIN_GAIN) feeds
the rest of the pass and the builder (:attr:`SearchResult.weight_ratios`).

Work is bounded and counted (:attr:`SearchResult.op_runs`, single-op inferences of one sample): every op
runs once per sample, the readers of each searched tensor once per candidate (at most
len(FACTORS) + 2), and each searched weighted op once per weight candidate (len(W_RATIOS) + 1), so
op_runs <= samples x (ops + (len(FACTORS) + 2) x the readers of the searched tensors + (len(W_RATIOS) + 1)
x the searched weighted ops), about 8x one pass over the network (per tensor about 15x). PP-OCRv4 det:
14064 runs (152 ops x 12 samples), 29 s.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

from . import format as fmt
from .bias_correction import SKIP_ACTS, _Reference, segment_model
from .calibration import asymmetric_params, quantize_weights, shares_input_quantisation, weight_error_shift

LOG = logging.getLogger(__name__)

# candidate thresholds around the histogram choice T0 (times T0, capped at max|x|; max|x| is always one)
FACTORS = (0.6, 0.75, 0.87, 1.15, 1.3, 1.6)
MAX_SAMPLES = 16
# A candidate replaces T0 only when it lowers the readers' error by this fraction. Measured on the corpus
# (mmse/channel, fidelity det / rec): 0 moved 87 / 74 tensors for 0.98594 / 0.96892 (histogram alone
# 0.98388 / 0.97052), 0.01: 0.98753 / 0.97204, 0.03: 0.98774 / 0.97854 (5 / 6 tensors), 0.1: 0.98379 /
# 0.97637. Small gains on the calibration images do not carry over to others.
MIN_GAIN = 0.03
# Tensors with fewer positions per channel (values per channel and sample) keep the histogram choice: a
# squeeze-excitation gate (1 x C x 1 x 1) has one value per channel and image, too few to judge a clip on
# (EfficientNet-B0's last gate clipped 0.61 -> 0.45 for a 3 % gain on the calibration images, and the
# model lost 0.93576 -> 0.92791 on the others).
MIN_POSITIONS = 16
QMIN, QMAX = -128, 127


@dataclass
class SearchResult:
    """The chosen ranges {tensor name: (lo, hi)} of the tensors whose choice moved, and the work done."""

    ranges: dict = field(default_factory=dict)
    weight_ratios: dict = field(default_factory=dict)  # weight name -> the ratio of max|w| / 127 chosen
    searched: int = 0
    op_runs: int = 0  # single-op simulator inferences (one op over one sample), the work bound's unit
    seconds: float = 0.0


def quantise(x: np.ndarray, scale: float, zp: int) -> np.ndarray:
    """int8 quantise/dequantise as the simulator does it (round half away from zero, saturate)."""
    s = np.float32(scale)
    v = x.astype(np.float32) / s
    q = np.clip(np.sign(v) * np.floor(np.abs(v) + np.float32(0.5)) + np.float32(zp), QMIN, QMAX)
    return ((q - np.float32(zp)) * s).astype(np.float32)


def candidate_ranges(lo: float, hi: float, t0: float, factors: Sequence[float] = FACTORS) -> list:
    """[(lo, hi)] for the thresholds T0 (first), T0 * factors and max|x|: [max(lo, -T), min(hi, T)],
    deduplicated, each widened to contain 0 as the quantiser does."""
    absmax = max(abs(lo), abs(hi))
    out: list = []
    for t in [t0, *[t0 * f for f in factors], absmax]:
        t = min(float(t), absmax)
        if t <= 0:
            continue
        r = (min(max(lo, -t), 0.0), max(min(hi, t), 0.0))
        if r[1] - r[0] > 0 and all(abs(r[0] - a) + abs(r[1] - b) > 1e-9 * absmax for a, b in out):
            out.append(r)
    return out


def _as_float(sim: fmt.SimModel, idx: Sequence[int]) -> fmt.SimModel:
    """``sim`` with the tensors ``idx`` turned FLOAT32 (no quantisation): fed with already quantised values,
    or read back before quantisation."""
    tensors = list(sim.tensors)
    for t in idx:
        tensors[t] = dataclasses.replace(tensors[t], dtype=fmt.FLOAT32, scale=0.0, zero_point=0,
                                         qnt_type=fmt.QNT_NONE)
    return dataclasses.replace(sim, tensors=tensors)


class _Segment:
    """A sub-model of ``ops`` with float32 feeds (except graph inputs, which keep their normalisation and
    are fed raw) and float32 ``outputs``; ``run`` feeds it one sample."""

    def __init__(self, sim: fmt.SimModel, ops: Sequence[int], outputs: Sequence[int], float_inner: Sequence[int],
                 graph_inputs: dict) -> None:
        from ..runtime.library import RuntimeLibrary
        produced = {o for k in ops for o in sim.ops[k].outputs}
        read = {i for k in ops for i in sim.ops[k].inputs if i is not None}
        fed = [i for i in read if i not in produced and sim.tensors[i].kind != fmt.KIND_CONSTANT]
        floats = [t for t in fed if t not in graph_inputs] + list(outputs) + list(float_inner)
        model, self.fed = segment_model(_as_float(sim, floats), ops, outputs)
        self.outputs = list(outputs)
        self.graph_inputs = graph_inputs
        self.shapes = [tuple(sim.tensors[t].shape) for t in outputs]
        self.lib = RuntimeLibrary.load(backend="sim")
        self.ctx = self.lib.init(fmt.write_model(model))
        self.ctx.__enter__()

    def run(self, raw: list, value: Any) -> list:
        """Outputs for one sample: ``raw`` the sample's raw inputs, ``value(t)`` a fed tensor's float value."""
        feeds = [raw[self.graph_inputs[t]] if t in self.graph_inputs else value(t) for t in self.fed]
        got = self.ctx.infer(feeds, formats=["nchw" if np.ndim(x) == 4 else None for x in feeds], want_float=True)
        return [np.asarray(v, np.float32).reshape(s) for v, s in zip(got, self.shapes)]

    def close(self) -> None:
        self.ctx.__exit__(None, None, None)


def search_ranges(sim: fmt.SimModel, pg: Any, dataset: Any, config: Any, stats: dict,
                  factors: Sequence[float] = FACTORS, max_samples: int = MAX_SAMPLES) -> SearchResult:
    """Search the int8 activation ranges of the batch-1 model ``sim`` (module docstring). ``stats``: the
    calibration statistics (each tensor's observed min/max). Returns the ranges that differ from the
    model's; on a simulator failure, those found so far (logged)."""
    t_start = time.perf_counter()
    result = SearchResult()
    n_ops = len(sim.ops)
    producer = {o: k for k, op in enumerate(sim.ops) for o in op.outputs}
    consumers: dict = {}
    for k, op in enumerate(sim.ops):
        for i in op.inputs:
            if i is not None:
                consumers.setdefault(i, []).append(k)
    graph_inputs = {io.tensor: pos for pos, io in enumerate(sim.inputs)}
    activations = [t for t, ts in enumerate(sim.tensors) if ts.kind != fmt.KIND_CONSTANT and t not in graph_inputs]
    names = [sim.tensors[t].name for t in activations if sim.tensors[t].name in pg.shapes]
    ref = _Reference(pg, names, dataset, dataclasses.replace(config, progress=False))
    raws = ref.raw[:max_samples]
    refs = ref.values[:max_samples]
    store: list = [{} for _ in raws]  # [sample] -> {tensor index: float32 value as the int8 model has it}
    ranges = {t: (float((QMIN - ts.zero_point) * ts.scale), float((QMAX - ts.zero_point) * ts.scale))
              for t, ts in enumerate(sim.tensors) if ts.dtype == fmt.INT8 and ts.kind != fmt.KIND_CONSTANT}
    shares: dict = {}  # tensor -> the tensors that share its quantisation through pass-through ops
    for op in sim.ops:
        if _passes_through(op) and op.inputs and op.inputs[0] in ranges:
            root = _root(sim, producer, op.inputs[0])
            shares.setdefault(root, []).extend(o for o in op.outputs if o in ranges)

    def value(s: int, t: int) -> np.ndarray:
        if t in store[s]:
            return store[s][t]
        # read before its producer ran (a later branch of an Add/Concat): its fp32 value, quantised
        v = np.asarray(refs[s][sim.tensors[t].name], np.float32).reshape(sim.tensors[t].shape)
        return quantise(v, sim.tensors[t].scale, sim.tensors[t].zero_point) if t in ranges else v

    def ref_of(s: int, t: int) -> Optional[np.ndarray]:
        v = refs[s].get(sim.tensors[t].name)
        return None if v is None else np.asarray(v, np.float32).reshape(sim.tensors[t].shape)

    chosen: dict = {}  # tensor -> (scale, zp) decided here (they and their shares quantise with it)
    sim = dataclasses.replace(sim, tensors=list(sim.tensors))  # the weights chosen below replace their tensors
    readers_of = {t: len(c) for t, c in consumers.items()}
    weights = searches_weights(config)
    try:
        for k, op in enumerate(sim.ops):
            outs = list(op.outputs)
            if weights and _weight_searchable(sim, op, pg, readers_of):
                got = _search_weight(sim, k, pg, stats, config, graph_inputs, raws, value, ref_of, ranges, result)
                if got is not None:
                    result.weight_ratios[sim.tensors[op.inputs[1]].name] = got
            seg = _Segment(sim, [k], outs, [], graph_inputs)
            try:
                pre = [seg.run(raws[s], lambda t, s=s: value(s, t)) for s in range(len(raws))]
            finally:
                seg.close()
            result.op_runs += len(raws)
            for pos, t in enumerate(outs):
                ts = sim.tensors[t]
                if t in ranges and _searchable(sim, op, t) and ts.name in stats:
                    best = _search_one(sim, t, [p[pos] for p in pre], stats[ts.name], ranges[t], consumers,
                                       graph_inputs, raws, refs, value, ref_of, factors, result)
                    if best is not None and best != ranges[t]:
                        result.ranges[ts.name] = best
                        chosen[t] = asymmetric_params(*best)
                        for u in shares.get(t, []):
                            chosen[u] = chosen[t]
                    result.searched += 1
                for s in range(len(raws)):
                    v = pre[s][pos]
                    if t in ranges:
                        scale, zp = chosen.get(t, (ts.scale, ts.zero_point))
                        v = quantise(v, scale, zp)
                    store[s][t] = v
            _free(store, op, consumers, k)
    except Exception as exc:  # noqa: BLE001 - the histogram ranges remain a valid build
        LOG.warning("mmse range search stopped (%s); the remaining tensors keep their histogram ranges", exc)
    result.seconds = time.perf_counter() - t_start
    LOG.info("mmse range search: %d of %d tensors moved, %d op runs (%d ops x %d samples) in %.1f s",
             len(result.ranges), result.searched, result.op_runs, n_ops, len(raws), result.seconds)
    return result


def _passes_through(op: fmt.SimOp) -> bool:
    return shares_input_quantisation(op.op_type, op.attrs or {})


def _root(sim: fmt.SimModel, producer: dict, t: int) -> int:
    """The tensor whose range ``t`` takes through pass-through ops."""
    while t in producer and _passes_through(sim.ops[producer[t]]) and sim.ops[producer[t]].inputs:
        src = sim.ops[producer[t]].inputs[0]
        if src is None or sim.tensors[src].dtype != fmt.INT8:
            break
        t = src
    return t


def _searchable(sim: fmt.SimModel, op: fmt.SimOp, t: int) -> bool:
    """An int8 intermediate with a range of its own (not a view of its input's, not a graph output) and
    at least MIN_POSITIONS values per channel and sample."""
    ts = sim.tensors[t]
    shape = [int(d) for d in ts.shape]
    positions = int(np.prod(shape[2:], dtype=np.int64)) if len(shape) > 2 else (shape[-1] if shape else 1)
    return ts.kind == fmt.KIND_INTERMEDIATE and not _passes_through(op) and positions >= MIN_POSITIONS


def _readers(sim: fmt.SimModel, t: int, consumers: dict) -> tuple:
    """(ops to run, the pass-through tensors between, the outputs to compare) for tensor ``t``: its
    readers, followed through pass-through ops to the ops that compute with it."""
    ops: list = []
    inner: list = []
    outs: list = []
    todo = [t]
    while todo:
        u = todo.pop()
        for c in consumers.get(u, []):
            if c in ops:
                continue
            ops.append(c)
            op = sim.ops[c]
            if _passes_through(op) and op.inputs and op.inputs[0] == u:
                for o in op.outputs:
                    if sim.tensors[o].dtype == fmt.INT8 and sim.tensors[o].kind == fmt.KIND_INTERMEDIATE:
                        inner.append(o)
                        todo.append(o)
                    else:
                        outs.append(o)
            else:
                outs.extend(op.outputs)
    return ops, inner, outs


def _search_one(sim: fmt.SimModel, t: int, pre: list, st: Any, current: tuple, consumers: dict,
                graph_inputs: dict, raws: list, refs: list, value: Any, ref_of: Any, factors: Sequence[float],
                result: SearchResult) -> Optional[tuple]:
    """The candidate range of ``t`` (values ``pre`` before quantisation, per sample) whose readers' outputs
    are closest to fp32; None when it cannot be judged."""
    lo, hi = float(st.min), float(st.max)
    if not (np.isfinite(lo) and np.isfinite(hi)) or hi <= lo:
        return None
    ops, inner, outs = _readers(sim, t, consumers)
    if not ops or not outs:
        return None
    t0 = max(abs(current[0]), abs(current[1]))
    cands = candidate_ranges(lo, hi, t0, factors)
    if len(cands) < 2:
        return None
    out_refs = [[ref_of(s, o) for o in outs] for s in range(len(raws))]
    if any(r is None for rs in out_refs for r in rs):
        return None
    # each output's error is compared relative to its energy; an int8 output only inside its own range
    cut = []
    for o in outs:
        ot = sim.tensors[o]
        cut.append((float((QMIN - ot.zero_point) * ot.scale), float((QMAX - ot.zero_point) * ot.scale))
                   if ot.dtype == fmt.INT8 else None)
    energy = [sum(float(np.mean(np.square(_cut(out_refs[s][j], cut[j])))) for s in range(len(raws))) + 1e-20
              for j in range(len(outs))]
    seg = _Segment(sim, ops, outs, inner, graph_inputs)
    errors = []
    try:
        for c_lo, c_hi in cands:
            scale, zp = asymmetric_params(c_lo, c_hi)
            err = np.zeros(len(raws))
            for s in range(len(raws)):
                q = quantise(pre[s], scale, zp)
                got = seg.run(raws[s], lambda u, s=s, q=q: q if u == t else value(s, u))
                for j, g in enumerate(got):
                    d = _cut(g, cut[j]) - _cut(out_refs[s][j], cut[j])
                    err[s] += float(np.mean(np.square(d, dtype=np.float64))) / energy[j]
            errors.append(err)
            result.op_runs += len(ops) * len(raws)
    finally:
        seg.close()
    k = _winner(np.stack(errors), MIN_GAIN)
    LOG.debug("range search %s: T0 %.4g [%.4g, %.4g] -> [%.4g, %.4g], error %.4g -> %.4g (%s)",
              sim.tensors[t].name, t0, lo, hi, cands[k][0], cands[k][1], errors[0].sum(), errors[k].sum(),
              ",".join(sim.ops[c].op_type for c in ops))
    return cands[k] if k else None


def _winner(errors: np.ndarray, min_gain: float) -> int:
    """The candidate (row of ``errors``: candidates x samples; row 0 the current choice) with the smallest
    total error if it beats row 0 by ``min_gain``, else 0. Requiring the gain on each half of the samples
    too (even and odd, against a clip that one or two calibration images make) lost: mmse/channel rec
    0.98255 -> 0.97889, det unchanged."""
    total = errors.sum(axis=1)
    ok = total < (1.0 - min_gain) * total[0]
    ok[0] = False
    if not ok.any():
        return 0
    return int(np.flatnonzero(ok)[np.argmin(total[ok])])


# Candidate ratios of max|w| / 127 for a searched weight scale; a candidate replaces the current scale only
# when it lowers the op's output error by W_MIN_GAIN (as MIN_GAIN for the activations).
W_RATIOS = (1.0, 0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.5)
W_MIN_GAIN = 0.03


def searches_weights(config: Any) -> bool:
    """Whether the search also chooses the weights' scales: per-tensor weights ('layer') only. One scale for
    a whole layer is set by its widest channel; whether clipping it pays is a matter of the inputs that
    channel multiplies, which the weights' own MSE (calibration.weight_scales) does not see. Corpus v2,
    mmse/layer (test / held-out images): det 0.94712 -> 0.97548 / 0.96280 -> 0.98111; rec 0.97344 ->
    0.97404 on its test lines but 0.98037 -> 0.97486 held out; EfficientNet-B0 0.93703 -> 0.93157.
    W_MIN_GAIN 0.1 lost on both (det 0.96371, rec 0.96669). Per channel (each channel its own ratio) it
    lost on det (0.98769 -> 0.98473) although rec gained (0.97854 -> 0.98261)."""
    return config.quantized_method == "layer"


def _weight_searchable(sim: fmt.SimModel, op: fmt.SimOp, pg: Any, readers_of: dict) -> bool:
    """A Conv/Gemm with symmetric per-tensor int8 weights of its own (read by no other op), a per-tensor int32
    bias, no fused activation of bias_correction.SKIP_ACTS, and its fp32 weights at hand."""
    if op.op_type not in ("Conv", "Gemm") or len(op.inputs) < 3 or op.inputs[2] is None or len(op.outputs) != 1:
        return False
    w, b = sim.tensors[op.inputs[1]], sim.tensors[op.inputs[2]]
    if w.dtype != fmt.INT8 or w.qnt_type != fmt.QNT_AFFINE or w.zero_point or readers_of.get(op.inputs[1], 0) != 1:
        return False
    if b.dtype != fmt.INT32 or b.qnt_type != fmt.QNT_AFFINE or len(sim.tensors[op.outputs[0]].shape) < 2:
        return False
    if op.act in SKIP_ACTS:  # SiLU networks lost with it (YOLOv8n/layer 0.99230 -> 0.99194), as with bias_correction's
        return False
    ref = pg.constants.get(w.name)
    return ref is not None and tuple(np.shape(ref)) == tuple(w.shape)


def _search_weight(sim: fmt.SimModel, k: int, pg: Any, stats: dict, config: Any, graph_inputs: dict, raws: list,
                   value: Any, ref_of: Any, ranges: dict, result: SearchResult) -> Optional[float]:
    """The ratio of max|w| / 127 for op ``k``'s per-tensor weight scale whose op output, given the int8
    inputs chosen so far, is closest to fp32 (its own int8 range applied); ``sim``'s weight and bias tensors
    are replaced by the choice. Each candidate's bias keeps the analytic correction (Nagel 2019) of its own
    weight rounding. None when the current weights stay."""
    op = sim.ops[k]
    wi, bi, out = op.inputs[1], op.inputs[2], op.outputs[0]
    wt, bt = sim.tensors[wi], sim.tensors[bi]
    refs = [ref_of(s, out) for s in range(len(raws))]
    if any(r is None for r in refs):
        return None
    w = np.asarray(pg.constants[wt.name], np.float32)
    cur_w = wt.data.astype(np.float32) * np.float32(wt.scale)
    sx = float(bt.scale) / float(wt.scale)
    cur_b = bt.data.astype(np.float64) * float(bt.scale)
    st = stats.get(sim.tensors[op.inputs[0]].name)
    mean = st.channel_mean if st is not None and config.bias_correction_mode() != "off" else None
    attrs = op.attrs or {}
    cut = ranges.get(out)
    cands: list = [(wt, bt, None)]
    for r in W_RATIOS:
        q, scales = quantize_weights(w, None, ratios=np.float32(r))
        new_w = q.astype(np.float32) * scales[0]
        # the bias the builder gives these weights: corrected for their rounding instead of the current one's
        shift = None if mean is None else weight_error_shift(cur_w, new_w, mean, op.op_type,
                                                             int(attrs.get("group", 1)), int(attrs.get("transB", 0)))
        b = cur_b - (shift.reshape(cur_b.shape) if shift is not None and shift.size == cur_b.size else 0.0)
        s_b = float(np.float32(sx * float(scales[0])))
        bq = np.clip(np.round(b / s_b), -(2 ** 31), 2 ** 31 - 1).astype(np.int32)
        cands.append((dataclasses.replace(wt, data=q, scale=float(scales[0])),
                      dataclasses.replace(bt, data=bq, scale=s_b), r))
    errors = []
    for tw, tb, _ in cands:
        trial = dataclasses.replace(sim, tensors=list(sim.tensors))
        trial.tensors[wi], trial.tensors[bi] = tw, tb
        seg = _Segment(trial, [k], [out], [], graph_inputs)
        try:
            err = np.zeros(len(raws))
            for s in range(len(raws)):
                got = seg.run(raws[s], lambda u, s=s: value(s, u))[0]
                err[s] = float(np.sum(np.square(_cut(got, cut) - _cut(refs[s], cut), dtype=np.float64)))
        finally:
            seg.close()
        result.op_runs += len(raws)
        errors.append(err)
    j = _winner(np.stack(errors), W_MIN_GAIN)
    if j == 0:
        return None
    sim.tensors[wi], sim.tensors[bi] = cands[j][0], cands[j][1]
    LOG.debug("weight search %s: ratio %.2f, error %.4g -> %.4g", wt.name, cands[j][2], errors[0].sum(),
              errors[j].sum())
    return float(cands[j][2])


def _cut(x: np.ndarray, r: Optional[tuple]) -> np.ndarray:
    return x if r is None else np.clip(x, r[0], r[1])


def _free(store: list, op: fmt.SimOp, consumers: dict, k: int) -> None:
    """Drop the values no op after ``k`` reads (the store stays at the live set of tensors)."""
    for i in op.inputs:
        if i is not None and all(c <= k for c in consumers.get(i, [])):
            for s in store:
                s.pop(i, None)


def wanted(config: Any) -> bool:
    """Whether a build runs the search: int8 'mmse' builds (the toolkit's mmse is a search of this kind)."""
    return config.quantized_algorithm in SEARCHED_ALGORITHMS


SEARCHED_ALGORITHMS = ("mmse",)


def apply(stats: dict, result: SearchResult) -> bool:
    """Record the search's ranges in ``stats`` (TensorStats.chosen); whether any moved."""
    for name, r in result.ranges.items():
        if name in stats:
            stats[name] = dataclasses.replace(stats[name], chosen=(float(r[0]), float(r[1])))
    return bool(result.ranges)
