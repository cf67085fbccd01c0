"""bench_sim_vs_ort.py --profile: onnxruntime's per-node profile charged to the simulator's layers.

The PP-OCR corpus models come from paddle2onnx: dotted node names ('p2o.Conv.0'), tensors named like
'batch_norm_0.tmp_2' (which onnxruntime's fused Conv is named after) and unnamed Constant nodes. The profile
once showed an onnxruntime time of 0 for every such layer. This builds a small model with those names (plus a
repeated node name), runs the real onnxruntime profiler and the real simulator, and checks that every layer
gets the onnxruntime time of its source nodes."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import bench_sim_corpus as bsc  # noqa: E402
from bench_sim_vs_ort import init_with_threads  # noqa: E402

try:
    from rknnlink.runtime import RuntimeLibrary

    RuntimeLibrary.load(backend="sim")
    SIM = True
except Exception:
    SIM = False


def _paddle_like_model():
    """Conv -> BatchNormalization -> HardSwish as paddle2onnx writes it (Add, Clip, Mul, Div with unnamed
    Constant operands), a second Conv -> Relu branch whose two nodes share one name, their sum, a pooling."""
    rng = np.random.default_rng(3)
    inits, nodes = [], []

    def init(name, arr):
        inits.append(numpy_helper.from_array(np.asarray(arr, np.float32), name))
        return name

    def const(out, value):  # paddle2onnx's unnamed Constant nodes
        nodes.append(helper.make_node("Constant", [], [out], name="",
                                      value=numpy_helper.from_array(np.asarray(value, np.float32))))
        return out

    c = 16
    w0 = init("conv2d_0.w_0", rng.normal(0, 0.3, (c, 3, 3, 3)))
    nodes.append(helper.make_node("Conv", ["x", w0], ["conv2d_0.tmp_0"], name="p2o.Conv.0",
                                  kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
    bn = [init(f"batch_norm_0.w_{i}", v) for i, v in
          enumerate([rng.uniform(0.5, 1.5, c), rng.normal(0, 0.1, c), rng.normal(0, 0.1, c), rng.uniform(0.5, 1.5, c)])]
    nodes.append(helper.make_node("BatchNormalization", ["conv2d_0.tmp_0"] + bn, ["batch_norm_0.tmp_2"],
                                  name="p2o.BatchNormalization.0", epsilon=1e-5))
    nodes.append(helper.make_node("Add", ["batch_norm_0.tmp_2", const("p2o.Constant.3", 3.0)], ["p2o.Add.1"],
                                  name="p2o.Add.0"))
    nodes.append(helper.make_node("Clip", ["p2o.Add.1", const("p2o.Constant.5", 0.0), const("p2o.Constant.7", 6.0)],
                                  ["p2o.Clip.1"], name="p2o.Clip.0"))
    nodes.append(helper.make_node("Mul", ["batch_norm_0.tmp_2", "p2o.Clip.1"], ["p2o.Mul.1"], name="p2o.Mul.0"))
    nodes.append(helper.make_node("Div", ["p2o.Mul.1", const("p2o.Constant.9", 6.0)], ["hardswish_0.tmp_0"],
                                  name="p2o.Div.0"))
    w1 = init("conv2d_1.w_0", rng.normal(0, 0.3, (c, 3, 1, 1)))
    b1 = init("conv2d_1.b_0", rng.normal(0, 0.1, c))
    nodes.append(helper.make_node("Conv", ["x", w1, b1], ["conv2d_1.tmp_1"], name="p2o.Branch",
                                  kernel_shape=[1, 1]))
    nodes.append(helper.make_node("Relu", ["conv2d_1.tmp_1"], ["relu_0.tmp_0"], name="p2o.Branch"))
    nodes.append(helper.make_node("Add", ["hardswish_0.tmp_0", "relu_0.tmp_0"], ["tmp_0"], name="p2o.Add.2"))
    nodes.append(helper.make_node("GlobalAveragePool", ["tmp_0"], ["pool2d_0.tmp_0"], name="p2o.GlobalAveragePool.0"))
    graph = helper.make_graph(nodes, "paddle_like", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                    [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("pool2d_0.tmp_0", TensorProto.FLOAT, [1, c, 1, 1])],
                              inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def test_dotted_names_and_tensor_named_fusions_map_to_model_nodes():
    producer = {"conv2d_0.tmp_0": "p2o.Conv.0", "batch_norm_0.tmp_2": "p2o.BatchNormalization.0"}
    assert bsc._model_node("p2o.Conv.0", producer) == "p2o.Conv.0"
    # onnxruntime names a Conv fused with its BatchNormalization after the tensor it writes
    assert bsc._model_node("batch_norm_0.tmp_2_nchwc", producer) == "p2o.BatchNormalization.0"
    assert bsc._model_node("/features/features.0/Conv/MatMulAddFusion",
                           {"t": "/features/features.0/Conv"}) == "/features/features.0/Conv"
    assert bsc._model_node("ReorderOutput_token_3", producer) is None


@pytest.mark.skipif(not SIM, reason="simulated NPU library unavailable")
def test_profile_charges_onnxruntime_time_to_every_paddle_like_layer():
    from rknnlink.model.builder import BuildConfig, build

    model = _paddle_like_model()
    named = bsc.named_like_simulator(model)
    names = [n.name for n in named.graph.node]
    assert "" not in names and len(set(names)) == len(names)
    x = np.random.default_rng(0).normal(0, 1, (1, 3, 32, 32)).astype(np.float32)
    ort_us, ort_graph = bsc.ort_profile_us(named, {"x": x}, 3)
    assert ort_us and all(name for name in ort_us)

    built = build(model, BuildConfig(progress=False), False, None)
    ctx = init_with_threads(RuntimeLibrary.load(backend="sim"), built.data, 1)
    try:
        ctx.infer([x], formats=["nchw"])
        layers = {info.index: info for info in ctx.layer_infos()}
    finally:
        ctx.close()
    att = bsc.attribute(named, ort_us, layers, ort_graph)

    charged = {layers[i].name for i in att.layer_us}
    # the conv branch whose nodes shared a name, and the HardSwish layer fused from five nodes, both have time
    assert {"p2o.Conv.0", "p2o.Branch", "p2o.GlobalAveragePool.0"} <= charged
    assert not att.without and not att.builder_made and att.orphan_us == 0.0
    for i in layers:
        assert att.layer_us.get(i, 0.0) > 0.0 or i in att.fused_by_ort, layers[i].name
    # nothing counted twice or lost: layers + nodes onnxruntime added = onnxruntime's total
    assert sum(att.layer_us.values()) + att.added_us == pytest.approx(sum(ort_us.values()))
    assert all(ort_graph[n][0] in bsc.LAYOUT_OPS or "reshape" in n for n in att.added)
    # the HardSwish pieces onnxruntime runs as nodes of their own are charged to the fused Conv layer
    conv = next(i for i, info in layers.items() if info.name == "p2o.Conv.0")
    assert att.layer_nodes[conv] >= 2
