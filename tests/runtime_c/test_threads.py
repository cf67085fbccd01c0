"""The simulator's worker threads must not change a single output bit.

A small MobileNetV2-like network (stride-2 im2col conv, depthwise, pointwise with many and with few output
positions, residual Add, GlobalAveragePool, Gemm) is built to fp16 and int8 with the real builder, then run
by contexts created with RKNNLINK_SIM_THREADS=1 and =2 (the variable is read when a context is created).
"""

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from rknnlink.model.builder import BuildConfig, build
from rknnlink.runtime import RuntimeLibrary

pytestmark = pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 CPUs (threads are capped by CPUs)")


def small_mobilenet(seed: int = 0) -> onnx.ModelProto:
    """Conv 3x3/2 -> [expand 1x1, depthwise 3x3, project 1x1 (+Add)] x 3 -> 1x1 -> GAP -> Gemm."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []

    def const(arr: np.ndarray) -> str:
        name = f"c{len(inits)}"
        inits.append(numpy_helper.from_array(arr.astype(np.float32), name))
        return name

    def conv(x: str, cin: int, cout: int, k: int, stride: int = 1, group: int = 1, relu6: bool = True) -> str:
        w = rng.normal(0.0, np.sqrt(2.0 / (cin // group * k * k)), (cout, cin // group, k, k))
        y = f"y{len(nodes)}"
        nodes.append(helper.make_node("Conv", [x, const(w), const(rng.normal(0.0, 0.05, cout))], [y],
                                      kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4, group=group))
        if relu6:
            nodes.append(helper.make_node("Clip", [y, const(np.array(0.0)), const(np.array(6.0))], [y + "c"]))
            y += "c"
        return y

    x = conv("input", 3, 16, 3, 2)
    for cin, cout, stride in [(16, 24, 2), (24, 24, 1), (24, 32, 2)]:
        h = conv(x, cin, cin * 4, 1)
        h = conv(h, cin * 4, cin * 4, 3, stride, group=cin * 4)
        h = conv(h, cin * 4, cout, 1, relu6=False)
        if cin == cout and stride == 1:
            nodes.append(helper.make_node("Add", [x, h], [h + "a"]))
            h += "a"
        x = h
    x = conv(x, 32, 64, 1)
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"]))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], axis=1))
    nodes.append(helper.make_node("Gemm", ["flat", const(rng.normal(0, 0.2, (10, 64))), const(rng.normal(0, 0.1, 10))],
                                  ["logits"], transB=1))
    graph = helper.make_graph(nodes, "small_mobilenet", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                                          [1, 3, 56, 56])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("threads")
    rng = np.random.default_rng(3)
    for i in range(4):
        np.save(tmp / f"c{i}.npy", rng.normal(0.0, 1.0, (1, 3, 56, 56)).astype(np.float32))
    (tmp / "dataset.txt").write_text("".join(f"c{i}.npy\n" for i in range(4)))
    model = small_mobilenet()
    return {mode: build(model, BuildConfig(progress=False), quant, Path(tmp) / "dataset.txt" if quant else None).data
            for mode, quant in (("fp16", False), ("int8", True))}


def ctx_with_threads(lib: RuntimeLibrary, data: bytes, threads: int, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("RKNNLINK_SIM_THREADS", str(threads))
    return lib.init(data)


@pytest.mark.parametrize("mode", ["fp16", "int8"])
def test_outputs_identical_with_one_and_two_threads(built: dict, mode: str, monkeypatch: pytest.MonkeyPatch):
    lib = RuntimeLibrary.load(backend="sim")
    one = ctx_with_threads(lib, built[mode], 1, monkeypatch)
    two = ctx_with_threads(lib, built[mode], 2, monkeypatch)
    rng = np.random.default_rng(11)
    try:
        for _ in range(3):
            x = rng.normal(0.0, 1.0, (1, 3, 56, 56)).astype(np.float32)
            a = one.infer([x], formats=["nchw"])[0]
            b = two.infer([x], formats=["nchw"])[0]
            assert np.count_nonzero(a) > a.size // 2, "the network output is degenerate; the check would be vacuous"
            assert a.dtype == b.dtype and a.shape == b.shape
            assert a.tobytes() == b.tobytes(), f"{mode}: 2 threads differ from 1 by {np.max(np.abs(a - b))}"
    finally:
        one.close()
        two.close()
