"""GPTQ weight rounding (rknnlink.model.weight_rounding, ``weight_rounding='gptq'``): on the same scales as
nearest rounding, the levels it picks give a smaller layer output error on the samples H was fitted on and
on fresh samples of the same distribution; grouped, depthwise, Gemm and MatMul layouts; a degenerate H."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from rknnlink.model import format as fmt
from rknnlink.model.builder import BuildConfig, BuildError, build, load_onnx
from rknnlink.model.calibration import quantize_weights
from rknnlink.model.weight_rounding import Hessian, gptq_levels, hessian_key, round_weight


def _conv(x: np.ndarray, w: np.ndarray, stride: int, pad: int, group: int) -> np.ndarray:
    """Reference convolution (independent of the module's im2col), NCHW, square kernel."""
    n, c, hh, ww = x.shape
    o, cg, k, _ = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad))).astype(np.float64)
    oh, ow = (hh + 2 * pad - k) // stride + 1, (ww + 2 * pad - k) // stride + 1
    out = np.zeros((n, o, oh, ow))
    og = o // group
    for g in range(group):
        for i in range(k):
            for j in range(k):
                patch = xp[:, g * cg:(g + 1) * cg, i:i + stride * oh:stride, j:j + stride * ow:stride]
                out[:, g * og:(g + 1) * og] += np.einsum("nchw,oc->nohw", patch, w[g * og:(g + 1) * og, :, i, j])
    return out


def _images(rng: np.random.Generator, n: int, c: int, size: int) -> np.ndarray:
    """Smooth, channel-correlated maps: neighbouring patch values are strongly correlated, as in a CNN."""
    base = rng.normal(size=(n, 1, size, size)) + 0.5 * rng.normal(size=(n, c, size, size))
    kernel = np.ones(3) / 3
    for axis in (2, 3):
        base = np.apply_along_axis(lambda v: np.convolve(v, kernel, mode="same"), axis, base)
    return (base + rng.normal(size=(1, c, 1, 1))).astype(np.float32)


def _conv_errors(w, scales, x_fit, x_new, stride, pad, group, per_tensor):
    attrs = {"kernel_shape": [w.shape[2], w.shape[3]], "strides": [stride, stride], "pads": [pad] * 4,
             "dilations": [1, 1], "group": group}
    acc = Hessian(hessian_key("Conv", attrs))
    rng = np.random.default_rng(0)
    for x in x_fit:
        acc.add(x[None], rng)
    q = round_weight(w, scales, "Conv", attrs, acc.value())
    assert q is not None and q.shape == w.shape and q.dtype == np.int8
    assert int(q.min()) >= -127 and int(q.max()) <= 127
    shape = (1, 1, 1, 1) if per_tensor else (-1, 1, 1, 1)
    nearest = np.clip(np.round(w / scales.reshape(shape)), -127, 127)
    errs = []
    for xs in (x_fit, x_new):
        ref = _conv(xs, w, stride, pad, group)
        err_g = np.square(_conv(xs, q * scales.reshape(shape), stride, pad, group) - ref).sum()
        err_n = np.square(_conv(xs, nearest * scales.reshape(shape), stride, pad, group) - ref).sum()
        errs.append((err_g, err_n))
    return q, nearest, errs


@pytest.mark.parametrize("per_tensor", [True, False])
@pytest.mark.parametrize("group,cin,cout", [(1, 6, 8), (2, 6, 8), (6, 6, 6)])  # dense, grouped, depthwise
def test_gptq_lowers_the_conv_output_error_on_fitted_and_fresh_samples(per_tensor, group, cin, cout):
    rng = np.random.default_rng(group + 10 * per_tensor)
    w = (rng.normal(size=(cout, cin // group, 3, 3)) * rng.uniform(0.05, 1.0, (cout, 1, 1, 1))).astype(np.float32)
    q0, scales = quantize_weights(w, None if per_tensor else 0)
    x_fit, x_new = _images(rng, 12, cin, 12), _images(rng, 12, cin, 12)
    q, nearest, errs = _conv_errors(w, scales, x_fit, x_new, 1, 1, group, per_tensor)
    np.testing.assert_array_equal(nearest, q0)  # the same scales as the nearest build
    assert not np.array_equal(q, q0)
    for err_g, err_n in errs:
        assert err_g < 0.8 * err_n, (err_g, err_n)


def test_gptq_on_a_strided_conv_matches_its_geometry():
    """Stride 2 and no padding: H must come from the positions the layer really reads."""
    rng = np.random.default_rng(3)
    w = rng.normal(size=(4, 3, 3, 3)).astype(np.float32)
    _, scales = quantize_weights(w, None)
    _, _, errs = _conv_errors(w, scales, _images(rng, 10, 3, 13), _images(rng, 10, 3, 13), 2, 0, 1, True)
    for err_g, err_n in errs:
        assert err_g < 0.8 * err_n


@pytest.mark.parametrize("op,trans_b", [("Gemm", 0), ("Gemm", 1), ("MatMul", 0)])
def test_gptq_on_gemm_and_matmul_weights(op, trans_b):
    rng = np.random.default_rng(5)
    k, n = 24, 10
    mix = np.eye(k) + 0.6 * rng.normal(size=(k, k))
    x_fit, x_new = rng.normal(size=(400, k)) @ mix, rng.normal(size=(400, k)) @ mix
    w = (rng.normal(size=(k, n)) * rng.uniform(0.05, 1, n)).astype(np.float32)  # y = x @ w
    stored = w.T.copy() if trans_b else w
    attrs = {"transB": trans_b} if op == "Gemm" else {}
    axis = (0 if trans_b else 1) if op == "Gemm" else 1
    q0, scales = quantize_weights(stored, axis)
    acc = Hessian(hessian_key(op, attrs))
    acc.add(x_fit.astype(np.float32), np.random.default_rng(0))
    q = round_weight(stored, scales, op, attrs, acc.value())
    assert q.shape == stored.shape and int(np.abs(q.astype(np.int32)).max()) <= 127
    as_xw = (lambda m: m.T) if trans_b else (lambda m: m)
    s = scales[:, None] if axis == 0 else scales[None, :]
    for x in (x_fit, x_new):
        err_g = np.square(x @ (as_xw(q * s) - w)).sum()
        err_n = np.square(x @ (as_xw(q0 * s) - w)).sum()
        assert err_g < 0.8 * err_n


def test_a_degenerate_hessian_does_not_fail():
    """Duplicated input dims (rank-deficient H), a dim that is always zero and an all-zero H: levels stay
    finite and in range, the always-zero dim and the all-zero group keep their nearest levels."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(50, 6))
    x[:, 3] = x[:, 2]
    x[:, 5] = 0.0
    h = np.stack([x.T @ x, np.zeros((6, 6))]).astype(np.float32)
    w = rng.normal(size=(2, 4, 6)).astype(np.float32)
    s = np.full((2, 4), np.abs(w).max() / 127, np.float32)
    q = gptq_levels(w, s, h)
    nearest = np.clip(np.round(w / s[..., None]), -127, 127)
    assert np.all(np.isfinite(q)) and np.abs(q).max() <= 127
    np.testing.assert_array_equal(q[1], nearest[1])
    np.testing.assert_array_equal(q[0][:, 5], nearest[0][:, 5])
    assert not np.array_equal(q[0], nearest[0])


def test_weight_rounding_option_is_checked():
    with pytest.raises(BuildError, match="weight_rounding"):
        BuildConfig(weight_rounding="best").validate()
    assert BuildConfig().weight_rounding_mode() in ("nearest", "gptq")
    assert BuildConfig(weight_rounding="nearest").weight_rounding_mode() == "nearest"


def _conv_model() -> onnx.ModelProto:
    rng = np.random.default_rng(9)
    w1 = (rng.normal(size=(8, 3, 3, 3)) * rng.uniform(0.05, 1, (8, 1, 1, 1))).astype(np.float32)
    w2 = (rng.normal(size=(4, 8, 3, 3)) * 0.2).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (np.zeros(8, np.float32), "b1"),
                                                         (w2, "w2"), (np.zeros(4, np.float32), "b2"))]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["a"], name="c1", kernel_shape=[3, 3], pads=[1] * 4),
             helper.make_node("Relu", ["a"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "w2", "b2"], ["y"], name="c2", kernel_shape=[3, 3], pads=[1] * 4)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 10, 10])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 10, 10])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def test_build_with_gptq_changes_levels_not_scales(tmp_path):
    rng = np.random.default_rng(1)
    for k in range(8):
        np.save(tmp_path / f"s{k}.npy", _images(rng, 1, 3, 10))
    (tmp_path / "dataset.txt").write_text("".join(f"s{k}.npy\n" for k in range(8)))
    built = {}
    for mode in ("nearest", "gptq"):
        cfg = BuildConfig(progress=False, quantized_method="layer", weight_rounding=mode, bias_correction="analytic")
        built[mode] = build(load_onnx(_conv_model()), cfg, True, dataset=str(tmp_path / "dataset.txt"))
    weights = {mode: {t.name: t for t in r.sim_model.tensors if t.dtype == fmt.INT8 and t.data is not None}
               for mode, r in built.items()}
    assert set(weights["gptq"]) == set(weights["nearest"]) and weights["gptq"]
    changed = 0
    for name, t in weights["gptq"].items():
        ref = weights["nearest"][name]
        assert t.scale == ref.scale and t.data.shape == ref.data.shape
        assert int(np.abs(t.data.astype(np.int32)).max()) <= 127
        changed += int(not np.array_equal(t.data, ref.data))
    assert changed == len(weights["gptq"])



def test_the_rknn_facade_passes_weight_rounding_through():
    from rknnlink.api import RKNN
    rknn = RKNN()
    rknn.config(target_platform="rk3588", weight_rounding="gptq")
    assert rknn._build_config().weight_rounding_mode() == "gptq"
    rknn.config(target_platform="rk3588")
    assert rknn._build_config().weight_rounding is None
