"""Reshape-family views share their input's bytes in the simulator's memory plan (runtime_c/src/mem_plan.c):
graph outputs and every per-layer dump stay those of onnxruntime, also when the viewed tensor is read
again after the view and when views chain, in fp32, fp16 and int8."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from rknnlink.model.builder import BuildConfig, build, load_onnx

INTERMEDIATES = ("r", "f", "s", "g", "m", "u", "q", "h")


def _views_model() -> onnx.ModelProto:
    c = [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in
         (("shape4", [1, 4, 6, 6]), ("axes0", [0]), ("shape2", [4, 36]))]
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("Flatten", ["r"], ["f"], name="flatten"),             # view of r
        helper.make_node("Sigmoid", ["f"], ["s"], name="sigmoid"),
        helper.make_node("Reshape", ["s", "shape4"], ["g"], name="reshape"),   # view of s
        helper.make_node("Mul", ["g", "r"], ["m"], name="mul"),                # r read after its view
        helper.make_node("Unsqueeze", ["m", "axes0"], ["u"], name="unsqueeze"),
        helper.make_node("Squeeze", ["u", "axes0"], ["q"], name="squeeze"),    # a view of a view
        helper.make_node("Add", ["q", "r"], ["h"], name="add"),
        helper.make_node("Tanh", ["h"], ["y"], name="tanh"),
        helper.make_node("Reshape", ["m", "shape2"], ["z"], name="to_output"),  # graph output: not aliased
    ]
    graph = helper.make_graph(nodes, "views", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
                               helper.make_tensor_value_info("z", TensorProto.FLOAT, None)], c)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def _reference(model: onnx.ModelProto, x: np.ndarray) -> dict:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for name in INTERMEDIATES:
        m.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, {"x": x})))


@pytest.mark.parametrize("mode", ["fp32", "fp16", "int8"])
def test_views_share_bytes_and_keep_outputs_and_dumps(sim_lib, mode, tmp_path):
    model = _views_model()
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1, 4, 6, 6)).astype(np.float32)
    ref = _reference(model, x)
    dataset = None
    if mode == "int8":
        for i in range(4):
            np.save(tmp_path / f"x{i}.npy", rng.normal(size=(1, 4, 6, 6)).astype(np.float32))
        dataset = tmp_path / "dataset.txt"
        dataset.write_text("".join(f"x{i}.npy\n" for i in range(4)))
    cfg = BuildConfig(progress=False, float_dtype="float32" if mode == "fp32" else "float16")
    built = build(load_onnx(model), cfg, mode == "int8", dataset)
    tol = {"fp32": 1e-6, "fp16": 4e-3, "int8": 6e-2}[mode]
    with sim_lib.init(built.data) as ctx:
        ctx.set_dump(True)
        for _ in range(2):  # the second run reuses the arena the first one left behind
            outs = ctx.infer([x], formats=["nchw"])
            dumps = {info.name: f32 for info, f32, _ in ctx.dumps()}
            for name, got in (("y", outs[0]), ("z", outs[1])):
                got = np.asarray(got, np.float64).reshape(ref[name].shape)
                assert np.max(np.abs(got - ref[name])) <= tol * (1 + np.max(np.abs(ref[name]))), name
            checked = 0
            for name in INTERMEDIATES:
                if name in dumps:
                    got = np.asarray(dumps[name], np.float64).reshape(ref[name].shape)
                    assert np.max(np.abs(got - ref[name])) <= tol * (1 + np.max(np.abs(ref[name]))), name
                    checked += 1
            assert checked >= 4, sorted(dumps)
