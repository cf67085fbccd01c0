"""A model that cannot be built raises ONE UnsupportedOperatorError listing every unsupported operator with
its count and first node, and the cut points for load_onnx(outputs=...) before which everything builds."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from rknnlink.model.builder import BuildConfig, UnsupportedOperatorError, build, load_onnx


def _model() -> object:
    """x -> Relu -> a -> Hardmax -> b -> Hardmax -> c -> CumSum -> d -> Add(a) -> y, plus a Resize(cubic)
    on a side branch and a second output z = Sigmoid(a)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y", "z", "r")]
    inits = [numpy_helper.from_array(np.array(3, np.int64), "axis3"),
             numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")]
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="relu"),
        helper.make_node("Hardmax", ["a"], ["b"], name="hardmax_1"),
        helper.make_node("Hardmax", ["b"], ["c"], name="hardmax_2"),
        helper.make_node("CumSum", ["c", "axis3"], ["d"], name="cumsum"),
        helper.make_node("Add", ["d", "a"], ["y"], name="add"),
        helper.make_node("Sigmoid", ["a"], ["z"], name="sigmoid"),
        helper.make_node("Resize", ["a", "", "scales"], ["r"], name="resize_cubic", mode="cubic"),
    ]
    graph = helper.make_graph(nodes, "bad", [x], outs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def _build(model: object) -> object:
    return build(model, BuildConfig(progress=False, float_dtype="float32"), False, None)


def test_one_error_lists_every_unsupported_operator_with_count_and_first_node():
    with pytest.raises(UnsupportedOperatorError) as info:
        _build(load_onnx(_model()))
    err = info.value
    text = str(err)
    assert err.op_type == "Hardmax" and err.node_name == "hardmax_1"  # the first one, as before
    assert [(p.op_type, p.node_name) for p in err.problems] == [
        ("Hardmax", "hardmax_1"), ("Hardmax", "hardmax_2"), ("CumSum", "cumsum"), ("Resize", "resize_cubic")]
    assert "Hardmax x2 (first node 'hardmax_1')" in text
    assert "CumSum x1 (first node 'cumsum')" in text
    assert "Resize x1 (first node 'resize_cubic')" in text and "cubic" in text
    assert text.count("Hardmax x") == 1  # one line per operator type
    # Add only fails because of its input: it is supported, so it is not listed.
    assert "'add'" not in text
    assert err.cut_points == ["a", "z"]
    assert "load_onnx(..., outputs=['a', 'z'])" in text


def test_the_cut_points_build():
    with pytest.raises(UnsupportedOperatorError) as info:
        _build(load_onnx(_model()))
    result = _build(load_onnx(_model(), outputs=info.value.cut_points))
    assert [op.op_type for op in result.sim_model.ops] == ["Relu", "Sigmoid"]


def test_lowering_problems_are_collected_too():
    """Two known operators with unsupported attributes (no unknown type): still one error for both."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])
    inits = [numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")]
    nodes = [helper.make_node("Resize", ["x", "", "scales"], ["r1"], name="cubic_1", mode="cubic"),
             helper.make_node("Relu", ["r1"], ["r2"], name="relu"),
             helper.make_node("Resize", ["r2", "", "scales"], ["y"], name="cubic_2", mode="cubic")]
    graph = helper.make_graph(nodes, "bad", [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    with pytest.raises(UnsupportedOperatorError) as info:
        _build(load_onnx(model))
    assert [p.node_name for p in info.value.problems] == ["cubic_1", "cubic_2"]
    assert "Resize x2 (first node 'cubic_1')" in str(info.value)
    assert info.value.cut_points == []  # the first one reads the graph input
    assert "no cut point" in str(info.value)


def test_custom_domain_operators_are_listed():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="relu"),
             helper.make_node("MyOp", ["a"], ["y"], name="mine", domain="com.example")]
    graph = helper.make_graph(nodes, "custom", [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("com.example", 1)],
                              ir_version=8)
    with pytest.raises(UnsupportedOperatorError) as info:
        _build(load_onnx(model))
    assert info.value.op_type == "com.example.MyOp" and info.value.cut_points == ["a"]
