"""ONNX graph preparation: loading, cutting, static shapes, constant folding (Shape, ConstantOfShape, Range
and shape arithmetic of static tensors included), Identity/Dropout removal, decomposition of Einsum and
DepthToSpace/SpaceToDepth into simpler layers, and BatchNormalization folding.

Every pass keeps the graph a valid ONNX model that onnxruntime can run: the prepared graph is the float
reference that calibration and the golden per-layer comparison execute, so its tensor names must match the
simulator model's.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from .errors import BuildError, UnsupportedNode, UnsupportedOperatorError

LOG = logging.getLogger(__name__)

MIN_OPSET, MAX_OPSET = 9, 21
MAX_IR_VERSION = 10
# Folding a node whose output would be bigger than this keeps it as an operator (protects memory).
_MAX_FOLD_ELEMS = 256 * 1024 * 1024


@dataclass
class PreparedGraph:
    """The prepared float graph plus everything the lowering needs to know about its tensors."""

    model: Any  # onnx.ModelProto
    opset: int
    shapes: dict = field(default_factory=dict)     # tensor name -> tuple of ints
    elem_types: dict = field(default_factory=dict)  # tensor name -> onnx TensorProto data type
    constants: dict = field(default_factory=dict)  # initializer name -> np.ndarray
    inputs: list = field(default_factory=list)      # real graph input names, in order
    outputs: list = field(default_factory=list)     # graph output names, in order
    # rewrite-made tensor -> (ONNX tensor it is computed from, per-channel divisor along axis 1): the
    # values cross-layer equalisation gives a tensor between two rescaled layers (rewrite.derived_value)
    rescaled: dict = field(default_factory=dict)


def _onnx():
    try:
        import onnx
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise BuildError("building models needs the onnx package: pip install 'rknnlink[host]'") from exc
    return onnx


def default_opset(model: Any) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    raise BuildError("the model imports no default ONNX opset; re-export it with a standard exporter")


def real_inputs(model: Any) -> list:
    """Graph inputs that are not initializers (old IR versions list weights as inputs too)."""
    inits = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def _dims(value_info: Any) -> Optional[list]:
    t = value_info.type.tensor_type
    if not t.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (d.dim_param or "?")
            for d in t.shape.dim]


def load_onnx(path_or_proto: Union[str, Path, Any], inputs: Optional[Sequence[str]] = None,
              outputs: Optional[Sequence[str]] = None,
              input_size_list: Optional[Sequence[Sequence[int]]] = None) -> Any:
    """Load an ONNX model, optionally cut it at ``inputs``/``outputs`` and fix input shapes.

    ``input_size_list`` gives one shape per (real) input, with or without the batch dimension (like the
    toolkit's ``[[3, 224, 224]]``); it replaces dynamic dimensions. Errors say which name or shape is wrong.
    """
    onnx = _onnx()
    if isinstance(path_or_proto, (str, Path)):
        path = Path(path_or_proto)
        if not path.is_file():
            raise BuildError(f"ONNX model {str(path)!r} does not exist; check the path given to load_onnx")
        try:
            model = onnx.load(str(path))
        except Exception as exc:
            raise BuildError(f"cannot parse {str(path)!r} as an ONNX model: {exc}") from exc
        if not model.graph.name:
            model.graph.name = path.stem
    elif isinstance(path_or_proto, onnx.ModelProto):
        model = copy.deepcopy(path_or_proto)
    else:
        raise BuildError(f"load_onnx expects a path or an onnx.ModelProto, not {type(path_or_proto).__name__}")
    model = _upgrade_old_opset(model)
    _drop_initializer_inputs(model)
    if inputs or outputs:
        model = _cut(model, inputs, outputs)
    if input_size_list is not None:
        _set_input_sizes(model, input_size_list)
    return model


def _upgrade_old_opset(model: Any) -> Any:
    """Models older than opset 9 are converted to opset 13 with onnx's version converter; newer than 21
    are refused (their operators may have semantics this builder does not know)."""
    onnx = _onnx()
    opset = default_opset(model)
    if opset > MAX_OPSET:
        raise BuildError(f"opset {opset} is not supported (supported: {MIN_OPSET}..{MAX_OPSET}); convert the "
                         "model with onnx.version_converter.convert_version(model, 21)")
    if opset >= MIN_OPSET:
        return model
    try:
        upgraded = onnx.version_converter.convert_version(model, 13)
    except Exception as exc:
        raise BuildError(f"opset {opset} is older than {MIN_OPSET} and onnx's version converter cannot upgrade "
                         f"it ({exc}); re-export the model with opset >= {MIN_OPSET}") from exc
    LOG.info("converted the model from opset %d to opset 13", opset)
    if not upgraded.graph.name:
        upgraded.graph.name = model.graph.name
    return upgraded


def _drop_initializer_inputs(model: Any) -> None:
    """Initializers listed as graph inputs (IR < 4 style) stop being inputs: they are constants to us."""
    model.ir_version = max(model.ir_version, 7)  # IR >= 4 lets initializers exist without an input entry
    inits = {i.name for i in model.graph.initializer}
    keep = [i for i in model.graph.input if i.name not in inits]
    if len(keep) != len(model.graph.input):
        del model.graph.input[:]
        model.graph.input.extend(keep)


def _all_value_names(model: Any) -> set:
    names = {i.name for i in model.graph.input} | {i.name for i in model.graph.initializer}
    for node in model.graph.node:
        names.update(o for o in node.output if o)
    return names


def _unknown_name_message(name: str, model: Any, known: set) -> str:
    """Why ``name`` cannot be a cut point, naming the tensors that exist (the closest ones first) so the
    caller can correct a typo without opening the model in Netron."""
    import difflib

    close = difflib.get_close_matches(name, sorted(known), n=5, cutoff=0.6)
    inits = {i.name for i in model.graph.initializer}
    tensors = [o for node in model.graph.node for o in node.output if o and o not in inits]
    listed = tensors if len(tensors) <= 20 else tensors[:10] + ["..."] + tensors[-5:]
    hint = f" did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return (f"tensor {name!r} given to load_onnx(inputs=/outputs=) is not in the graph;{hint} the graph inputs "
            f"are {[i.name for i in model.graph.input]}, its outputs {[o.name for o in model.graph.output]}, "
            f"and its {len(tensors)} node outputs are {listed} (use one of these names, as Netron shows them)")


def _cut(model: Any, inputs: Optional[Sequence[str]], outputs: Optional[Sequence[str]]) -> Any:
    """The sub-graph between ``inputs`` and ``outputs``. Shape inference runs first because the extractor
    needs a type for every new input, but on a model with dynamic dimensions it records symbolic shapes
    (also for the graph inputs themselves); those entries are dropped again so that the shapes fixed later by
    ``input_size_list`` are not shadowed by stale ``value_info`` and every tensor is re-inferred from them."""
    onnx = _onnx()
    known = _all_value_names(model)
    for name in list(inputs or []) + list(outputs or []):
        if name not in known:
            raise BuildError(_unknown_name_message(name, model, known))
    in_names = list(inputs) if inputs else [i.name for i in model.graph.input]
    out_names = list(outputs) if outputs else [o.name for o in model.graph.output]
    original_info = {vi.name for vi in model.graph.value_info}
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
        cut = onnx.utils.Extractor(inferred).extract_model(in_names, out_names)
    except Exception as exc:
        raise BuildError(f"cannot cut the graph at inputs={in_names} outputs={out_names}: {exc}") from exc
    available = ({i.name for i in cut.graph.input} | {i.name for i in cut.graph.initializer}
                 | {o for node in cut.graph.node for o in node.output})
    missing = sorted({t for node in cut.graph.node for t in node.input if t and t not in available})
    if missing:  # the extractor stops at `inputs` but does not check that they are the only way in
        raise BuildError(f"cannot cut the graph at inputs={in_names} outputs={out_names}: the part between them "
                         f"also reads {missing}, which is outside the cut; add {missing} to inputs= (with "
                         "their shapes in input_size_list) or choose other cut points")
    ends = {i.name for i in cut.graph.input} | {o.name for o in cut.graph.output}
    keep = [vi for vi in cut.graph.value_info if vi.name in original_info and vi.name not in ends]
    del cut.graph.value_info[:]
    cut.graph.value_info.extend(keep)
    del cut.opset_import[:]
    cut.opset_import.extend(model.opset_import)
    cut.ir_version = model.ir_version
    cut.graph.name = model.graph.name
    return cut


def _set_input_sizes(model: Any, sizes: Sequence[Sequence[int]]) -> None:
    ins = list(model.graph.input)
    if len(sizes) != len(ins):
        raise BuildError(f"input_size_list has {len(sizes)} shapes but the model has {len(ins)} inputs "
                         f"({[i.name for i in ins]})")
    for vi, size in zip(ins, sizes):
        size = [int(s) for s in size]
        old = _dims(vi)
        if old is not None and len(size) == len(old) - 1:
            size = [1] + size
        if old is not None and len(size) != len(old):
            raise BuildError(f"input_size_list entry {size} for input {vi.name!r} has rank {len(size)}, the "
                             f"model's input has shape {old}")
        if any(s < 1 for s in size):
            raise BuildError(f"input_size_list entry {size} for {vi.name!r} must be positive")
        shape = vi.type.tensor_type.shape
        del shape.dim[:]
        for s in size:
            shape.dim.add().dim_value = s
    # a value_info entry of the same name (written by an exporter or an earlier shape inference) would keep
    # the old dynamic shape alive next to the fixed input
    fixed = {vi.name for vi in ins}
    kept = [vi for vi in model.graph.value_info if vi.name not in fixed]
    if len(kept) != len(model.graph.value_info):
        del model.graph.value_info[:]
        model.graph.value_info.extend(kept)


# ------------------------------------------------------------------------------------------ preparation


def prepare(model: Any, fold_batchnorm: bool = True) -> PreparedGraph:
    """Run every graph pass and return the prepared float graph with static shapes for every tensor."""
    onnx = _onnx()
    model = copy.deepcopy(model)
    opset = default_opset(model)
    _drop_initializer_inputs(model)
    _check_static_inputs(model)
    _name_nodes(model)
    _constants_to_initializers(model)
    for _ in range(16):
        shapes = _infer(model)
        if not _fold_constants(model, shapes, opset):
            break
    _drop_unused_optional_outputs(model)
    _remove_identities(model)
    if _decompose(model, shapes, opset):  # fold what the new layers compute from constants
        for _ in range(4):
            shapes = _infer(model)
            if not _fold_constants(model, shapes, opset):
                break
    unknown = _unknown_operators(model)
    if unknown:
        raise _all_problems(model, unknown, opset, shapes)
    if fold_batchnorm:
        _fold_batchnorm(model)
    _remove_unused(model)
    shapes = _infer(model)
    _complete_shapes_with_ort(model, shapes)
    _write_value_info(model, shapes)
    # onnxruntime may lag the onnx package's IR version; IR 10 covers every opset we accept (<= 21).
    model.ir_version = min(model.ir_version, MAX_IR_VERSION)
    try:
        onnx.checker.check_model(_checkable(_without_big_constants(model), opset))
    except Exception as exc:  # our passes must never break the graph; report it as a build error
        raise BuildError(f"graph preparation produced an invalid ONNX graph: {exc}") from exc
    from onnx import numpy_helper
    constants = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return PreparedGraph(model=model, opset=opset,
                         shapes={k: v[0] for k, v in shapes.items()},
                         elem_types={k: v[1] for k, v in shapes.items()}, constants=constants,
                         inputs=[i.name for i in model.graph.input],
                         outputs=[o.name for o in model.graph.output])


def _unknown_operators(model: Any) -> list:
    """Nodes whose operator type the simulator has no lowering for (custom domains included)."""
    from .lower import LOWERINGS, WHAT_TO_DO
    problems = []
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx"):
            problems.append(UnsupportedNode(
                f"{node.domain}.{node.op_type}", node.name,
                "custom-domain operators cannot run on the simulated NPU; cut the graph before it with "
                "load_onnx(outputs=[...]) and run it on the CPU"))
        elif node.op_type not in LOWERINGS:
            problems.append(UnsupportedNode(node.op_type, node.name,
                                            f"the simulated NPU has no {node.op_type} operator; {WHAT_TO_DO}"))
    return problems


def _all_problems(model: Any, unknown: list, opset: int, shapes: dict) -> UnsupportedOperatorError:
    """One error naming the unknown operators plus every known node that would fail to lower too."""
    from .lower import lower_nodes
    skip = frozenset(p.node_name for p in unknown)
    inits = {i.name for i in model.graph.initializer}
    try:
        from onnx import numpy_helper
        pg = PreparedGraph(model=model, opset=opset, shapes={k: v[0] for k, v in shapes.items() if v[0] is not None},
                           elem_types={k: v[1] for k, v in shapes.items()},
                           constants={i.name: numpy_helper.to_array(i) for i in model.graph.initializer},
                           inputs=[i.name for i in model.graph.input if i.name not in inits],
                           outputs=[o.name for o in model.graph.output])
        _, more = lower_nodes(pg, skip=skip)
    except Exception as exc:  # the known nodes cannot be checked without full shapes: report the unknown
        LOG.debug("cannot check the other nodes of a model with unknown operators: %s", exc)
        more = []
    order = {n.name: i for i, n in enumerate(model.graph.node)}
    problems = sorted(list(unknown) + more, key=lambda p: order.get(p.node_name, 0))
    return UnsupportedOperatorError.from_nodes(problems, cut_points(model, {p.node_name for p in problems}))


def cut_points(model: Any, bad_nodes: set) -> list:
    """Tensors to pass as ``load_onnx(outputs=...)`` so the cut graph holds none of ``bad_nodes``.

    They are the run-time inputs of the bad nodes that no bad node computes (directly or through other
    nodes), plus the graph outputs that do not depend on a bad node; empty when the bad nodes read only
    graph inputs and constants.
    """
    graph_inputs = {i.name for i in model.graph.input}
    consts = {i.name for i in model.graph.initializer}
    tainted: set = set()
    frontier: list = []
    for node in model.graph.node:
        ins = [n for n in node.input if n]
        if node.name in bad_nodes:
            for n in ins:
                if n not in tainted and n not in consts and n not in graph_inputs and n not in frontier:
                    frontier.append(n)
        if node.name in bad_nodes or any(n in tainted for n in ins):
            tainted.update(o for o in node.output if o)
    if not frontier:
        return []
    return frontier + [o.name for o in model.graph.output if o.name not in tainted and o.name not in frontier]


def _check_static_inputs(model: Any) -> None:
    for vi in model.graph.input:
        dims = _dims(vi)
        if dims is None or any(not isinstance(d, int) for d in dims):
            raise BuildError(f"input {vi.name!r} has a dynamic shape {dims}; the NPU needs static shapes: "
                             "pass load_onnx(..., input_size_list=[[1, 3, 224, 224], ...]) with one shape "
                             "per input")


def _name_nodes(model: Any) -> None:
    """Give every node a unique non-empty name: the runtime reports layers by node name."""
    seen: set = set()
    for i, node in enumerate(model.graph.node):
        name = node.name or f"{node.op_type}_{i}"
        base, k = name, 1
        while name in seen:
            name, k = f"{base}_{k}", k + 1
        node.name = name
        seen.add(name)


def _constants_to_initializers(model: Any) -> None:
    """Constant nodes become initializers so folding and lowering see one kind of constant."""
    from onnx import helper, numpy_helper
    keep = []
    for node in model.graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            attr = node.attribute[0]
            if attr.name == "value":
                arr = numpy_helper.to_array(attr.t)
            elif attr.name in ("value_float", "value_int"):
                value = helper.get_attribute_value(attr)
                arr = np.array(value, dtype=np.float32 if attr.name == "value_float" else np.int64)
            elif attr.name in ("value_floats", "value_ints"):
                value = helper.get_attribute_value(attr)
                arr = np.array(value, dtype=np.float32 if attr.name == "value_floats" else np.int64)
            else:
                raise UnsupportedOperatorError("Constant", node.name,
                                               f"Constant with attribute {attr.name!r} is not supported; "
                                               "use a dense tensor value")
            model.graph.initializer.append(numpy_helper.from_array(arr, node.output[0]))
        else:
            keep.append(node)
    del model.graph.node[:]
    model.graph.node.extend(keep)


def _infer(model: Any) -> dict:
    """name -> (shape tuple or None, elem_type) from ONNX shape inference (plus inputs/initializers)."""
    onnx = _onnx()
    try:
        inferred = onnx.shape_inference.infer_shapes(_without_big_constants(model), data_prop=True)
    except Exception as exc:
        LOG.info("ONNX shape inference failed (%s); shapes will come from onnxruntime", exc)
        inferred = model
    out = {}
    g = inferred.graph
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        dims = _dims(vi)
        static = None if dims is None or any(not isinstance(d, int) for d in dims) else tuple(dims)
        out[vi.name] = (static, vi.type.tensor_type.elem_type)
    for init in g.initializer:
        out[init.name] = (tuple(init.dims), init.data_type)
    return out


def _checkable(light: Any, opset: int) -> Any:
    """``light`` (a copy) with what onnx's checker refuses although onnxruntime runs it replaced by a
    stand-in of the same inputs and outputs: GroupNormalization at opsets 18-20 (per-group scale and bias,
    deprecated by opset 21 but still what exporters write) is checked as an InstanceNormalization."""
    if opset >= 21:
        return light
    for node in light.graph.node:
        if node.op_type == "GroupNormalization" and node.domain in ("", "ai.onnx"):
            node.op_type = "InstanceNormalization"
            kept = [a for a in node.attribute if a.name == "epsilon"]
            del node.attribute[:]
            node.attribute.extend(kept)
    return light


def _without_big_constants(model: Any, limit: int = 4096) -> Any:
    """A copy whose large initializers are graph inputs of the same type and shape.

    Shape inference and the checker serialise the whole model; weights only matter to them through their
    shapes, while small constants (shape tensors) must stay values for data propagation.
    """
    from onnx import helper
    light = type(model)()
    light.ir_version, light.producer_name = model.ir_version, model.producer_name
    light.opset_import.extend(model.opset_import)
    g = light.graph
    g.name = model.graph.name
    g.node.extend(model.graph.node)
    g.input.extend(model.graph.input)
    g.output.extend(model.graph.output)
    g.value_info.extend(model.graph.value_info)
    for init in model.graph.initializer:
        n = 1
        for d in init.dims:
            n *= d
        if n > limit:
            g.input.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
        else:
            g.initializer.append(init)
    return light


def _node_model(node: Any, model: Any, shapes: dict) -> Any:
    from onnx import helper
    ins = [helper.make_tensor_value_info(n, shapes.get(n, (None, 1))[1] or 1, None) for n in node.input if n]
    outs = [helper.make_tensor_value_info(n, 0, None) for n in node.output if n]
    graph = helper.make_graph([node], "fold", ins, outs)
    return helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)


def _fold_constants(model: Any, shapes: dict, opset: int) -> bool:
    """Evaluate nodes whose inputs are all constant (and Shape/Size of static tensors). True if any."""
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator
    consts = {i.name: i for i in model.graph.initializer}
    graph_outputs = {o.name for o in model.graph.output}
    keep, changed = [], False
    cache: dict = {}
    for node in model.graph.node:
        result = None
        if any(o in graph_outputs for o in node.output):
            keep.append(node)
            continue
        if node.op_type in ("Shape", "Size") and node.input[0] not in consts:
            shape = shapes.get(node.input[0], (None, 0))[0]
            if shape is not None:
                result = [_shape_value(node, shape, opset)]
        elif all((not n) or n in consts for n in node.input) and node.op_type not in ("RandomNormal",
                                                                                     "RandomUniform"):
            feeds = {n: cache.get(n) if n in cache else numpy_helper.to_array(consts[n]) for n in node.input if n}
            for n, v in feeds.items():
                cache[n] = v
            try:
                result = ReferenceEvaluator(_node_model(node, model, shapes)).run(None, feeds)
            except Exception as exc:
                LOG.debug("cannot fold %s %r: %s", node.op_type, node.name, exc)
                result = None
            if result is not None and sum(np.asarray(r).size for r in result) > _MAX_FOLD_ELEMS:
                result = None
        if result is None:
            keep.append(node)
            continue
        changed = True
        for name, value in zip(node.output, result):
            if name:
                arr = np.asarray(value)
                cache[name] = arr
                init = numpy_helper.from_array(arr, name)
                model.graph.initializer.append(init)
                consts[name] = init
    if changed:
        del model.graph.node[:]
        model.graph.node.extend(keep)
    return changed


def _shape_value(node: Any, shape: tuple, opset: int) -> np.ndarray:
    if node.op_type == "Size":
        return np.array(int(np.prod(shape)), dtype=np.int64)
    start, end = 0, len(shape)
    for a in node.attribute:
        if a.name == "start":
            start = a.i
        elif a.name == "end":
            end = a.i
    return np.array(shape[slice(start, end)], dtype=np.int64)


def _consumers(model: Any) -> dict:
    uses: dict = {}
    for node in model.graph.node:
        for n in node.input:
            if n:
                uses.setdefault(n, []).append(node)
    return uses


def _rename_everywhere(model: Any, old: str, new: str) -> None:
    for node in model.graph.node:
        for i, n in enumerate(node.input):
            if n == old:
                node.input[i] = new
        for i, n in enumerate(node.output):
            if n == old:
                node.output[i] = new


_OPTIONAL_OUTPUTS = ("MaxPool", "Dropout", "BatchNormalization")


def _drop_unused_optional_outputs(model: Any) -> None:
    """MaxPool indices, Dropout masks and training-mode BatchNormalization statistics nobody reads are
    removed, so only outputs that matter can make an operator unsupported."""
    uses = _consumers(model)
    graph_outputs = {o.name for o in model.graph.output}
    for node in model.graph.node:
        if node.op_type not in _OPTIONAL_OUTPUTS:
            continue
        while len(node.output) > 1 and (not node.output[-1] or (
                node.output[-1] not in uses and node.output[-1] not in graph_outputs)):
            del node.output[-1]


def _remove_identities(model: Any) -> None:
    """Identity and Dropout (inference mode) disappear; their consumers read the source tensor.

    When the removed node's output is a graph output, the producer's output is renamed instead so graph
    output names stay; if that is impossible (the source is a graph input or another output) the node stays
    and is lowered to a Reshape.
    """
    graph_inputs = {i.name for i in model.graph.input}
    graph_outputs = {o.name for o in model.graph.output}
    for node in list(model.graph.node):
        if node.op_type not in ("Identity", "Dropout"):
            continue
        if node.op_type == "Dropout" and len(node.output) > 1 and node.output[1]:
            if _consumers(model).get(node.output[1]) or node.output[1] in graph_outputs:
                raise UnsupportedOperatorError("Dropout", node.name,
                                               "the Dropout mask output is used; export the model in "
                                               "inference mode (model.eval())")
        src, dst = node.input[0], node.output[0]
        if dst not in graph_outputs:
            model.graph.node.remove(node)
            _rename_everywhere(model, dst, src)
            continue
        producers = [n for n in model.graph.node if src in n.output]
        uses = _consumers(model).get(src, [])
        if src in graph_inputs or src in graph_outputs or not producers or len(uses) != 1:
            continue
        model.graph.node.remove(node)
        _rename_everywhere(model, src, dst)


def _decompose(model: Any, shapes: dict, opset: int) -> bool:
    """Operators the NPU runs as a sequence of simpler layers become that sequence in the ONNX graph
    itself (so calibration and the per-layer comparison see every tensor): Einsum in its batched-matmul
    forms -> Transpose/Unsqueeze/MatMul/Transpose, DepthToSpace / SpaceToDepth -> Reshape/Transpose/Reshape.
    Forms outside these stay as they are and are reported as unsupported."""
    names = _all_value_names(model)
    out_nodes = []
    changed = False
    for node in model.graph.node:
        shape = shapes.get(node.input[0], (None, 0))[0] if node.input else None
        new = None
        if node.op_type in ("LSTM", "GRU"):  # every state output gets a name: the layer writes them all
            n_out = 3 if node.op_type == "LSTM" else 2
            while len(node.output) < n_out:
                node.output.append("")
            for i, o in enumerate(node.output):
                if not o:
                    node.output[i] = _fresh_name(names, f"{node.name}_output_{i}")
                    changed = True
        if node.op_type == "Einsum" and len(node.input) == 2:
            new = _einsum_nodes(model, node, names, opset)
        elif node.op_type in ("DepthToSpace", "SpaceToDepth") and shape is not None and len(shape) == 4:
            new = _depth_space_nodes(model, node, shape, names)
        if new is None:
            out_nodes.append(node)
        else:
            out_nodes.extend(new)
            changed = True
    if changed:
        del model.graph.node[:]
        model.graph.node.extend(out_nodes)
    return changed


def _attr(node: Any, name: str, default: Any) -> Any:
    from onnx import helper
    for a in node.attribute:
        if a.name == name:
            v = helper.get_attribute_value(a)
            return v.decode() if isinstance(v, bytes) else v
    return default


def _const_input(model: Any, names: set, base: str, value: np.ndarray) -> str:
    from onnx import numpy_helper
    name = _fresh_name(names, base)
    model.graph.initializer.append(numpy_helper.from_array(value, name))
    return name


def _einsum_nodes(model: Any, node: Any, names: set, opset: int) -> Optional[list]:
    """Einsum 'A,B->O' with batch letters (in A, B and O), M letters (A and O), N letters (B and O) and
    exactly one contracted letter, as MatMul over [batch, M.., N.., m, k] x [batch, M.., N.., k, n]."""
    from onnx import helper
    eq = str(_attr(node, "equation", "")).replace(" ", "")
    if "..." in eq or "->" not in eq or eq.count(",") != 1:
        return None
    lhs, o = eq.split("->")
    a, b = lhs.split(",")
    if any(len(set(t)) != len(t) for t in (a, b, o)) or not set(o) <= set(a) | set(b):
        return None
    batch = [c for c in o if c in a and c in b]
    ms = [c for c in o if c in a and c not in b]
    ns = [c for c in o if c in b and c not in a]
    ks = [c for c in a if c in b and c not in o]
    if len(ks) != 1 or not ms or not ns or set(a) != set(batch + ms + ks) or set(b) != set(batch + ns + ks):
        return None
    k = ks[0]
    a_order = batch + ms[:-1] + [ms[-1], k]
    b_order = batch + ns[:-1] + [k, ns[-1]]
    mm_order = batch + ms[:-1] + ns[:-1] + [ms[-1], ns[-1]]
    nodes: list = []
    base = node.output[0]

    def transpose(src: str, letters: str, order: list, tag: str) -> str:
        perm = [letters.index(c) for c in order]
        if perm == list(range(len(perm))):
            return src
        dst = _fresh_name(names, f"{base}__einsum_{tag}_t")
        nodes.append(helper.make_node("Transpose", [src], [dst], name=_fresh_name(names, f"{node.name}_{tag}_t"),
                                      perm=perm))
        return dst

    def unsqueeze(src: str, axes: list, tag: str) -> str:
        if not axes:
            return src
        dst = _fresh_name(names, f"{base}__einsum_{tag}_u")
        uname = _fresh_name(names, f"{node.name}_{tag}_u")
        if opset >= 13:
            ax = _const_input(model, names, f"{base}__einsum_{tag}_axes", np.array(axes, np.int64))
            nodes.append(helper.make_node("Unsqueeze", [src, ax], [dst], name=uname))
        else:
            nodes.append(helper.make_node("Unsqueeze", [src], [dst], name=uname, axes=axes))
        return dst

    nb, nm, nn = len(batch), len(ms) - 1, len(ns) - 1
    xa = unsqueeze(transpose(node.input[0], a, a_order, "a"), list(range(nb + nm, nb + nm + nn)), "a")
    xb = unsqueeze(transpose(node.input[1], b, b_order, "b"), list(range(nb, nb + nm)), "b")
    perm = [mm_order.index(c) for c in o]
    mm_out = base if perm == list(range(len(perm))) else _fresh_name(names, f"{base}__einsum_mm")
    nodes.append(helper.make_node("MatMul", [xa, xb], [mm_out], name=node.name))
    if mm_out != base:
        nodes.append(helper.make_node("Transpose", [mm_out], [base], name=_fresh_name(names, f"{node.name}_out_t"),
                                      perm=perm))
    return nodes


def _depth_space_nodes(model: Any, node: Any, shape: tuple, names: set) -> Optional[list]:
    """DepthToSpace (DCR / CRD) and SpaceToDepth as Reshape -> 6-D Transpose -> Reshape."""
    from onnx import helper
    n, c, h, w = shape
    bs = int(_attr(node, "blocksize", 0))
    if bs < 1:
        return None
    if node.op_type == "DepthToSpace":
        if c % (bs * bs):
            return None
        if str(_attr(node, "mode", "DCR")) == "CRD":
            mid, perm = [n, c // (bs * bs), bs, bs, h, w], [0, 1, 4, 2, 5, 3]
        else:
            mid, perm = [n, bs, bs, c // (bs * bs), h, w], [0, 3, 4, 1, 5, 2]
        final = [n, c // (bs * bs), h * bs, w * bs]
    else:
        if h % bs or w % bs:
            return None
        mid, perm = [n, c, h // bs, bs, w // bs, bs], [0, 3, 5, 1, 2, 4]
        final = [n, c * bs * bs, h // bs, w // bs]
    base = node.output[0]
    s1 = _const_input(model, names, f"{base}__shape6", np.array(mid, np.int64))
    s2 = _const_input(model, names, f"{base}__shape4", np.array(final, np.int64))
    t1, t2 = _fresh_name(names, f"{base}__r6"), _fresh_name(names, f"{base}__t6")
    return [helper.make_node("Reshape", [node.input[0], s1], [t1], name=_fresh_name(names, f"{node.name}_r6")),
            helper.make_node("Transpose", [t1], [t2], name=_fresh_name(names, f"{node.name}_t6"), perm=perm),
            helper.make_node("Reshape", [t2, s2], [base], name=node.name)]


def _fold_batchnorm(model: Any) -> None:
    """BatchNormalization directly after a Conv (sole consumer, constant params) merges into the Conv."""
    from onnx import numpy_helper
    inits = {i.name: i for i in model.graph.initializer}
    graph_outputs = {o.name for o in model.graph.output}
    producer = {o: n for n in model.graph.node for o in n.output}
    uses = _consumers(model)
    names = _all_value_names(model)
    removed = set()
    for bn in list(model.graph.node):
        if bn.op_type != "BatchNormalization" or any(bn.output[1:]):
            continue
        conv = producer.get(bn.input[0])
        if conv is None or conv.op_type != "Conv" or bn.input[0] in graph_outputs:
            continue
        if len(uses.get(bn.input[0], [])) != 1:
            continue
        params = list(bn.input[1:5]) + list(conv.input[1:])
        if not all(n in inits for n in params if n):
            continue
        eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
        gamma, beta, mean, var = (numpy_helper.to_array(inits[n]).astype(np.float64) for n in bn.input[1:5])
        w = numpy_helper.to_array(inits[conv.input[1]]).astype(np.float64)
        b = (numpy_helper.to_array(inits[conv.input[2]]).astype(np.float64)
             if len(conv.input) > 2 and conv.input[2] else np.zeros(w.shape[0]))
        s = gamma / np.sqrt(var + eps)
        w_new = (w * s.reshape((-1,) + (1,) * (w.ndim - 1))).astype(np.float32)
        b_new = ((b - mean) * s + beta).astype(np.float32)
        w_name = _fresh_name(names, conv.input[1] + "_bnfold")
        b_name = _fresh_name(names, conv.name + "_bias_bnfold")
        model.graph.initializer.append(numpy_helper.from_array(w_new, w_name))
        model.graph.initializer.append(numpy_helper.from_array(b_new, b_name))
        while len(conv.input) < 3:
            conv.input.append("")
        conv.input[1], conv.input[2] = w_name, b_name
        conv.output[0] = bn.output[0]
        producer[bn.output[0]] = conv
        removed.add(id(bn))
    if removed:
        keep = [n for n in model.graph.node if id(n) not in removed]
        del model.graph.node[:]
        model.graph.node.extend(keep)


def _fresh_name(names: set, base: str) -> str:
    name, k = base, 1
    while name in names:
        name, k = f"{base}_{k}", k + 1
    names.add(name)
    return name


def _remove_unused(model: Any) -> None:
    """Drop nodes that feed no graph output and initializers no node reads."""
    needed = {o.name for o in model.graph.output}
    keep = []
    for node in reversed(list(model.graph.node)):
        if any(o in needed for o in node.output if o):
            keep.append(node)
            needed.update(n for n in node.input if n)
    keep.reverse()
    del model.graph.node[:]
    model.graph.node.extend(keep)
    inits = [i for i in model.graph.initializer if i.name in needed]
    del model.graph.initializer[:]
    model.graph.initializer.extend(inits)


def _complete_shapes_with_ort(model: Any, shapes: dict) -> None:
    """Fill tensor shapes ONNX inference left open by running the graph once on zeros."""
    missing = [o for n in model.graph.node for o in n.output if o and shapes.get(o, (None, 0))[0] is None]
    if not missing:
        return
    LOG.info("resolving %d tensor shapes with onnxruntime", len(missing))
    values = run_onnx(model, zero_feeds(model), missing)
    for name, arr in zip(missing, values):
        shapes[name] = (tuple(arr.shape), _onnx().helper.np_dtype_to_tensor_dtype(arr.dtype))


def zero_feeds(model: Any) -> dict:
    onnx = _onnx()
    feeds = {}
    for vi in model.graph.input:
        dt = onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        feeds[vi.name] = np.zeros([d.dim_value for d in vi.type.tensor_type.shape.dim], dtype=dt)
    return feeds


def make_session(model: Any, extra_outputs: Sequence[str] = ()) -> Any:
    """An onnxruntime session of ``model`` that also returns ``extra_outputs`` (intermediate tensors)."""
    onnx = _onnx()
    import onnxruntime as ort
    m = copy.deepcopy(model)
    m.ir_version = min(m.ir_version, MAX_IR_VERSION)
    present = {o.name for o in m.graph.output}
    known = {vi.name: vi for vi in m.graph.value_info}
    for name in extra_outputs:
        if name in present:
            continue
        if name in known:
            m.graph.output.append(copy.deepcopy(known[name]))
        else:
            m.graph.output.append(onnx.ValueInfoProto(name=name))
        present.add(name)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    # Keep ORT from fusing away float semantics we compare against (e.g. fp16 casts are not involved).
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    try:
        return ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise BuildError(f"onnxruntime cannot load the prepared graph: {exc}") from exc


def run_onnx(model: Any, feeds: dict, names: Sequence[str]) -> list:
    """Values of ``names`` (any tensors of the graph) for one set of input feeds."""
    sess = make_session(model, names)
    return sess.run(list(names), feeds)


def _write_value_info(model: Any, shapes: dict) -> None:
    from onnx import helper
    outputs = {o.name for o in model.graph.output}
    inputs = {i.name for i in model.graph.input}
    inits = {i.name for i in model.graph.initializer}
    del model.graph.value_info[:]
    for node in model.graph.node:
        for o in node.output:
            if o and o not in outputs and o not in inputs and o not in inits and o in shapes:
                shape, et = shapes[o]
                model.graph.value_info.append(helper.make_tensor_value_info(o, et or 1, shape))
    for o in model.graph.output:
        if o.name in shapes and shapes[o.name][0] is not None:
            shape, et = shapes[o.name]
            o.CopyFrom(helper.make_tensor_value_info(o.name, et or o.type.tensor_type.elem_type or 1, shape))
