"""Custom operators for `RKNN.reg_custom_op`: the equivalent of the toolkit's `rknn.api.custom_op` module.

A custom operator is a class with the toolkit's interface, as its examples write them:

    class cstSigmoid:
        op_type = 'cstSigmoid'
        def shape_infer(self, node, in_shapes, in_dtypes):
            return in_shapes.copy(), in_dtypes.copy()
        def compute(self, node, inputs):
            return [1.0 / (1.0 + np.exp(-inputs[0]))]

`node` is the ONNX NodeProto, `inputs` are numpy arrays in the ONNX layout (NCHW). rknnlink runs `compute`
on the host between NPU sub-graphs (see rknnlink.api.segmented for why).
"""

from __future__ import annotations

from typing import Any

__all__ = ["get_node_attr", "check_custom_op"]

_MISSING = object()


def get_node_attr(node: Any, name: str, default: Any = _MISSING) -> Any:
    """The value of attribute `name` of an ONNX node (floats, ints, strings, tensors as numpy arrays)."""
    from onnx import helper, numpy_helper

    for attribute in node.attribute:
        if attribute.name == name:
            value = helper.get_attribute_value(attribute)
            if isinstance(value, bytes):
                return value.decode("utf-8", "replace")
            if hasattr(value, "dims") and hasattr(value, "data_type"):
                return numpy_helper.to_array(value)
            return value
    if default is not _MISSING:
        return default
    names = ", ".join(a.name for a in node.attribute) or "none"
    raise ValueError(f"custom op node {node.name or node.op_type!r} has no attribute {name!r} "
                     f"(its attributes: {names})")


def check_custom_op(op: Any) -> str:
    """Validate a custom operator object; returns its op_type. ValueError says what is missing."""
    op_type = getattr(op, "op_type", None)
    if not isinstance(op_type, str) or not op_type:
        raise ValueError(f"reg_custom_op: {type(op).__name__} needs a class attribute op_type = 'cstName' "
                         "(the ONNX op_type of the nodes it computes)")
    for method in ("shape_infer", "compute"):
        if not callable(getattr(op, method, None)):
            raise ValueError(f"reg_custom_op: {type(op).__name__} ({op_type}) has no {method}() method; "
                             "custom ops need shape_infer(self, node, in_shapes, in_dtypes) and "
                             "compute(self, node, inputs)")
    return op_type
