"""Layers an int8 build keeps in float16 on its own, and why.

One int8 tensor has one scale. A graph output that concatenates values of very different ranges, the
classic case being a detector head that joins pixel boxes (0..640) with class scores (0..1), quantises
the small-range part to a handful of levels: every score becomes 0 or one step, and detection dies in
int8 (in RKNN-Toolkit2 as well). Such a Concat (and the data-movement layers between it and the graph
output) runs in float16 here, which costs one layer's precision and nothing else: its inputs stay int8
with their own scales and are converted at the layer's input. A warning names the tensor and the fix
(cut the graph before the Concat with ``load_onnx(outputs=...)`` and join on the CPU, or keep it as is).

A constant joined to computed values is the same problem inside the graph: ViT's class token (values of
about 0.02) concatenated to the patch embeddings (+-4) gets 0-2 int8 levels, and the classifier reads only
that row, through LayerNorms that scale it back up. Such a Concat, and the constant Adds after it (the
position embedding), run in float16 (:func:`small_constant_concats`).

Normalisation is another case: the NPU computes LayerNorm in higher precision, so a LayerNorm exported
in pieces (ReduceMean/Sub/Pow/Sqrt/Div) that could not be fused into one layer keeps its pieces in
float16 rather than rounding x - mean and its quotient to int8.

Tensors, not layers, stay float16 where an int8 layer's int32 accumulator is better written without the
int8 rounding: the fused links (Conv/Gemm into a residual Add, GELU or LayerNorm, :func:`fused_links`) and
the graph outputs a Conv/Gemm writes (:func:`accumulator_outputs`: not clipped to the calibrated range).
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
# Layers that compute in float from their int8 input: when one makes the small part of such a Concat (a
# detector's Sigmoid scores), it writes float16 too instead of rounding to its own int8 grid first.
FLOAT_UNITS = ("Sigmoid", "Softmax", "HardSigmoid", "Tanh")
FLOAT_UNITS_SET = frozenset(FLOAT_UNITS)  # a layer qualifies by its type or its fused activation


def _span(stats: dict, name: str, algorithm: str) -> float:
    st = stats.get(name)
    if st is None:
        return 0.0
    lo, hi = choose_range(st, algorithm)
    return float(max(hi, 0.0) - min(lo, 0.0))


def mixed_scale_outputs(nodes: Sequence, outputs: Sequence[str], stats: dict, algorithm: str) -> list:
    """[(concat node, graph output, ratio, small input, big input)] for Concats whose result reaches a graph
    output through data movement only and whose inputs' ranges differ by more than MIXED_SCALE_RATIO."""
    consumers = _readers(nodes)
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
    if pg is not None:
        for chain, const, ratio in small_constant_concats(nodes, stats, algorithm, pg.constants):
            LOG.info("Concat %r joins constant %r, %.0fx smaller than its range: it and the constant Adds after "
                     "it (%s) run in float16", chain[0], const, ratio, ", ".join(chain[1:]) or "none")
            keep.update(chain)
    for chain, tensor, ratio, small, big in mixed_scale_outputs(nodes, outputs, stats, algorithm):
        levels = int(np.floor(255 / ratio))
        LOG.warning("output %r concatenates tensors whose ranges differ %.0fx (%r vs %r): one int8 scale would "
                    "leave %r about %d levels, so Concat %r runs in float16. To keep it int8 instead, cut the "
                    "graph before it (load_onnx(outputs=[%r, %r])) and concatenate on the CPU.", tensor, ratio,
                    small, big, small, levels, chain[0].name, small, big)
        keep.update(n.name for n in chain)
        keep.update(_float_unit_source(nodes, small, chain[0]))
    return keep


def _const_span(arr: np.ndarray) -> float:
    """The span of a constant as :func:`_span` measures a tensor's (the range always includes 0)."""
    a = np.asarray(arr, np.float64)
    return float(max(a.max(), 0.0) - min(a.min(), 0.0)) if a.size else 0.0


def small_constant_concats(nodes: Sequence, stats: dict, algorithm: str, constants: dict) -> list:
    """[(layer names, constant, ratio)]: each Concat with a constant input whose span is more than
    MIXED_SCALE_RATIO times smaller than the Concat's calibrated range, followed by the Adds of a constant
    that read its result (each the only reader of the one before).

    Why: the Concat's one int8 scale is set by its computed inputs, so the constant keeps a few levels;
    a transformer's class token is the case (ViT-Ti on the corpus: values of about 0.02 in a range of
    +-3.9, step 0.031, so half of them round to 0), and the classifier reads only that token, through
    LayerNorms that normalise the row back to unit size and so turn its rounding into error of the size
    of the signal. The position embedding Add after it writes the same row, as small, on the same kind of
    grid. Both in float16 (the class row is exact; the patch rows are converted from int8 at the Concat's
    input): ViT-Ti kl_divergence/channel top-1 0.688 -> 1.000, fidelity 0.99515 -> 0.99794, and on 16
    held-out crops (seeds from 5000) 0.625 -> 0.938, 0.98818 -> 0.99705. Float16 for the Concat alone
    gave 0.938 / 0.99695: the Add's rounding of the class row costs as much again."""
    readers = _readers(nodes)
    found = []
    for n in nodes:
        if n.op_type != "Concat" or not n.outputs:
            continue
        span = _span(stats, n.outputs[0], algorithm)
        small = [(c, _const_span(constants[c])) for c in n.inputs if c in constants]
        small = [(c, s) for c, s in small if 0 < s and span / s > MIXED_SCALE_RATIO]
        if not small:
            continue
        const, c_span = min(small, key=lambda cs: cs[1])
        chain, tensor = [n.name], n.outputs[0]
        while len(readers.get(tensor, [])) == 1:
            add = readers[tensor][0]
            others = [i for i in add.inputs if i != tensor]
            if add.op_type != "Add" or len(others) != 1 or others[0] not in constants:
                break
            chain.append(add.name)
            tensor = add.outputs[0]
        found.append((chain, const, span / c_span))
    return found


def _float_unit_source(nodes: Sequence, tensor: str, concat) -> list:
    """[name of the FLOAT_UNITS layer (or layer with such a fused activation) producing ``tensor``] when
    the Concat is its only reader, else [].

    YOLOv8's class scores (Sigmoid, 0..1; 0..0.12 with the corpus model's seeded weights) rounded to
    their own int8 grid before the float16 Concat still lost every score of one test image (all below
    one step) and matched 0.256 of the fp32 detections; in float16 0.444 (YOLOv8n 0.267 -> 0.344)."""
    readers = [n for n in nodes if tensor in n.inputs]
    producer = next((n for n in nodes if tensor in n.outputs), None)
    if producer is None or readers != [concat] or FLOAT_UNITS_SET.isdisjoint((producer.op_type, producer.act)):
        return []
    LOG.info("%s %r feeds the float16 Concat %r: it runs in float16 too", producer.op_type, producer.name,
             concat.name)
    return [producer.name]


# Layers that produce through int32 accumulation (their output can skip the int8 rounding), the layers that
# only move data between such a layer and its reader, and the readers the NPU fuses with it.
ACCUMULATING = ("Conv", "Gemm")
VIEWS = ("Reshape", "Transpose")
FUSED_READERS = ("Add", "Gelu", "LayerNormalization")


def fused_sum_inputs(nodes: Sequence, outputs: Sequence[str], constants, shapes: dict) -> set:
    """Tensors an int8 build keeps in float16 because the NPU fuses their producer with their reader
    (the tensors of :func:`fused_links`)."""
    return set(fused_links(nodes, outputs, constants, shapes))


def _readers(nodes: Sequence) -> dict:
    """{tensor: the nodes reading it, once per input that names it}."""
    readers: dict = {}
    for n in nodes:
        for i in n.inputs:
            if i:
                readers.setdefault(i, []).append(n)
    return readers


def _producers_and_readers(nodes: Sequence) -> tuple:
    """{tensor: the node writing it} and {tensor: how many node inputs read it}."""
    producer = {o: n for n in nodes for o in n.outputs}
    return producer, {t: len(r) for t, r in _readers(nodes).items()}


def fused_links(nodes: Sequence, outputs: Sequence[str], constants, shapes: dict) -> dict:
    """The float16 links of an int8 build: {tensor: op type of the layer that reads the chain}.

    The NPU runs a Conv (or fully connected layer) followed by a residual Add, or by GELU, as one layer:
    the int32 accumulator is rescaled, the other operand added or the GELU applied, and only the result is
    requantised to int8. RKNN-Toolkit2 2.5.0 does the same: its simulator dumps such a Conv output off the
    int8 grid (ResNet-18 layers.0 conv2: 180491 distinct values; ConvNeXt-T's pw1 before GELU 274710 and
    pw2 before the residual Add 66826), while every other Conv output sits on its 256 levels. Rounding
    that output to int8 first costs a second requantisation per block: on ResNet-18 the Conv before each
    Add lost 3x more single-layer cosine than the toolkit's (0.99959 vs 0.99986). The simulator's int8
    Conv/Gemm writes float16 instead (int8 inputs and weights, int32 accumulation, the float rescale),
    and the reader takes it beside its int8 operands and requantises once. Views (Reshape, Transpose)
    between the two, each with one reader, stay float16 with it.

    Per Add (two computed operands), the operand chosen is the last one that qualifies (the toolkit
    fuses ResNet's downsampling Conv, the Add's second operand, and quantises the main-branch Conv, the
    first). A producer qualifies when it has no fused activation and every tensor of the chain has one
    reader and is not a graph output. Only Adds of feature maps (4-D) count, although the toolkit also
    links transformer token residuals: on ViT-Ti's (3-D) the float16 link lost (int8 fidelity 0.99831
    -> 0.99820 on the bench's images, 0.98808 -> 0.98751 on 16 held-out crops), the int8 rounding of
    the projection clipping its outliers to the calibrated range; ConvNeXt's (4-D after its Transpose)
    gains.

    A LayerNormalization reading a Conv/Gemm output (ConvNeXt's depthwise 7x7, stem and downsampling
    Convs) links the same way, beyond what the toolkit does (its depthwise outputs sit on the int8 grid):
    the normalisation computes in float from its input anyway, so the int8 rounding before it only adds
    error (ConvNeXt-T on 16 held-out crops: 0.999737 -> 0.999760). Only its data input counts; the
    scale and bias are constants."""
    producer, readers = _producers_and_readers(nodes)

    def chain(name: str) -> list:
        """The tensors from an accumulating producer's output to ``name`` (views only), or []."""
        tensors = []
        while name not in outputs and readers.get(name) == 1 and name in producer:
            tensors.append(name)
            src = producer[name]
            if src.op_type in ACCUMULATING:
                return tensors if src.act is None else []
            if src.op_type not in VIEWS:
                return []
            name = src.inputs[0]
        return []

    keep: dict = {}
    for n in nodes:
        if n.op_type not in FUSED_READERS:
            continue
        data = n.inputs[:1] if n.op_type == "LayerNormalization" else n.inputs[:2]
        if any(i in constants for i in data if i):
            continue
        if n.op_type == "Add" and (len(n.inputs) != 2 or None in n.inputs or len(shapes.get(n.outputs[0], ())) != 4):
            continue
        for name in reversed(data):
            found = chain(name) if name else []
            if found and not keep.keys() & set(found):
                keep.update(dict.fromkeys(found, n.op_type))
                break
    return keep


# The "reader" recorded for a graph output that an accumulating layer writes in float16 (accumulator_outputs).
OUTPUT_LINK = "output"


def accumulator_outputs(nodes: Sequence, outputs: Sequence[str]) -> dict:
    """Graph outputs an int8 build writes in float16 straight from a Conv/Gemm's int32 accumulator (int8
    input and weights, the float rescale, no int8 rounding): {tensor: OUTPUT_LINK}, with the views
    (Reshape, Transpose) between the producer and the output, each read only by the next.

    Why: an int8 output is clipped to the range its calibration samples reached, and a classifier's logits
    (or a segmentation head's scores) on an image unlike those samples go far beyond it. MobileNetV3-S on
    the corpus: test image 7's fp32 logits span [-2.48, 2.55], the calibrated output range is [-0.36,
    0.44], so 65% of its logits were clipped (RKNN-Toolkit2 clips the same way: its outputs end at the same
    two values), and that one image (logit norm 27 against 1-6 for the others) sets the fidelity. Written
    in float16 the logits keep what the int8 network computed: int8 normal/channel 0.71097 -> 0.71955
    (toolkit 0.71233), top-1 0.625 -> 0.812; per tensor 0.71298 -> 0.72263 (toolkit 0.71876). The last
    rounding also goes where nothing clips: ResNet-18 0.99470 -> 0.99573, EfficientNet-B0 0.95818 ->
    0.96122, U-Net 0.98997 -> 0.99027 (toolkit 0.99011). The NPU writes float16 outputs from the same
    accumulator; the output costs 2 bytes per value instead of 1, and the runtime's float outputs are
    unchanged in kind. A producer with a fused activation keeps its int8 output (the fused links have
    the same rule), as does an output that another layer also reads."""
    producer, readers = _producers_and_readers(nodes)
    outs = set(outputs)
    keep: dict = {}
    for out in outputs:
        if readers.get(out) or out not in producer:
            continue
        tensors, name = [out], out
        while True:
            src = producer.get(name)
            if src is None:
                tensors = []
                break
            if src.op_type in ACCUMULATING:
                if src.act is not None:
                    tensors = []
                break
            if src.op_type not in VIEWS or not src.inputs or not src.inputs[0]:
                tensors = []
                break
            name = src.inputs[0]
            if name in outs or readers.get(name) != 1:
                tensors = []
                break
            tensors.append(name)
        keep.update(dict.fromkeys(tensors, OUTPUT_LINK))
    return keep
