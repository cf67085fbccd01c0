"""Models with custom operators: NPU sub-graphs, and the custom operators computed on the host between them.

Why the host: a custom operator's compute is Python code of the user's script. Running it on the board
would mean the daemon executing Python shipped by any client that can reach it, and the script's imports
(numpy, scipy, its own modules) installed on the board. So the graph is cut at the custom nodes; every run
of standard operators becomes a model of its own (on the simulated NPU in this process, or a session on the
board), and `compute` runs here between them. On a board this costs one round trip per sub-graph; the
results are the same as on the simulator.

A model with custom operators is exported as a bundle of its sub-models and the custom nodes (`RKNLSEG1`
container, below). The C runtime does not load bundles: this is the toolkit's situation too, where such a
model needs the operator registered in the application (rknn_register_custom_ops).

Container: magic b"RKNLSEG1", u64 little-endian manifest length, manifest (JSON), then the sub-models'
bytes in order. The manifest lists the graph inputs and outputs and, per step, its kind ('npu' or
'custom'), input and output tensor names, and the model size (npu) or the ONNX NodeProto (custom, base64).
"""

from __future__ import annotations

import base64
import copy
import json
import logging
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from rknnlink.api.runtimes import ModelRuntime, memory_report

log = logging.getLogger("rknnlink.api")

MAGIC = b"RKNLSEG1"


@dataclass
class Step:
    """One NPU sub-graph (kind 'npu': its ONNX model, later its built bytes) or one custom node."""

    kind: str
    inputs: List[str]
    outputs: List[str]
    nodes: Any = None         # npu: the sub-graph's ONNX nodes
    node: Any = None          # custom: the onnx.NodeProto
    onnx_model: Any = None    # npu: the sub-graph as an onnx.ModelProto (typed from a float run)
    data: bytes = b""         # npu: the built simulator model
    sim_model: Any = None


@dataclass
class Plan:
    graph_inputs: List[str]
    graph_outputs: List[str]
    steps: List[Step]
    constants: Dict[str, np.ndarray] = field(default_factory=dict)  # initializers custom nodes read
    target_platform: str = "rk3588"
    # per graph input: (mean, std, reverse_channels), what the runtime would apply, for custom nodes fed directly
    normalisation: Dict[str, list] = field(default_factory=dict)

    @property
    def custom_types(self) -> List[str]:
        return sorted({s.node.op_type for s in self.steps if s.kind == "custom"})


def has_custom_nodes(model: Any, op_types: Sequence[str]) -> bool:
    return any(node.op_type in op_types for node in model.graph.node)


def split(model: Any, op_types: Sequence[str]) -> Plan:
    """Cut the graph (topologically ordered, as ONNX requires) at the nodes whose op_type is custom."""
    from onnx import numpy_helper

    initializers = {t.name: t for t in model.graph.initializer}
    graph_inputs = [i.name for i in model.graph.input if i.name not in initializers]
    graph_outputs = [o.name for o in model.graph.output]
    groups: List[tuple] = []
    for node in model.graph.node:
        if node.op_type in op_types:
            groups.append(("custom", [node]))
        elif groups and groups[-1][0] == "npu":
            groups[-1][1].append(node)
        else:
            groups.append(("npu", [node]))
    steps = []
    for index, (kind, nodes) in enumerate(groups):
        produced = {o for n in nodes for o in n.output if o}
        later = {i for _, group in groups[index + 1:] for n in group for i in n.input} | set(graph_outputs)
        inputs = []
        for n in nodes:
            for name in n.input:
                if name and name not in produced and name not in inputs and (kind == "custom"
                                                                            or name not in initializers):
                    inputs.append(name)
        outputs = [o for n in nodes for o in n.output if o and (o in later or kind == "custom")]
        steps.append(Step(kind=kind, inputs=inputs, outputs=outputs, node=nodes[0] if kind == "custom" else None,
                          nodes=nodes if kind == "npu" else None))
    constants = {name: numpy_helper.to_array(initializers[name]) for s in steps if s.kind == "custom"
                 for name in s.inputs if name in initializers}
    return Plan(graph_inputs, graph_outputs, steps, constants)


def _sub_model(model: Any, step: Step, values: Dict[str, np.ndarray]) -> Any:
    """The ONNX model of one NPU step, its inputs typed and shaped from arrays seen in a float run."""
    import onnx
    from onnx import helper

    used = {i for n in step.nodes for i in n.input}
    initializers = [t for t in model.graph.initializer if t.name in used]
    inputs = [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(values[name].dtype),
                                            list(values[name].shape)) for name in step.inputs]
    outputs = [onnx.ValueInfoProto(name=name) for name in step.outputs]
    graph = helper.make_graph(step.nodes, f"{model.graph.name or 'model'}_part", inputs, outputs, initializers)
    opsets = [o for o in model.opset_import if o.domain in ("", "ai.onnx")]
    sub = helper.make_model(graph, opset_imports=opsets, ir_version=model.ir_version)
    inferred = onnx.shape_inference.infer_shapes(sub)
    known = {v.name: v for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    for out in sub.graph.output:
        if out.name in known and known[out.name].type.tensor_type.elem_type:
            out.CopyFrom(known[out.name])
        else:
            out.CopyFrom(helper.make_tensor_value_info(out.name, onnx.TensorProto.FLOAT, None))
    return sub


def _compute(op: Any, node: Any, inputs: List[np.ndarray]) -> List[np.ndarray]:
    outputs = op.compute(node, inputs)
    if isinstance(outputs, np.ndarray):
        outputs = [outputs]
    outputs = [np.asarray(o) for o in outputs]
    if len(outputs) != len([o for o in node.output if o]):
        raise ValueError(f"custom op {node.op_type}.compute returned {len(outputs)} outputs; the node has "
                         f"{len(node.output)}")
    return outputs


def float_run(model: Any, plan: Plan, ops: Dict[str, Any], feeds: Dict[str, np.ndarray],
              sessions: Dict[int, Any]) -> Dict[str, np.ndarray]:
    """Every step in float: onnxruntime for the NPU sub-graphs (built on the way), numpy for custom nodes."""
    import onnxruntime as ort

    values = dict(feeds)
    values.update(plan.constants)
    for index, step in enumerate(plan.steps):
        ins = [values[name] for name in step.inputs]
        if step.kind == "custom":
            outs = _compute(ops[step.node.op_type], step.node, ins)
        else:
            if index not in sessions:
                step.onnx_model = _sub_model(model, step, values)
                sessions[index] = ort.InferenceSession(step.onnx_model.SerializeToString(),
                                                       providers=["CPUExecutionProvider"])
            outs = sessions[index].run(step.outputs, dict(zip(step.inputs, ins)))
        values.update(zip(step.outputs, outs))
    return values


def build_plan(model: Any, ops: Dict[str, Any], config: Any, do_quantization: bool, dataset: Optional[str],
               rknn_batch_size: Optional[int] = None) -> Plan:
    """Split, then build each NPU sub-graph; int8 sub-graphs are calibrated on what the float pipeline
    feeds them for each dataset sample (graph inputs keep the dataset's files and the mean/std)."""
    from rknnlink.model import builder
    from rknnlink.model.dataset import read_dataset

    if rknn_batch_size not in (None, 1):
        raise ValueError("rknn_batch_size is not supported for models with custom operators")
    plan = split(model, list(ops))
    shapes = {}
    for value_info in model.graph.input:
        if value_info.name in plan.graph_inputs:
            dims = [d.dim_value for d in value_info.type.tensor_type.shape.dim]
            if not dims or any(d <= 0 for d in dims):
                raise ValueError(f"input {value_info.name} has no fixed shape ({dims}); pass "
                                 "load_onnx(input_size_list=[[...]]) for a model with custom operators")
            shapes[value_info.name] = dims
    n_in = len(plan.graph_inputs)
    means = config.per_input(config.mean_values, n_in, "mean_values")
    stds = config.per_input(config.std_values, n_in, "std_values")
    sessions: Dict[int, Any] = {}
    zeros = {name: np.zeros(shapes[name], np.float32) for name in plan.graph_inputs}
    float_run(model, plan, ops, zeros, sessions)
    plan.target_platform = config.target_platform
    plan.normalisation = {name: [means[i], stds[i], bool(config.quant_img_rgb2bgr)]
                          for i, name in enumerate(plan.graph_inputs)}
    datasets: Dict[int, Path] = {}
    with tempfile.TemporaryDirectory(prefix="rknnlink-custom-") as tmp:
        if do_quantization:
            lines: Dict[int, List[str]] = {i: [] for i, s in enumerate(plan.steps) if s.kind == "npu"}
            samples = read_dataset(dataset, [shapes[n] for n in plan.graph_inputs], means, stds,
                                   config.quant_img_rgb2bgr, config.progress)
            for k, sample in enumerate(samples):
                feeds = dict(zip(plan.graph_inputs, [np.asarray(a, np.float32) for a in sample.normalised]))
                values = float_run(model, plan, ops, feeds, sessions)
                paths = dict(zip(plan.graph_inputs, sample.paths))
                for index in lines:
                    entry = []
                    for name in plan.steps[index].inputs:
                        if name in paths:
                            entry.append(str(Path(paths[name]).resolve()))
                        else:
                            path = Path(tmp) / f"s{index}_{k}_{len(entry)}.npy"
                            np.save(path, values[name].astype(np.float32))
                            entry.append(str(path))
                    lines[index].append(" ".join(entry))
            for index, entries in lines.items():
                datasets[index] = Path(tmp) / f"dataset_{index}.txt"
                datasets[index].write_text("\n".join(entries) + "\n")
        for index, step in enumerate(plan.steps):
            if step.kind != "npu":
                continue
            sub_config = copy.deepcopy(config)
            position = {name: i for i, name in enumerate(plan.graph_inputs)}
            if any(n in position and means[position[n]] is not None for n in step.inputs):
                # identity normalisation for tensors coming from a custom node (they are already floats)
                channels = [_channels(step, n) for n in step.inputs]
                sub_config.mean_values = [means[position[n]] if n in position and means[position[n]] is not None
                                          else [0.0] * c for n, c in zip(step.inputs, channels)]
                sub_config.std_values = [stds[position[n]] if n in position and stds[position[n]] is not None
                                         else [1.0] * c for n, c in zip(step.inputs, channels)]
            else:
                sub_config.mean_values = sub_config.std_values = None
            sub_config.quant_img_rgb2bgr = config.quant_img_rgb2bgr and all(n in position for n in step.inputs)
            result = builder.build(step.onnx_model, sub_config, do_quantization,
                                   str(datasets[index]) if do_quantization else None)
            step.data, step.sim_model = result.data, result.sim_model
    log.info("build: %d NPU sub-graphs around custom operators %s", sum(s.kind == "npu" for s in plan.steps),
             ", ".join(plan.custom_types))
    return plan


def _channels(step: Step, name: str) -> int:
    """Channel count (axis 1) of a sub-graph input, from its typed ONNX model (1 for scalars and vectors)."""
    for value_info in step.onnx_model.graph.input:
        if value_info.name == name:
            dims = [d.dim_value for d in value_info.type.tensor_type.shape.dim]
            return dims[1] if len(dims) >= 2 else 1
    return 1


# ---------------------------------------------------------------------------------------------- the bundle

def is_bundle(data: bytes) -> bool:
    return data[:len(MAGIC)] == MAGIC


def pack(plan: Plan) -> bytes:
    from onnx import numpy_helper

    manifest = {"graph_inputs": plan.graph_inputs, "graph_outputs": plan.graph_outputs,
                "target_platform": plan.target_platform, "normalisation": plan.normalisation,
                "constants": {k: base64.b64encode(numpy_helper.from_array(v, k).SerializeToString()).decode()
                              for k, v in plan.constants.items()},
                "steps": [{"kind": s.kind, "inputs": s.inputs, "outputs": s.outputs, "size": len(s.data)}
                          if s.kind == "npu" else
                          {"kind": s.kind, "inputs": s.inputs, "outputs": s.outputs,
                           "node": base64.b64encode(s.node.SerializeToString()).decode()}
                          for s in plan.steps]}
    text = json.dumps(manifest).encode()
    return MAGIC + struct.pack("<Q", len(text)) + text + b"".join(s.data for s in plan.steps if s.kind == "npu")


def unpack(data: bytes) -> Plan:
    import onnx
    from onnx import numpy_helper

    try:
        (length,) = struct.unpack_from("<Q", data, len(MAGIC))
        start = len(MAGIC) + 8
        manifest = json.loads(data[start:start + length])
        offset = start + length
        steps = []
        for entry in manifest["steps"]:
            step = Step(kind=entry["kind"], inputs=entry["inputs"], outputs=entry["outputs"])
            if step.kind == "npu":
                step.data = data[offset:offset + entry["size"]]
                offset += entry["size"]
            else:
                step.node = onnx.NodeProto.FromString(base64.b64decode(entry["node"]))
            steps.append(step)
        constants = {k: numpy_helper.to_array(onnx.TensorProto.FromString(base64.b64decode(v)))
                     for k, v in manifest.get("constants", {}).items()}
    except (ValueError, KeyError, struct.error) as exc:
        raise ValueError(f"not a valid rknnlink custom-op model bundle: {exc}") from exc
    return Plan(manifest["graph_inputs"], manifest["graph_outputs"], steps, constants,
                manifest.get("target_platform", "rk3588"), manifest.get("normalisation", {}))


def graph_input_as_float(array: np.ndarray, fmt: str, norm: Optional[list]) -> np.ndarray:
    """A graph input as the model's float tensor (NCHW, normalised), for a custom node that reads it."""
    x = np.asarray(array, np.float32)
    if x.ndim == 4 and fmt == "nhwc":
        x = x.transpose(0, 3, 1, 2)
    if norm:
        mean, std, reverse = norm
        if x.ndim == 4 and reverse:
            x = x[:, ::-1]
        if mean is not None and x.ndim >= 2:
            shape = [1, -1] + [1] * (x.ndim - 2)
            x = (x - np.asarray(mean, np.float32).reshape(shape)) / np.asarray(std, np.float32).reshape(shape)
    return np.ascontiguousarray(x, np.float32)


# ---------------------------------------------------------------------------------------------- running it

class SegmentedRuntime(ModelRuntime):
    """Runs a plan: one runtime per NPU sub-graph (in-process or board sessions), custom ops between."""

    def __init__(self, plan: Plan, runtimes: Sequence[Optional[ModelRuntime]], ops: Dict[str, Any],
                 on_close=None) -> None:
        missing = [t for t in plan.custom_types if t not in ops]
        if missing:
            raise ValueError(f"the model uses custom operators {missing}: register them with "
                             "rknn.reg_custom_op(...) before init_runtime()")
        self.plan, self.runtimes, self.ops, self._on_close = plan, list(runtimes), ops, on_close
        first = next((r for r in self.runtimes if r is not None), None)
        self.platform = plan.target_platform if first is None else first.platform
        self.is_simulator = True if first is None else first.is_simulator
        self.location = "host (custom operators only)" if first is None else first.location

    def run(self, inputs, formats, pass_through):
        given = dict(zip(self.plan.graph_inputs, zip(inputs, formats, pass_through)))
        values: Dict[str, np.ndarray] = dict(self.plan.constants)
        for step, runtime in zip(self.plan.steps, self.runtimes):
            if step.kind == "custom":
                ins = [values[n] if n in values else graph_input_as_float(given[n][0], given[n][1],
                                                                           self.plan.normalisation.get(n))
                       for n in step.inputs]
                outs = _compute(self.ops[step.node.op_type], step.node, ins)
            else:
                args = [given[n] if n in given else (np.ascontiguousarray(values[n], np.float32), "nchw", False)
                        for n in step.inputs]
                outs = runtime.run([a[0] for a in args], [a[1] for a in args], [a[2] for a in args])
            values.update(zip(step.outputs, outs))
        return [np.asarray(values[n], np.float32) for n in self.plan.graph_outputs]

    def _npu(self) -> List[ModelRuntime]:
        return [r for r in self.runtimes if r is not None]

    def perf_detail(self) -> str:
        return "".join(f"--- NPU sub-graph {i} (custom operators run on the host between sub-graphs)\n"
                       f"{r.perf_detail()}" for i, r in enumerate(self._npu()))

    def perf_run_us(self) -> int:
        return sum(r.perf_run_us() for r in self._npu())

    def memory(self) -> Dict[str, int]:
        parts = [r.memory() for r in self._npu()]
        return memory_report(sum(p["weight_memory"] for p in parts), sum(p["internal_memory"] for p in parts),
                             sum(p["total_memory"] for p in parts))

    def runtime_version(self) -> str:
        return self._npu()[0].runtime_version() if self._npu() else "none (custom operators only)"

    def server_version(self) -> Optional[str]:
        return self._npu()[0].server_version() if self._npu() else None

    def dumps(self) -> Dict[str, np.ndarray]:
        out: Dict[str, np.ndarray] = {}
        for r in self._npu():
            out.update(r.dumps())
        return out

    def close(self) -> None:
        try:
            for r in self._npu():
                r.close()
        finally:
            if self._on_close is not None:
                self._on_close()
