"""config(dynamic_input=[[shapes of set 1], [shapes of set 2], ...]): one model, several input shapes.

As the toolkit does, every listed shape set is compiled (here: built) separately and the results go into one
file; the runtime starts on the first set and `rknn_set_input_shapes` switches (runtime_c/src/shapes.c).
`inference()` switches by itself when given inputs of another built set, as the toolkit's simulator does.

int8: the activation ranges come from calibrating the first set the dataset fits, and are shared by all sets
(the tensors are the same; only their sizes differ), so every set quantises identically.

File: b"RKNLDYN1", u32 count, u32 0, u64 size per set, then each set's simulator model.
"""

from __future__ import annotations

import logging
import struct
from typing import Any, List, Optional, Sequence

log = logging.getLogger("rknnlink.api")

MAGIC = b"RKNLDYN1"


def is_bundle(data: Optional[bytes]) -> bool:
    return data is not None and data[:len(MAGIC)] == MAGIC


def pack(models: Sequence[bytes]) -> bytes:
    header = MAGIC + struct.pack("<II", len(models), 0) + b"".join(struct.pack("<Q", len(m)) for m in models)
    return header + b"".join(models)


def first_model(data: bytes) -> bytes:
    """The first shape set's model (what init_runtime starts on)."""
    count, _ = struct.unpack_from("<II", data, len(MAGIC))
    start = len(MAGIC) + 8 + 8 * count
    (size,) = struct.unpack_from("<Q", data, len(MAGIC) + 8)
    return data[start:start + size]


def check_shape_sets(dynamic_input: Any) -> List[List[List[int]]]:
    """[[shape per input] per set], validated, with a ValueError that shows the expected form."""
    example = "dynamic_input=[[[1,3,224,224]], [[1,3,160,160]]] (a list of sets, each one shape per input)"
    try:
        sets = [[[int(d) for d in shape] for shape in shape_set] for shape_set in dynamic_input]
    except TypeError as exc:
        raise ValueError(f"config: dynamic_input must be {example}") from exc
    if not sets or any(not s for s in sets) or len({len(s) for s in sets}) != 1:
        raise ValueError(f"config: dynamic_input must be {example}; every set needs the same number of inputs")
    if any(d <= 0 for s in sets for shape in s for d in shape):
        raise ValueError("config: dynamic_input shapes must be positive")
    if len(sets) > 512:
        raise ValueError("config: dynamic_input allows at most 512 shape sets (RKNN_MAX_DYNAMIC_SHAPE_NUM)")
    return sets


def build_dynamic(source: Any, load_args: dict, config: Any, shape_sets: List[List[List[int]]],
                  do_quantization: bool, dataset: Optional[str]) -> tuple:
    """Build every shape set; returns (bundle bytes, BuildResult of the first set)."""
    from rknnlink.model import builder
    from rknnlink.model.errors import BuildError

    models = [builder.load_onnx(source, input_size_list=s, **load_args) for s in shape_sets]
    results: List[Any] = [None] * len(models)
    ranges = None
    if do_quantization:
        failures = []
        for index, model in enumerate(models):
            try:
                results[index] = builder.build(model, config, True, dataset)
            except BuildError as exc:  # the calibration files do not fit this set's shapes: try the next
                failures.append(f"set {index} {shape_sets[index]}: {exc}")
                continue
            ranges = {name: (float(qp["min"][0]), float(qp["max"][0]))
                      for name, qp in results[index].quant_params.items()
                      if isinstance(qp, dict) and qp.get("qtype") == "asym" and qp.get("min") and qp.get("max")}
            log.info("dynamic_input: calibrated on shape set %d %s; other sets share its ranges", index,
                     shape_sets[index])
            break
        if ranges is None:
            raise ValueError("dynamic_input: the dataset fits none of the shape sets: " + "; ".join(failures))
    for index, model in enumerate(models):
        if results[index] is None:
            results[index] = builder.build(model, config, do_quantization, None, ranges=ranges)
    return pack([r.data for r in results]), results[0]
