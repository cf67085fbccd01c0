"""onnx_edit: give ONNX inputs and outputs another layout, e.g. fold a KV cache into 4 dimensions.

A transform is an index expression over the tensor's dimensions: 'a,b,c,d->1,ad,b,c' makes the input
'k_cache.1' of shape (a, b, c, d) an input of shape (1, a*d, b, c); inside the graph a Reshape + Transpose
turns the new input back into the original tensor, so the model computes the same thing. For outputs the
direction is reversed ('a,b,c,d->1,ab,c,d': the output becomes (1, a*b, c, d)). Letters name dimensions (one
letter each); a group of letters is their product in that order; a number is a new dimension of that size
(only 1 makes sense: it cannot change the element count).

With `dataset`, the calibration files of transformed inputs are rewritten for the edited model into
`dataset_for_<export name>.txt` next to the dataset (the toolkit's example then builds with that file).
"""

from __future__ import annotations

import logging
import shlex
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

log = logging.getLogger("rknnlink.utils")


def _parse(expr: str, rank: int, what: str) -> Tuple[List[str], List[str]]:
    try:
        left, right = (side.strip() for side in expr.split("->"))
    except ValueError as exc:
        raise ValueError(f"onnx_edit: {what}: {expr!r} is not 'a,b,c->...' (an arrow separates the sides)") from exc
    src = [t.strip() for t in left.split(",")]
    dst = [t.strip() for t in right.split(",")]
    if len(src) != rank or any(len(t) != 1 or not t.isalpha() for t in src) or len(set(src)) != len(src):
        raise ValueError(f"onnx_edit: {what}: the left side of {expr!r} must name each of the tensor's {rank} "
                         "dimensions with a distinct letter")
    letters = [c for t in dst if not t.isdigit() for c in t]
    if sorted(letters) != sorted(src) or any(t.isdigit() and t != "1" for t in dst):
        raise ValueError(f"onnx_edit: {what}: the right side of {expr!r} must use every letter of the left side "
                         "exactly once (numbers: only 1)")
    return src, dst


def _plan(expr: str, shape: Sequence[int], what: str) -> Tuple[List[int], List[int], List[int]]:
    """(new shape, letter order of the right side as indices into the left, per-letter sizes in that order)."""
    src, dst = _parse(expr, len(shape), what)
    size = dict(zip(src, shape))
    new_shape = [1 if t.isdigit() else int(np.prod([size[c] for c in t])) for t in dst]
    order = [src.index(c) for t in dst if not t.isdigit() for c in t]
    return new_shape, order, [int(shape[i]) for i in order]


def transform_array(expr: str, array: np.ndarray) -> np.ndarray:
    """What the edited model's input expects for an original input `array` (left side -> right side)."""
    new_shape, order, _ = _plan(expr, array.shape, "inputs_transform")
    return np.ascontiguousarray(np.transpose(array, order).reshape(new_shape))


def _shape_of(value_info) -> List[int]:
    dims = [d.dim_value for d in value_info.type.tensor_type.shape.dim]
    if any(d <= 0 for d in dims):
        raise ValueError(f"onnx_edit: {value_info.name} has a dynamic shape {dims}; fix it first "
                         "(e.g. load_onnx(input_size_list=...) and save, or onnx.tools.update_model_dims)")
    return dims


def _const(name: str, values: Sequence[int]):
    from onnx import numpy_helper

    return numpy_helper.from_array(np.asarray(values, np.int64), name)


def onnx_edit(model, export_path, inputs_transform: Optional[Dict[str, str]] = None,
              outputs_transform: Optional[Dict[str, str]] = None, dataset: Optional[str] = None) -> int:
    """Edit input/output layouts of an ONNX file and save it to export_path; returns 0 (the toolkit's API)."""
    import onnx
    from onnx import helper

    proto = onnx.load(str(model)) if isinstance(model, (str, Path)) else model
    graph = proto.graph
    inputs_transform, outputs_transform = dict(inputs_transform or {}), dict(outputs_transform or {})
    by_input = {i.name: i for i in graph.input}
    by_output = {o.name: o for o in graph.output}
    for name in inputs_transform:
        if name not in by_input:
            raise ValueError(f"onnx_edit: no graph input named {name!r}; inputs: {list(by_input)}")
    for name in outputs_transform:
        if name not in by_output:
            raise ValueError(f"onnx_edit: no graph output named {name!r}; outputs: {list(by_output)}")
    new_nodes = []
    for name, expr in inputs_transform.items():
        shape = _shape_of(by_input[name])
        new_shape, order, split_sizes = _plan(expr, shape, f"inputs_transform[{name!r}]")
        inner = f"{name}__orig"  # the original tensor, now computed from the edited input of the same name
        for node in graph.node:
            node.input[:] = [inner if i == name else i for i in node.input]
        # new input (right side) -> its letters split out -> transposed back to the left side's order
        inverse = [order.index(i) for i in range(len(shape))]
        graph.initializer.extend([_const(f"{name}__split", split_sizes)])
        new_nodes += [helper.make_node("Reshape", [name, f"{name}__split"], [f"{name}__letters"],
                                       name=f"{name}__reshape"),
                      helper.make_node("Transpose", [f"{name}__letters"], [inner], perm=inverse,
                                       name=f"{name}__transpose")]
        elem = by_input[name].type.tensor_type.elem_type
        by_input[name].CopyFrom(helper.make_tensor_value_info(name, elem, new_shape))
    for name, expr in outputs_transform.items():
        shape = _shape_of(by_output[name])
        new_shape, order, _ = _plan(expr, shape, f"outputs_transform[{name!r}]")
        inner = f"{name}__orig"
        for node in graph.node:
            node.output[:] = [inner if o == name else o for o in node.output]
            node.input[:] = [inner if i == name else i for i in node.input]
        graph.initializer.extend([_const(f"{name}__shape", new_shape)])
        graph.node.extend([helper.make_node("Transpose", [inner], [f"{name}__t"], perm=order,
                                            name=f"{name}__transpose"),
                           helper.make_node("Reshape", [f"{name}__t", f"{name}__shape"], [name],
                                            name=f"{name}__reshape")])
        elem = by_output[name].type.tensor_type.elem_type
        by_output[name].CopyFrom(helper.make_tensor_value_info(name, elem, new_shape))
    if new_nodes:
        rest = list(graph.node)
        del graph.node[:]
        graph.node.extend(new_nodes + rest)
    onnx.checker.check_model(proto)
    export_path = Path(export_path)
    onnx.save(proto, str(export_path))
    log.info("onnx_edit: saved %s", export_path)
    if dataset is not None and inputs_transform:
        constants = {t.name for t in graph.initializer}
        _rewrite_dataset(Path(dataset), export_path, [i.name for i in graph.input if i.name not in constants],
                         inputs_transform)
    return 0


def _rewrite_dataset(dataset: Path, export_path: Path, originals: List[str], transforms: Dict[str, str]) -> Path:
    """dataset_for_<export stem>.txt beside the dataset: transformed .npy files for the edited inputs."""
    from rknnlink.model.dataset import parse_dataset_file

    folder = dataset.parent / f"dataset_for_{export_path.stem}"
    folder.mkdir(exist_ok=True)
    lines = []
    for lineno, paths in parse_dataset_file(dataset):
        if len(paths) != len(originals):
            raise ValueError(f"onnx_edit: {dataset.name} line {lineno} has {len(paths)} files for "
                             f"{len(originals)} inputs")
        entry = []
        for name, path in zip(originals, paths):
            if name in transforms:
                if path.suffix.lower() != ".npy":
                    raise ValueError(f"onnx_edit: {path} feeds the transformed input {name}: use a .npy file")
                out = folder / f"{lineno}_{path.stem}.npy"
                np.save(out, transform_array(transforms[name], np.load(path)))
                path = out
            entry.append(shlex.quote(str(path.resolve())))
        lines.append(" ".join(entry))
    target = dataset.parent / f"dataset_for_{export_path.stem}.txt"
    target.write_text("\n".join(lines) + "\n")
    log.info("onnx_edit: calibration list for the edited model: %s", target)
    return target
