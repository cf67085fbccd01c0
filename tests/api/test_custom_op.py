"""reg_custom_op as the toolkit's custom_op examples use it, in-process and on a simulated board daemon."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from rknnlink.api import RKNN
from rknnlink.api.custom_op import get_node_attr


class cstDualResidual:  # noqa: N801 - the toolkit example's class, verbatim interface
    op_type = "cstDualResidual"

    def shape_infer(self, node, in_shapes, in_dtypes):
        return in_shapes.copy(), in_dtypes.copy()

    def compute(self, node, inputs):
        x, y = inputs
        alpha = get_node_attr(node, "alpha")
        return [x * alpha - y, y * alpha - x]


class cstSigmoid:  # noqa: N801
    op_type = "cstSigmoid"

    def shape_infer(self, node, in_shapes, in_dtypes):
        return in_shapes.copy(), in_dtypes.copy()

    def compute(self, node, inputs):
        return [1.0 / (1.0 + np.exp(np.negative(inputs[0])))]


def _dual_residual(path: Path) -> None:
    """What the toolkit's gen_custom_onnx_from_pytorch example exports: one rknn_cst node, two inputs."""
    node = helper.make_node("cstDualResidual", ["0", "1"], ["2", "3"], name="cstDualResidual_0", domain="rknn_cst",
                            alpha=0.5)
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3, 10, 10]) for n in "0123"]
    graph = helper.make_graph([node], "main_graph", io[:2], io[2:])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12),
                                                      helper.make_opsetid("rknn_cst", 1)]), str(path))


def _sigmoid_net(path: Path, custom: bool) -> None:
    """conv -> (cst)Sigmoid -> conv: a custom node between two NPU sub-graphs (the yolox example's pattern)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32), "w1"),
             numpy_helper.from_array((rng.standard_normal((4, 8, 1, 1)) * 0.3).astype(np.float32), "w2")]
    nodes = [helper.make_node("Conv", ["images", "w1"], ["c1"], name="conv1", pads=[1] * 4),
             helper.make_node("cstSigmoid" if custom else "Sigmoid", ["c1"], ["s1"], name="sig"),
             helper.make_node("Conv", ["s1", "w2"], ["out"], name="conv2")]
    graph = helper.make_graph(nodes, "sig_net",
                              [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4, 16, 16])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))


def test_bad_custom_op_class_is_explained():
    class NoCompute:
        op_type = "cstX"

        def shape_infer(self, node, in_shapes, in_dtypes):
            return in_shapes, in_dtypes

    with pytest.raises(ValueError, match="compute"):
        RKNN().reg_custom_op(NoCompute())


def _reference(work: Path, image: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    _sigmoid_net(work / "plain.onnx", custom=False)
    x = (image.astype(np.float32).transpose(0, 3, 1, 2) - 127.5) / 127.5
    return ort.InferenceSession(str(work / "plain.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"images": x})[0]


def test_int8_custom_op_between_sub_graphs_in_process_and_on_a_board(work):
    _sigmoid_net(work / "net_custom.onnx", custom=True)
    rng = np.random.default_rng(2)
    for i in range(6):
        np.save(work / f"c{i}.npy", rng.integers(0, 256, (1, 3, 16, 16)).astype(np.float32))
    (work / "dataset.txt").write_text("".join(f"c{i}.npy\n" for i in range(6)))
    image = rng.integers(0, 256, (1, 16, 16, 3)).astype(np.uint8)

    rknn = RKNN()
    rknn.config(mean_values=[[127.5] * 3], std_values=[[127.5] * 3], target_platform="rk3588")
    rknn.reg_custom_op(cstSigmoid())
    assert rknn.load_onnx(model="net_custom.onnx") == 0
    assert rknn.build(do_quantization=True, dataset="dataset.txt") == 0
    assert rknn.init_runtime() == 0
    local = rknn.inference(inputs=[image])[0]
    ref = _reference(work, image)
    cos = float(local.ravel() @ ref.ravel() / np.linalg.norm(local) / np.linalg.norm(ref))
    assert local.shape == ref.shape and cos > 0.99
    perf = rknn.eval_perf(is_print=False)
    assert perf["total_time_us"] > 0

    assert rknn.init_runtime(target="rk3588", device_id="sim") == 0
    remote = rknn.inference(inputs=[image])[0]
    np.testing.assert_array_equal(remote, local)  # the board runs the same sub-graphs; compute runs here
    rknn.release()
