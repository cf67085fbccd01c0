"""`hybrid_quantization_step1(custom_hybrid=[[start, end], ...])`: the sub-graphs kept out of int8.

The toolkit's custom_hybrid names sub-graphs by a start and an end tensor (the model zoo's yolov8_pose
keeps its keypoint head this way) and runs them at higher precision. rknnlink's simulated NPU has int8
and float16, so every operator on a path from `start` to `end` is written into step1's
`.quantization.cfg` as `layer: float16`, where step2 (and the user, editing the file) finds it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable, List, Sequence, Set

log = logging.getLogger("rknnlink.api")


def _pairs(custom_hybrid: Any) -> List[tuple]:
    pairs = list(custom_hybrid or [])
    if not all(isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(t, str) for t in p) for p in pairs):
        raise ValueError("custom_hybrid must be a list of [start_tensor, end_tensor] pairs of tensor names, e.g. "
                         "[['/model.22/cv4.0/cv4.0.0/act/Mul_output_0', '/model.22/Concat_6_output_0']]")
    return [tuple(p) for p in pairs]


def nodes_between(model: Any, custom_hybrid: Sequence) -> List[str]:
    """ONNX node names on the paths from each pair's start tensor to its end tensor (the node producing
    `end` included, the node producing `start` not), in graph order."""
    nodes = list(model.graph.node)
    tensors = {t for n in nodes for t in (*n.input, *n.output)} | {i.name for i in model.graph.input}
    chosen: Set[int] = set()
    for start, end in _pairs(custom_hybrid):
        for tensor in (start, end):
            if tensor not in tensors:
                raise ValueError(f"custom_hybrid: tensor {tensor!r} is not in the model; use tensor names as "
                                 "Netron shows them (a node's output, e.g. '/model.22/Concat_6_output_0')")
        after: Set[int] = set()  # nodes fed, directly or not, by `start`
        reached = {start}
        for k, node in enumerate(nodes):
            if any(t in reached for t in node.input):
                after.add(k)
                reached.update(node.output)
        before: Set[int] = set()  # nodes `end` depends on
        needed = {end}
        for k in range(len(nodes) - 1, -1, -1):
            if any(t in needed for t in nodes[k].output):
                before.add(k)
                needed.update(nodes[k].input)
        between = after & before
        if not between:
            raise ValueError(f"custom_hybrid: no path from {start!r} to {end!r}; the start tensor must come "
                             "before the end tensor in the graph")
        chosen |= between
    return [nodes[k].name or nodes[k].output[0] for k in sorted(chosen)]


def write_float_layers(cfg_path: Path, layers: Iterable[str], known: Iterable[str]) -> List[str]:
    """Add `layer: float16` to the cfg's custom_quantize_layers for each of `layers` the built model has
    (`known`: step1's layer names; operators folded into others have no entry of their own)."""
    import yaml

    known = set(known)
    keep = [name for name in layers if name in known]
    if not keep:
        raise ValueError(f"custom_hybrid: none of the operators {sorted(layers)[:5]} is a layer of the built model "
                         f"(layers are named like {sorted(known)[:3]})")
    text = cfg_path.read_text()
    header = "".join(line for line in text.splitlines(keepends=True) if line.startswith("#"))
    cfg = yaml.safe_load(text) or {}
    custom = dict(cfg.get("custom_quantize_layers") or {})
    custom.update({name: "float16" for name in keep})
    cfg["custom_quantize_layers"] = custom
    cfg_path.write_text(header + yaml.safe_dump(cfg, sort_keys=False, default_flow_style=None, width=200))
    log.info("custom_hybrid: %d layers kept in float16 (%s)", len(keep), ", ".join(keep[:5]) +
             (" ..." if len(keep) > 5 else ""))
    return keep
