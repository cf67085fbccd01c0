"""Every lowering rule checked numerically: single-operator models in many opset/attribute forms, built in
fp32, run on the simulated NPU and compared with onnxruntime. A wrong normalisation (pads, axes, Slice
clamping, Resize coordinates, pre-13 Softmax ...) shows up here as a mismatch."""

from __future__ import annotations

import factories as fac
import numpy as np
import pytest

from rknnlink.model.builder import BuildConfig, build, load_onnx
from rknnlink.model.prepare import run_onnx

try:
    from rknnlink.runtime import RuntimeLibrary

    LIB = RuntimeLibrary.load(backend="sim")
except Exception as exc:  # the simulator is not built (pip install -e . compiles it)
    LIB, REASON = None, f"simulated NPU library unavailable: {exc}"

pytestmark = pytest.mark.skipif(LIB is None, reason="simulated NPU library unavailable")

i64 = lambda *v: np.array(v, np.int64)  # noqa: E731
f32 = lambda *v: np.array(v, np.float32)  # noqa: E731
W = np.random.default_rng(0).standard_normal((4, 2, 3, 3)).astype(np.float32)

CASES = {
    "conv_same_upper_stride2": ("Conv", [[1, 2, 7, 7]], 13, {1: W}, dict(auto_pad="SAME_UPPER", strides=[2, 2])),
    "conv_same_lower": ("Conv", [[1, 2, 6, 6]], 11, {1: W}, dict(auto_pad="SAME_LOWER", strides=[2, 2])),
    "conv_valid_dilated": ("Conv", [[1, 2, 9, 9]], 13, {1: W, 2: f32(1, 2, 3, 4)},
                           dict(auto_pad="VALID", dilations=[2, 2])),
    "conv1d_pads": ("Conv", [[1, 2, 10]], 13, {1: W[:, :, 0]}, dict(pads=[2, 1])),
    "conv3d": ("Conv", [[1, 2, 4, 5, 5]], 13, {1: np.ones((3, 2, 2, 3, 3), np.float32)}, dict(pads=[0, 1, 1] * 2)),
    "conv_transpose_output_shape": ("ConvTranspose", [[1, 4, 3, 3]], 13, {1: W}, dict(
        strides=[2, 2], output_shape=[8, 8])),
    "conv_transpose_pads_outpad": ("ConvTranspose", [[1, 4, 3, 3]], 13, {1: W}, dict(
        strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1])),
    "maxpool_ceil_pads": ("MaxPool", [[1, 2, 7, 7]], 13, {}, dict(kernel_shape=[3, 3], strides=[2, 2],
                                                                 pads=[1, 1, 1, 1], ceil_mode=1)),
    "maxpool_same_upper_stride2": ("MaxPool", [[1, 2, 8, 8]], 12, {}, dict(
        kernel_shape=[3, 3], auto_pad="SAME_UPPER", strides=[2, 2])),
    "maxpool_dilated_pads": ("MaxPool", [[1, 2, 8, 8]], 12, {}, dict(
        kernel_shape=[2, 2], pads=[1, 0, 1, 1], dilations=[2, 2])),
    "avgpool_count_pad": ("AveragePool", [[1, 2, 6, 6]], 13, {}, dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                                                                     count_include_pad=1)),
    "avgpool_exclude_pad": ("AveragePool", [[1, 2, 6, 6]], 13, {}, dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])),
    "softmax_axis1_opset11": ("Softmax", [[2, 6]], 11, {}, dict(axis=1)),
    "softmax_flat_unit_dims_opset9": ("Softmax", [[1, 6, 1, 1]], 9, {}, dict(axis=1)),
    "softmax_neg_axis": ("Softmax", [[2, 3, 4]], 13, {}, dict(axis=-2)),
    "logsoftmax": ("LogSoftmax", [[2, 5]], 13, {}, {}),
    "clip_inputs": ("Clip", [[2, 5]], 13, {1: np.float32(-0.5), 2: np.float32(0.7)}, {}),
    "clip_min_only": ("Clip", [[2, 5]], 12, {1: np.float32(0.1), 2: ""}, {}),
    "clip_attrs_opset9": ("Clip", [[2, 5]], 9, {}, dict(min=-0.2, max=0.3)),
    "slice_negative_and_clamped": ("Slice", [[2, 5, 6]], 13, {1: i64(-4, 1), 2: i64(2 ** 62, -1),
                                                              3: i64(-1, 1), 4: i64(1, 2)}, {}),
    "slice_reverse": ("Slice", [[3, 6]], 13, {1: i64(-1), 2: i64(-2 ** 62), 3: i64(1), 4: i64(-2)}, {}),
    "slice_opset9_attrs": ("Slice", [[3, 6]], 9, {}, dict(starts=[1], ends=[100], axes=[1])),
    "pad_constant_value": ("Pad", [[1, 2, 3, 3]], 13, {1: i64(0, 0, 1, 2, 0, 0, 2, 1), 2: np.float32(1.5)},
                           dict(mode="constant")),
    "pad_reflect": ("Pad", [[1, 2, 4, 4]], 13, {1: i64(0, 0, 2, 1, 0, 0, 1, 2)}, dict(mode="reflect")),
    "pad_edge_axes_opset18": ("Pad", [[1, 2, 4, 4]], 18, {1: i64(1, 2, 2, 1), 2: "", 3: i64(-1, 2)},
                              dict(mode="edge")),
    "pad_opset9_attrs": ("Pad", [[1, 2, 3]], 9, {}, dict(pads=[0, 1, 0, 0, 2, 1], value=-1.0)),
    "resize_nearest_half_pixel": ("Resize", [[1, 2, 3, 4]], 13, {1: "", 2: f32(1, 1, 2, 2)}, dict(mode="nearest")),
    "resize_nearest_asym_floor": ("Resize", [[1, 2, 3, 4]], 13, {1: "", 2: f32(1, 1, 2, 3)}, dict(
        mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")),
    "resize_linear_align_corners_sizes": ("Resize", [[1, 2, 3, 4]], 13, {1: "", 2: "", 3: i64(1, 2, 7, 9)},
                                          dict(mode="linear", coordinate_transformation_mode="align_corners")),
    "resize_linear_pytorch_half_pixel": ("Resize", [[1, 2, 4, 4]], 13, {1: "", 2: f32(1, 1, 0.5, 0.5)}, dict(
        mode="linear", coordinate_transformation_mode="pytorch_half_pixel")),
    "resize_linear_half_pixel_up": ("Resize", [[1, 2, 3, 3]], 11, {1: f32(), 2: f32(1, 1, 2, 2)},
                                    dict(mode="linear")),
    "resize_opset10": ("Resize", [[1, 2, 3, 3]], 10, {1: f32(1, 1, 2, 2)}, dict(mode="nearest")),
    "upsample_opset9": ("Upsample", [[1, 2, 3, 3]], 9, {1: f32(1, 1, 2, 2)}, dict(mode="nearest")),
    "reduce_mean_neg_axes": ("ReduceMean", [[2, 3, 4]], 13, {}, dict(axes=[-1], keepdims=0)),
    "reduce_max_all": ("ReduceMax", [[2, 3, 4]], 13, {}, {}),
    "reduce_sum_input_axes": ("ReduceSum", [[2, 3, 4]], 13, {1: i64(0, 2)}, dict(keepdims=1)),
    "reduce_mean_opset18_axes": ("ReduceMean", [[2, 3, 4]], 18, {1: i64(1)}, {}),
    "gather_negative_indices": ("Gather", [[5, 3]], 13, {1: i64(-1, 0, 2)}, dict(axis=0)),
    "gather_axis1_scalar": ("Gather", [[2, 5, 3]], 13, {1: np.array(-2, np.int64)}, dict(axis=1)),
    "transpose_default_perm": ("Transpose", [[2, 3, 4]], 13, {}, {}),
    "concat_neg_axis": ("Concat", [[1, 2, 3], [1, 2, 2]], 13, {}, dict(axis=-1)),
    "gemm_alpha_beta_trans": ("Gemm", [[3, 4]], 13, {1: np.ones((5, 4), np.float32) * 0.3, 2: f32(1, 2, 3, 4, 5)},
                              dict(alpha=0.5, beta=2.0, transB=1)),
    "gemm_transA": ("Gemm", [[4, 3]], 13, {1: np.ones((4, 5), np.float32)}, dict(transA=1)),
    "matmul_broadcast": ("MatMul", [[2, 3, 4]], 13, {1: np.ones((4, 2), np.float32)}, {}),
    "sum3": ("Sum", [[2, 3], [2, 3], [1, 3]], 13, {}, {}),
    "max_broadcast": ("Max", [[2, 3], [3]], 13, {}, {}),
    "div_const": ("Div", [[2, 3]], 13, {1: f32(2, 4, 8)}, {}),
    "pow_const": ("Pow", [[2, 3]], 13, {1: np.float32(2.0)}, {}),
    "prelu_channel": ("PRelu", [[1, 3, 2, 2]], 13, {1: f32(0.1, 0.2, 0.3).reshape(3, 1, 1)}, {}),
    "leaky_default": ("LeakyRelu", [[2, 3]], 13, {}, {}),
    "hard_sigmoid_default": ("HardSigmoid", [[2, 3]], 13, {}, {}),
    "hard_swish": ("HardSwish", [[2, 3]], 14, {}, {}),
    "elu_default": ("Elu", [[2, 3]], 13, {}, {}),
    "selu_default": ("Selu", [[2, 3]], 13, {}, {}),
    "lrn": ("LRN", [[1, 5, 3, 3]], 13, {}, dict(size=3)),
    "batchnorm": ("BatchNormalization", [[1, 3, 2, 2]], 15, {1: f32(1, 2, 3), 2: f32(0, 1, 0), 3: f32(0.5, 0, 1),
                                                            4: f32(1, 2, 0.5)}, dict(epsilon=1e-3)),
    "flatten_axis2": ("Flatten", [[2, 3, 4, 5]], 13, {}, dict(axis=2)),
    "squeeze_opset11_attr": ("Squeeze", [[1, 3, 1, 2]], 11, {}, dict(axes=[0, -2])),
    "global_max_pool": ("GlobalMaxPool", [[1, 3, 4, 5]], 13, {}, {}),
    "sqrt_abs_neg": ("Abs", [[2, 3]], 13, {}, {}),
}
POSITIVE_INPUT = {"pow_const", "sqrt_abs_neg"}


@pytest.mark.parametrize("case", sorted(CASES))
def test_single_operator_matches_onnxruntime(case):
    op, shapes, opset, consts, attrs = CASES[case]
    model = load_onnx(fac.single_node_model(op, shapes, None, opset=opset, consts=consts, **attrs))
    rng = np.random.default_rng(1)
    feeds = {f"x{k}": rng.standard_normal(s).astype(np.float32) for k, s in enumerate(shapes)}
    if case in POSITIVE_INPUT:
        feeds = {k: np.abs(v) + 0.1 for k, v in feeds.items()}
    ref = run_onnx(model, feeds, ["y"])[0]
    result = build(model, BuildConfig(float_dtype="float32", progress=False), False, None)
    with LIB.init(result.data) as ctx:
        (out,) = ctx.infer([feeds[f"x{k}"] for k in range(len(shapes))], formats=["nchw"] * len(shapes))
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("case", sorted(CASES))
def test_single_operator_int8(case, tmp_path):
    """int8 build of each case: calibrated on 12 random samples, checked on one of them (so no input lies
    outside the calibrated ranges) at cosine >= 0.99 against onnxruntime fp32."""
    op, shapes, opset, consts, attrs = CASES[case]
    model = load_onnx(fac.single_node_model(op, shapes, None, opset=opset, consts=consts, **attrs))
    rng = np.random.default_rng(2)
    samples, lines = [], []
    for i in range(12):
        feeds = {f"x{k}": rng.standard_normal(s).astype(np.float32) for k, s in enumerate(shapes)}
        if case in POSITIVE_INPUT:
            feeds = {k: np.abs(v) + 0.1 for k, v in feeds.items()}
        for k, v in feeds.items():
            np.save(tmp_path / f"{k}_{i}.npy", v)
        lines.append(" ".join(f"{k}_{i}.npy" for k in feeds))
        samples.append(feeds)
    (tmp_path / "dataset.txt").write_text("\n".join(lines))
    feeds = samples[5]
    ref = run_onnx(model, feeds, ["y"])[0]
    result = build(model, BuildConfig(progress=False), True, tmp_path / "dataset.txt")
    with LIB.init(result.data) as ctx:
        (out,) = ctx.infer([feeds[f"x{k}"] for k in range(len(shapes))], formats=["nchw"] * len(shapes))
    a, b = out.astype(np.float64).ravel(), ref.astype(np.float64).ravel()
    cos = a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30)
    assert cos >= 0.99, f"{case}: int8 cosine {cos:.4f}"
