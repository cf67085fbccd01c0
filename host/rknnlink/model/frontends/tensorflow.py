"""Frozen TensorFlow GraphDef (.pb) -> ONNX through tf2onnx (the optional extra ``rknnlink[tensorflow]``).

The toolkit's arguments are honoured before conversion: each of ``inputs`` becomes a Placeholder of its
``input_size_list`` shape (so a graph can be entered at any tensor, e.g. SSD's 'Preprocessor/sub'), and
the graph is cut to what ``outputs`` need. 4-D inputs are NHWC in TensorFlow; unless ``input_is_nchw``,
tf2onnx is asked to expose them NCHW (``inputs_as_nchw``) so the runtime's NHWC input conversion applies as
for every other model. Quantisation-aware-trained graphs (FakeQuant nodes) come out of tf2onnx as
QuantizeLinear/DequantizeLinear pairs and keep their ranges (:mod:`rknnlink.model.prequant`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, List, Sequence

from ..errors import BuildError
from .common import OPSET, Conversion, check_file

LOG = logging.getLogger(__name__)

EXTRA = ("load_tensorflow needs TensorFlow and tf2onnx: pip install 'rknnlink[tensorflow]' (tensorflow-cpu and "
         "tf2onnx), or convert the model to ONNX yourself (python -m tf2onnx.convert --input model.pb ...) and "
         "use load_onnx")


def _modules() -> tuple:
    try:
        import tensorflow as tf
        import tf2onnx
    except ImportError as exc:
        raise BuildError(f"{EXTRA} ({exc})") from exc
    return tf, tf2onnx


def _tensor_name(name: str) -> str:
    return name if ":" in name else f"{name}:0"


def _node_name(name: str) -> str:
    return name.split(":", 1)[0].lstrip("^")


def _cut(tf: Any, graph_def: Any, inputs: Sequence[str], sizes: Sequence[Sequence[int]],
         outputs: Sequence[str]) -> Any:
    """Every input becomes a Placeholder of the given shape; the graph keeps what the outputs need."""
    nodes = {n.name: n for n in graph_def.node}
    for name, size in zip(inputs, sizes):
        node = nodes.get(_node_name(name))
        if node is None:
            raise BuildError(f"input {name!r} is not a node of the graph; use a tensor name from the .pb "
                             "(e.g. shown by Netron)")
        if ":" in name and not name.endswith(":0"):
            raise BuildError(f"input {name!r}: only a node's first output can be an input")
        dtype = None
        for key in ("dtype", "T"):
            if key in node.attr:
                dtype = node.attr[key].type
        if node.op != "Placeholder" or dtype is None:
            node.ClearField("input")
            node.ClearField("attr")
            node.op = "Placeholder"
            node.attr["dtype"].type = dtype if dtype is not None else tf.float32.as_datatype_enum
        node.attr["shape"].shape.CopyFrom(tf.TensorShape([int(d) for d in size]).as_proto())
    missing = [o for o in outputs if _node_name(o) not in nodes]
    if missing:
        raise BuildError(f"outputs {missing} are not nodes of the graph")
    return tf.compat.v1.graph_util.extract_sub_graph(graph_def, [_node_name(o) for o in outputs])


def convert_tensorflow(tf_pb: Any, inputs: Sequence[str], input_size_list: Sequence[Sequence[int]],
                       outputs: Sequence[str], input_is_nchw: bool = False) -> Conversion:
    """A frozen GraphDef file into an ONNX model (QAT FakeQuant ranges kept as fixed quantisation)."""
    path = check_file(tf_pb, "Model file")
    if not inputs or not outputs:
        raise BuildError("load_tensorflow needs inputs=[...] and outputs=[...] (tensor names of the graph)")
    if input_size_list is None or len(input_size_list) != len(inputs):
        raise BuildError(f"input_size_list needs one shape per input ({len(inputs)}), e.g. [[1, 224, 224, 3]]")
    tf, tf2onnx = _modules()
    sizes: List[List[int]] = []
    for size in input_size_list:
        size = [int(d) for d in size]
        sizes.append(size if len(size) != 3 else [1] + size)
    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(path.read_bytes())
    except Exception as exc:
        raise BuildError(f"cannot parse {str(path)!r} as a frozen TensorFlow GraphDef: {exc}") from exc
    graph_def = _cut(tf, graph_def, inputs, sizes, outputs)
    in_names = [_tensor_name(i) for i in inputs]
    out_names = [_tensor_name(o) for o in outputs]
    nchw = [] if input_is_nchw else [n for n, s in zip(in_names, sizes) if len(s) == 4]
    try:
        model, _ = tf2onnx.convert.from_graph_def(graph_def, name=Path(path).stem, input_names=in_names,
                                                  output_names=out_names, opset=OPSET, inputs_as_nchw=nchw)
    except Exception as exc:
        raise BuildError(f"tf2onnx cannot convert {path.name}: {exc}") from exc
    model.graph.name = Path(path).stem  # hybrid_quantization_step1 names its files after the model
    from ..prequant import has_qdq, strip_qdq

    quant: dict = {}
    if has_qdq(model):
        model, quant = strip_qdq(model)
    LOG.info("TensorFlow %s: %d ONNX nodes via tf2onnx", path.name, len(model.graph.node))
    return Conversion(model, quant)

