"""Graph preparation and lowering: every pass on small onnx.helper models, checked against onnxruntime."""

import factories as fac
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from rknnlink.model import format as fmt
from rknnlink.model.builder import BuildConfig, BuildError, UnsupportedOperatorError, build, load_onnx
from rknnlink.model.prepare import prepare


def ort_run(model: onnx.ModelProto, feeds: dict) -> list:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def random_feeds(model: onnx.ModelProto, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    inits = {i.name for i in model.graph.initializer}
    return {i.name: rng.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim]).astype(np.float32)
            for i in model.graph.input if i.name not in inits}


def fp32(model: onnx.ModelProto, **kw):
    return build(load_onnx(model, **kw), BuildConfig(float_dtype="float32"), False, None)


def ops_of(result) -> list:
    return [(op.op_type, op.act) for op in result.sim_model.ops]


@pytest.mark.parametrize("factory", [fac.mobilenetv2_like, fac.yolo_like, fac.two_input_model, fac.conv_bn_act_model])
def test_prepared_graph_computes_the_same_as_the_original(factory):
    model = factory()
    feeds = random_feeds(model)
    pg = prepare(load_onnx(model))
    for a, b in zip(ort_run(model, feeds), ort_run(pg.model, feeds)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    assert [o.name for o in pg.model.graph.output] == [o.name for o in model.graph.output]


def test_batchnorm_folds_into_conv():
    model = fac.conv_bn_act_model("Relu")
    pg = prepare(load_onnx(model))
    assert [n.op_type for n in pg.model.graph.node] == ["Conv", "Relu"]
    r = fp32(model)
    assert ops_of(r) == [("Conv", "Relu")]
    assert r.sim_model.ops[0].inputs[2] is not None  # the folded bias exists


def test_batchnorm_without_conv_stays():
    model = fac.single_node_model("BatchNormalization", [[1, 4, 5, 5]], [1, 4, 5, 5],
                                consts={1: np.ones(4, np.float32), 2: np.zeros(4, np.float32),
                                        3: np.zeros(4, np.float32), 4: np.ones(4, np.float32)}, epsilon=1e-3)
    r = fp32(model)
    assert ops_of(r) == [("BatchNormalization", None)]
    assert r.sim_model.ops[0].attrs["epsilon"] == pytest.approx(1e-3)


@pytest.mark.parametrize("act, params", [
    ("Relu", (0.0, 0.0)), ("Clip", (0.0, 6.0)), ("LeakyRelu", (0.2, 0.0)), ("Sigmoid", (0.0, 0.0)),
    ("HardSwish", (0.0, 0.0)), ("HardSigmoid", (0.25, 0.4)), ("Tanh", (0.0, 0.0)), ("SiLU", (0.0, 0.0)),
])
def test_activation_fuses_into_conv_and_keeps_its_output_name(act, params):
    r = fp32(fac.conv_bn_act_model(act, opset=14))
    op = r.sim_model.ops[0]
    assert ops_of(r) == [("Conv", act)]
    assert op.act_params == pytest.approx(params)
    assert r.sim_model.tensors[op.outputs[0]].name == "y"


def _conv_then(nodes_after: list, outputs: list, extra_inits: tuple = ()) -> onnx.ModelProto:
    w = numpy_helper.from_array(np.ones((4, 3, 1, 1), np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv")] + nodes_after
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
                              [w, *extra_inits])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=fac.IR_VERSION)


def test_no_fusion_when_the_conv_output_has_two_consumers():
    r = fp32(_conv_then([helper.make_node("Relu", ["c"], ["r"], name="relu"),
                         helper.make_node("Add", ["c", "r"], ["y"], name="add")], ["y"]))
    assert ops_of(r) == [("Conv", None), ("Relu", None), ("Add", None)]


def test_no_fusion_when_the_conv_output_is_a_graph_output():
    r = fp32(_conv_then([helper.make_node("Relu", ["c"], ["r"], name="relu")], ["c", "r"]))
    assert ops_of(r) == [("Conv", None), ("Relu", None)]


def test_activation_fuses_into_add_gemm_and_matmul():
    r = fp32(_conv_then([helper.make_node("Add", ["c", "c"], ["a"], name="add"),
                         helper.make_node("Relu", ["a"], ["y"], name="relu")], ["y"]))
    assert ops_of(r) == [("Conv", None), ("Add", "Relu")]
    model = fac.single_node_model("MatMul", [[2, 3]], None, consts={1: np.ones((3, 4), np.float32)})
    model.graph.node[0].output[0] = "m"
    model.graph.node.append(helper.make_node("Sigmoid", ["m"], ["y"], name="sig"))
    assert ops_of(fp32(model)) == [("MatMul", "Sigmoid")]


def test_silu_pattern_without_a_producer_to_fuse_into():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])
    nodes = [helper.make_node("Sigmoid", ["x"], ["s"], name="sig"),
             helper.make_node("Mul", ["s", "x"], ["y"], name="mul")]
    graph = helper.make_graph(nodes, "g", [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=fac.IR_VERSION)
    r = fp32(model)
    assert ops_of(r) == [("SiLU", None)]
    assert r.sim_model.ops[0].name == "mul"


def test_identity_and_dropout_are_removed():
    r = fp32(_conv_then([helper.make_node("Identity", ["c"], ["i"], name="id"),
                         helper.make_node("Dropout", ["i"], ["d"], name="drop"),
                         helper.make_node("Relu", ["d"], ["y"], name="relu")], ["y"]))
    assert ops_of(r) == [("Conv", "Relu")]


def test_identity_producing_a_graph_output_renames_the_producer():
    r = fp32(_conv_then([helper.make_node("Identity", ["c"], ["y"], name="id")], ["y"]))
    assert ops_of(r) == [("Conv", None)]
    assert r.sim_model.tensors[r.sim_model.outputs[0].tensor].name == "y"


def test_shape_arithmetic_is_folded_into_a_static_reshape():
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
             helper.make_node("Unsqueeze", ["n", "ax"], ["n1"]),
             helper.make_node("Concat", ["n1", "minus1"], ["shape"], axis=0),
             helper.make_node("Reshape", ["x", "shape"], ["y"])]
    inits = [numpy_helper.from_array(np.array(0, np.int64), "zero"),
             numpy_helper.from_array(np.array([0], np.int64), "ax"),
             numpy_helper.from_array(np.array([-1], np.int64), "minus1")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=fac.IR_VERSION)
    r = fp32(model)
    assert ops_of(r) == [("Reshape", None)]
    assert r.sim_model.tensors[r.sim_model.outputs[0].tensor].shape == (1, 48)


def test_constant_subgraphs_fold_including_constant_of_shape():
    nodes = [helper.make_node("ConstantOfShape", ["shp"], ["k"], value=numpy_helper.from_array(
                 np.array([0.5], np.float32))),
             helper.make_node("Mul", ["k", "two"], ["k2"]), helper.make_node("Add", ["x", "k2"], ["y"])]
    inits = [numpy_helper.from_array(np.array([1, 4], np.int64), "shp"),
             numpy_helper.from_array(np.array(2.0, np.float32), "two")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=fac.IR_VERSION)
    r = fp32(model)
    assert ops_of(r) == [("Add", None)]
    const = r.sim_model.tensors[r.sim_model.ops[0].inputs[1]]
    np.testing.assert_array_equal(const.data, np.ones((1, 4), np.float32))


@pytest.mark.parametrize("op, shapes, attrs, consts", [
    ("Flatten", [[1, 2, 3, 4]], {"axis": 1}, {}),
    ("Squeeze", [[1, 2, 1, 4]], {}, {1: np.array([2], np.int64)}),
    ("Unsqueeze", [[2, 4]], {}, {1: np.array([0, -1], np.int64)}),
])
def test_shape_ops_become_reshape(op, shapes, attrs, consts):
    r = fp32(fac.single_node_model(op, shapes, None, consts=consts, **attrs))
    assert ops_of(r) == [("Reshape", None)]
    assert r.sim_model.ops[0].inputs == [0]


def test_upsample_becomes_asymmetric_floor_resize():
    model = fac.single_node_model("Upsample", [[1, 2, 3, 3]], None, opset=9,
                                consts={1: np.array([1, 1, 2, 2], np.float32)}, mode="nearest")
    r = fp32(model)
    op = r.sim_model.ops[0]
    assert op.op_type == "Resize" and op.attrs == {"mode": 0, "coord": 1, "nearest": 2}
    assert r.sim_model.tensors[op.outputs[0]].shape == (1, 2, 6, 6)


def test_resize_opset13_with_sizes_and_align_corners():
    model = fac.single_node_model("Resize", [[1, 2, 4, 4]], None, consts={1: "", 2: "", 3: np.array(
        [1, 2, 7, 9], np.int64)}, mode="linear", coordinate_transformation_mode="align_corners")
    op = fp32(model).sim_model.ops[0]
    assert op.attrs == {"mode": 1, "coord": 2, "nearest": 0}


def test_resize_unsupported_mode_fails_at_build():
    model = fac.single_node_model("Resize", [[1, 2, 4, 4]], None, consts={1: "", 2: np.array(
        [1, 1, 2, 2], np.float32)}, mode="cubic")
    with pytest.raises(UnsupportedOperatorError, match="cubic"):
        fp32(model)


def test_auto_pad_same_upper_becomes_explicit_pads():
    model = fac.single_node_model("Conv", [[1, 2, 7, 7]], None, consts={1: np.ones((3, 2, 3, 3), np.float32)},
                                auto_pad="SAME_UPPER", strides=[2, 2])
    op = fp32(model).sim_model.ops[0]
    assert op.attrs["pads"] == [1, 1, 1, 1] and op.attrs["kernel_shape"] == [3, 3]
    model = fac.single_node_model("MaxPool", [[1, 2, 6, 6]], None, auto_pad="SAME_LOWER", kernel_shape=[2, 2])
    assert fp32(model).sim_model.ops[0].attrs["pads"] == [1, 1, 0, 0]


def test_conv1d_is_allowed_and_4d_conv_is_not():
    model = fac.single_node_model("Conv", [[1, 2, 10]], None, consts={1: np.ones((3, 2, 3), np.float32)})
    assert fp32(model).sim_model.ops[0].attrs["kernel_shape"] == [3]
    model = fac.single_node_model("MaxPool", [[1, 1, 4, 4, 4, 4]], None, kernel_shape=[2, 2, 2, 2])
    with pytest.raises((UnsupportedOperatorError, BuildError)):
        fp32(model)


def test_negative_axes_are_normalised():
    model = fac.single_node_model("Concat", [[1, 2, 3], [1, 2, 5]], None, axis=-1)
    assert fp32(model).sim_model.ops[0].attrs == {"axis": 2}
    model = fac.single_node_model("Softmax", [[1, 3, 4]], None, axis=-2)
    assert fp32(model).sim_model.ops[0].attrs == {"axis": 1}


def test_clip_constant_inputs_and_old_attributes():
    model = fac.single_node_model("Clip", [[1, 4]], None, consts={1: np.float32(-1.5), 2: ""})
    attrs = fp32(model).sim_model.ops[0].attrs
    assert attrs["min"] == -1.5 and attrs["max"] == np.inf
    model = fac.single_node_model("Clip", [[1, 4]], None, opset=9, min=0.0, max=3.0)
    assert fp32(model).sim_model.ops[0].attrs == {"min": 0.0, "max": 3.0}


def test_softmax_pre13_semantics():
    ok = fac.single_node_model("Softmax", [[1, 10]], None, opset=11, axis=1)
    assert fp32(ok).sim_model.ops[0].attrs == {"axis": 1}
    single = fac.single_node_model("Softmax", [[1, 5, 1, 1]], None, opset=11, axis=1)
    assert fp32(single).sim_model.ops[0].attrs == {"axis": 1}
    bad = fac.single_node_model("Softmax", [[1, 3, 4]], None, opset=11, axis=1)
    with pytest.raises(UnsupportedOperatorError, match="opset >= 13"):
        fp32(bad)


def test_slice_parameters_are_normalised_and_clamped():
    model = fac.single_node_model("Slice", [[1, 3, 10, 10]], None, consts={
        1: np.array([-4, 1], np.int64), 2: np.array([2 ** 62, -1], np.int64),
        3: np.array([-1, -2], np.int64), 4: np.array([1, 2], np.int64)})
    op = fp32(model).sim_model.ops[0]
    assert op.attrs == {"starts": [6, 1], "ends": [10, 9], "axes": [3, 2], "steps": [1, 2]}
    rev = fac.single_node_model("Slice", [[1, 6]], None, consts={
        1: np.array([-1], np.int64), 2: np.array([-2 ** 62], np.int64), 3: np.array([1], np.int64),
        4: np.array([-1], np.int64)})
    # "through index 0" is -(dim + 1): the same under ONNX's clamping and under its negative-index rule
    assert fp32(rev).sim_model.ops[0].attrs == {"starts": [5], "ends": [-7], "axes": [1], "steps": [-1]}


def test_pad_inputs_become_attributes():
    model = fac.single_node_model("Pad", [[1, 2, 3, 3]], None, opset=13, consts={
        1: np.array([0, 0, 1, 2, 0, 0, 3, 4], np.int64), 2: np.float32(0.5)}, mode="constant")
    assert fp32(model).sim_model.ops[0].attrs == {"pads": [0, 0, 1, 2, 0, 0, 3, 4], "mode": 0, "value": 0.5}
    model = fac.single_node_model("Pad", [[1, 2, 3, 3]], None, opset=18, consts={
        1: np.array([1, 1, 1, 1], np.int64), 2: "", 3: np.array([-2, -1], np.int64)}, mode="reflect")
    assert fp32(model).sim_model.ops[0].attrs["pads"] == [0, 0, 1, 1, 0, 0, 1, 1]
    model = fac.single_node_model("Pad", [[1, 2, 3, 3]], None, opset=19, consts={
        1: np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)}, mode="wrap")
    with pytest.raises(UnsupportedOperatorError, match="wrap"):
        fp32(model)


def test_split_sum_gemm_reduce_gather():
    split = fac.single_node_model("Split", [[1, 6, 2]], None, consts={1: np.array([2, 4], np.int64)}, axis=-2)
    split.graph.node[0].output[:] = ["a", "b"]
    del split.graph.output[:]
    split.graph.output.extend([helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in "ab"])
    r = fp32(split)
    assert r.sim_model.ops[0].attrs == {"axis": 1}
    assert [r.sim_model.tensors[i].shape for i in r.sim_model.ops[0].outputs] == [(1, 2, 2), (1, 4, 2)]
    r = fp32(fac.single_node_model("Sum", [[1, 3], [1, 3], [1, 1]], None))
    assert ops_of(r) == [("Sum", None)] and len(r.sim_model.ops[0].inputs) == 3
    r = fp32(fac.single_node_model("Gemm", [[2, 3]], None, consts={1: np.ones((4, 3), np.float32)}, transB=1,
                                 alpha=2.0))
    assert r.sim_model.ops[0].attrs == {"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 1}
    np.testing.assert_array_equal(r.sim_model.tensors[r.sim_model.ops[0].inputs[1]].data, np.full((4, 3), 2.0))
    r = fp32(fac.single_node_model("ReduceMean", [[1, 3, 4, 4]], None, opset=18, consts={1: np.array([-1, -2])},
                                 keepdims=0))
    assert r.sim_model.ops[0].attrs == {"axes": [2, 3], "keepdims": 0}
    r = fp32(fac.single_node_model("Gather", [[5, 3]], None, consts={1: np.array([-1, 0], np.int64)}, axis=0))
    idx = r.sim_model.tensors[r.sim_model.ops[0].inputs[1]]
    assert idx.dtype == fmt.INT64 and idx.data.tolist() == [4, 0]


@pytest.mark.parametrize("model_fn, op", [
    (lambda: fac.single_node_model("Einsum", [[3, 3]], None, equation="ii->i"), "Einsum"),  # not a matmul form
    (lambda: fac.single_node_model("Hardmax", [[2, 5]], None), "Hardmax"),
    (lambda: fac.single_node_model("CumSum", [[1, 5]], None, consts={1: np.array(1, np.int64)}), "CumSum"),
])
def test_unsupported_operators_name_the_op_and_node(model_fn, op):
    model = model_fn()
    with pytest.raises(UnsupportedOperatorError) as info:
        fp32(model)
    assert info.value.op_type == op
    assert info.value.node_name == f"{op.lower()}_node"
    assert "load_onnx(outputs=" in str(info.value) or "CPU" in str(info.value) or "constant" in str(info.value)


def test_dynamic_input_needs_input_size_list():
    model = fac.single_node_model("Relu", [["N", 3, 8, 8]], None)
    with pytest.raises(BuildError, match="input_size_list"):
        fp32(model)
    r = fp32(model, input_size_list=[[3, 8, 8]])
    assert r.sim_model.tensors[0].shape == (1, 3, 8, 8)
    with pytest.raises(BuildError, match="rank"):
        load_onnx(model, input_size_list=[[8, 8]])


def test_cut_graph_with_outputs_and_inputs():
    model = fac.yolo_like()
    cut_name = next(n.output[0] for n in model.graph.node if n.op_type == "Concat")
    r = fp32(model, outputs=[cut_name])
    assert r.sim_model.ops[-1].op_type == "Concat"
    assert [r.sim_model.tensors[o.tensor].name for o in r.sim_model.outputs] == [cut_name]
    with pytest.raises(BuildError, match="not in the graph"):
        load_onnx(model, outputs=["no_such_tensor"])


def test_old_opsets_are_upgraded_and_too_new_ones_rejected():
    old = fac.single_node_model("Relu", [[1, 2]], None, opset=8)
    assert fp32(old).sim_model.ops[0].op_type == "Relu"
    model = fac.single_node_model("Relu", [[1, 2]], None, opset=22)
    with pytest.raises(BuildError, match="opset 22"):
        load_onnx(model)


def test_rknn_batch_size_rewrites_io_and_refuses_batch_dependent_graphs():
    r = build(load_onnx(fac.conv_bn_act_model()), BuildConfig(), False, None, rknn_batch_size=4)
    assert r.sim_model.batch_size == 4
    assert r.sim_model.tensors[r.sim_model.inputs[0].tensor].shape == (4, 3, 16, 16)
    assert r.sim_model.tensors[r.sim_model.outputs[0].tensor].shape == (4, 8, 16, 16)
    model = fac.single_node_model("Reshape", [[1, 3, 2, 2]], None, consts={1: np.array([1, 12], np.int64)})
    with pytest.raises(BuildError, match="batch-agnostic"):
        build(load_onnx(model), BuildConfig(), False, None, rknn_batch_size=2)


def test_fp16_data_types():
    r = build(load_onnx(fac.two_input_model()), BuildConfig(), False, None)
    m = r.sim_model
    assert m.build_mode == "fp16"
    image = m.tensor_index("image")
    first = [op for op in m.ops if op.inputs[0] == image]  # the image's Conv runs in float32 (docs/quantization.md)
    assert [op.op_type for op in first] == ["Conv"] and m.tensors[image].dtype == fmt.FLOAT32
    for op in m.ops:
        for slot, i in enumerate(op.inputs):
            if i is None:
                continue
            t = m.tensors[i]
            if op in first:
                assert t.dtype == fmt.FLOAT32
            elif t.kind != fmt.KIND_CONSTANT:
                assert t.dtype == fmt.FLOAT16
            elif op.op_type in ("Conv", "Gemm") and slot == 2:
                assert t.dtype == fmt.FLOAT32, "biases stay float32"
            elif t.data.dtype.kind == "f":
                assert t.dtype == fmt.FLOAT16
    assert fmt.read_model(r.data) == m
    assert all(m.tensors[o.tensor].dtype == fmt.FLOAT16 for o in m.outputs)
    assert r.tensor_map == {t.name: t.name for t in m.tensors}


def test_optimization_level_zero_keeps_the_graph():
    model = fac.conv_bn_act_model("Relu")
    r = build(load_onnx(model), BuildConfig(optimization_level=0, float_dtype="float32"), False, None)
    assert ops_of(r) == [("Conv", None), ("BatchNormalization", None), ("Relu", None)]


def test_resize_with_a_fractional_scale_is_refused():
    model = fac.single_node_model("Resize", [[1, 2, 3, 3]], None, consts={1: "", 2: np.array(
        [1, 1, 1.5, 1.5], np.float32)}, mode="linear")
    with pytest.raises(UnsupportedOperatorError, match="sizes"):
        fp32(model)


def test_unused_maxpool_indices_are_dropped_but_used_ones_refused():
    node = helper.make_node("MaxPool", ["x"], ["y", "idx"], name="pool", kernel_shape=[2, 2])
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])
    graph = helper.make_graph([node], "g", [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)], ir_version=fac.IR_VERSION)
    assert ops_of(fp32(model)) == [("MaxPool", None)]
    graph.output.append(helper.make_tensor_value_info("idx", TensorProto.INT64, None))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)], ir_version=fac.IR_VERSION)
    with pytest.raises(UnsupportedOperatorError) as info:
        fp32(model)
    assert info.value.op_type == "MaxPool"


def test_conv_weight_shape_mismatch_fails_at_build():
    model = fac.single_node_model("Conv", [[1, 3, 8, 8]], None, consts={1: np.ones((4, 2, 3, 3), np.float32)})
    with pytest.raises((UnsupportedOperatorError, BuildError)):
        fp32(model)  # 3 input channels, weight expects 2 (ONNX inference may already refuse it)
