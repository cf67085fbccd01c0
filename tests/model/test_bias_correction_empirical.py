"""Empirical bias correction (rknnlink.model.bias_correction, ``bias_correction='empirical'``, the default):
it removes a mean output shift that comes from the int8 *input* of a layer, which the analytic correction
(weight rounding times the fp32 input's mean) cannot see; it measures through fused activations; and it
leaves a build without such a shift alone."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from rknnlink.model import format as fmt
from rknnlink.model.bias_correction import (
    correctable_layers,
    cross_checked,
    estimate_shift,
    segment_model,
    visible_shift,
)
from rknnlink.model.builder import BuildConfig, BuildError, build, load_onnx


def _planted_model() -> onnx.ModelProto:
    """x (1, 1, 8, 8) in [0, 1] -> Conv A (1x1): channel 0 = 255 x (sets A's int8 step to 1.0), channel 1 =
    0.3 + 0.01 x, which int8 rounds to 0 everywhere: A's int8 output has a mean error of -0.3 in channel 1.
    -> Conv B (1x1, weights [1/127, 1], exactly representable): y = A0 / 127 + A1, shifted by -0.3 in int8.
    B's weights round exactly, so the analytic correction finds nothing to correct."""
    wa = np.array([255.0, 0.01], np.float32).reshape(2, 1, 1, 1)
    ba = np.array([0.0, 0.3], np.float32)
    wb = np.array([1 / 127, 1.0], np.float32).reshape(1, 2, 1, 1)
    bb = np.zeros(1, np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in ((wa, "wa"), (ba, "ba"), (wb, "wb"), (bb, "bb"))]
    nodes = [helper.make_node("Conv", ["x", "wa", "ba"], ["a"], name="conv_a", kernel_shape=[1, 1]),
             helper.make_node("Conv", ["a", "wb", "bb"], ["y"], name="conv_b", kernel_shape=[1, 1])]
    graph = helper.make_graph(nodes, "planted", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 8, 8])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def _dataset(tmp_path, n: int = 6) -> tuple:
    rng = np.random.default_rng(0)
    xs = rng.uniform(0, 1, (n, 1, 1, 8, 8)).astype(np.float32)
    for k, x in enumerate(xs):
        x[0, 0, 0, 0], x[0, 0, 0, 1] = 0.0, 1.0  # every sample spans [0, 1]: the input's step is exact
        np.save(tmp_path / f"s{k}.npy", x)
    (tmp_path / "dataset.txt").write_text("".join(f"s{k}.npy\n" for k in range(n)))
    return tmp_path / "dataset.txt", xs


def _mean_error(model: onnx.ModelProto, tmp_path, mode: str) -> float:
    from rknnlink.runtime import RuntimeLibrary
    dataset, xs = _dataset(tmp_path)
    result = build(load_onnx(model), BuildConfig(progress=False, bias_correction=mode), True, dataset=str(dataset))
    errors = []
    with RuntimeLibrary.load(backend="sim").init(result.data) as ctx:
        for x in xs:
            y = ctx.infer([x], formats=["nchw"])[0].reshape(1, 1, 8, 8)
            ref = (255 * x) / 127 + 0.3 + 0.01 * x
            errors.append(float(np.mean(y - ref)))
    return float(np.mean(errors))


def test_empirical_correction_removes_the_shift_of_an_int8_input(tmp_path):
    model = _planted_model()
    assert _mean_error(model, tmp_path, "off") < -0.25
    assert _mean_error(model, tmp_path, "analytic") < -0.25  # it only sees B's (exact) weight rounding
    assert abs(_mean_error(model, tmp_path, "empirical")) < 0.02  # B's int8 output step is about 0.009
    assert abs(_mean_error(model, tmp_path, None)) < 0.02  # the default


def test_bias_correction_option_is_checked():
    with pytest.raises(BuildError, match="bias_correction"):
        BuildConfig(bias_correction="sometimes").validate()


@pytest.mark.parametrize("act,params", [(None, (0, 0)), ("Relu", (0, 0)), ("Clip", (0.0, 6.0)),
                                        ("LeakyRelu", (0.1, 0)), ("Sigmoid", (0, 0)), ("Tanh", (0, 0)),
                                        ("HardSigmoid", (0.2, 0.5)), ("HardSwish", (0, 0)), ("SiLU", (0, 0))])
def test_visible_shift_recovers_a_shift_before_the_activation(act, params):
    """A pre-activation shift of 0.01 per channel (0.01 and -0.02) is recovered from post-activation
    values alone, through every fusable activation's slope."""
    rng = np.random.default_rng(1)
    pre = rng.uniform(-4, 4, (3, 2, 16, 16))
    delta = np.array([0.01, -0.02]).reshape(1, 2, 1, 1)
    f = {None: lambda v: v, "Relu": lambda v: np.maximum(v, 0), "Clip": lambda v: np.clip(v, 0, 6),
         "LeakyRelu": lambda v: np.where(v > 0, v, 0.1 * v), "Sigmoid": lambda v: 1 / (1 + np.exp(-v)),
         "Tanh": np.tanh, "HardSigmoid": lambda v: np.clip(0.2 * v + 0.5, 0, 1),
         "HardSwish": lambda v: v * np.clip(v + 3, 0, 6) / 6, "SiLU": lambda v: v / (1 + np.exp(-v))}[act]
    num, den = visible_shift(act, params, f(pre + delta), f(pre))
    np.testing.assert_allclose(num / den, [0.01, -0.02], rtol=0.05)


def test_segments_compute_what_the_whole_model_computes(tmp_path):
    """The correction runs the model in pieces (segment_model), feeding a piece with tensors an earlier
    piece computed: conv_a alone, then conv_b fed with conv_a's int8 output, give the whole model's output."""
    from rknnlink.runtime import RuntimeLibrary
    dataset, xs = _dataset(tmp_path)
    result = build(load_onnx(_planted_model()), BuildConfig(progress=False, bias_correction="off"), True,
                   dataset=str(dataset))
    sim = result.sim_model
    layers = correctable_layers(sim)
    assert [ly.name for ly in layers] == ["conv_a", "conv_b"] and [ly.depth for ly in layers] == [0, 1]
    first, fed = segment_model(sim, [layers[0].op], [layers[0].out])
    assert len(first.ops) == 1 and fed == [sim.inputs[0].tensor]
    assert first.tensors[first.outputs[0].tensor].kind == fmt.KIND_OUTPUT
    second, fed = segment_model(sim, [layers[1].op], [layers[1].out])
    assert fed == [layers[0].out] and second.tensors[second.inputs[0].tensor].kind == fmt.KIND_INPUT
    lib = RuntimeLibrary.load(backend="sim")
    with lib.init(result.data) as whole, lib.init(fmt.write_model(first)) as c1, \
            lib.init(fmt.write_model(second)) as c2:
        for x in xs[:2]:
            a = c1.infer([x], formats=["nchw"])[0].reshape(1, 2, 8, 8)
            assert np.all(a[0, 1] == 0)  # 0.3 rounds to 0 on A's step of about 1.0
            y = c2.infer([a], formats=["nchw"])[0]
            np.testing.assert_array_equal(y, whole.infer([x], formats=["nchw"])[0])


def test_quantization_config_lists_the_corrected_bias(tmp_path):
    """The hybrid cfg (BuildResult.quant_params) shows the bias the model holds: conv_b's gains about +0.3."""
    dataset, _ = _dataset(tmp_path)
    model = load_onnx(_planted_model())
    off = build(model, BuildConfig(progress=False, bias_correction="analytic"), True, dataset=str(dataset))
    on = build(model, BuildConfig(progress=False), True, dataset=str(dataset))
    assert abs(off.quant_params["bb"]["min"][0]) < 0.01
    assert 0.25 < on.quant_params["bb"]["min"][0] < 0.35


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_a_channel_with_all_zero_weights_keeps_its_bias(tmp_path):
    """A channel whose weights are all zero (its output is its bias) builds without a non-finite step: the
    shift is divided by the channel's bias scale, which must not be 0 or give NaN/inf in the int32 bias (a
    corpus build of PP-OCRv4's recogniser once warned of an invalid cast there)."""
    model = _planted_model()
    wa = numpy_helper.to_array(model.graph.initializer[0]).copy()
    wa[1] = 0.0  # channel 1 of conv_a: output = its bias 0.3 everywhere
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(wa, "wa"))
    dataset, xs = _dataset(tmp_path)
    result = build(load_onnx(model), BuildConfig(progress=False, bias_correction="empirical"), True,
                   dataset=str(dataset))
    sim = result.sim_model
    for t in sim.tensors:
        if t.data is not None and t.data.dtype == np.int32:
            assert np.all(np.abs(t.data.astype(np.int64)) < 2**31 - 1), t.name
    from rknnlink.runtime import RuntimeLibrary
    with RuntimeLibrary.load(backend="sim").init(result.data) as ctx:
        y = ctx.infer([xs[0]], formats=["nchw"])[0].reshape(1, 1, 8, 8)
    ref = (255 * xs[0]) / 127 + 0.3
    assert np.all(np.isfinite(y))
    assert abs(float(np.mean(y - ref))) < 0.05


def test_a_per_channel_shift_is_kept_only_where_both_halves_of_the_samples_confirm_it():
    """cross_checked: per channel, the even and the odd samples must measure a shift of one sign, within
    CROSS_CHECK_RATIO of each other; else that channel is not moved. Channels: 0 the same shift in every
    sample (kept, the whole mean); 1 +0.3 in the even samples and -0.1 in the odd ones (dropped, although
    the whole mean is +0.1); 2 one sign but 0.4 against 0.1 (dropped); 3 enough positions over all the
    samples but too few in each half (dropped)."""
    def part(shifts, weight=8.0):  # visible_shift's (sum of error, sum of slope) for one sample
        w = np.array([weight, weight, weight, 1.0])
        return np.asarray(shifts) * w, w

    even, odd = [0.2, 0.3, 0.4, 0.5], [0.2, -0.1, 0.1, 0.5]
    parts = [part(even if k % 2 == 0 else odd) for k in range(6)]
    got = cross_checked(parts)
    np.testing.assert_allclose(got, [0.2, 0.0, 0.0, 0.0], atol=1e-12)
    assert estimate_shift(parts)[1] == pytest.approx(0.1)  # what the plain estimate would have applied
    np.testing.assert_allclose(cross_checked(parts[:3]), estimate_shift(parts[:3]))  # too few samples to split


def _planted_gemm_model() -> onnx.ModelProto:
    """The planted shift of _planted_model through two Gemms: x (1, 4) in [0, 1] -> Gemm A: a0 = 255 x3
    (A's int8 step about 1.0), a1 = 0.3 + 0.01 x2, which int8 rounds to 0 -> Gemm B: y = a0 / 127 + a1,
    weights exact, shifted by -0.3 in int8. One value per sample and channel, as in a classifier's head."""
    wa = np.array([[0, 0, 0, 255.0], [0, 0, 0.01, 0]], np.float32)
    ba = np.array([0.0, 0.3], np.float32)
    wb = np.array([[1 / 127, 1.0]], np.float32)
    bb = np.zeros(1, np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in ((wa, "wa"), (ba, "ba"), (wb, "wb"), (bb, "bb"))]
    nodes = [helper.make_node("Gemm", ["x", "wa", "ba"], ["a"], name="fc_a", transB=1),
             helper.make_node("Gemm", ["a", "wb", "bb"], ["y"], name="fc_b", transB=1)]
    graph = helper.make_graph(nodes, "planted_fc", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


@pytest.mark.parametrize("method,corrected", [("channel", True), ("layer", False)])
def test_a_gemm_keeps_the_analytic_correction_in_per_tensor_builds(tmp_path, method, corrected):
    """PER_TENSOR_ANALYTIC_HEADS: with per-tensor weights, a Gemm with one output value per channel keeps
    the analytic correction (its measured shift is a mean over as many values as there are calibration
    images); a per-channel build corrects it (every sample measures the same shift, both halves confirm it)."""
    rng = np.random.default_rng(0)
    for k in range(8):
        x = rng.uniform(0, 1, (1, 4)).astype(np.float32)
        x[0, 3] = float(k % 2)  # every half of the samples spans a3's range [0, 255]
        np.save(tmp_path / f"s{k}.npy", x)
    (tmp_path / "dataset.txt").write_text("".join(f"s{k}.npy\n" for k in range(8)))
    result = build(load_onnx(_planted_gemm_model()), BuildConfig(progress=False, quantized_method=method), True,
                   dataset=str(tmp_path / "dataset.txt"))
    moved = result.quant_params["bb"]["min"][0]
    assert (0.25 < moved < 0.35) if corrected else abs(moved) < 0.01
