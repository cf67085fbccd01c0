"""The int8 quantizer beyond min/max: bias correction, float16 for outputs that mix scales, and int8
depthwise convolutions with non-clamping fused activations, each against onnxruntime fp32."""

from __future__ import annotations

import logging

import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from rknnlink.model import format as fmt
from rknnlink.model.builder import BuildConfig, build, hybrid_quantization_step1, hybrid_quantization_step2, load_onnx
from rknnlink.model.calibration import quantize_weights, weight_error_shift
from rknnlink.model.lower import LNode
from rknnlink.model.precision import fused_sum_inputs

try:
    from rknnlink.runtime import RuntimeLibrary

    LIB = RuntimeLibrary.load(backend="sim")
except Exception:
    LIB = None

RNG = np.random.default_rng(3)


def _model(nodes, inits, shape, outputs):
    graph = helper.make_graph(nodes, "q", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
                              [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def _dataset(tmp_path, shape, n=6, mean=0.0):
    lines = []
    for i in range(n):
        np.save(tmp_path / f"{i}.npy", (RNG.standard_normal(shape) + mean).astype(np.float32))
        lines.append(f"{i}.npy")
    (tmp_path / "dataset.txt").write_text("\n".join(lines))
    return str(tmp_path / "dataset.txt")


def _cos(a, b):
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _run_both(model, x, data):
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    with LIB.init(data) as ctx:
        got = ctx.infer([x], formats=["nchw"])
    return ref, got


@pytest.mark.skipif(LIB is None, reason="simulated NPU library unavailable")
@pytest.mark.parametrize("act", ["SiLU", "HardSwish", "Relu"])
def test_int8_depthwise_3x3_applies_its_fused_activation(tmp_path, act):
    """The vectorised 3x3 depthwise kernel once stored the pre-activation for SiLU/HardSwish (cos 0.98)."""
    c, shape = 8, [1, 8, 40, 40]
    inits = {"w": RNG.normal(0, 0.5, (c, 1, 3, 3)), "b": RNG.normal(0, 0.2, c)}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], group=c, kernel_shape=[3, 3], pads=[1] * 4)]
    if act == "SiLU":
        nodes += [helper.make_node("Sigmoid", ["y"], ["s"]), helper.make_node("Mul", ["y", "s"], ["out"])]
    else:
        nodes += [helper.make_node(act, ["y"], ["out"])]
    model = _model(nodes, inits, shape, ["out"])
    if act == "HardSwish":
        model.opset_import[0].version = 14
    result = build(load_onnx(model), BuildConfig(progress=False), True, _dataset(tmp_path, shape))
    assert [(op.op_type, op.act) for op in result.sim_model.ops] == [("Conv", act)]
    x = RNG.standard_normal(shape).astype(np.float32)
    ref, got = _run_both(model, x, result.data)
    assert _cos(ref[0], got[0]) > 0.999


def test_weight_error_shift_is_the_mean_output_error_of_rounded_weights():
    w = RNG.normal(0, 0.3, (6, 4, 3, 3)).astype(np.float32)
    q, s = quantize_weights(w, 0)
    deq = q.astype(np.float64) * s.reshape(-1, 1, 1, 1)
    mean = RNG.normal(1.0, 0.5, 4)
    x = torch.from_numpy(np.broadcast_to(mean.reshape(1, 4, 1, 1), (1, 4, 9, 9)).copy())
    diff = (torch.nn.functional.conv2d(x, torch.from_numpy(deq)) - torch.nn.functional.conv2d(x, torch.from_numpy(
        w.astype(np.float64)))).numpy()
    np.testing.assert_allclose(weight_error_shift(w, deq, mean, "Conv"), diff[0, :, 3, 3], rtol=1e-9, atol=1e-12)
    dw = RNG.normal(0, 0.3, (4, 1, 3, 3)).astype(np.float32)
    q, s = quantize_weights(dw, 0)
    deq = q.astype(np.float64) * s.reshape(-1, 1, 1, 1)
    got = weight_error_shift(dw, deq, mean, "Conv", group=4)
    np.testing.assert_allclose(got, (deq - dw).reshape(4, -1).sum(1) * mean, rtol=1e-9)
    g = RNG.normal(0, 0.3, (5, 4)).astype(np.float32)  # Gemm B with transB=1: (N, K)
    q, s = quantize_weights(g, 0)
    deq = q.astype(np.float64) * s.reshape(-1, 1)
    np.testing.assert_allclose(weight_error_shift(g, deq, mean, "Gemm", trans_b=1), (deq - g) @ mean)


def test_bias_correction_changes_the_int8_bias_by_the_shift(tmp_path):
    shape = [1, 4, 12, 12]
    w = RNG.normal(0, 0.3, (6, 4, 3, 3)).astype(np.float32)
    b = RNG.normal(0, 0.1, 6).astype(np.float32)
    model = _model([helper.make_node("Conv", ["x", "w", "b"], ["out"], kernel_shape=[3, 3])], {"w": w, "b": b},
                   shape, ["out"])
    result = build(load_onnx(model), BuildConfig(progress=False), True, _dataset(tmp_path, shape, mean=2.0))
    op = result.sim_model.ops[0]
    xt, wt, bt = (result.sim_model.tensors[i] for i in op.inputs)
    plain = np.round(b / (xt.scale * wt.quant_scales))
    assert not np.array_equal(bt.data, plain)  # inputs with mean 2 make the correction visible
    deq = wt.data.astype(np.float64) * np.asarray(wt.quant_scales, np.float64).reshape(-1, 1, 1, 1)
    shift = weight_error_shift(w, deq, np.full(4, 2.0), "Conv")
    np.testing.assert_allclose(bt.data * bt.quant_scales, b - shift, atol=2 * float(np.max(bt.quant_scales)) + 2e-3)


@pytest.mark.skipif(LIB is None, reason="simulated NPU library unavailable")
def test_output_concatenating_boxes_and_scores_stays_float16_with_a_warning(tmp_path, caplog):
    """A detector head joins pixel boxes (0..500) with 0..1 scores: one int8 scale would zero the scores."""
    shape = [1, 3, 8, 8]
    inits = {"w": RNG.normal(0, 0.5, (8, 3, 1, 1)), "k": np.float32(300.0)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["f"], kernel_shape=[1, 1]),
             helper.make_node("Sigmoid", ["f"], ["sg"]),
             helper.make_node("Mul", ["sg", "k"], ["boxes"]),
             helper.make_node("Sigmoid", ["f"], ["scores"]),
             helper.make_node("Concat", ["boxes", "scores"], ["out"], axis=1)]
    model = _model(nodes, inits, shape, ["out"])
    with caplog.at_level(logging.WARNING, logger="rknnlink.model.precision"):
        result = build(load_onnx(model), BuildConfig(progress=False), True, _dataset(tmp_path, shape))
    assert any("'out'" in r.getMessage() and "float16" in r.getMessage() for r in caplog.records)
    out = result.sim_model.tensors[result.sim_model.outputs[0].tensor]
    assert out.dtype == fmt.FLOAT16
    x = RNG.standard_normal(shape).astype(np.float32)
    ref, got = _run_both(model, x, result.data)
    scores_ref, scores_got = ref[0][:, 8:], np.asarray(got[0]).reshape(ref[0].shape)[:, 8:]
    assert _cos(scores_ref - scores_ref.mean(), scores_got - scores_got.mean()) > 0.99


@pytest.mark.skipif(LIB is None, reason="simulated NPU library unavailable")
def test_linear_bias_in_the_accumulator_beats_rounding_the_product_first(tmp_path, monkeypatch):
    """Transformer projections, MatMul(x, W) + b on 3-D tensors: as one Gemm the int8 output is rounded
    once; as MatMul then Add it was rounded twice."""
    from rknnlink.model import rewrite
    shape = [1, 16, 32]
    inits = {"w1": RNG.normal(0, 0.2, (32, 48)), "b1": RNG.normal(0, 1.0, 48),
             "w2": RNG.normal(0, 0.2, (48, 24)), "b2": RNG.normal(0, 1.0, 24)}
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["m1"]), helper.make_node("Add", ["m1", "b1"], ["h"]),
             helper.make_node("Tanh", ["h"], ["t"]),
             helper.make_node("MatMul", ["t", "w2"], ["m2"]), helper.make_node("Add", ["b2", "m2"], ["out"])]
    model = _model(nodes, inits, shape, ["out"])
    data = _dataset(tmp_path, shape, n=8)
    xs = [RNG.standard_normal(shape).astype(np.float32) for _ in range(4)]

    def fidelity():
        result = build(load_onnx(model), BuildConfig(progress=False), True, data)
        pairs = [_run_both(model, x, result.data) for x in xs]
        ref = np.concatenate([r[0].ravel() for r, _ in pairs])
        return _cos(ref, np.concatenate([np.ravel(g[0]) for _, g in pairs])), result

    fused, result = fidelity()
    assert [op.op_type for op in result.sim_model.ops].count("Gemm") == 2
    assert result.tensor_map["t::2d"] == "t"  # a rewrite-made view maps to the ONNX tensor it reshapes
    monkeypatch.setattr(rewrite, "fuse_linear_bias", lambda nodes, pg: nodes)
    separate, result = fidelity()
    assert "Gemm" not in [op.op_type for op in result.sim_model.ops]
    assert fused > separate, (fused, separate)
    assert 1 - fused < 0.8 * (1 - separate), (fused, separate)


def _residual_model():
    """Stem Conv+Relu, an identity block (Conv+Relu, Conv, Add with the stem, Relu) and a downsampling block
    (Conv+Relu, Conv, and a 1x1 Conv of the block input, both into one Add, Relu); ResNet's two Add forms."""
    c = 8
    w = {k: RNG.normal(0, 0.4, (c, c if k != "w0" else 3, 3, 3)) for k in ("w0", "w1", "w2", "w3", "w4")}
    w["wd"] = RNG.normal(0, 0.4, (c, c, 1, 1))
    inits = {**w, **{f"b{k[1:]}": RNG.normal(0, 0.2, c) for k in w}}
    pads = [1] * 4

    def conv(i, k, o, **kw):
        return helper.make_node("Conv", [i, k, "b" + k[1:]], [o], kernel_shape=list(inits[k].shape[2:]), **kw)

    nodes = [conv("x", "w0", "c0", pads=pads), helper.make_node("Relu", ["c0"], ["r0"]),
             conv("r0", "w1", "c1", pads=pads), helper.make_node("Relu", ["c1"], ["r1"]),
             conv("r1", "w2", "c2", pads=pads), helper.make_node("Add", ["c2", "r0"], ["a1"]),
             helper.make_node("Relu", ["a1"], ["r2"]),
             conv("r2", "w3", "c3", pads=pads, strides=[2, 2]), helper.make_node("Relu", ["c3"], ["r3"]),
             conv("r3", "w4", "c4", pads=pads), conv("r2", "wd", "d", strides=[2, 2]),
             helper.make_node("Add", ["c4", "d"], ["a2"]), helper.make_node("Relu", ["a2"], ["out"])]
    return _model(nodes, inits, [1, 3, 24, 24], ["out"])


@pytest.mark.skipif(LIB is None, reason="simulated NPU library unavailable")
def test_conv_into_a_residual_add_is_summed_before_one_requantisation(tmp_path, monkeypatch):
    """The NPU (and RKNN-Toolkit2) fuse Conv + residual Add: the Conv output is not rounded to int8 before
    the sum. Here that Conv writes float16 from its int8 arithmetic and the Add requantises once."""
    from rknnlink.model import builder
    model = _residual_model()
    data = _dataset(tmp_path, [1, 3, 24, 24], n=8)
    xs = [RNG.standard_normal((1, 3, 24, 24)).astype(np.float32) for _ in range(4)]

    def run():
        result = build(load_onnx(model), BuildConfig(progress=False), True, data)
        pairs = [_run_both(model, x, result.data) for x in xs]
        ref = np.concatenate([r[0].ravel() for r, _ in pairs])
        by_name = {t.name: t for t in result.sim_model.tensors}
        return _cos(ref, np.concatenate([np.ravel(g[0]) for _, g in pairs])), by_name

    fused, t = run()
    # identity block: the Conv; downsampling block: the Add's second operand (the toolkit's choice)
    assert t["c2"].dtype == fmt.FLOAT16 and t["d"].dtype == fmt.FLOAT16
    assert t["c4"].dtype == fmt.INT8  # one operand per Add
    assert t["w2"].dtype == fmt.INT8 and t["wd"].dtype == fmt.INT8  # the Conv itself stays int8
    assert all(t[n].dtype == fmt.INT8 for n in ("r0", "r1", "r2", "r3", "out"))
    monkeypatch.setattr(builder, "fused_links", lambda nodes, outputs, constants, shapes: {})
    separate, t = run()
    assert t["c2"].dtype == fmt.INT8
    assert fused > separate


def _lnode(op, ins, out, act=None):
    return LNode(op, out, op, ins, [out], act=act)


def test_fused_sum_inputs_skip_shared_constant_and_output_operands():
    nodes = [_lnode("Conv", ["x", "w"], "shared"), _lnode("Conv", ["x", "w"], "relu_conv", act="Relu"),
             _lnode("Conv", ["x", "w"], "graph_out"), _lnode("Conv", ["x", "w"], "plain"),
             _lnode("Add", ["shared", "x"], "a1"), _lnode("Conv", ["shared", "w"], "reader"),
             _lnode("Add", ["x", "relu_conv"], "a2"), _lnode("Add", ["graph_out", "x"], "a3"),
             _lnode("Add", ["plain", "k"], "a4")]
    shapes = {f"a{i}": [1, 8, 4, 4] for i in range(1, 7)}
    assert fused_sum_inputs(nodes, ["graph_out"], {"w": 0, "k": 0}, shapes) == set()
    nodes += [_lnode("Conv", ["x", "w"], "alone"), _lnode("Add", ["alone", "x"], "a5")]
    assert fused_sum_inputs(nodes, ["graph_out"], {"w": 0, "k": 0}, shapes) == {"alone"}
    # token residuals (3-D, transformers) keep the int8 rounding
    nodes += [_lnode("Conv", ["x", "w"], "tokens"), _lnode("Add", ["tokens", "x"], "a6")]
    assert fused_sum_inputs(nodes, ["graph_out"], {"w": 0, "k": 0}, {**shapes, "a6": [1, 16, 8]}) == {"alone"}


def test_fused_sum_inputs_follow_views_to_a_residual_add_or_gelu():
    """ConvNeXt: Gemm -> Reshape -> Gelu, and Gemm -> Reshape -> Transpose -> residual Add; the toolkit keeps
    both Gemm outputs off the int8 grid. A view with a second reader, or a Gemm with a fused activation,
    breaks the chain."""
    nodes = [_lnode("Gemm", ["x", "w"], "g1"), _lnode("Reshape", ["g1"], "g1v"), _lnode("Gelu", ["g1v"], "h"),
             _lnode("Gemm", ["h", "w"], "g2"), _lnode("Reshape", ["g2"], "g2v"), _lnode("Transpose", ["g2v"], "g2t"),
             _lnode("Add", ["x", "g2t"], "a"),
             _lnode("Gemm", ["a", "w"], "g3", act="Relu"), _lnode("Gelu", ["g3"], "h3"),
             _lnode("Gemm", ["h3", "w"], "g4"), _lnode("Transpose", ["g4"], "g4t"), _lnode("Add", ["g4t", "x"], "a4"),
             _lnode("Relu", ["g4t"], "other_reader")]
    shapes = {"a": [1, 8, 4, 4], "a4": [1, 8, 4, 4]}
    assert fused_sum_inputs(nodes, [], {"w": 0}, shapes) == {"g1", "g1v", "g2", "g2v", "g2t"}


@pytest.mark.skipif(LIB is None, reason="simulated NPU library unavailable")
def test_gemm_into_gelu_writes_float16_and_gelu_requantises_once(tmp_path):
    shape = [1, 16, 32]
    inits = {"w1": RNG.normal(0, 0.3, (32, 64)), "b1": RNG.normal(0, 0.5, 64), "w2": RNG.normal(0, 0.2, (64, 8))}
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["m1"]), helper.make_node("Add", ["m1", "b1"], ["h"]),
             helper.make_node("Gelu", ["h"], ["g"]), helper.make_node("MatMul", ["g", "w2"], ["out"])]
    model = _model(nodes, inits, shape, ["out"])
    model.opset_import[0].version = 20
    model.ir_version = 9
    result = build(load_onnx(model), BuildConfig(progress=False), True, _dataset(tmp_path, shape, n=8))
    by_name = {t.name: t for t in result.sim_model.tensors}
    gelu = next(op for op in result.sim_model.ops if op.op_type == "Gelu")
    assert result.sim_model.tensors[gelu.inputs[0]].dtype == fmt.FLOAT16
    assert result.sim_model.tensors[gelu.outputs[0]].dtype == fmt.INT8
    assert by_name["w1"].dtype == fmt.INT8
    x = RNG.standard_normal(shape).astype(np.float32)
    ref, got = _run_both(model, x, result.data)
    assert _cos(ref[0], np.reshape(got[0], ref[0].shape)) > 0.999


def test_hybrid_quantization_lists_and_keeps_the_float16_links(tmp_path):
    """Step 1's config lists the linked Conv outputs' ranges (as the toolkit's does) and step 2, which
    reads every activation's range from it, builds the same links."""
    paths = hybrid_quantization_step1(load_onnx(_residual_model()), BuildConfig(progress=False),
                                      _dataset(tmp_path, [1, 3, 24, 24], n=4), out_dir=tmp_path)
    import yaml
    params = yaml.safe_load(open(paths[2]).read().split("\n", 2)[2])["quantize_parameters"]
    assert params["c2"]["dtype"] == "float16" and params["c2"]["max"][0] > 0
    tensors = {t.name: t for t in hybrid_quantization_step2(*paths).sim_model.tensors}
    assert (tensors["c2"].dtype, tensors["d"].dtype, tensors["c4"].dtype) == (fmt.FLOAT16, fmt.FLOAT16, fmt.INT8)
