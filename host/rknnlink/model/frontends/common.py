"""What every front end shares: an ONNX graph under construction, and the one unsupported-layers error.

Each front end translates its framework's model into an ONNX ModelProto made with ``onnx.helper`` and hands
it to the same prepare / lower / quantise path as ``load_onnx``: fusion, calibration and the names that
accuracy_analysis reports are therefore shared. Tensor names of the source model are kept as ONNX value
names, so a user finds the layer names of their framework in every report.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import BuildError, UnsupportedOperatorError

LOG = logging.getLogger(__name__)

OPSET = 17  # HardSwish needs 14; ReduceMean/Max keep their axes attribute below 18
NCHW_TO_NHWC = (0, 2, 3, 1)
NHWC_TO_NCHW = (0, 3, 1, 2)


def onnx_modules() -> tuple:
    """(onnx, helper, numpy_helper, TensorProto); building needs the host extra."""
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise BuildError("loading models needs the onnx package: pip install 'rknnlink[host]'") from exc
    return onnx, helper, numpy_helper, TensorProto


def check_file(path: Any, what: str) -> Path:
    """The toolkit's message for a missing model file, with the directory relative paths start from."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{what} {p} not exists! Check the path (relative paths start at {Path.cwd()}).")
    return p


class LayerError(Exception):
    """One layer (or one of its options) has no translation; the message says why. Collected, not raised
    to the user: :class:`Unsupported` reports every such layer at once."""


@dataclass
class Conversion:
    """A front end's result: the ONNX model and the fixed quantisation of pre-quantised tensors."""

    model: Any
    quant: Dict[str, dict] = field(default_factory=dict)  # onnx tensor -> {scale, zero_point, dtype, source}


class OnnxGraph:
    """An ONNX graph being written node by node, with unique names for everything the front end invents."""

    def __init__(self, name: str) -> None:
        _, self.helper, self.numpy_helper, self.tp = onnx_modules()
        self.name = name
        self.nodes: list = []
        self.initializers: list = []
        self.inputs: list = []
        self.outputs: list = []
        self.used: set = set()
        self.shapes: Dict[str, tuple] = {}

    def fresh(self, base: str) -> str:
        name, k = base, 1
        while name in self.used:
            name, k = f"{base}_{k}", k + 1
        self.used.add(name)
        return name

    def claim(self, name: str) -> str:
        """Reserve a source-model name (it must stay as it is); returns it."""
        self.used.add(name)
        return name

    def const(self, base: str, value: np.ndarray) -> str:
        name = self.fresh(base)
        self.initializers.append(self.numpy_helper.from_array(np.array(value, copy=True, order="C"), name))
        self.shapes[name] = tuple(np.shape(value))
        return name

    def node(self, op_type: str, inputs: Sequence[Optional[str]], output: Optional[str] = None, *,
             name: Optional[str] = None, outputs: Optional[Sequence[str]] = None, **attrs: Any) -> str:
        """Append a node; ``output`` (a claimed or fresh name) is created when not given. Returns it."""
        outs = list(outputs) if outputs is not None else [output or self.fresh(f"{name or op_type}_out")]
        node_name = self.fresh(name or outs[0])
        attrs = {k: v for k, v in attrs.items() if v is not None}
        self.nodes.append(self.helper.make_node(op_type, [i or "" for i in inputs], outs, name=node_name,
                                                **attrs))
        return outs[0]

    def reduce(self, op_type: str, x: str, axes: Sequence[int], keepdims: int, output: Optional[str] = None) -> str:
        """ReduceSum takes its axes as an input from opset 13, the others as an attribute until 18."""
        if op_type == "ReduceSum":
            return self.node(op_type, [x, self.const("axes", np.array(list(axes), np.int64))], output,
                             keepdims=keepdims)
        return self.node(op_type, [x], output, axes=list(axes), keepdims=keepdims)

    def add_input(self, name: str, shape: Sequence[int], elem_type: int = 1) -> None:
        self.claim(name)
        self.inputs.append(self.helper.make_tensor_value_info(name, elem_type, [int(d) for d in shape]))
        self.shapes[name] = tuple(int(d) for d in shape)

    def add_output(self, name: str) -> None:
        self.outputs.append(self.helper.make_tensor_value_info(name, 1, None))

    def model(self, producer: str) -> Any:
        graph = self.helper.make_graph(self.nodes, self.name or "model", self.inputs, self.outputs,
                                       initializer=self.initializers)
        model = self.helper.make_model(graph, producer_name=producer,
                                       opset_imports=[self.helper.make_opsetid("", OPSET)])
        model.ir_version = 7
        return model


class Unsupported:
    """Collects every layer a front end cannot translate, so the user sees them all in one error."""

    def __init__(self, framework: str, advice: str) -> None:
        self.framework, self.advice = framework, advice
        self.found: Dict[str, List[str]] = {}
        self.reasons: Dict[str, str] = {}

    def add(self, kind: str, layer: str, reason: str = "") -> None:
        self.found.setdefault(kind, []).append(layer)
        if reason and kind not in self.reasons:
            self.reasons[kind] = reason

    def raise_if_any(self) -> None:
        if not self.found:
            return
        parts = []
        for kind, layers in self.found.items():
            why = f": {self.reasons[kind]}" if kind in self.reasons else ""
            parts.append(f"{kind} x{len(layers)} (first: {layers[0]!r}){why}")
        first_kind = next(iter(self.found))
        total = sum(len(v) for v in self.found.values())
        raise UnsupportedOperatorError(
            first_kind, self.found[first_kind][0],
            f"the {self.framework} model has {total} layer(s) of {len(self.found)} type(s) rknnlink cannot "
            f"convert: {'; '.join(parts)}. {self.advice}")


def same_padding(in_size: int, kernel: int, stride: int, dilation: int = 1) -> Tuple[int, int]:
    """TensorFlow 'SAME' padding for one spatial axis: (before, after), the extra pixel after."""
    out = -(-in_size // stride)
    effective = (kernel - 1) * dilation + 1
    total = max((out - 1) * stride + effective - in_size, 0)
    return total // 2, total - total // 2
