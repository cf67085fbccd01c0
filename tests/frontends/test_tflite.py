"""load_tflite against TensorFlow's own TFLite converter and interpreter: float, int8, and MediaPipe models."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from helpers import cosine, run_rknn, write_dataset

tf = pytest.importorskip("tensorflow", reason="the TFLite tests need rknnlink[tensorflow] (tensorflow-cpu)")

RNG = np.random.default_rng(0)
H = W = 32


def _w(*shape, scale=0.3):
    return tf.constant(RNG.normal(0, scale, shape).astype(np.float32))


class _VisionNet(tf.Module):
    """The operators common vision models use, NHWC as TFLite has them."""

    def __init__(self):
        super().__init__()
        self.c1, self.b1 = _w(3, 3, 3, 16), _w(16, scale=0.1)
        self.dw = _w(3, 3, 16, 1)
        self.c2 = _w(1, 1, 16, 24)
        self.c3 = _w(3, 3, 24, 24)
        self.tc = _w(2, 2, 8, 24)  # conv2d_transpose filter: (kh, kw, out, in)
        self.alpha = tf.constant(RNG.uniform(0.05, 0.3, (1, 1, 8)).astype(np.float32))
        self.fc, self.fcb = _w(32, 10, scale=0.2), _w(10, scale=0.1)

    @tf.function(input_signature=[tf.TensorSpec([1, H, W, 3], tf.float32, name="image")])
    def __call__(self, x):
        y = tf.nn.relu6(tf.nn.conv2d(x, self.c1, 2, "SAME") + self.b1)                     # 16x16x16
        y = tf.nn.relu(tf.nn.depthwise_conv2d(y, self.dw, [1, 1, 1, 1], "SAME"))
        y = tf.nn.conv2d(y, self.c2, 1, "VALID")                                            # 16x16x24
        z = tf.nn.max_pool2d(y, 3, 2, "SAME")                                               # 8x8x24
        a = tf.nn.avg_pool2d(y, 2, 2, "VALID")                                              # 8x8x24
        y = z + a * 0.5
        y = y * tf.nn.relu6(y + 3.0) / 6.0                                                   # hard-swish
        y = tf.nn.conv2d(tf.pad(y, [[0, 0], [1, 1], [1, 1], [0, 0]]), self.c3, 1, "VALID")  # 8x8x24
        up = tf.image.resize(y, [16, 16], method="bilinear")
        near = tf.image.resize(y, [16, 16], method="nearest")
        y = tf.concat([up, near], axis=3)[:, 1:15, :, :24]                                 # 14x16x24
        y = tf.nn.conv2d_transpose(y, self.tc, [1, 28, 32, 8], 2, "SAME")                  # 28x32x8
        y = tf.maximum(y, 0.0) + self.alpha * tf.minimum(y, 0.0)                           # PReLU
        y = tf.nn.leaky_relu(y, 0.1)
        pooled = tf.reduce_mean(y, axis=[1, 2])                                             # 1x8
        flat = tf.reshape(tf.nn.avg_pool2d(y, [7, 8], [7, 8], "VALID")[:, :2, :2, :], [1, 32])
        logits = tf.matmul(flat, self.fc) + self.fcb
        return {"logits": tf.nn.softmax(logits), "gate": tf.sigmoid(pooled), "features": y}


@pytest.fixture(scope="module")
def vision(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tflite")
    net = _VisionNet()
    fn = net.__call__.get_concrete_function()
    samples = [RNG.uniform(-1, 1, (1, H, W, 3)).astype(np.float32) for _ in range(8)]

    def convert(int8: bool) -> bytes:
        conv = tf.lite.TFLiteConverter.from_concrete_functions([fn], net)
        if int8:
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.representative_dataset = lambda: ([s] for s in samples)
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        return conv.convert()

    paths = {}
    for kind in ("float", "int8"):
        paths[kind] = folder / f"vision_{kind}.tflite"
        paths[kind].write_bytes(convert(kind == "int8"))
    return folder, paths, samples


def _interpreter_outputs(path: Path, x: np.ndarray) -> dict:
    interp = tf.lite.Interpreter(model_path=str(path))
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    if inp["dtype"] != np.float32:
        scale, zp = inp["quantization"]
        info = np.iinfo(inp["dtype"])
        x = np.clip(np.round(x / scale + zp), info.min, info.max).astype(inp["dtype"])
    interp.set_tensor(inp["index"], x)
    interp.invoke()
    out = {}
    for d in interp.get_output_details():
        v = interp.get_tensor(d["index"])
        if d["dtype"] != np.float32:
            scale, zp = d["quantization"]
            v = (v.astype(np.float32) - zp) * scale
        out[d["name"]] = v
    return out


def test_float_model_matches_the_tflite_interpreter_in_fp16(vision):
    _, paths, samples = vision
    x = samples[0]
    ref = _interpreter_outputs(paths["float"], x)
    outs = run_rknn(lambda r: r.load_tflite(str(paths["float"])), [x])
    assert len(outs) == len(ref)
    for (name, r), o in zip(ref.items(), outs):
        assert o.shape == r.shape, name
        assert cosine(o, r) >= 0.9999, (name, cosine(o, r))


def test_int8_model_keeps_its_own_quantization(vision, caplog):
    folder, paths, samples = vision
    x = samples[1]
    ref_int8 = _interpreter_outputs(paths["int8"], x)
    ref_float = _interpreter_outputs(paths["float"], x)
    with caplog.at_level(logging.INFO, logger="rknnlink"):
        outs = run_rknn(lambda r: r.load_tflite(str(paths["int8"])), [x])  # build(do_quantization=False)
    assert "pre-quantised" in caplog.text
    # the ONNX path's int8 build of the float model, calibrated on the same samples, as the bar
    dataset = write_dataset(folder / "calib", [s.transpose(0, 3, 1, 2) for s in samples])
    calibrated = run_rknn(lambda r: r.load_tflite(str(paths["float"])), [x], quantize=True, dataset=dataset)
    for (name, r8), o, rf, oc in zip(ref_int8.items(), outs, ref_float.values(), calibrated):
        assert o.shape == r8.shape
        # the imported int8 model computes what TFLite's int8 kernels compute
        assert cosine(o, r8) >= 0.99, (name, cosine(o, r8))
        # rknnlink's own int8 build of the float model is at least as close to float as TFLite's int8
        assert cosine(oc, rf) >= cosine(r8, rf) - 0.01, (name, cosine(oc, rf), cosine(r8, rf))


def test_input_is_nchw_keeps_the_input_as_it_is(tmp_path):
    class Net(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, 3, 8, 8], tf.float32, name="x")])
        def __call__(self, x):
            return tf.transpose(x, [0, 2, 3, 1]) * 2.0 + 1.0

    net = Net()
    path = tmp_path / "nchw.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_concrete_functions(
        [net.__call__.get_concrete_function()], net).convert())
    x = RNG.normal(size=(1, 3, 8, 8)).astype(np.float32)
    ref = _interpreter_outputs(path, x)
    outs = run_rknn(lambda r: r.load_tflite(str(path), input_is_nchw=True), [x], data_format="nchw")
    np.testing.assert_allclose(outs[0], next(iter(ref.values())), atol=2e-2)


def test_unsupported_operators_are_listed_in_one_error(tmp_path):
    from rknnlink.api import RKNN

    class Net(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, 8, 8, 4], tf.float32, name="x")])
        def __call__(self, x):
            a = tf.nn.space_to_depth(x, 2)
            b = tf.nn.depth_to_space(a, 2)
            return tf.math.floor(b) + tf.math.floor(x * 2.0)

    net = Net()
    path = tmp_path / "odd.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_concrete_functions(
        [net.__call__.get_concrete_function()], net).convert())
    with pytest.raises(ValueError) as err:
        RKNN().load_tflite(str(path))
    text = str(err.value)
    for op in ("SPACE_TO_DEPTH", "DEPTH_TO_SPACE", "FLOOR x2"):
        assert op in text, text


def test_missing_file_and_wrong_format_are_clear(tmp_path):
    from rknnlink.api import RKNN

    with pytest.raises(ValueError, match="not exists"):
        RKNN().load_tflite(str(tmp_path / "nope.tflite"))
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="not a TFLite model"):
        RKNN().load_tflite(str(bad))


def test_uint8_model_as_the_toolkit_qat_example_uses_it(tmp_path):
    """uint8 in and out (the toolkit's mobilenet_v1_qat flow): mean/std turn pixels into the model's real input,
    build(do_quantization=False) keeps the model's quantisation, data_format given as a list."""
    from helpers import run_rknn

    class Net(tf.Module):
        def __init__(self):
            super().__init__()
            self.w, self.fc = _w(3, 3, 3, 8), _w(8, 5, scale=0.3)

        @tf.function(input_signature=[tf.TensorSpec([1, 16, 16, 3], tf.float32, name="input")])
        def __call__(self, x):
            y = tf.nn.relu6(tf.nn.conv2d(x, self.w, 2, "SAME"))
            return tf.nn.softmax(tf.matmul(tf.reduce_mean(y, [1, 2]), self.fc))

    net = Net()
    conv = tf.lite.TFLiteConverter.from_concrete_functions([net.__call__.get_concrete_function()], net)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([RNG.uniform(-1, 1, (1, 16, 16, 3)).astype(np.float32)] for _ in range(8))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.uint8
    path = tmp_path / "quant.tflite"
    path.write_bytes(conv.convert())
    interp = tf.lite.Interpreter(model_path=str(path))
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    scale, zp = inp["quantization"]
    image = RNG.integers(0, 256, (1, 16, 16, 3)).astype(np.uint8)
    interp.set_tensor(inp["index"], image)
    interp.invoke()
    o_scale, o_zp = out["quantization"]
    ref = (interp.get_tensor(out["index"]).astype(np.float32) - o_zp) * o_scale
    outs = run_rknn(lambda r: r.load_tflite(model=str(path)), [image], data_format=["nhwc"],
                    mean_values=[zp] * 3, std_values=[1.0 / scale] * 3)
    assert outs[0].shape == ref.shape
    assert cosine(outs[0], ref) >= 0.99, cosine(outs[0], ref)
