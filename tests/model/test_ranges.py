"""Activation range choice beyond min/max (rknnlink.model.ranges, ``activation_clipping='auto'``): a
heavy-tailed tensor is clipped and quantises with less error, a short-tailed one keeps min/max, and the
default build keeps the toolkit's min/max."""

from __future__ import annotations

import factories as fac
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from rknnlink.model.builder import BuildConfig, BuildError, build, load_onnx
from rknnlink.model.calibration import TensorStats
from rknnlink.model.ranges import _centres, clipped_range, quantisation_mse


def _stats(x: np.ndarray) -> TensorStats:
    st = TensorStats()
    st.update_range(x)
    st.update_hist(x, ("signed",))
    return st


def test_heavy_tailed_tensor_is_clipped_and_loses_less():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal(200_000), [60.0, -45.0]]).astype(np.float32)  # two outliers
    st = _stats(x)
    lo, hi, rule = clipped_range(st, gain=2.0)
    assert rule != "minmax" and -45.0 < lo < 0 < hi < 60.0
    centres, weights = _centres(st.hist, st.min, st.max)
    assert quantisation_mse(centres, weights, lo, hi) * 2 <= quantisation_mse(centres, weights, st.min, st.max)
    assert clipped_range(st, gain=1e3)[2] == "minmax"  # the bar: no candidate lowers the error 1000x


@pytest.mark.parametrize("kind", ["uniform", "relu_uniform"])
def test_short_tailed_tensor_keeps_min_max(kind):
    rng = np.random.default_rng(1)
    x = rng.uniform(-3, 5, 100_000) if kind == "uniform" else np.maximum(rng.uniform(-3, 5, 100_000), 0)
    st = _stats(x.astype(np.float32))
    assert clipped_range(st) == (st.min, st.max, "minmax")


def test_one_sided_tensor_keeps_its_exact_zero():
    rng = np.random.default_rng(2)
    x = np.maximum(rng.standard_t(3, 100_000), 0).astype(np.float32)  # a ReLU output with a long tail
    lo, hi, rule = clipped_range(_stats(x), gain=1.0)
    assert rule != "minmax" and lo == 0.0 and hi < float(x.max())


SIZE = 128


def _conv_model():
    w = np.random.default_rng(3).normal(0, 0.5, (4, 3, 1, 1)).astype(np.float32)
    conv = helper.make_node("Conv", ["x", "w"], ["out"], name="conv")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, SIZE, SIZE])
    graph = helper.make_graph([conv], "clip", [x],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def test_build_option(tmp_path):
    # normal inputs with two values that stretch min/max 10x: worth clipping among 200,000
    rng = np.random.default_rng(5)
    images = rng.standard_normal((4, SIZE, SIZE, 3)).astype(np.float32)
    images[0, 5, 5, 0], images[1, 7, 7, 1] = 60.0, -45.0
    dataset = fac.write_npy_dataset(tmp_path, images)
    ranges = {}
    for mode in (None, "auto"):
        cfg = BuildConfig(progress=False, activation_clipping=mode)
        result = build(load_onnx(_conv_model()), cfg, True, dataset)
        ranges[mode] = {k: (np.min(v["min"]), np.max(v["max"])) for k, v in result.quant_params.items()
                        if "min" in v}
    assert ranges[None]["x"] == pytest.approx((images.min(), images.max()))  # default: min/max ('normal')
    for name in ("x", "out"):
        lo, hi = ranges["auto"][name]
        assert ranges[None][name][0] <= lo < 0 < hi < ranges[None][name][1]
        assert hi - lo < 0.6 * (ranges[None][name][1] - ranges[None][name][0])
    with pytest.raises(BuildError, match="activation_clipping"):
        build(load_onnx(_conv_model()), BuildConfig(progress=False, activation_clipping="percentile"), True, dataset)


def test_sigmoid_scores_joined_with_pixel_boxes_stay_float16(tmp_path):
    """YOLOv8's head: Concat(boxes in pixels, Sigmoid scores) runs in float16 (precision.py), and the
    Sigmoid that makes the scores writes float16 too instead of rounding them to their own int8 grid first
    (scores far below the calibration's maximum would all round to 0)."""
    import onnxruntime as ort

    from rknnlink.model import format as fmt
    from rknnlink.runtime import RuntimeLibrary

    rng = np.random.default_rng(8)
    w = rng.normal(0, 1.0, (8, 3, 1, 1)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["f"], name="conv", kernel_shape=[1, 1]),
             helper.make_node("Mul", ["f", "k"], ["boxes"], name="boxes"),
             helper.make_node("Add", ["f", "shift"], ["logits"], name="logits"),
             helper.make_node("Sigmoid", ["logits"], ["scores"], name="sigmoid"),
             helper.make_node("Concat", ["boxes", "scores"], ["out"], name="head", axis=1)]
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.float32(300.0), "k"),
             numpy_helper.from_array(np.float32(-6.0), "shift")]
    graph = helper.make_graph(nodes, "head", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    dataset = fac.write_npy_dataset(tmp_path, rng.standard_normal((4, 8, 8, 3)).astype(np.float32) * 2)
    result = build(load_onnx(model), BuildConfig(progress=False), True, dataset)
    tensors = {t.name: t for t in result.sim_model.tensors}
    assert tensors["out"].dtype == fmt.FLOAT16 and tensors["scores"].dtype == fmt.FLOAT16
    assert tensors["f"].dtype == fmt.INT8  # the layers before it stay int8
    x = (rng.standard_normal((1, 3, 8, 8)) * 0.3).astype(np.float32)  # small inputs: scores near sigmoid(-6)
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    with RuntimeLibrary.load(backend="sim").init(result.data) as ctx:
        got = np.asarray(ctx.infer([x], formats=["nchw"])[0]).reshape(ref.shape)
    s_ref, s_got = ref[:, 8:].ravel(), got[:, 8:].ravel()
    assert np.corrcoef(s_ref, s_got)[0, 1] > 0.95
