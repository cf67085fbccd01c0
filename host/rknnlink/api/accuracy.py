"""accuracy_analysis: where along the network does the NPU's result drift from the float model?

Golden values come from onnxruntime on the builder's prepared float graph; the NPU side is the simulated
NPU in this process and, with a target, a board's session too, each with every layer output dumped.

The folder has the toolkit's layout (what its own examples read back):

    <output_dir>/error_analysis.txt      per-layer cosine and euclidean errors, the toolkit's columns
    <output_dir>/map_name_to_file.txt    tensor name -> file name
    <output_dir>/golden/<file>.txt       fp32 reference, one `%.6f` float per line; npy/<file>.npy beside
    <output_dir>/simulator/<file>.txt    the simulated NPU (and npy/)
    <output_dir>/runtime/<file>.txt      the board, when a target is given (and npy/)

File names are tensor names with every character outside [A-Za-z0-9_] replaced by '_', as the toolkit does.
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
    """The toolkit's dump file name for a tensor: '/features/features.0/Conv_output_0' ->
    '_features_features_0_Conv_output_0'."""
    return re.sub(r"[^A-Za-z0-9_]", "_", tensor_name) or "tensor"


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


def with_rescaled(build, golden: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """``golden`` plus the tensors cross-layer equalisation renamed ``name::cle``: the ONNX tensor's value
    divided by the build's factor per channel (axis 1), in the simulator tensor's shape."""
    shapes = {t.name: t.shape for t in build.sim_model.tensors}
    for name, (source, divisor) in getattr(build, "rescaled", {}).items():
        if source in golden and name in shapes:
            value = np.asarray(golden[source], np.float32).reshape(shapes[name])
            golden[name] = value / divisor.reshape((1, -1) + (1,) * (value.ndim - 2)).astype(np.float32)
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


# ------------------------------------------------------------------------------------------------ the report

Pair = Optional[Tuple[float, float]]
_LABEL_PAD = 5  # the toolkit's first column is the longest `[OpType] name` plus 5 (68 for MobileNetV2)
_CELL_WIDTH = 20

_SIDE_NOTES = {
    "simulator": ("the output error of each layer of the simulator (compared to the 'golden' value).",
                  ("entire", "output error of each layer between 'golden' and 'simulator', these errors will "
                             "accumulate layer by layer."),
                  ("single", "single-layer output error between 'golden' and 'simulator', can better reflect "
                             "the single-layer accuracy of the simulator.")),
    "runtime": ("the output error of each layer of the runtime (compared to the 'golden' value).",
                ("entire", "output error of each layer between 'golden' and 'runtime', these errors will "
                           "accumulate layer by layer."),
                ("single_sim", "single-layer output error between 'simulator' and 'runtime', can better "
                               "reflect the single-layer accuracy of the runtime.")),
}


class Row:
    """One line of error_analysis.txt: `[OpType] tensor` and (entire, single) per side, or empty cells."""

    def __init__(self, op_type: str, name: str, file_name: Optional[str], cells: Sequence[Pair] = ()) -> None:
        self.op_type, self.name, self.file_name, self.cells = op_type, name, file_name, list(cells)

    @property
    def label(self) -> str:
        return f"[{self.op_type}] {self.name}"


def _cell(pair: Pair) -> str:
    return "" if pair is None else f"{pair[0]:.5f} | {pair[1]:<10.5f}"


def _place(width: int, items: Sequence[Tuple[int, str]]) -> str:
    """A line of `width` characters with each text starting at its column."""
    line = [" "] * width
    for column, text in items:
        line[column:column + len(text)] = text
    return "".join(line)


def format_report(rows: Sequence[Row], sides: Sequence[str]) -> str:
    """error_analysis.txt in the toolkit's layout, one (entire, single) column group of 40 characters per side.

    Positions as measured on RKNN-Toolkit2 2.5.0: the first column is as wide as the longest label plus 5, so
    no name runs into the numbers; the numbers and headers sit at fixed offsets from it."""
    width = max(len(r.label) for r in rows) + _LABEL_PAD if rows else 10 + _LABEL_PAD
    total = width + 40 * len(sides) + 4
    lines = []
    for side in sides:
        summary, *columns = _SIDE_NOTES[side]
        lines.append(f"# {side}_error: calculate {summary}")
        lines.extend(f"#{'':14}{name}: {text}" for name, text in columns)
    lines.append("")
    title, names, units = [(0, "layer_name")], [], []
    for g, side in enumerate(sides):
        base = width + 40 * g
        title.append((base + 9, f"{side}_error"))
        names += [(base + 5, _SIDE_NOTES[side][1][0]), (base + 25, _SIDE_NOTES[side][2][0])]
        units += [(base + 2, "cos"), (base + 11, "euc"), (base + 22, "cos"), (base + 31, "euc")]
    lines += [_place(total, title), _place(total, names), _place(total, units), "-" * (width + 40 * len(sides))]
    for row in rows:
        if not any(c is not None for c in row.cells):
            lines.append(f"{row.label:<{width}}")
        else:
            cells = "".join(f"{_cell(c):<{_CELL_WIDTH}}" for c in row.cells)
            lines.append(f"{row.label:<{width}}{cells:<{total - width}}")
    return "\n".join(lines) + "\n"


def format_name_map(rows: Sequence[Row]) -> str:
    """map_name_to_file.txt: which dump file holds which tensor (names are not file-system safe)."""
    named = [r for r in rows if r.file_name]
    width = max([len(r.label) for r in rows] or [10]) + _LABEL_PAD
    lines = [f"{'layer_name':<{width}}{'file_name':<{width}}", "-" * (2 * width)]
    lines += [f"{r.name:<{width}}{r.file_name + '.txt':<{width}}" for r in named]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ the analysis

def _by_model_names(dumps: Dict[str, np.ndarray], model) -> Dict[str, np.ndarray]:
    """A board's dumps under the simulator model's tensor names (the vendor runtime names dump files with
    file-safe forms of the ONNX names)."""
    safe = {re.sub(r"[^A-Za-z0-9.-]", "_", t.name): t.name for t in model.tensors}
    return {safe.get(re.sub(r"[^A-Za-z0-9.-]", "_", name), name): value for name, value in dumps.items()}


def _pair(reference: np.ndarray, value: Optional[np.ndarray]) -> Pair:
    if value is None or np.asarray(value).size != reference.size:
        return None
    value = np.asarray(value, np.float32).reshape(reference.shape)
    return cosine(reference, value), euclidean(reference, value)


def _onnx_rows(build) -> Tuple[Dict[str, str], Dict[str, Tuple[str, str]]]:
    """From the prepared ONNX graph: tensor -> producing op type, and for an activation the
    (op type, tensor) of what feeds it (the row a fused Conv+activation shows before its activation)."""
    op_of, fed_by = {}, {}
    for node in build.prepared_onnx.graph.node:
        for name in node.output:
            op_of[name] = node.op_type
    for node in build.prepared_onnx.graph.node:
        if node.input and node.input[0] in op_of:
            fed_by[node.output[0]] = (op_of[node.input[0]], node.input[0])
    return op_of, fed_by


def _analysis_rows(build, sim_dumps, golden, singles, board_dumps) -> Tuple[List[Row], Dict[str, tuple]]:
    """Rows in execution order and, per dumped tensor, (golden, simulator, runtime) arrays to write."""
    model = build.sim_model
    op_of, fed_by = _onnx_rows(build)
    order = [model.tensors[s.tensor] for s in model.inputs]
    fused = {}
    for op in model.ops:
        for index in op.outputs:
            order.append(model.tensors[index])
            if op.act:
                fused[model.tensors[index].name] = op.op_type
    rows, files, seen = [], {}, set()
    for tensor in order:
        if tensor.name in seen or tensor.name not in sim_dumps:
            continue
        seen.add(tensor.name)
        onnx_name = build.tensor_map.get(tensor.name, tensor.name)
        op_type = op_of.get(getattr(build, "rescaled", {}).get(onnx_name, (onnx_name,))[0], "Input")
        if tensor.name in fused and onnx_name in fed_by:
            # The NPU computes Conv and its activation as one layer: the Conv output has no value of its own.
            pre_type, pre_name = fed_by[onnx_name]
            rows.append(Row(pre_type, pre_name, file_name_for(pre_name)))
            if pre_name in golden:
                files[file_name_for(pre_name)] = (np.asarray(golden[pre_name], np.float32), None, None)
        value = sim_dumps[tensor.name]
        file_name = file_name_for(onnx_name)
        reference = golden.get(onnx_name)
        runtime = None if board_dumps is None else board_dumps.get(tensor.name)
        if reference is None:
            rows.append(Row(op_type, onnx_name, file_name))
            files[file_name] = (None, value, runtime)
            continue
        reference = np.asarray(reference, np.float32).reshape(value.shape)
        alone = singles.get(tensor.name, value if op_type == "Input" else None)
        cells = [_pair(reference, value), _pair(reference, alone)]
        if board_dumps is not None:
            cells += [_pair(reference, runtime), _pair(value, runtime)]
        rows.append(Row(op_type, onnx_name, file_name, cells))
        files[file_name] = (reference, value, runtime)
    return rows, files


def _write_dumps(output_dir: Path, files: Dict[str, tuple], sides: Sequence[str]) -> None:
    """golden/, simulator/ (and runtime/) text dumps with npy/ beside, as the toolkit lays them out."""
    from rknnlink import progress
    from rknnlink.api.textdump import write_floats

    folders = ["golden", *sides]
    for folder in folders:
        (output_dir / folder / "npy").mkdir(parents=True, exist_ok=True)
    with progress.bar(len(files), "accuracy_analysis: writing dumps", "tensor") as advance:
        for file_name, arrays in files.items():
            for folder, array in zip(folders, arrays):
                if array is None:
                    continue
                array = np.asarray(array, np.float32)
                write_floats(output_dir / folder / f"{file_name}.txt", array)
                np.save(output_dir / folder / "npy" / f"{file_name}.npy", array)
            advance(1)


def run_accuracy_analysis(rknn, inputs: Sequence, output_dir: Optional[Path], target=None,
                          device_id=None) -> int:
    """Implementation of RKNN.accuracy_analysis (see its docstring); output_dir=None writes only the two
    reports, into ./snapshot, as the toolkit does."""
    from rknnlink.api.runtimes import LocalRuntime

    build = rknn._build
    model = build.sim_model
    if isinstance(inputs, (str, Path, np.ndarray)):
        inputs = [inputs]
    if len(inputs) != len(model.inputs):
        raise ValueError(f"accuracy_analysis got {len(inputs)} inputs but the model has {len(model.inputs)}: "
                         "give one file (image or .npy) or array per model input.")
    raw, formats, feeds = [], [], {}
    for item, spec in zip(inputs, model.inputs):
        tensor = model.tensors[spec.tensor]
        channels = tensor.shape[1] if len(tensor.shape) == 4 else -1
        array, fmt = _load_input(item, channels)
        raw.append(np.ascontiguousarray(array))
        formats.append(fmt)
        feeds[build.tensor_map.get(tensor.name, tensor.name)] = _normalise(array, fmt, spec)
    golden = with_rescaled(build, golden_outputs(build.prepared_onnx, feeds))

    simulator = LocalRuntime(build.data, model.target_platform, perf_debug=False, async_mode=False,
                             core_mask=0, dump_layers=True)
    try:
        simulator.run(raw, formats, [False] * len(raw))
        sim_dumps = simulator.dumps()
    finally:
        simulator.close()
    board_dumps = None
    if target is not None:
        board = rknn._open_board_runtime(target, device_id, dump_layers=True)
        try:
            board.run(raw, formats, [False] * len(raw))
            board_dumps = _by_model_names(board.dumps(), model)
        finally:
            board.close()
    singles = single_layer_outputs(model, golden, build.tensor_map)
    rows, files = _analysis_rows(build, sim_dumps, golden, singles, board_dumps)
    sides = ["simulator"] if board_dumps is None else ["simulator", "runtime"]
    report = format_report(rows, sides)
    dumps = output_dir is not None
    if output_dir is None:  # the toolkit then writes the two reports to ./snapshot, without tensor dumps
        output_dir = Path("snapshot")
    output_dir.mkdir(parents=True, exist_ok=True)
    if dumps:
        _write_dumps(output_dir, files, sides)
    (output_dir / "error_analysis.txt").write_text(report)
    (output_dir / "map_name_to_file.txt").write_text(format_name_map(rows))
    log.info("The error analysis results save to: %s", output_dir / "error_analysis.txt")
    return 0
