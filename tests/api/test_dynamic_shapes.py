"""config(dynamic_input=...) as the toolkit's dynamic_shape example uses it, and rknn_set_input_shapes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from rknnlink.api import RKNN
from rknnlink.runtime import RknnError, RuntimeLibrary

SETS = [[[1, 3, 32, 32]], [[1, 3, 16, 16]], [[1, 3, 24, 24]]]


def _net(path: Path) -> None:
    """A fully convolutional classifier with a free spatial size (N, 3, H, W)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32), "w1"),
             numpy_helper.from_array((rng.standard_normal((5, 8)) * 0.3).astype(np.float32), "fc")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c"], name="conv", pads=[1] * 4),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "fc"], ["y"], name="gemm", transB=1)]
    graph = helper.make_graph(nodes, "dyn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "h", "w"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("dynamic")
    _net(work / "net.onnx")
    rng = np.random.default_rng(1)
    for i in range(4):
        np.save(work / f"c{i}.npy", rng.integers(0, 256, (1, 3, 32, 32)).astype(np.float32))
    (work / "dataset.txt").write_text("".join(f"c{i}.npy\n" for i in range(4)))
    return work


def _reference(work: Path, nchw: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    x = ((nchw.astype(np.float32) - 127.5) / 127.5).astype(np.float32)
    return ort.InferenceSession(str(work / "net.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def _built(work: Path, quantize: bool) -> RKNN:
    rknn = RKNN()
    rknn.config(mean_values=[127.5] * 3, std_values=[127.5] * 3, target_platform="rk3566", dynamic_input=SETS)
    assert rknn.load_onnx(model=str(work / "net.onnx")) == 0
    assert rknn.build(do_quantization=quantize, dataset=str(work / "dataset.txt")) == 0
    return rknn


def _cos(a, b) -> float:
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.mark.parametrize("quantize", [False, True], ids=["fp16", "int8"])
def test_example_flow_in_process_every_shape(work, quantize):
    rknn = _built(work, quantize)
    assert rknn.export_rknn(str(work / f"dyn{int(quantize)}.rknn")) == 0
    assert rknn.init_runtime() == 0
    rng = np.random.default_rng(5)
    for size in (24, 16, 32):  # the example's order: not the first set first
        img = rng.integers(0, 256, (1, 3, size, size)).astype(np.uint8)
        out = rknn.inference(inputs=[img], data_format=["nchw"])
        assert out[0].shape == (1, 5)
        assert _cos(out[0], _reference(work, img)) > (0.99 if quantize else 0.9999)
    with pytest.raises(RknnError, match="expects"):
        rknn.inference(inputs=[np.zeros((1, 3, 20, 20), np.uint8)], data_format=["nchw"])
    rknn.release()


def test_on_a_simulated_board(work):
    rknn = _built(work, quantize=True)
    assert rknn.init_runtime() == 0
    img = np.random.default_rng(6).integers(0, 256, (1, 16, 16, 3)).astype(np.uint8)
    local = rknn.inference(inputs=[img])[0]
    assert rknn.init_runtime(target="rk3566", device_id="sim") == 0
    remote = rknn.inference(inputs=[img])[0]
    np.testing.assert_array_equal(remote, local)
    rknn.release()


def test_c_api_set_input_shapes_and_dynamic_range(work):
    _built(work, quantize=False).export_rknn(str(work / "c.rknn"))
    lib = RuntimeLibrary.load(backend="sim")
    with lib.init((work / "c.rknn").read_bytes()) as ctx:
        assert ctx.input_shape_sets() == [[[1, 32, 32, 3]], [[1, 16, 16, 3]], [[1, 24, 24, 3]]]
        assert list(ctx.input_attrs[0].dims) == [1, 32, 32, 3]  # starts on the first set
        ctx.set_input_shapes([[1, 3, 16, 16]], fmt="nchw")
        assert list(ctx.input_attrs[0].dims) == [1, 16, 16, 3]
        out = ctx.infer([np.zeros((1, 16, 16, 3), np.uint8)], formats=["nhwc"])
        assert out[0].shape == (1, 5)
        with pytest.raises(RknnError, match="no shape set"):
            ctx.set_input_shapes([[1, 3, 20, 20]], fmt="nchw")
        dup = ctx.dup()
        dup.set_input_shapes([[1, 24, 24, 3]])
        assert list(dup.input_attrs[0].dims) == [1, 24, 24, 3] and list(ctx.input_attrs[0].dims) == [1, 16, 16, 3]
        dup.close()
    static = RKNN()
    static.config(target_platform="rk3566")
    static.load_onnx(str(work / "net.onnx"), input_size_list=[[1, 3, 16, 16]])
    static.build(do_quantization=False)
    with lib.init(static._model_bytes) as ctx:
        with pytest.raises(RknnError, match="static input shapes"):
            ctx.set_input_shapes([[1, 16, 16, 3]])


def test_bad_dynamic_input_is_explained():
    with pytest.raises(ValueError, match="a list of sets"):
        RKNN().config(target_platform="rk3566", dynamic_input=[1, 3, 224, 224])
