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
