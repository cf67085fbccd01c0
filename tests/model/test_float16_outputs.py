"""Graph outputs written by a Conv/Gemm are float16 in int8 builds (precision.accumulator_outputs): the
int32 accumulator is rescaled and written without the int8 rounding that clipped the values to the
calibrated range. It must fire there (through views), and not behind a fused activation, on an output
another layer reads, on a non-accumulating producer, or in float builds."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import helper
from test_model_quantizer import LIB, _cos, _dataset, _model

from rknnlink.model import builder
from rknnlink.model import format as fmt
from rknnlink.model.builder import BuildConfig, build, load_onnx
from rknnlink.model.lower import LNode
from rknnlink.model.precision import OUTPUT_LINK, accumulator_outputs

RNG = np.random.default_rng(23)
needs_lib = pytest.mark.skipif(LIB is None, reason="simulated NPU library unavailable")


def _lnode(op, ins, out, act=None):
    return LNode(op, out, op, ins, [out], act=act)


def test_accumulator_outputs_fire_through_views_and_only_there():
    nodes = [_lnode("Conv", ["x", "w"], "c1"), _lnode("Reshape", ["c1", "s"], "flat"),
             _lnode("Gemm", ["flat", "w"], "logits"),                     # output, no reader: float16
             _lnode("Conv", ["x", "w"], "c2"), _lnode("Transpose", ["c2"], "c2t"),
             _lnode("Reshape", ["c2t", "s"], "boxes"),                    # views to an output: the whole chain
             _lnode("Conv", ["x", "w"], "relu_out", act="Relu"),          # fused activation: stays int8
             _lnode("Gemm", ["flat", "w"], "read"), _lnode("Relu", ["read"], "r2"),  # read by a layer: int8
             _lnode("Conv", ["x", "w"], "shared"), _lnode("Reshape", ["shared", "s"], "view_out"),
             _lnode("Relu", ["shared"], "r3"),                            # the view's source has 2 readers
             _lnode("Conv", ["x", "w"], "c4"), _lnode("Softmax", ["c4"], "probs")]  # not accumulating
    outputs = ["logits", "boxes", "relu_out", "read", "view_out", "probs", "r2", "r3"]
    links = accumulator_outputs(nodes, outputs)
    assert links == dict.fromkeys(["logits", "boxes", "c2t", "c2"], OUTPUT_LINK)


def _gemm_head(n_out=10):
    """x (1, 4, 4, 4) -> Conv 3x3 + Relu -> GlobalAveragePool -> Flatten -> Gemm (the graph output)."""
    c = 8
    inits = {"w": RNG.normal(0, 0.3, (c, 4, 3, 3)), "b": RNG.normal(0, 0.1, c),
             "wg": RNG.normal(0, 0.3, (n_out, c)), "bg": RNG.normal(0, 0.1, n_out)}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[3, 3], pads=[1] * 4),
             helper.make_node("Relu", ["c"], ["r"]), helper.make_node("GlobalAveragePool", ["r"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "wg", "bg"], ["out"], transB=1)]
    return _model(nodes, inits, [1, 4, 4, 4], ["out"])


def _run(model, data, xs, monkeypatch=None, quantize=True, **cfg):
    result = build(load_onnx(model), BuildConfig(progress=False, **cfg), quantize, data)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ref, got = [], []
    with LIB.init(result.data) as ctx:
        for x in xs:
            ref.append(sess.run(None, {"x": x})[0].ravel())
            got.append(np.ravel(ctx.infer([x], formats=["nchw"])[0]))
    out = result.sim_model.tensors[result.sim_model.outputs[0].tensor]
    return np.concatenate(ref), np.concatenate(got), out


def _linear(n_in=64, n_out=10):
    """x (1, n_in, 1, 1) -> Flatten -> Gemm: the graph output; its weights."""
    w = RNG.normal(0, 0.3, (n_out, n_in))
    nodes = [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("Gemm", ["f", "w", "b"], ["out"], transB=1)]
    return _model(nodes, {"w": w, "b": RNG.normal(0, 0.1, n_out)}, [1, n_in, 1, 1], ["out"]), w


def _uniform_dataset(tmp_path, shape, n=8):
    for i in range(n):
        np.save(tmp_path / f"u{i}.npy", RNG.uniform(-1, 1, shape).astype(np.float32))
    (tmp_path / "dataset.txt").write_text("\n".join(f"u{i}.npy" for i in range(n)))
    return str(tmp_path / "dataset.txt")


@needs_lib
@pytest.mark.parametrize("method", ["channel", "layer"])
def test_an_input_beyond_calibration_keeps_its_logits(tmp_path, monkeypatch, method):
    """Calibrated on uniform inputs in [-1, 1]; run on inputs in the same range aligned with one class's
    weights, whose logit is several times what calibration saw: the int8 output clipped it to the
    calibrated range, the float16 one keeps it."""
    model, w = _linear()
    data = _uniform_dataset(tmp_path, [1, 64, 1, 1])
    xs = [np.sign(w[k]).reshape(1, 64, 1, 1).astype(np.float32) * 0.98 for k in range(4)]
    ref, got, out = _run(model, data, xs, quantized_method=method)
    assert out.dtype == fmt.FLOAT16 and out.kind == fmt.KIND_OUTPUT
    monkeypatch.setattr(builder, "accumulator_outputs", lambda nodes, outputs: {})
    ref8, got8, out8 = _run(model, data, xs, quantized_method=method)
    assert out8.dtype == fmt.INT8
    np.testing.assert_array_equal(ref, ref8)
    hi8 = (127 - out8.zero_point) * out8.scale
    assert ref.max() > 2 * hi8 and got8.max() <= hi8 * (1 + 1e-6)  # int8: clipped at the calibrated end
    assert got.max() > 0.95 * ref.max()
    assert 1 - _cos(ref, got) < 0.2 * (1 - _cos(ref, got8)), (_cos(ref, got), _cos(ref, got8))


@needs_lib
def test_in_range_outputs_lose_only_the_last_rounding(tmp_path, monkeypatch):
    """Inputs like the calibration's: the float16 output is the int8 one without its rounding, so within
    half an int8 step of it (the same accumulator, the same int8 network before it)."""
    model = _gemm_head()
    data = _dataset(tmp_path, [1, 4, 4, 4])
    xs = [RNG.standard_normal((1, 4, 4, 4)).astype(np.float32) * 0.5 for _ in range(4)]
    ref, got, _ = _run(model, data, xs, bias_correction="analytic")
    monkeypatch.setattr(builder, "accumulator_outputs", lambda nodes, outputs: {})
    _, got8, out8 = _run(model, data, xs, bias_correction="analytic")
    assert np.max(np.abs(got - got8)) <= 0.5 * out8.scale * (1 + 1e-2) + 1e-3 * np.abs(got).max()
    assert _cos(ref, got) >= _cos(ref, got8) - 1e-6


@needs_lib
def test_a_fused_activation_output_and_float_builds_are_left_alone(tmp_path):
    c = 6
    inits = {"w": RNG.normal(0, 0.3, (c, 4, 3, 3)), "b": RNG.normal(0, 0.1, c)}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[3, 3], pads=[1] * 4),
             helper.make_node("Relu", ["c"], ["out"])]
    model = _model(nodes, inits, [1, 4, 8, 8], ["out"])
    data = _dataset(tmp_path, [1, 4, 8, 8])
    result = build(load_onnx(model), BuildConfig(progress=False), True, data)
    assert result.sim_model.tensors[result.sim_model.outputs[0].tensor].dtype == fmt.INT8
    head = _gemm_head()
    for dtype, want in (("float16", fmt.FLOAT16), ("float32", fmt.FLOAT32)):
        r = build(load_onnx(head), BuildConfig(progress=False, float_dtype=dtype), False)
        assert r.sim_model.tensors[r.sim_model.outputs[0].tensor].dtype == want


def test_a_pre_quantised_model_keeps_its_int8_output():
    """fixed_ranges (a QDQ model's own parameters, model/prequant.py) include the output's: it stays int8
    with that range, while the same model calibrated gets the float16 output."""
    model, _ = _linear()
    result = build(load_onnx(model), BuildConfig(progress=False), True, None,
                   fixed_ranges={"x": (-1.0, 1.0), "f": (-1.0, 1.0), "out": (-4.0, 4.0)})
    out = result.sim_model.tensors[result.sim_model.outputs[0].tensor]
    assert out.dtype == fmt.INT8 and out.scale == pytest.approx(8.0 / 255, rel=1e-3)
