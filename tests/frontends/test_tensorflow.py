"""load_tensorflow: frozen GraphDefs written by TensorFlow itself, compared with TensorFlow running them."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from helpers import cosine, run_rknn

tf = pytest.importorskip("tensorflow", reason="load_tensorflow needs rknnlink[tensorflow]")
pytest.importorskip("tf2onnx", reason="load_tensorflow needs rknnlink[tensorflow]")

RNG = np.random.default_rng(5)


def _frozen(fn, path) -> None:
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    frozen = convert_variables_to_constants_v2(fn.get_concrete_function())
    path.write_bytes(frozen.graph.as_graph_def().SerializeToString())


def _run_graph(path, feeds: dict, outputs: list) -> list:
    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(path.read_bytes())
    with tf.Graph().as_default() as g:
        tf.compat.v1.import_graph_def(graph_def, name="")
        with tf.compat.v1.Session(graph=g) as sess:
            return sess.run([f"{o}:0" for o in outputs], {f"{k}:0": v for k, v in feeds.items()})


def _weights(*shape, s=0.3):
    return tf.constant(RNG.normal(0, s, shape).astype(np.float32))


@pytest.fixture(scope="module")
def ssd_like(tmp_path_factory):
    """An SSD-MobileNet-shaped graph: a preprocessing subtraction, then box and class heads."""
    w1, w2, wb, wc = _weights(3, 3, 3, 16), _weights(3, 3, 16, 1), _weights(1, 1, 16, 4), _weights(1, 1, 16, 3)

    @tf.function(input_signature=[tf.TensorSpec([1, 32, 32, 3], tf.float32, name="image_tensor")])
    def fn(x):
        with tf.name_scope("Preprocessor"):
            x = tf.subtract(x * (2.0 / 255.0), 1.0, name="sub")
        y = tf.nn.relu6(tf.nn.conv2d(x, w1, 2, "SAME"))
        y = tf.nn.relu6(tf.nn.depthwise_conv2d(y, w2, [1, 1, 1, 1], "SAME"))
        boxes = tf.reshape(tf.nn.conv2d(y, wb, 1, "SAME"), [1, -1, 4])
        classes = tf.reshape(tf.nn.conv2d(y, wc, 1, "SAME"), [1, -1, 3])
        return tf.concat([boxes, boxes * 0.5], 1, name="concat"), tf.concat([classes, classes], 1, name="concat_1")

    path = tmp_path_factory.mktemp("tf") / "ssd_like.pb"
    _frozen(fn, path)
    return path


def test_frozen_graph_cut_at_a_tensor_matches_tensorflow(ssd_like):
    # the toolkit's ssd_mobilenet_v1 example: enter at 'Preprocessor/sub', leave at 'concat' and 'concat_1'
    x = RNG.uniform(-1, 1, (1, 32, 32, 3)).astype(np.float32)
    ref = _run_graph(ssd_like, {"Preprocessor/sub": x}, ["concat", "concat_1"])
    outs = run_rknn(lambda r: r.load_tensorflow(tf_pb=str(ssd_like), inputs=["Preprocessor/sub"],
                                                outputs=["concat", "concat_1"], input_size_list=[[1, 32, 32, 3]]),
                    [x])
    assert [o.shape for o in outs] == [r.shape for r in ref]
    for r, o in zip(ref, outs):
        assert cosine(o, r) >= 0.9999, cosine(o, r)


def test_quantization_aware_graph_keeps_its_ranges(tmp_path):
    # QAT exports carry FakeQuant nodes; build(do_quantization=False) builds int8 with those ranges
    w = _weights(3, 3, 3, 8)

    @tf.function(input_signature=[tf.TensorSpec([1, 16, 16, 3], tf.float32, name="input")])
    def fn(x):
        x = tf.quantization.fake_quant_with_min_max_args(x, -1.0, 1.0)
        wq = tf.quantization.fake_quant_with_min_max_args(w, -1.0, 1.0, narrow_range=True)
        y = tf.nn.relu(tf.nn.conv2d(x, wq, 1, "SAME"))
        return tf.identity(tf.quantization.fake_quant_with_min_max_args(y, 0.0, 4.0), name="output")

    path = tmp_path / "qat.pb"
    _frozen(fn, path)
    x = RNG.uniform(-1, 1, (1, 16, 16, 3)).astype(np.float32)
    ref = _run_graph(path, {"input": x}, ["output"])[0]
    from rknnlink.api import RKNN

    rknn = RKNN()
    rknn.config(target_platform="rk3588")
    assert rknn.load_tensorflow(tf_pb=str(path), inputs=["input"], outputs=["output"],
                                input_size_list=[[1, 16, 16, 3]]) == 0
    assert rknn._prequant, "the FakeQuant ranges must be imported"
    assert rknn.build(do_quantization=False) == 0
    assert rknn._build.sim_model.build_mode == "int8"
    assert rknn.init_runtime() == 0
    out = rknn.inference(inputs=[x], data_format="nhwc")[0]
    rknn.release()
    assert out.shape == ref.shape
    assert cosine(out, ref) >= 0.99, cosine(out, ref)


def test_without_the_extra_the_message_names_it(ssd_like, monkeypatch):
    from rknnlink.api import RKNN

    monkeypatch.setitem(sys.modules, "tf2onnx", None)
    with pytest.raises(ValueError, match=r"rknnlink\[tensorflow\]"):
        RKNN().load_tensorflow(str(ssd_like), ["Preprocessor/sub"], [[1, 32, 32, 3]], ["concat"])


def test_bad_names_are_reported(ssd_like):
    from rknnlink.api import RKNN

    with pytest.raises(ValueError, match="not a node"):
        RKNN().load_tensorflow(str(ssd_like), ["nope"], [[1, 32, 32, 3]], ["concat"])
