"""Shape arithmetic on static tensors (Shape, Gather, Concat, ConstantOfShape, Range, Cast, dynamic Reshape
and Expand shape inputs) folds into constants, so the simulator model holds only the real layers; and the
new kernels give the same bytes on 1 and 2 simulator threads."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from rknnlink.model.builder import BuildConfig, build, load_onnx


def _shape_model() -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])
    c = {n: numpy_helper.from_array(np.array(v, np.int64), n) for n, v in
         (("i1", [1]), ("minus1", [-1]), ("zero", 0), ("one", 1), ("i2", [2]), ("axes0", [0]))}
    nodes = [
        helper.make_node("Shape", ["x"], ["s"], name="shape"),
        helper.make_node("Gather", ["s", "i1"], ["c"], name="take_c", axis=0),          # [3]
        helper.make_node("Concat", ["minus1", "c"], ["new_shape"], name="cat", axis=0),  # [-1, 3]
        helper.make_node("Reshape", ["x", "new_shape"], ["r"], name="dyn_reshape"),      # [8, 3]
        helper.make_node("Shape", ["r"], ["rs"], name="shape_r"),
        helper.make_node("ConstantOfShape", ["rs"], ["half"], name="fill",
                         value=numpy_helper.from_array(np.array([0.5], np.float32))),
        helper.make_node("Add", ["r", "half"], ["r2"], name="add_half"),
        helper.make_node("Gather", ["rs", "one"], ["n"], name="take_n", axis=0),        # 3 (scalar)
        helper.make_node("Range", ["zero", "n", "one"], ["ramp_i"], name="range"),       # [0, 1, 2]
        helper.make_node("Cast", ["ramp_i"], ["ramp"], name="to_float", to=TensorProto.FLOAT),
        helper.make_node("Mul", ["r2", "ramp"], ["m"], name="scale_cols"),
        helper.make_node("Unsqueeze", ["n", "axes0"], ["n1"], name="n_vec"),
        helper.make_node("Concat", ["i2", "minus1"], ["e0"], name="cat2", axis=0),
        helper.make_node("Mul", ["e0", "minus1"], ["e1"], name="neg"),                  # [-2, 1]
        helper.make_node("Abs", ["e1"], ["e2"], name="abs"),                            # [2, 1]
        helper.make_node("Concat", ["e2", "n1"], ["eshape"], name="cat3", axis=0),      # [2, 1, 3]
        helper.make_node("Expand", ["m", "eshape"], ["y"], name="expand"),              # [2, 8, 3]
    ]
    graph = helper.make_graph(nodes, "shapes", [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              list(c.values()))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


@pytest.mark.parametrize("mode", ["fp32", "fp16", "int8"])
def test_shape_arithmetic_folds_to_the_real_layers(sim_lib, mode, tmp_path):
    model = _shape_model()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 4)).astype(np.float32)
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    dataset = None
    if mode == "int8":
        for i in range(4):
            np.save(tmp_path / f"x{i}.npy", rng.normal(size=(2, 3, 4)).astype(np.float32))
        dataset = tmp_path / "dataset.txt"
        dataset.write_text("".join(f"x{i}.npy\n" for i in range(4)))
    cfg = BuildConfig(progress=False, float_dtype="float32" if mode == "fp32" else "float16")
    built = build(load_onnx(model), cfg, mode == "int8", dataset)
    assert [op.op_type for op in built.sim_model.ops] == ["Reshape", "Add", "Mul", "Expand"]
    with sim_lib.init(built.data) as ctx:
        got = np.asarray(ctx.infer([x])[0]).reshape(ref.shape).astype(np.float64)
    if mode == "fp32":
        np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)
    elif mode == "fp16":
        assert np.max(np.abs(got - ref)) / np.max(np.abs(ref)) < 3e-3
    else:
        cos = float(got.ravel() @ ref.ravel() / (np.linalg.norm(got) * np.linalg.norm(ref)))
        assert cos >= 0.99, cos


def test_new_kernels_are_bit_identical_for_any_thread_count(sim_lib, monkeypatch):
    """LayerNorm and GroupNorm split rows over threads: 1 and 2 threads give the same bytes."""
    from test_ops_vs_onnxruntime import CASES, make_inputs, make_model
    for name in ("layernorm_last", "groupnorm_3groups", "instancenorm", "gelu_none", "topk_largest", "lstm_forward"):
        case = next(c for c in CASES if c.name == name)
        built = build(make_model(case), BuildConfig(progress=False), False, None)
        xs = make_inputs(case, 5)
        outs = []
        for threads in ("1", "2"):
            monkeypatch.setenv("RKNNLINK_SIM_THREADS", threads)
            with sim_lib.init(built.data) as ctx:
                outs.append([np.asarray(o).tobytes() for o in ctx.infer(xs, formats=["nchw"] * len(xs))])
        assert outs[0] == outs[1], name
