"""load_onnx(inputs=/outputs=, input_size_list=) on a model whose input has dynamic dimensions.

Cutting such a graph used to keep the symbolic input shape from the shape inference the cut runs, so the
fixed shape from input_size_list was shadowed and the build failed with "the shape of tensor 'x' is
unknown" (seen on the PP-OCRv4 detector). The model here is built with onnx.helper; every cut is compared
with onnxruntime running the uncut dynamic model, which exposes the cut tensor as an extra output.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from rknnlink.api import RKNN

SHAPE = [1, 3, 16, 20]
MID_SHAPE = [1, 8, 16, 20]


def _dynamic_model(extra_output: bool = False) -> onnx.ModelProto:
    """x[N,3,H,W] -> Conv -> Relu ('mid') -> Conv -> Sigmoid -> Mul ('out'): a cut point in the middle."""
    rng = np.random.default_rng(3)
    w1 = numpy_helper.from_array(rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "w1")
    b1 = numpy_helper.from_array(rng.normal(0, 0.1, (8,)).astype(np.float32), "b1")
    w2 = numpy_helper.from_array(rng.normal(0, 0.3, (4, 8, 3, 3)).astype(np.float32), "w2")
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["conv1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv1"], ["mid"], name="relu1"),
        helper.make_node("Conv", ["mid", "w2"], ["conv2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["conv2"], ["gate"], name="sigmoid"),
        helper.make_node("Mul", ["conv2", "gate"], ["out"], name="swish"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, "height", "width"])
    outs = [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 4, "height", "width"])]
    if extra_output:
        outs.append(helper.make_tensor_value_info("mid", TensorProto.FLOAT, ["batch", 8, "height", "width"]))
    graph = helper.make_graph(nodes, "dyn_cut", [x], outs, initializer=[w1, b1, w2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@pytest.fixture(scope="module")
def reference() -> dict:
    """Input, middle tensor and output of the uncut dynamic model, from onnxruntime."""
    import onnxruntime as ort

    x = np.random.default_rng(5).normal(0, 1, SHAPE).astype(np.float32)
    session = ort.InferenceSession(_dynamic_model(extra_output=True).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    out, mid = session.run(["out", "mid"], {"x": x})
    return {"x": x, "mid": mid, "out": out}


def _run(path, feed: np.ndarray, **load_args) -> np.ndarray:
    rknn = RKNN()
    assert rknn.config(target_platform="rk3588") == 0
    assert rknn.load_onnx(str(path), **load_args) == 0
    assert rknn.build(do_quantization=False) == 0
    assert rknn.init_runtime() == 0
    outputs = rknn.inference(inputs=[feed], data_format="nchw")
    rknn.release()
    assert outputs is not None and len(outputs) == 1
    return outputs[0]


@pytest.fixture()
def model_path(tmp_path):
    path = tmp_path / "dyn_cut.onnx"
    onnx.save(_dynamic_model(), str(path))
    return path


def _assert_close(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape
    # float16 on the simulated NPU against onnxruntime's float32: errors of ~2e-3 (half an fp16 unit at
    # magnitudes 4..8) are expected
    np.testing.assert_allclose(got, want, rtol=1e-2, atol=1e-2)


def test_outputs_cut_keeps_the_sizes_of_a_dynamic_input(model_path, reference):
    got = _run(model_path, reference["x"], outputs=["mid"], input_size_list=[SHAPE])
    _assert_close(got, reference["mid"])


def test_inputs_cut_takes_its_sizes_from_input_size_list(model_path, reference):
    got = _run(model_path, reference["mid"], inputs=["mid"], outputs=["out"], input_size_list=[MID_SHAPE])
    _assert_close(got, reference["out"])


def test_uncut_dynamic_model_with_input_size_list(model_path, reference):
    got = _run(model_path, reference["x"], input_size_list=[SHAPE])
    _assert_close(got, reference["out"])


def test_dynamic_input_shape_sets_on_a_cut_model(model_path):
    """config(dynamic_input=...) reloads the cut per shape set: each set must reach the cut graph too."""
    import onnxruntime as ort

    session = ort.InferenceSession(_dynamic_model(extra_output=True).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    rknn = RKNN()
    assert rknn.config(target_platform="rk3588", dynamic_input=[[SHAPE], [[1, 3, 8, 8]]]) == 0
    assert rknn.load_onnx(str(model_path), outputs=["mid"]) == 0
    assert rknn.build(do_quantization=False) == 0
    assert rknn.init_runtime() == 0
    for shape in (SHAPE, [1, 3, 8, 8]):
        x = np.random.default_rng(len(shape) + shape[-1]).normal(0, 1, shape).astype(np.float32)
        _assert_close(rknn.inference(inputs=[x], data_format="nchw")[0], session.run(["mid"], {"x": x})[0])
    rknn.release()


def test_exporter_value_info_of_the_input_does_not_shadow_input_size_list(tmp_path, reference):
    model = _dynamic_model()
    model.graph.value_info.append(helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, "h", "w"]))
    path = tmp_path / "dyn_value_info.onnx"
    onnx.save(model, str(path))
    _assert_close(_run(path, reference["x"], input_size_list=[SHAPE]), reference["out"])
    _assert_close(_run(path, reference["x"], outputs=["mid"], input_size_list=[SHAPE]), reference["mid"])


def test_bad_cut_name_lists_the_tensors_that_exist(model_path):
    rknn = RKNN()
    assert rknn.config(target_platform="rk3588") == 0
    with pytest.raises(ValueError) as info:
        rknn.load_onnx(str(model_path), outputs=["mdi"], input_size_list=[SHAPE])
    message = str(info.value)
    assert "'mdi'" in message and "did you mean 'mid'" in message
    for name in ("x", "conv1", "mid", "conv2", "gate", "out"):
        assert repr(name) in message


def test_cut_that_leaves_a_tensor_outside_says_which(tmp_path):
    """inputs=['a'] on out = Add(Relu(x), x): the Add still reads x, which the cut left out."""
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="relu"), helper.make_node("Add", ["a", "x"], ["out"])]
    graph = helper.make_graph(nodes, "skip", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["n", 4])])
    path = tmp_path / "skip.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    rknn = RKNN()
    assert rknn.config(target_platform="rk3588") == 0
    with pytest.raises(ValueError, match=r"also reads \['x'\].*add \['x'\] to inputs="):
        rknn.load_onnx(str(path), inputs=["a"], outputs=["out"], input_size_list=[[1, 4]])
    assert rknn.load_onnx(str(path), inputs=["a", "x"], outputs=["out"], input_size_list=[[1, 4], [1, 4]]) == 0
