"""float16 builds keep the image input and the Convs that read it in float32 (docs/quantization.md): the
first layer of an image network cancels the input's large mean with its bias, where binary16 rounding of
the input and weights becomes offsets that later layers amplify."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from rknnlink.model import format as fmt
from rknnlink.model.builder import BuildConfig, build


def _net(first: str) -> onnx.ModelProto:
    """image -> first layer (Conv, or Relu then Conv) -> Conv -> y."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 0.5, (8, 3, 3, 3)).astype(np.float32), "w0"),
             numpy_helper.from_array(np.full(8, -3.0, np.float32), "b0"),
             numpy_helper.from_array(rng.normal(0, 0.3, (4, 8, 3, 3)).astype(np.float32), "w1")]
    nodes = []
    x = "image"
    if first == "relu":
        nodes.append(helper.make_node("Relu", ["image"], ["r"], name="relu"))
        x = "r"
    nodes += [helper.make_node("Conv", [x, "w0", "b0"], ["c0"], name="conv0", pads=[1, 1, 1, 1]),
              helper.make_node("Conv", ["c0", "w1"], ["y"], name="conv1", pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 16, 16])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def _dtypes(built) -> dict:
    sm = built.sim_model
    out = {"input": sm.tensors[sm.inputs[0].tensor].dtype}
    for op in sm.ops:
        if op.op_type == "Conv":
            out[op.name] = (sm.tensors[op.inputs[1]].dtype, sm.tensors[op.outputs[0]].dtype)
    return out


def test_first_conv_runs_in_float32_in_fp16_builds(sim_lib):
    model = _net("conv")
    built = build(model, BuildConfig(progress=False), False, None)
    types = _dtypes(built)
    assert types == {"input": fmt.FLOAT32, "conv0": (fmt.FLOAT32, fmt.FLOAT16), "conv1": (fmt.FLOAT16, fmt.FLOAT16)}
    x = np.random.default_rng(1).uniform(0, 1, (1, 3, 16, 16)).astype(np.float32)  # a [0, 1] image
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    with sim_lib.init(built.data) as ctx:
        got = np.asarray(ctx.infer([x], formats=["nchw"])[0]).reshape(ref.shape)
    assert np.max(np.abs(got - ref)) / np.max(np.abs(ref)) < 3e-3


def test_input_read_by_another_layer_stays_float16():
    built = build(_net("relu"), BuildConfig(progress=False), False, None)
    types = _dtypes(built)
    assert types["input"] == fmt.FLOAT16 and types["conv0"] == (fmt.FLOAT16, fmt.FLOAT16)


def test_fp32_and_int8_builds_unchanged(tmp_path):
    assert set(_dtypes(build(_net("conv"), BuildConfig(progress=False, float_dtype="float32"), False, None))
               .values()) == {fmt.FLOAT32, (fmt.FLOAT32, fmt.FLOAT32)}
    rng = np.random.default_rng(2)
    for i in range(3):
        np.save(tmp_path / f"x{i}.npy", rng.uniform(0, 1, (1, 3, 16, 16)).astype(np.float32))
    (tmp_path / "dataset.txt").write_text("".join(f"x{i}.npy\n" for i in range(3)))
    types = _dtypes(build(_net("conv"), BuildConfig(progress=False), True, tmp_path / "dataset.txt"))
    assert types["input"] == fmt.INT8 and types["conv0"] == (fmt.INT8, fmt.INT8)
