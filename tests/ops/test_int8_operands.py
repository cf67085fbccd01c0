"""A layer whose int8 kernel cannot take its operands is refused at rknn_init, naming the layer and the
operand, not at rknn_run with a bare error code; the builder quantises a constant left operand so that
its models never hit that refusal."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from rknnlink.model.builder import BuildConfig, build
from rknnlink.model.format import (
    INT8,
    KIND_CONSTANT,
    KIND_INPUT,
    KIND_OUTPUT,
    QNT_AFFINE,
    QNT_CHANNEL,
    IoSpec,
    SimModel,
    SimOp,
    SimTensor,
    write_model,
)
from rknnlink.runtime.errors import RknnError


def _int8_matmul(a: SimTensor) -> bytes:
    """Y(int8) = A x B(int8 activation): the executor runs it on the int8 path whatever A is."""
    tensors = [
        a,
        SimTensor("keys", INT8, (1, 6, 5), kind=KIND_INPUT, scale=0.05, zero_point=0, qnt_type=QNT_AFFINE),
        SimTensor("scores", INT8, (1, 4, 5), kind=KIND_OUTPUT, scale=0.1, zero_point=0, qnt_type=QNT_AFFINE),
    ]
    model = SimModel(name="int8_const_a", build_mode="int8", tensors=tensors,
                     ops=[SimOp("MatMul", "/dec.0/xattn/MatMul", [0, 1], [2])],
                     inputs=[IoSpec(1)], outputs=[IoSpec(2)])
    return write_model(model)


def test_int8_matmul_with_float_constant_a_is_refused_at_init(sim_lib):
    queries = np.random.default_rng(0).normal(size=(4, 6)).astype(np.float32)
    data = _int8_matmul(SimTensor("queries", "float32", queries.shape, kind=KIND_CONSTANT, data=queries))
    with pytest.raises(RknnError) as info:
        sim_lib.init(data)
    text = str(info.value)
    assert "rknn_init" in text and "/dec.0/xattn/MatMul" in text, text
    assert "A operand 'queries' is a float32 constant" in text, text


def test_int8_matmul_with_per_channel_a_is_refused_at_init(sim_lib):
    q = np.ones((4, 6), np.int8)
    a = SimTensor("queries", INT8, q.shape, kind=KIND_CONSTANT, data=q, qnt_type=QNT_CHANNEL, quant_axis=0,
                  quant_scales=np.full(4, 0.1, np.float32), quant_zero_points=np.zeros(4, np.int32))
    with pytest.raises(RknnError, match="per-channel int8 constant"):
        sim_lib.init(_int8_matmul(a))


def test_int8_matmul_with_int8_constant_a_runs(sim_lib):
    rng = np.random.default_rng(1)
    q = rng.integers(-127, 128, (4, 6)).astype(np.int8)
    a = SimTensor("queries", INT8, q.shape, kind=KIND_CONSTANT, data=q, scale=0.02, zero_point=0,
                  qnt_type=QNT_AFFINE)
    keys = rng.integers(-60, 60, (1, 6, 5)).astype(np.int8)
    with sim_lib.init(_int8_matmul(a)) as ctx:
        got = np.asarray(ctx.infer([keys * np.float32(0.05)])[0]).reshape(1, 4, 5)
    ref = np.clip((q.astype(np.float64) * 0.02) @ (keys.astype(np.float64) * 0.05), -12.8, 12.7)  # int8 output
    assert np.max(np.abs(got - ref)) <= 0.1 * 0.51 + 1e-6  # one output rounding step


def test_builder_quantises_a_folded_constant_left_operand(tmp_path):
    """A MatMul whose A folds to a constant (Add of two initialisers) gets an int8 A in an int8 build."""
    rng = np.random.default_rng(2)
    inits = [numpy_helper.from_array(rng.normal(size=(4, 6)).astype(np.float32), "q0"),
             numpy_helper.from_array(rng.normal(size=(4, 6)).astype(np.float32), "q1")]
    nodes = [helper.make_node("Add", ["q0", "q1"], ["queries"], name="fold_me"),
             helper.make_node("MatMul", ["queries", "keys"], ["scores"], name="xattn")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("keys", TensorProto.FLOAT, [1, 6, 5])],
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 4, 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.checker.check_model(model)
    for i in range(4):
        np.save(tmp_path / f"k{i}.npy", rng.normal(size=(1, 6, 5)).astype(np.float32))
    (tmp_path / "dataset.txt").write_text("".join(f"k{i}.npy\n" for i in range(4)))
    built = build(model, BuildConfig(progress=False), True, tmp_path / "dataset.txt")
    op = next(o for o in built.sim_model.ops if o.name == "xattn")
    a = built.sim_model.tensors[op.inputs[0]]
    assert a.kind == KIND_CONSTANT and a.dtype == INT8 and a.qnt_type == QNT_AFFINE and a.scale > 0
