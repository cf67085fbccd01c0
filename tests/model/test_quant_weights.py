"""Asymmetric per-channel weights and the Conv -> LayerNormalization float16 link (docs/quantization.md,
"What the int8 build does beyond per-tensor min/max")."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import helper
from test_model_quantizer import LIB, _cos, _dataset, _model

from rknnlink.model import format as fmt
from rknnlink.model.builder import (
    BuildConfig,
    build,
    hybrid_quantization_step1,
    hybrid_quantization_step2,
    load_onnx,
)
from rknnlink.model.calibration import quantize_weights, quantize_weights_affine
from rknnlink.model.lower import LNode
from rknnlink.model.precision import fused_links, fused_sum_inputs

RNG = np.random.default_rng(11)
needs_lib = pytest.mark.skipif(LIB is None, reason="simulated NPU library unavailable")


def test_affine_weights_spend_every_level_on_the_channels_own_range():
    w = np.stack([RNG.uniform(0.01, 0.3, 27),       # one sign only: zero point -128
                  RNG.uniform(-0.3, 0.3, 27),       # about symmetric
                  -RNG.uniform(0.01, 0.2, 27),      # negative only: zero point 127
                  np.zeros(27)]).reshape(4, 3, 3, 3).astype(np.float32)
    q, scales, zps = quantize_weights_affine(w, 0)
    assert q.dtype == np.int8 and scales.shape == (4,) and zps.dtype == np.int32
    flat = w.reshape(4, -1).astype(np.float64)
    lo, hi = np.minimum(flat.min(1), 0), np.maximum(flat.max(1), 0)
    np.testing.assert_allclose(scales[:3], (hi - lo)[:3] / 255, rtol=1e-6)
    assert scales[3] == 1.0 and zps[0] == -128 and zps[2] == 127
    deq = (q.reshape(4, -1).astype(np.float64) - zps[:, None]) * scales[:, None]
    assert np.all(np.abs(deq - flat) <= scales[:, None] / 2 * (1 + 1e-5))
    assert np.all(deq[3] == 0)
    # the one-signed channel gets half the symmetric step
    _, sym = quantize_weights(w, 0)
    assert scales[0] < 0.51 * sym[0] and scales[2] < 0.51 * sym[2]
    qt, st, zt = quantize_weights_affine(w, None)
    assert st.shape == (1,) and zt.shape == (1,) and qt.shape == w.shape


def _lnode(op, ins, out, act=None):
    return LNode(op, out, op, ins, [out], act=act)


def test_fused_links_name_their_reader_and_reach_layer_norm_through_views():
    """ConvNeXt: depthwise Conv -> Transpose -> LayerNormalization(x, scale, bias). A fused activation, a
    second reader or a graph output breaks the link; a LayerNorm of a non-accumulating layer has none."""
    nodes = [_lnode("Conv", ["x", "w"], "dw"), _lnode("Transpose", ["dw"], "dwt"),
             _lnode("LayerNormalization", ["dwt", "g", "b"], "ln"),
             _lnode("Gemm", ["ln", "w"], "pw1"), _lnode("Gelu", ["pw1"], "h"),
             _lnode("Gemm", ["h", "w"], "pw2"), _lnode("Add", ["x", "pw2"], "res"),
             _lnode("Conv", ["res", "w"], "relu_conv", act="Relu"),
             _lnode("LayerNormalization", ["relu_conv", "g", "b"], "l2"),
             _lnode("Conv", ["l2", "w"], "shared"), _lnode("LayerNormalization", ["shared", "g", "b"], "l3"),
             _lnode("Relu", ["shared"], "other"),
             _lnode("Conv", ["l3", "w"], "out_conv"), _lnode("LayerNormalization", ["out_conv", "g", "b"], "l4"),
             _lnode("Add", ["l4", "x"], "sum"), _lnode("LayerNormalization", ["sum", "g", "b"], "l5")]
    consts = {"w": 0, "g": 0, "b": 0}
    links = fused_links(nodes, ["out_conv"], consts, {"res": [1, 8, 4, 4]})
    assert links == {"dw": "LayerNormalization", "dwt": "LayerNormalization", "pw1": "Gelu", "pw2": "Add"}
    assert fused_sum_inputs(nodes, ["out_conv"], consts, {"res": [1, 8, 4, 4]}) == set(links)


def _onnx(nodes, inits, shape, opset=13, ir_version=8):
    model = _model(nodes, inits, shape, ["out"])
    model.opset_import[0].version, model.ir_version = opset, ir_version
    return model


def _convnext_block(w_dw, w_pw):
    """Depthwise 7x7 -> NHWC LayerNorm -> NCHW -> 1x1 Conv (the graph output), ConvNeXt's first half."""
    c = w_dw.shape[0]
    inits = {"w_dw": w_dw, "b_dw": RNG.normal(0, 0.1, c), "g": RNG.uniform(0.5, 1.5, c), "beta": RNG.normal(0, 0.1, c),
             "w_pw": w_pw, "b_pw": RNG.normal(0, 0.1, w_pw.shape[0])}
    nodes = [helper.make_node("Conv", ["x", "w_dw", "b_dw"], ["dw"], group=c, kernel_shape=[7, 7], pads=[3] * 4),
             helper.make_node("Transpose", ["dw"], ["dwt"], perm=[0, 2, 3, 1]),
             helper.make_node("LayerNormalization", ["dwt", "g", "beta"], ["ln"], axis=-1, epsilon=1e-6),
             helper.make_node("Transpose", ["ln"], ["lnt"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["lnt", "w_pw", "b_pw"], ["out"])]
    return _onnx(nodes, inits, [1, c, 14, 14], opset=17)


def _fidelity(model, data, xs, config=None):
    result = build(load_onnx(model), config or BuildConfig(progress=False), True, data)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ref, got = [], []
    with LIB.init(result.data) as ctx:
        for x in xs:
            ref.append(sess.run(None, {"x": x})[0].ravel())
            got.append(np.ravel(ctx.infer([x], formats=["nchw"])[0]))
    return _cos(np.concatenate(ref), np.concatenate(got)), {t.name: t for t in result.sim_model.tensors}


@needs_lib
def test_conv_into_layer_norm_writes_float16_with_asymmetric_weights(tmp_path, monkeypatch):
    """The depthwise Conv before the LayerNorm keeps its accumulator in float16 and has asymmetric
    per-channel weights (one-signed channels here: half the symmetric step); the 1x1 Conv that writes the
    graph output stays symmetric (its float16 output is precision.accumulator_outputs'). Both together
    beat the plain int8 build."""
    from rknnlink.model import builder
    c = 16
    w_dw = RNG.uniform(-0.02, 0.2, (c, 1, 7, 7))
    w_pw = RNG.normal(0, 0.3, (24, c, 1, 1))
    model = _convnext_block(w_dw, w_pw)
    shape = [1, c, 14, 14]
    data = _dataset(tmp_path, shape)
    xs = [RNG.standard_normal(shape).astype(np.float32) for _ in range(4)]
    linked, t = _fidelity(model, data, xs)
    assert t["dw"].dtype == fmt.FLOAT16 and t["ln"].dtype == fmt.INT8 and t["out"].dtype == fmt.FLOAT16
    assert t["w_dw"].dtype == fmt.INT8 and t["w_dw"].qnt_type == fmt.QNT_CHANNEL
    assert np.all(t["w_dw"].quant_zero_points < -64)  # mostly positive weights: zero points near -128
    assert not np.any(t["w_pw"].quant_zero_points)
    assert linked > 0.999
    monkeypatch.setattr(builder, "fused_links", lambda nodes, outputs, constants, shapes: {})
    plain, t = _fidelity(model, data, xs)
    assert t["dw"].dtype == fmt.INT8 and not np.any(t["w_dw"].quant_zero_points)
    assert 1 - linked < 0.9 * (1 - plain), (linked, plain)


@needs_lib
def test_layer_norm_link_leaves_float_builds_alone(tmp_path):
    """fp16 and fp32 builds of the same block: no zero points, results as before (onnxruntime)."""
    c = 8
    model = _convnext_block(RNG.uniform(-0.02, 0.2, (c, 1, 7, 7)), RNG.normal(0, 0.3, (8, c, 1, 1)))
    x = RNG.standard_normal([1, c, 14, 14]).astype(np.float32)
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    for dtype, tol in (("float32", 1e-5), ("float16", 2e-3)):
        result = build(load_onnx(model), BuildConfig(progress=False, float_dtype=dtype), False)
        assert all(t.quant_zero_points is None or not np.any(t.quant_zero_points) for t in result.sim_model.tensors)
        with LIB.init(result.data) as ctx:
            got = np.reshape(ctx.infer([x], formats=["nchw"])[0], ref.shape)
        np.testing.assert_allclose(got, ref, atol=tol * np.abs(ref).max())


@needs_lib
def test_gemm_into_gelu_is_asymmetric_and_conv_into_add_stays_symmetric(tmp_path):
    """Of the float16 links, only those read by a float layer (GELU, LayerNorm) get asymmetric weights:
    a Conv into a residual Add keeps max|w| / 127 (asymmetric there lost on EfficientNet-B0)."""
    shape = [1, 16, 32]
    inits = {"w1": RNG.uniform(-0.05, 0.3, (32, 64)), "b1": RNG.normal(0, 0.5, 64), "w2": RNG.normal(0, 0.2, (64, 8))}
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["m1"]), helper.make_node("Add", ["m1", "b1"], ["h"]),
             helper.make_node("Gelu", ["h"], ["g"]), helper.make_node("MatMul", ["g", "w2"], ["out"])]
    model = _onnx(nodes, inits, shape, opset=20, ir_version=9)
    xs = [RNG.standard_normal(shape).astype(np.float32) for _ in range(2)]
    fid, t = _fidelity(model, _dataset(tmp_path, shape), xs)
    assert np.any(t["w1"].quant_zero_points) and not np.any(t["w2"].quant_zero_points)
    assert fid > 0.999

    shape = [1, 8, 10, 10]
    inits = {"w": RNG.uniform(-0.05, 0.3, (8, 8, 3, 3)), "b": RNG.normal(0, 0.2, 8)}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1] * 4),
             helper.make_node("Add", ["y", "x"], ["out"])]
    model = _onnx(nodes, inits, shape)
    fid, t = _fidelity(model, _dataset(tmp_path, shape), [RNG.standard_normal(shape).astype(np.float32)])
    assert t["y"].dtype == fmt.FLOAT16 and not np.any(t["w"].quant_zero_points)
    assert fid > 0.999


def test_hybrid_quantization_keeps_the_asymmetric_weights_and_their_link(tmp_path):
    """Step 1 lists the asymmetric weights per channel with their zero points; step 2 takes only the
    activations' ranges from the cfg and builds the same weights and float16 link."""
    import yaml
    c = 8
    model = _convnext_block(RNG.uniform(-0.02, 0.2, (c, 1, 7, 7)), RNG.normal(0, 0.3, (8, c, 1, 1)))
    data = _dataset(tmp_path, [1, c, 14, 14], n=4)
    direct = {t.name: t for t in build(load_onnx(model), BuildConfig(progress=False), True, data).sim_model.tensors}
    paths = hybrid_quantization_step1(load_onnx(model), BuildConfig(progress=False), data, out_dir=tmp_path)
    params = yaml.safe_load(open(paths[2]).read().split("\n", 2)[2])["quantize_parameters"]
    assert params["w_dw"]["qtype"] == "asym" and params["w_dw"]["qmethod"] == "channel"
    assert params["w_dw"]["zero_point"] == [int(z) for z in direct["w_dw"].quant_zero_points]
    assert params["w_pw"]["qtype"] == "sym"
    again = {t.name: t for t in hybrid_quantization_step2(*paths).sim_model.tensors}
    assert again["dw"].dtype == fmt.FLOAT16
    np.testing.assert_array_equal(again["w_dw"].quant_zero_points, direct["w_dw"].quant_zero_points)
    np.testing.assert_array_equal(again["w_dw"].data, direct["w_dw"].data)
