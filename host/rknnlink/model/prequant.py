"""Models that are already quantised: their own (scale, zero point) instead of calibrated ranges.

A quantisation-aware-trained or post-training-quantised model (QDQ ONNX, int8/uint8 TFLite) carries the
parameters its accuracy was measured with. The toolkit keeps them when ``build(do_quantization=False)``;
so does rknnlink: the importers turn the model into a float graph (weights dequantised, Q/DQ pairs
removed) and return, per activation tensor, its fixed quantisation. :func:`fixed_ranges` maps those onto
rknnlink's int8 scheme (asymmetric int8 per tensor for activations; weights symmetric int8 per channel):

* int8 (s, z): the range [(-128 - z) s, (127 - z) s] gives back exactly s and z;
* uint8 (s, z): the same real range, zero point z - 128 in int8: exact;
* int16, per-channel activations, zero points outside int8: not representable; mapped to the int8 range
  covering the same real values, with a warning naming the tensor;
* weights: re-quantised symmetric per channel from their dequantised values, which reproduces the
  original integers whenever they were symmetric with a full-range channel (what TFLite and ONNX QDQ
  exporters write); otherwise a warning names the tensor and the largest error.

Activations the model leaves unquantised (e.g. a Transpose the importer inserted) take the range of the
operator's first input, as int8 pass-through operators do; :func:`complete_ranges` does that at build time.
"""

from __future__ import annotations

import copy
import logging
from typing import Any, Dict, Optional, Sequence

import numpy as np

from .calibration import quantize_weights
from .errors import BuildError

LOG = logging.getLogger(__name__)


def fixed_ranges(quant: Dict[str, dict]) -> Dict[str, tuple]:
    """tensor -> (min, max) reproducing each tensor's own quantisation in rknnlink's int8 scheme."""
    ranges = {}
    for name, q in quant.items():
        if q.get("kind") == "weight":
            continue
        scale, zp, dtype = q["scale"], q["zero_point"], q.get("dtype", "int8")
        if isinstance(scale, (list, tuple, np.ndarray)):  # per-channel activation quantisation
            lo = min((-128 - z) * s for s, z in zip(scale, zp))
            hi = max((127 - z) * s for s, z in zip(scale, zp))
            LOG.warning("tensor %r: per-channel activation quantisation mapped to one int8 scale %.6g "
                        "covering [%.6g, %.6g]", name, (hi - lo) / 255, lo, hi)
            ranges[name] = (lo, hi)
            continue
        qmin, qmax = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767)}.get(dtype, (-128, 127))
        lo, hi = (qmin - zp) * scale, (qmax - zp) * scale
        if dtype == "int16" or not qmin <= zp <= qmax:
            LOG.warning("tensor %r: %s quantisation (scale %.6g, zero point %d) is not representable in int8; "
                        "mapped to int8 over the same range [%.6g, %.6g] (scale %.6g)", name, dtype, scale, zp,
                        lo, hi, (hi - min(lo, 0.0)) / 255)
        ranges[name] = (float(lo), float(hi))
    return ranges


def complete_ranges(pg: Any, nodes: Sequence[Any], names: Sequence[str], fixed: Dict[str, tuple]) -> dict:
    """A range for every activation in ``names``: the fixed one, else the first input's (pass-through)."""
    producer = {o: n for n in nodes for o in n.outputs}
    ranges = dict(fixed)
    for name in names:
        if name in ranges:
            continue
        node = producer.get(name)
        src = next((i for i in (node.inputs if node else []) if i and i in ranges and i not in pg.constants),
                   None)
        if src is None:
            raise BuildError(f"tensor {name!r} has no quantisation parameters in the pre-quantised model and "
                             "none can be inferred; build(do_quantization=True, dataset='dataset.txt') to "
                             "calibrate the tensors the model leaves unquantised")
        ranges[name] = ranges[src]
        LOG.debug("tensor %r takes the quantisation of %r", name, src)
    return ranges


def check_weight(name: str, q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray,
                 axis: Optional[int]) -> None:
    """Warn when rknnlink's symmetric int8 weights cannot reproduce the model's own integers."""
    scale = np.asarray(scale, np.float64).ravel()
    zero_point = np.asarray(zero_point, np.int64).ravel()
    per_channel = scale.size > 1
    shape = [1] * q.ndim
    if per_channel:
        shape[axis] = -1
    w = (q.astype(np.float64) - zero_point.reshape(shape)) * scale.reshape(shape)
    ours, our_scales = quantize_weights(w.astype(np.float32), axis if per_channel else None)
    back = ours.astype(np.float64) * (our_scales.reshape(shape) if per_channel else our_scales[0])
    err = float(np.max(np.abs(back - w))) if w.size else 0.0
    if err > 1e-6 * float(np.max(scale)):
        LOG.warning("weights %r: the model's %s quantisation (zero point %s) is re-quantised symmetric int8 "
                    "with scale max|w|/127 per %s; largest change %.3g (%.2f of the model's scale)", name,
                    q.dtype, "0" if not np.any(zero_point) else "non-zero",
                    "channel" if per_channel else "tensor", err, err / float(np.max(scale)))


# ------------------------------------------------------------------------------------- QDQ ONNX


def has_qdq(model: Any) -> bool:
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") and n.domain in ("", "ai.onnx")
               for n in model.graph.node)


def strip_qdq(model: Any) -> tuple:
    """(float ONNX model, fixed quantisation) from a QDQ model: weight DequantizeLinear folded into float
    initializers, activation QuantizeLinear -> DequantizeLinear pairs removed (consumers read the float
    tensor, which keeps the pair's scale and zero point), integer graph inputs/outputs made float."""
    from onnx import TensorProto, numpy_helper
    model = copy.deepcopy(model)
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    graph_outputs = {o.name for o in g.output}
    quant: Dict[str, dict] = {}
    rename: Dict[str, str] = {}
    removed = set()

    folded: Dict[str, np.ndarray] = {}

    def constant(name: str, depth: int = 0) -> Optional[np.ndarray]:
        """The value of a tensor computed from constants only (exporters write scales as Cast/Mul chains)."""
        if name in inits:
            return numpy_helper.to_array(inits[name])
        if name in folded:
            return folded[name]
        p = producer.get(name)
        if p is None or depth > 32:
            return None
        if p.op_type == "Constant":
            folded[name] = numpy_helper.to_array(p.attribute[0].t)
            return folded[name]
        feeds = {}
        for i in p.input:
            if i:
                v = constant(i, depth + 1)
                if v is None:
                    return None
                feeds[i] = v
        from onnx import helper
        from onnx.reference import ReferenceEvaluator
        graph = helper.make_graph([p], "fold", [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(
            v.dtype), v.shape) for k, v in feeds.items()], [helper.make_tensor_value_info(o, 0, None)
                                                              for o in p.output])
        sub = helper.make_model(graph, opset_imports=list(model.opset_import))
        for o, v in zip(p.output, ReferenceEvaluator(sub).run(None, feeds)):
            folded[o] = np.asarray(v)
        return folded.get(name)

    def param(node: Any, i: int) -> Optional[np.ndarray]:
        if i >= len(node.input) or not node.input[i]:
            return None
        value = constant(node.input[i])
        if value is None:
            raise BuildError(f"QDQ node {node.name!r}: its scale/zero point {node.input[i]!r} must be a constant")
        return value

    def record(name: str, node: Any) -> None:
        scale, zp = param(node, 1), param(node, 2)
        dtype = "int8" if zp is None else {np.dtype(np.int8): "int8", np.dtype(np.uint8): "uint8",
                                          np.dtype(np.int16): "int16"}.get(zp.dtype, str(zp.dtype))
        zp = np.zeros_like(scale, dtype=np.int64) if zp is None else zp.astype(np.int64)
        if scale.size == 1:
            quant[name] = {"scale": float(scale.ravel()[0]), "zero_point": int(zp.ravel()[0]), "dtype": dtype,
                           "source": node.name}
        else:
            quant[name] = {"scale": scale.ravel().tolist(), "zero_point": zp.ravel().tolist(), "dtype": dtype,
                           "source": node.name}

    for node in g.node:
        if node.op_type != "DequantizeLinear":
            continue
        x = node.input[0]
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        q = constant(x) if x not in producer or producer[x].op_type != "QuantizeLinear" else None
        if q is not None:  # quantised constant (weights, bias)
            scale, zp = param(node, 1), param(node, 2)
            zp = np.zeros(scale.shape, np.int64) if zp is None else zp.astype(np.int64)
            ax = axis + q.ndim if axis < 0 else axis
            shape = [1] * q.ndim
            if scale.size > 1:
                shape[ax] = -1
            w = ((q.astype(np.float64) - zp.reshape(shape)) * scale.astype(np.float64).reshape(shape))
            if q.dtype != np.int32:
                check_weight(x, q, scale, zp, ax)
            g.initializer.append(numpy_helper.from_array(w.astype(np.float32), node.output[0]))
            removed.add(id(node))
            continue
        src = producer.get(x)
        casts = []
        while src is not None and src.op_type == "Cast" and producer.get(src.input[0]) is not None:
            casts.append(src)  # torch's exporter writes QuantizeLinear -> Cast -> DequantizeLinear
            src = producer.get(src.input[0])
        if src is not None and src.op_type == "QuantizeLinear":
            removed.update(id(n) for n in casts)
            real = src.input[0]
            record(real, src)
            if node.output[0] in graph_outputs:
                record(node.output[0], src)
                node.op_type, node.input[:] = "Identity", [real]
                del node.attribute[:]
            else:
                rename[node.output[0]] = real
                removed.add(id(node))
        else:  # an integer graph input dequantised on entry: the input becomes the float tensor itself
            record(node.output[0], node)
            for vi in g.input:
                if vi.name == x:
                    vi.type.tensor_type.elem_type = TensorProto.FLOAT
            record(x, node)
            rename[node.output[0]] = x
            removed.add(id(node))
    consumers: Dict[str, int] = {}
    for node in g.node:
        if id(node) not in removed:
            for i, name in enumerate(node.input):
                if name in rename:
                    node.input[i] = rename[name]
                consumers[node.input[i]] = consumers.get(node.input[i], 0) + 1
    for node in g.node:
        if node.op_type != "QuantizeLinear" or id(node) in removed:
            continue
        out = node.output[0]
        if consumers.get(out, 0) == 0 and out not in graph_outputs:
            removed.add(id(node))
        elif out in graph_outputs:  # an int8 graph output: the output carries the float value
            record(out, node)
            node.op_type, node.input[:] = "Identity", [node.input[0]]
            del node.attribute[:]
            for vo in g.output:
                if vo.name == out:
                    vo.type.tensor_type.elem_type = TensorProto.FLOAT
        else:
            raise BuildError(f"QuantizeLinear {node.name!r} feeds an operator other than DequantizeLinear; "
                             "rknnlink imports QDQ models (each QuantizeLinear followed by DequantizeLinear)")
    keep = [n for n in g.node if id(n) not in removed]
    del g.node[:]
    g.node.extend(keep)
    used = {i for n in g.node for i in n.input}
    kept_inits = [i for i in g.initializer if i.name in used or i.name in graph_outputs]
    del g.initializer[:]
    g.initializer.extend(kept_inits)
    del g.value_info[:]
    LOG.info("QDQ model: %d quantised activation tensors imported with their own parameters", len(quant))
    return model, quant
