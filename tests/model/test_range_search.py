"""quantized_algorithm='mmse': the output-aware range search (rknnlink.model.range_search) clips a tail the
histogram mmse keeps when the next layer hardly reads that tail, it is deterministic, and its work is
bounded by a count of single-op runs."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from rknnlink.model import range_search
from rknnlink.model.builder import BuildConfig, build, load_onnx
from rknnlink.runtime import RuntimeLibrary

SIZE = 16


def _tail_model() -> onnx.ModelProto:
    """x (1, 2, 16, 16) in [0, 1] -> Conv A (1x1): a = (x0, 12 x1), a dense bulk in [0, 1] (channel 0) and
    zero but for a tail (3 % of the values) up to 12 (channel 1) -> Conv B (1x1): y = a0 + 0.001 a1.

    a's own squared error is smallest with its whole range (the tail is too heavy to clip), but y is
    made of the bulk: a's int8 step is y's rounding noise, the clipped tail costs y 1000x less than it
    costs a, so the range that is best for y clips a."""
    wa = np.diag([1.0, 12.0]).astype(np.float32).reshape(2, 2, 1, 1)
    ba = np.zeros(2, np.float32)
    wb = np.array([1.0, 0.001], np.float32).reshape(1, 2, 1, 1)
    bb = np.zeros(1, np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in ((wa, "wa"), (ba, "ba"), (wb, "wb"), (bb, "bb"))]
    nodes = [helper.make_node("Conv", ["x", "wa", "ba"], ["a"], name="conv_a", kernel_shape=[1, 1]),
             helper.make_node("Conv", ["a", "wb", "bb"], ["y"], name="conv_b", kernel_shape=[1, 1])]
    graph = helper.make_graph(nodes, "tail",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, SIZE, SIZE])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, SIZE, SIZE])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def _samples(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    xs = np.zeros((n, 1, 2, SIZE, SIZE), np.float32)
    xs[:, 0, 0] = rng.uniform(0, 1, (n, SIZE, SIZE))
    tail = rng.random((n, SIZE, SIZE)) < 0.03
    xs[:, 0, 1] = np.where(tail, rng.uniform(2 / 12, 1, (n, SIZE, SIZE)), 0.0)
    xs[:, 0, :, 0, 0] = 1.0  # every sample reaches the same maximum
    return xs


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tail")
    xs = _samples(6, 0)
    for k, x in enumerate(xs):
        np.save(folder / f"s{k}.npy", x)
    (folder / "dataset.txt").write_text("".join(f"s{k}.npy\n" for k in range(len(xs))))
    return str(folder / "dataset.txt")


def _build(dataset: str, search: bool, monkeypatch):
    monkeypatch.setattr(range_search, "SEARCHED_ALGORITHMS", ("mmse",) if search else ())
    # no cross-layer equalisation (mmse's default): it would rescale a's channels, and this is about a's range
    config = BuildConfig(progress=False, quantized_algorithm="mmse", cross_layer_equalization=False)
    return build(load_onnx(_tail_model()), config, True, dataset=dataset)


def _output_mse(result) -> float:
    xs = _samples(8, 1)  # held out from calibration
    errors = []
    with RuntimeLibrary.load(backend="sim").init(result.data) as ctx:
        for x in xs:
            y = ctx.infer([x], formats=["nchw"])[0].reshape(1, 1, SIZE, SIZE)
            errors.append(float(np.mean((y - (x[:, :1] + 0.012 * x[:, 1:])) ** 2)))
    return float(np.mean(errors))


def test_search_clips_the_tail_the_next_layer_hardly_reads(dataset, monkeypatch):
    plain = _build(dataset, False, monkeypatch)
    searched = _build(dataset, True, monkeypatch)
    hist_hi = plain.quant_params["a"]["max"][0]
    hi = searched.quant_params["a"]["max"][0]
    assert hist_hi > 11.0  # the histogram mmse keeps the tail (the premise of the test)
    assert hi < 0.8 * hist_hi
    assert _output_mse(searched) < 0.6 * _output_mse(plain)


def test_search_is_deterministic(dataset, monkeypatch):
    assert _build(dataset, True, monkeypatch).data == _build(dataset, True, monkeypatch).data


def test_work_is_bounded_by_op_runs(dataset, monkeypatch):
    """Each op runs once per sample, and the readers of each searched tensor once per candidate: here
    conv_a and conv_b, then conv_b for each of a's candidates (y is an output: not searched)."""
    seen = []
    original = range_search.search_ranges

    def spy(*args, **kwargs):
        seen.append(original(*args, **kwargs))
        return seen[-1]

    monkeypatch.setattr(range_search, "search_ranges", spy)
    _build(dataset, True, monkeypatch)
    (result,) = seen
    n = 6
    assert result.searched == 1
    assert 2 * n + 2 * n <= result.op_runs <= 2 * n + (len(range_search.FACTORS) + 2) * n


def test_candidates_surround_the_histogram_choice():
    cands = range_search.candidate_ranges(-1.0, 20.0, 10.0)
    assert cands[0] == (-1.0, 10.0)  # the histogram choice first (it wins ties)
    assert (-1.0, 20.0) in cands  # min/max is always a candidate
    assert all(lo == -1.0 and 0 < hi <= 20.0 for lo, hi in cands)
    assert len(cands) == len(set(cands)) <= len(range_search.FACTORS) + 2
    # a signed tensor is cut at +-T, never beyond its observed ends
    assert range_search.candidate_ranges(-5.0, 4.0, 3.0)[0] == (-3.0, 3.0)


def test_quantise_matches_the_simulator_rounding():
    x = np.array([0.5, 1.5, -0.5, -1.5, 300.0, -300.0], np.float32)
    got = range_search.quantise(x, 1.0, 0)
    np.testing.assert_array_equal(got, [1.0, 2.0, -1.0, -2.0, 127.0, -128.0])  # half away from zero, saturated


def _idle_channel_model(silu: bool = False) -> onnx.ModelProto:
    """x (1, 2, 16, 16) -> Conv (1x1, per-tensor weights in 'layer' mode): y0 = 0.77 x0, y1 = 0.33 x0 + 8 x1.

    The 8 sets the layer's one weight scale, but it multiplies x1, which is 0 in every sample: clipping it
    costs the output nothing and halves the step of the weights that do the work. The weights' own MSE
    (calibration.weight_scales, ratios >= 0.7 of max|w|) keeps it; only the op's output error shows it."""
    w = np.array([[0.77, 0.0], [0.33, 8.0]], np.float32).reshape(2, 2, 1, 1)
    b = np.zeros(2, np.float32)
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c" if silu else "y"], name="conv", kernel_shape=[1, 1])]
    if silu:
        nodes += [helper.make_node("Sigmoid", ["c"], ["g"]), helper.make_node("Mul", ["c", "g"], ["y"])]
    graph = helper.make_graph(nodes, "idle",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, SIZE, SIZE])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, SIZE, SIZE])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def _idle_samples(n: int, seed: int) -> np.ndarray:
    xs = np.zeros((n, 1, 2, SIZE, SIZE), np.float32)
    xs[:, 0, 0] = np.random.default_rng(seed).uniform(0, 1, (n, SIZE, SIZE))
    return xs


def _build_layer(tmp_path, weights: bool, monkeypatch, silu: bool = False):
    xs = _idle_samples(6, 0)
    for k, x in enumerate(xs):
        np.save(tmp_path / f"s{k}.npy", x)
    (tmp_path / "dataset.txt").write_text("".join(f"s{k}.npy\n" for k in range(len(xs))))
    monkeypatch.setattr(range_search, "searches_weights", lambda config: weights)
    config = BuildConfig(progress=False, quantized_algorithm="mmse", quantized_method="layer")
    return build(load_onnx(_idle_channel_model(silu)), config, True, dataset=str(tmp_path / "dataset.txt"))


def test_weight_scale_search_clips_a_weight_whose_input_is_idle(tmp_path, monkeypatch):
    plain = _build_layer(tmp_path, False, monkeypatch)
    searched = _build_layer(tmp_path, True, monkeypatch)
    s_plain, s_searched = plain.quant_params["w"]["scale"][0], searched.quant_params["w"]["scale"][0]
    assert s_plain >= 0.7 * 8.0 / 127  # the weights' own MSE keeps (nearly) the whole 8 (the premise)
    assert s_searched <= 0.6 * 8.0 / 127
    w = np.array([[0.77, 0.0], [0.33, 8.0]], np.float32)
    errors = []
    for result in (plain, searched):
        err = 0.0
        with RuntimeLibrary.load(backend="sim").init(result.data) as ctx:
            for x in _idle_samples(8, 1):  # held out from calibration
                y = ctx.infer([x], formats=["nchw"])[0].reshape(1, 2, SIZE, SIZE)
                err += float(np.mean((y - np.einsum("oc,bchw->bohw", w, x)) ** 2))
        errors.append(err)
    assert errors[1] < 0.8 * errors[0]  # (the int8 input's own rounding is the rest)


def test_weights_are_searched_per_tensor_only():
    assert range_search.searches_weights(BuildConfig(quantized_algorithm="mmse", quantized_method="layer"))
    assert not range_search.searches_weights(BuildConfig(quantized_algorithm="mmse", quantized_method="channel"))


def test_weights_under_a_fused_silu_are_not_searched(tmp_path, monkeypatch):
    """As the empirical bias correction (bias_correction.SKIP_ACTS): with their weights searched the SiLU
    networks lost (YOLOv8n/layer 0.99230 -> 0.99194)."""
    searched = _build_layer(tmp_path, True, monkeypatch, silu=True)
    assert [op.act for op in searched.sim_model.ops if op.op_type == "Conv"] == ["SiLU"]  # the premise: fused
    plain = _build_layer(tmp_path, False, monkeypatch, silu=True)
    assert searched.quant_params["w"]["scale"] == plain.quant_params["w"]["scale"]
