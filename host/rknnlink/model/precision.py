"""Layers an int8 build keeps in float16 on its own, and why.

One int8 tensor has one scale. A graph output that concatenates values of very different ranges, the
classic case being a detector head that joins pixel boxes (0..640) with class scores (0..1), quantises
the small-range part to a handful of levels: every score becomes 0 or one step, and detection dies in
int8 (in RKNN-Toolkit2 as well). Such a Concat (and the data-movement layers between it and the graph
output) runs in float16 here, which costs one layer's precision and nothing else: its inputs stay int8
with their own scales and are converted at the layer's input. A warning names the tensor and the fix
(cut the graph before the Concat with ``load_onnx(outputs=...)`` and join on the CPU, or keep it as is).

Normalisation is the other case: the NPU computes LayerNorm in higher precision, so a LayerNorm exported
in pieces (ReduceMean/Sub/Pow/Sqrt/Div) that could not be fused into one layer keeps its pieces in
float16 rather than rounding x - mean and its quotient to int8.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

from .calibration import choose_range

LOG = logging.getLogger(__name__)

# The smaller input keeps fewer than 256 / MIXED_SCALE_RATIO int8 levels above this ratio of spans.
MIXED_SCALE_RATIO = 16.0
# Layers between the Concat and the graph output that keep the problem (another Concat joins more parts).
DATA_MOVEMENT = ("Reshape", "Transpose", "Slice", "Split", "Concat")


def _span(stats: dict, name: str, algorithm: str) -> float:
    st = stats.get(name)
    if st is None:
        return 0.0
    lo, hi = choose_range(st, algorithm)
    return float(max(hi, 0.0) - min(lo, 0.0))


def mixed_scale_outputs(nodes: Sequence, outputs: Sequence[str], stats: dict, algorithm: str) -> list:
    """[(concat node, graph output, ratio, small input, big input)] for Concats whose result reaches a graph
    output through data movement only and whose inputs' ranges differ by more than MIXED_SCALE_RATIO."""
    consumers: dict = {}
    for n in nodes:
        for i in n.inputs:
            if i:
                consumers.setdefault(i, []).append(n)
    found = []
    for n in nodes:
        if n.op_type != "Concat":
            continue
        spans = [(s, i) for i in n.inputs if i and i in stats for s in [_span(stats, i, algorithm)] if s > 0]
        if len(spans) < 2:
            continue
        (small, s_name), (big, b_name) = min(spans), max(spans)
        if big / small <= MIXED_SCALE_RATIO:
            continue
        tensor, chain = n.outputs[0], [n]
        while tensor not in outputs:
            users = consumers.get(tensor, [])
            if len(users) != 1 or users[0].op_type not in DATA_MOVEMENT:
                break
            chain.append(users[0])
            tensor = users[0].outputs[0]
        if tensor in outputs:
            found.append((chain, tensor, big / small, s_name, b_name))
    return found


def auto_float_layers(nodes: Sequence, outputs: Sequence[str], stats: dict, algorithm: str, pg=None) -> set:
    """Layer names to keep in float16 in an int8 build (see the module doc), each with a warning; and the
    layers of decomposed LayerNorms the simulator could not fuse into one layer (int8 Sub/Div of a
    normalisation loses several bits: PP-OCRv4's recogniser dropped from 0.99 to 0.94 on them)."""
    keep = set()
    if pg is not None:
        from .rewrite import decomposed_layernorms
        chains = decomposed_layernorms(list(nodes), pg)
        if chains:
            LOG.info("%d decomposed LayerNorms run in float16 (no fused LayerNormalization layer)", len(chains))
        for chain in chains:
            keep.update(chain)
    for chain, tensor, ratio, small, big in mixed_scale_outputs(nodes, outputs, stats, algorithm):
        levels = int(np.floor(255 / ratio))
        LOG.warning("output %r concatenates tensors whose ranges differ %.0fx (%r vs %r): one int8 scale would "
                    "leave %r about %d levels, so Concat %r runs in float16. To keep it int8 instead, cut the "
                    "graph before it (load_onnx(outputs=[%r, %r])) and concatenate on the CPU.", tensor, ratio,
                    small, big, small, levels, chain[0].name, small, big)
        keep.update(n.name for n in chain)
    return keep
