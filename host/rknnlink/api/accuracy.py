"""accuracy_analysis: where along the network does the NPU's result drift from the float model?

Golden values come from onnxruntime on the builder's prepared float graph; the NPU side is the simulated
NPU in this process or a board's session, both with every layer output dumped. Results are written as
.npy (the toolkit writes one float per text line: 270 MB for a small model).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

log = logging.getLogger("rknnlink.api")


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float64).ravel()
    b = b.astype(np.float64).ravel()
    denom = float(np.linalg.norm(a) * np.linalg.norm(b))
    if denom == 0.0:
        return 1.0 if float(np.abs(a - b).max(initial=0.0)) == 0.0 else 0.0
    return float(np.dot(a, b) / denom)


def euclidean(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a.astype(np.float64).ravel() - b.astype(np.float64).ravel()))


def file_name_for(tensor_name: str) -> str:
    """A portable file name for a tensor name (ONNX names contain '/', ':' and '.')."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", tensor_name).strip("_") or "tensor"


def _load_input(item, channels: int) -> Tuple[np.ndarray, str]:
    """Return (array, data_format) for one input given as an array, a .npy path or an image path."""
    if isinstance(item, np.ndarray):
        array = item
    else:
        path = Path(item)
        if not path.is_file():
            raise ValueError(f"accuracy_analysis input {path} not exists!")
        if path.suffix.lower() == ".npy":
            array = np.load(path)
        else:
            from PIL import Image

            with Image.open(path) as image:
                array = np.asarray(image.convert("RGB"))
    if array.ndim == 3:
        array = array[np.newaxis]
    if array.ndim == 4 and array.shape[1] != channels and array.shape[-1] == channels:
        return array, "nhwc"
    return array, "nchw"


def _normalise(array: np.ndarray, fmt: str, spec) -> np.ndarray:
    """What the model's graph input holds: optional channel reversal, (x - mean) / std, NCHW float32."""
    x = array.astype(np.float32)
    if x.ndim == 4 and fmt == "nhwc":
        x = x.transpose(0, 3, 1, 2)
    if x.ndim == 4 and spec.reverse_channels:
        x = x[:, ::-1]
    if spec.mean is not None and len(spec.mean) and x.ndim == 4:
        mean = np.asarray(spec.mean, np.float32).reshape(1, -1, 1, 1)
        std = np.asarray(spec.std, np.float32).reshape(1, -1, 1, 1)
        x = (x - mean) / std
    return np.ascontiguousarray(x)


def golden_outputs(prepared_onnx, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Every tensor of the float graph, computed by onnxruntime (fp32, the reference)."""
    import onnx
    import onnxruntime as ort

    model = onnx.ModelProto()
    model.CopyFrom(prepared_onnx)
    existing = {o.name for o in model.graph.output}
    for node in model.graph.node:
        for name in node.output:
            if name and name not in existing:
                model.graph.output.append(onnx.ValueInfoProto(name=name))
                existing.add(name)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    values = session.run(names, feeds)
    golden = dict(zip(names, values))
    golden.update(feeds)
    return golden


def _single_op_model(model, op):
    """A model holding only `op`: its activation inputs become graph inputs of the same type and scale."""
    from rknnlink.model import format as fmt

    tensors, inputs, remap = [], [], {}

    def add(index: int, kind: int) -> int:
        if index not in remap:
            source = model.tensors[index]
            copy = fmt.SimTensor(name=source.name, dtype=source.dtype, shape=source.shape,
                                 kind=fmt.KIND_CONSTANT if source.kind == fmt.KIND_CONSTANT else kind,
                                 scale=source.scale, zero_point=source.zero_point, qnt_type=source.qnt_type,
                                 quant_axis=source.quant_axis, quant_scales=source.quant_scales,
                                 quant_zero_points=source.quant_zero_points, data=source.data)
            remap[index] = len(tensors)
            tensors.append(copy)
            if copy.kind == fmt.KIND_INPUT:
                layout = fmt.LAYOUT_NHWC if len(copy.shape) == 4 else fmt.LAYOUT_NCHW
                inputs.append(fmt.IoSpec(tensor=remap[index], layout=layout))
        return remap[index]

    op_inputs = [None if i is None else add(i, fmt.KIND_INPUT) for i in op.inputs]
    op_outputs = [add(i, fmt.KIND_OUTPUT) for i in op.outputs]
    outputs = [fmt.IoSpec(tensor=i) for i in op_outputs]
    single = fmt.SimOp(op_type=op.op_type, name=op.name, inputs=op_inputs, outputs=op_outputs, attrs=op.attrs,
                       act=op.act, act_params=op.act_params)
    return fmt.SimModel(target_platform=model.target_platform, name=f"single:{op.name}",
                        build_mode=model.build_mode, tensors=tensors, ops=[single], inputs=inputs,
                        outputs=outputs)


def single_layer_outputs(model, golden: Dict[str, np.ndarray], tensor_map: Dict[str, str]) -> Dict[str, np.ndarray]:
    """Each layer run alone on the simulated NPU with golden inputs: its own error, not the accumulated one."""
    from rknnlink.model.format import write_model
    from rknnlink.runtime import RuntimeLibrary

    lib = RuntimeLibrary.load(backend="sim")
    results: Dict[str, np.ndarray] = {}
    for op in model.ops:
        single = _single_op_model(model, op)
        feeds = []
        for spec in single.inputs:
            name = single.tensors[spec.tensor].name
            value = golden.get(tensor_map.get(name, name))
            if value is None:
                break
            feeds.append(np.ascontiguousarray(np.asarray(value, np.float32).reshape(single.tensors[spec.tensor].shape)))
        else:
            try:
                with lib.init(write_model(single)) as ctx:
                    outs = ctx.infer(feeds, formats=["nchw"] * len(feeds), pass_through=[False] * len(feeds))
            except Exception as exc:  # a layer that cannot stand alone keeps only its accumulated error
                log.debug("single-layer run of %s skipped: %s", op.name, exc)
                continue
            for spec, value in zip(single.outputs, outs):
                results[single.tensors[spec.tensor].name] = value
    return results


Pair = Optional[Tuple[float, float]]
Row = Tuple[str, str, List[Pair]]   # op type, tensor name, (cos, euc) per column: entire, single per side
# Per side: the second column's name and what it compares (the toolkit's wording for the header).
_SECOND_COLUMN = {
    "simulator": ("single", "single-layer output error between 'golden' and 'simulator', can better reflect the "
                            "single-layer accuracy of the simulator."),
    "runtime": ("single_sim", "single-layer output error between 'simulator' and 'runtime', can better reflect "
                              "the single-layer accuracy of the runtime."),
}


def _cell(pair: Pair) -> str:
    return "" if pair is None else f"{pair[0]:.5f} | {pair[1]:<10.5f}"


def _write_report(path: Path, rows: List[Row], sides: Sequence[str]) -> None:
    """error_analysis.txt in the toolkit's layout: `[OpType] name`, then entire and single `cos | euc` per side
    (with a board: runtime_error with entire and single_sim, beside simulator_error)."""
    lines = []
    for side in reversed(sides):
        second, meaning = _SECOND_COLUMN[side]
        lines += [f"# {side}_error: calculate the output error of each layer of the {side} (compared to the "
                  "'golden' value).",
                  f"#              entire: output error of each layer between 'golden' and '{side}', these errors "
                  "will accumulate layer by layer.",
                  f"#              {second}: {meaning}"]
    lines += ["", f"{'layer_name':<73}" + "".join(f"{side + '_error':<39}" for side in sides).rstrip(),
              f"{'':<73}" + "".join(f"{'entire':<20}{_SECOND_COLUMN[side][0]:<19}" for side in sides).rstrip(),
              f"{'':<70}" + f"{'cos':>6}{'euc':>9}{'cos':>11}{'euc':>9}" + f"{'cos':>11}{'euc':>9}{'cos':>11}{'euc':>9}"
              * (len(sides) - 1), "-" * (70 + 39 * len(sides) - 1)]
    for op_type, name, pairs in rows:
        label = f"[{op_type}] {name}"
        if all(p is None for p in pairs):
            lines.append(label)
        else:
            lines.append((f"{label:<68}" + "".join(f"{_cell(p):<20}" for p in pairs)).rstrip())
    path.write_text("\n".join(lines) + "\n")


def _layer_dumps(runtime, raw: Sequence[np.ndarray], formats: Sequence[str]) -> Dict[str, np.ndarray]:
    """Run once with every layer dumped; the runtime is closed afterwards."""
    try:
        runtime.run([np.ascontiguousarray(a) for a in raw], formats, [False] * len(raw))
        return runtime.dumps()
    finally:
        runtime.close()


def _by_model_names(dumps: Dict[str, np.ndarray], model) -> Dict[str, np.ndarray]:
    """A board's dumps under the simulator model's tensor names (the vendor runtime names dump files with
    file-safe forms of the ONNX names)."""
    safe = {re.sub(r"[^A-Za-z0-9.-]", "_", t.name): t.name for t in model.tensors}
    return {safe.get(re.sub(r"[^A-Za-z0-9.-]", "_", name), name): value for name, value in dumps.items()}


def _pair(reference: np.ndarray, value: Optional[np.ndarray]) -> Pair:
    if value is None or value.size != reference.size:
        return None
    value = value.reshape(reference.shape)
    return cosine(reference, value), euclidean(reference, value)


def run_accuracy_analysis(rknn, inputs: Sequence, output_dir: Path, target=None, device_id=None,
                          save_txt: bool = False) -> int:
    """Implementation of RKNN.accuracy_analysis (see its docstring)."""
    from rknnlink.api.runtimes import BoardRuntime, LocalRuntime

    build = rknn._build
    model = build.sim_model
    if isinstance(inputs, (str, np.ndarray)):
        inputs = [inputs]
    if len(inputs) != len(model.inputs):
        raise ValueError(f"accuracy_analysis got {len(inputs)} inputs but the model has {len(model.inputs)}.")
    raw, formats, feeds = [], [], {}
    for item, spec in zip(inputs, model.inputs):
        tensor = model.tensors[spec.tensor]
        channels = tensor.shape[1] if len(tensor.shape) == 4 else -1
        array, fmt = _load_input(item, channels)
        raw.append(array)
        formats.append(fmt)
        feeds[build.tensor_map.get(tensor.name, tensor.name)] = _normalise(array, fmt, spec)
    golden = golden_outputs(build.prepared_onnx, feeds)

    sides = {"simulator": _layer_dumps(LocalRuntime(build.data, model.target_platform, perf_debug=False,
                                                    async_mode=False, core_mask=0, dump_layers=True), raw, formats)}
    if target is not None:
        saved = rknn._runtime
        rknn._runtime = None
        try:
            rknn.init_runtime(target=target, device_id=device_id)
            runtime = rknn._runtime
        finally:
            rknn._runtime = saved
        if not isinstance(runtime, BoardRuntime):
            raise ValueError("accuracy_analysis(target=...) could not connect to the board")
        sides["runtime"] = _by_model_names(_layer_dumps(runtime, raw, formats), model)
    singles = single_layer_outputs(model, golden, build.tensor_map)
    golden_dir = output_dir / "golden" / "npy"
    golden_dir.mkdir(parents=True, exist_ok=True)
    for side in sides:
        (output_dir / side / "npy").mkdir(parents=True, exist_ok=True)
    op_of = {}
    for op in model.ops:
        for index in op.outputs:
            op_of[model.tensors[index].name] = op.op_type
    rows, mapping = [], []
    simulated = sides["simulator"]
    for tensor in model.tensors:
        if tensor.name not in simulated:
            continue
        golden_name = build.tensor_map.get(tensor.name, tensor.name)
        file_name = file_name_for(tensor.name)
        mapping.append((tensor.name, file_name))
        op_type = op_of.get(tensor.name, "Input")
        for side, dumps in sides.items():
            if tensor.name in dumps:
                np.save(output_dir / side / "npy" / f"{file_name}.npy", dumps[tensor.name])
                if save_txt:
                    np.savetxt(output_dir / side / f"{file_name}.txt", dumps[tensor.name].ravel(), fmt="%.6f")
        if golden_name not in golden:
            rows.append((op_type, tensor.name, [None] * (2 * len(sides))))
            continue
        value = simulated[tensor.name]
        reference = np.asarray(golden[golden_name], np.float32).reshape(value.shape)
        np.save(golden_dir / f"{file_name}.npy", reference)
        if save_txt:
            np.savetxt(output_dir / "golden" / f"{file_name}.txt", reference.ravel(), fmt="%.6f")
        alone = singles.get(tensor.name, value if op_type == "Input" else None)
        pairs = [_pair(reference, value), _pair(reference, alone)]
        if "runtime" in sides:
            board = sides["runtime"].get(tensor.name)
            pairs += [_pair(reference, board), _pair(value, board)]
        rows.append((op_type, tensor.name, pairs))
    _write_report(output_dir / "error_analysis.txt", rows, list(sides))
    (output_dir / "map_name_to_file.txt").write_text(
        "\n".join(f"{name} {file}" for name, file in mapping) + "\n")
    log.info("The error analysis results save to: %s", output_dir / "error_analysis.txt")
    return 0
