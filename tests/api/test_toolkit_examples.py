"""RKNN-Toolkit2's example scripts (rknn-toolkit2/examples) with only the import changed.

Each test makes the call sequence of one example with the example's arguments and reads back what the
example reads back. The models are small stand-ins generated here (same inputs, outputs and file names;
smaller images to stay fast); images are saved as the example's .jpg files and read the way its cv2 calls
would give them (HWC uint8). Examples that load Caffe or TensorFlow models get stand-ins in those formats
(written with rknnlink's caffe.proto and frozen by TensorFlow itself); each also has an ONNX twin running the
same body. The function examples' outputs are compared with the float network run by another engine: torch for
the Caffe nets, a TensorFlow session for the frozen graphs, onnxruntime for the ONNX twins.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from rknnlink.api import RKNN

SIZE = 32  # the examples' 224/300/640 images, scaled down


# ------------------------------------------------------------------------------------------ stand-in models

def _classifier(path: Path, output: str = "resnetv24_dense0_fwd", classes: int = 1000, size: int = SIZE,
                dynamic: bool = False) -> None:
    """conv-relu-conv-relu, global pool, fully connected: an ImageNet-style classifier with `classes` outputs."""
    rng = np.random.default_rng(0)

    def w(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))).astype(
            np.float32), name)

    inits = [w("w1", 16, 3, 3, 3), w("w2", 32, 16, 3, 3), w("fc", classes, 32),
             numpy_helper.from_array(np.zeros(classes, np.float32), "fcb")]
    nodes = [helper.make_node("Conv", ["data", "w1"], ["c1"], name="conv1", pads=[1] * 4, strides=[2, 2]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", pads=[1] * 4),
             helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
             helper.make_node("GlobalAveragePool", ["r2"], ["gap"], name="pool"),
             helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
             helper.make_node("Gemm", ["flat", "fc", "fcb"], [output], name="dense", transB=1)]
    dims = [1, 3, "height", "width"] if dynamic else [1, 3, size, size]
    graph = helper.make_graph(nodes, "classifier", [helper.make_tensor_value_info("data", TensorProto.FLOAT, dims)],
                              [helper.make_tensor_value_info(output, TensorProto.FLOAT, [1, classes])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))



MOBILENET_V2_PROTOTXT = """
name: "mobilenet_v2"
layer { name: "input" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: SIZE dim: SIZE } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 16 bias_term: false kernel_size: 3 pad: 1 stride: 2 } }
layer { name: "conv1/bn" type: "BatchNorm" bottom: "conv1" top: "conv1"
        batch_norm_param { use_global_stats: true eps: 1e-5 } }
layer { name: "conv1/scale" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "conv2/dwise" type: "Convolution" bottom: "conv1" top: "conv2/dwise"
        convolution_param { num_output: 16 group: 16 kernel_size: 3 pad: 1 } }
layer { name: "relu2" type: "ReLU" bottom: "conv2/dwise" top: "conv2/dwise" }
layer { name: "conv2/linear" type: "Convolution" bottom: "conv2/dwise" top: "conv2/linear"
        convolution_param { num_output: 32 kernel_size: 1 } }
layer { name: "relu3" type: "ReLU" bottom: "conv2/linear" top: "conv2/linear" }
layer { name: "pool6" type: "Pooling" bottom: "conv2/linear" top: "pool6"
        pooling_param { pool: AVE global_pooling: true } }
layer { name: "fc7" type: "Convolution" bottom: "pool6" top: "fc7"
        convolution_param { num_output: 1000 kernel_size: 1 } }
layer { name: "prob" type: "Softmax" bottom: "fc7" top: "prob" }
"""


def _mobilenet_caffe(folder: Path, prototxt: str, caffemodel: str, size: int = SIZE, legacy_input: bool = False,
                     zero_channels: int = 0) -> dict:
    """A MobileNet-style Caffe deploy prototxt + caffemodel written through rknnlink's Caffe schema from seeded
    weights; returns the weights (for the float reference). `legacy_input` declares the input with the old
    top-level `input:`/`input_dim:` fields (MobileNet-Caffe's mobilenet_deploy.prototxt); `zero_channels`
    zeroes that many output channels of conv2/linear (sparse weights, what model_pruning removes)."""
    from google.protobuf import text_format

    from rknnlink.model.frontends import caffe_pb2

    rng = np.random.default_rng(3)
    w = {"conv1": [rng.normal(0, 0.3, (16, 3, 3, 3))],
         "conv1/bn": [rng.normal(0, 0.2, 16), rng.uniform(0.5, 1.5, 16), np.array([1.0])],
         "conv1/scale": [rng.uniform(0.5, 1.5, 16), rng.normal(0, 0.1, 16)],
         "conv2/dwise": [rng.normal(0, 0.4, (16, 1, 3, 3)), rng.normal(0, 0.1, 16)],
         "conv2/linear": [rng.normal(0, 0.3, (32, 16, 1, 1)), rng.normal(0, 0.1, 32)],
         "fc7": [rng.normal(0, 1.0, (1000, 32, 1, 1)), np.zeros(1000)]}  # peaked softmax: a meaningful cosine
    if zero_channels:
        w["conv2/linear"][0][:zero_channels] = 0.0
        w["conv2/linear"][1][:zero_channels] = 0.0
    text = MOBILENET_V2_PROTOTXT.replace("SIZE", str(size))
    if legacy_input:
        text = text.replace(text.splitlines()[2] + "\n",
                            f'input: "data"\ninput_dim: 1\ninput_dim: 3\ninput_dim: {size}\ninput_dim: {size}\n')
    folder.mkdir(parents=True, exist_ok=True)
    (folder / prototxt).write_text(text)
    net = text_format.Parse(text, caffe_pb2.NetParameter())
    for layer in net.layer:
        for blob in w.get(layer.name, []):
            b = layer.blobs.add()
            b.shape.dim.extend(blob.shape)
            b.data.extend(blob.astype(np.float32).ravel().tolist())
    (folder / caffemodel).write_bytes(net.SerializeToString())
    return w


def _mobilenet_v2_caffe(work: Path, size: int = SIZE) -> dict:
    """caffe/mobilenet_v2/ as in the examples tree (the function examples load ../../caffe/mobilenet_v2/...):
    the model, its dataset.txt and dog_224x224.jpg; returns the weights."""
    folder = work / "caffe" / "mobilenet_v2"
    w = _mobilenet_caffe(folder, "mobilenet_v2_deploy.prototxt", "mobilenet_v2.caffemodel", size)
    _dataset(folder, size=size)
    _images(folder, ["dog_224x224.jpg"], size=size)
    _labels(folder)
    return w


def _mobilenet_v2_reference(w: dict):
    """The Caffe net in float64 (torch's conv), as a function of the input after the config's mean/std (NCHW)."""
    import torch
    from torch.nn import functional

    t = {k: [torch.from_numpy(np.asarray(b, np.float64)) for b in v] for k, v in w.items()}

    def run(nchw: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.asarray(nchw, np.float64))
        y = functional.conv2d(x, t["conv1"][0], stride=2, padding=1)
        mean, var = t["conv1/bn"][0] / t["conv1/bn"][2], t["conv1/bn"][1] / t["conv1/bn"][2]
        y = (y - mean.view(1, -1, 1, 1)) / torch.sqrt(var.view(1, -1, 1, 1) + 1e-5)
        y = functional.relu(y * t["conv1/scale"][0].view(1, -1, 1, 1) + t["conv1/scale"][1].view(1, -1, 1, 1))
        y = functional.relu(functional.conv2d(y, t["conv2/dwise"][0], t["conv2/dwise"][1], padding=1, groups=16))
        y = functional.relu(functional.conv2d(y, t["conv2/linear"][0], t["conv2/linear"][1]))
        y = functional.conv2d(y.mean((2, 3), keepdim=True), t["fc7"][0], t["fc7"][1])
        return torch.softmax(y, 1).numpy()

    return run


def _onnx_reference(path: Path):
    """The ONNX stand-in in float on onnxruntime, as a function of the normalised NCHW input."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda nchw: session.run(None, {name: np.asarray(nchw, np.float32)})[0]


def _run_frozen(path: Path, feeds: dict, outputs: list) -> list:
    """A frozen TensorFlow graph run by TensorFlow itself (the float reference of the TF stand-ins)."""
    import tensorflow as tf

    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(path.read_bytes())
    with tf.Graph().as_default() as graph:
        tf.compat.v1.import_graph_def(graph_def, name="")
        with tf.compat.v1.Session(graph=graph) as sess:
            return sess.run([f"{o}:0" for o in outputs], {f"{k}:0": v for k, v in feeds.items()})


def _normalised(nhwc: np.ndarray, mean, std) -> np.ndarray:
    """What the config's mean/std make of an NHWC image, as NCHW float64 (the float networks' input)."""
    return ((np.asarray(nhwc, np.float64) - np.asarray(mean)) / np.asarray(std)).transpose(0, 3, 1, 2)


def _cosine(a, b) -> float:
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _example_folder(work: Path, monkeypatch, name: str) -> Path:
    """examples/functions/<name> as the working directory: the scripts reach ../../caffe/mobilenet_v2."""
    folder = work / "functions" / name
    folder.mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(folder)
    return folder


def _load_caffe_mobilenet_v2(rknn: RKNN) -> int:
    """The function examples' load_caffe call (paths relative to examples/functions/<name>/)."""
    return rknn.load_caffe(model="../../caffe/mobilenet_v2/mobilenet_v2_deploy.prototxt",
                           blobs="../../caffe/mobilenet_v2/mobilenet_v2.caffemodel")


def _caffe_example(work: Path, monkeypatch, name: str):
    """A function example on the Caffe mobilenet_v2 stand-in: (loader, float reference), cwd = its folder."""
    w = _mobilenet_v2_caffe(work)
    _example_folder(work, monkeypatch, name)
    return _load_caffe_mobilenet_v2, _mobilenet_v2_reference(w)


def _onnx_twin(work: Path, monkeypatch, name: str, **classifier):
    """The same function example on an ONNX classifier: (loader, float reference), cwd = its folder."""
    _mobilenet_v2_caffe(work)  # the dataset and image the scripts read from ../../caffe/mobilenet_v2
    folder = _example_folder(work, monkeypatch, name)
    _classifier(folder / "mobilenet_v2.onnx", output="prob", **classifier)
    return (lambda r: r.load_onnx(model="mobilenet_v2.onnx")), _onnx_reference(folder / "mobilenet_v2.onnx")


def _tf_classifier(path: Path, input_name: str, outputs, classes: int, size: int = SIZE) -> None:
    """The same classifier as a frozen TensorFlow GraphDef entered at `input_name`, leaving at `outputs`
    (one name, or several: each a differently scaled copy of the logits)."""
    tf = pytest.importorskip("tensorflow", reason="the TensorFlow stand-in needs rknnlink[tensorflow]")
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    rng = np.random.default_rng(0)
    w1, w2 = (tf.constant((rng.standard_normal(s) * 0.3).astype(np.float32)) for s in ((3, 3, 3, 16), (3, 3, 16, 32)))
    fc = tf.constant((rng.standard_normal((1, 1, 32, classes)) * 0.2).astype(np.float32))
    outputs = [outputs] if isinstance(outputs, str) else list(outputs)

    @tf.function(input_signature=[tf.TensorSpec([1, size, size, 3], tf.float32, name="image")])
    def fn(x):
        x = tf.identity(x, name=input_name)
        y = tf.nn.relu(tf.nn.conv2d(tf.nn.relu(tf.nn.conv2d(x, w1, 2, "SAME")), w2, 1, "SAME"))
        logits = tf.nn.conv2d(tf.reduce_mean(y, [1, 2], keepdims=True), fc, 1, "VALID")
        results = []
        for k, output in enumerate(outputs):
            scope, _, leaf = output.rpartition("/")
            if scope:
                with tf.name_scope(scope):
                    results.append(tf.squeeze(logits * (k + 1.0), [1, 2], name=leaf))
            else:
                results.append(tf.squeeze(logits * (k + 1.0), [1, 2], name=leaf))
        return tuple(results)

    frozen = convert_variables_to_constants_v2(fn.get_concrete_function())
    path.write_bytes(frozen.graph.as_graph_def().SerializeToString())


def _yolo_heads(path: Path, size: int = SIZE, sigmoid: str = "Sigmoid") -> None:
    """Three detection heads at strides 8/16/32 (yolov5's output layout: 255 = 3 x (5 + 80) channels)."""
    rng = np.random.default_rng(1)
    inits, nodes, outs = [], [], []
    prev = "images"
    channels = 3
    for i, out_ch in enumerate((8, 16, 32)):
        inits.append(numpy_helper.from_array((rng.standard_normal((out_ch, channels, 3, 3)) * 0.2).astype(
            np.float32), f"b{i}"))
        nodes.append(helper.make_node("Conv", [prev, f"b{i}"], [f"f{i}"], name=f"down{i}", pads=[1] * 4,
                                      strides=[2 if i else 8, 2 if i else 8]))
        prev, channels = f"f{i}", out_ch
        inits.append(numpy_helper.from_array((rng.standard_normal((255, out_ch, 1, 1)) * 0.1).astype(np.float32),
                                             f"h{i}"))
        nodes.append(helper.make_node("Conv", [prev, f"h{i}"], [f"p{i}"], name=f"head{i}"))
        nodes.append(helper.make_node(sigmoid, [f"p{i}"], [f"output{i}"], name=f"sig{i}"))
        grid = size // (8 * 2 ** i)
        outs.append(helper.make_tensor_value_info(f"output{i}", TensorProto.FLOAT, [1, 255, grid, grid]))
    graph = helper.make_graph(nodes, "yolo", [helper.make_tensor_value_info("images", TensorProto.FLOAT,
                                                                             [1, 3, size, size])], outs, inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))


def _images(folder: Path, names, size: int = SIZE, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for name in names:
        base = rng.integers(0, 256, (4, 4, 3)).astype(np.uint8)
        Image.fromarray(base).resize((size, size), Image.BILINEAR).save(folder / name)


def _dataset(folder: Path, count: int = 4, size: int = SIZE, name: str = "dataset.txt") -> None:
    names = [f"calib_{i}.jpg" for i in range(count)]
    _images(folder, names, size, seed=7)
    (folder / name).write_text("\n".join(names) + "\n")


def _imread(path) -> np.ndarray:
    """What cv2.imread returns: HWC uint8 BGR."""
    return np.asarray(Image.open(path).convert("RGB"))[:, :, ::-1].copy()


def _labels(folder: Path, classes: int = 1000) -> None:
    (folder / "labels.txt").write_text("".join(f"{i}: class_{i}\n" for i in range(classes)))


def _top5(output) -> list:
    return sorted(range(len(output)), key=lambda k: output[k], reverse=True)[:5]


def _softmax(x):
    return np.exp(x) / np.sum(np.exp(x))


@pytest.fixture()
def work(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


# ------------------------------------------------------------------------------------------------ examples

def test_onnx_resnet50v2(work):
    _classifier(work / "resnet50v2.onnx")
    _dataset(work)
    _images(work, ["dog_224x224.jpg"])
    _labels(work)
    rknn = RKNN(verbose=True)
    rknn.config(mean_values=[123.675, 116.28, 103.53], std_values=[58.82, 58.82, 58.82], target_platform="rk3566")
    assert rknn.load_onnx(model="resnet50v2.onnx") == 0
    assert rknn.build(do_quantization=True, dataset="./dataset.txt") == 0
    assert rknn.export_rknn("resnet50v2.rknn") == 0
    img = _imread("./dog_224x224.jpg")[:, :, ::-1]  # cv2.cvtColor BGR2RGB
    img = np.expand_dims(img, 0)
    assert rknn.init_runtime() == 0
    outputs = rknn.inference(inputs=[img], data_format=["nhwc"])
    np.save("./onnx_resnet50v2_0.npy", outputs[0])
    assert outputs[0].shape == (1, 1000) and len(_top5(_softmax(outputs[0][0]))) == 5
    rknn.release()


def test_onnx_yolov5(work):
    _yolo_heads(work / "yolov5s_relu.onnx")
    _dataset(work)
    _images(work, ["bus.jpg"])
    rknn = RKNN(verbose=True)
    rknn.config(mean_values=[[0, 0, 0]], std_values=[[255, 255, 255]], target_platform="rk3566")
    assert rknn.load_onnx(model="yolov5s_relu.onnx") == 0
    assert rknn.build(do_quantization=True, dataset="./dataset.txt") == 0
    assert rknn.export_rknn("yolov5s_relu.rknn") == 0
    assert rknn.init_runtime() == 0
    img = np.expand_dims(_imread("./bus.jpg")[:, :, ::-1], 0)
    outputs = rknn.inference(inputs=[img], data_format=["nhwc"])
    for i in range(3):
        np.save(f"./onnx_yolov5_{i}.npy", outputs[i])
    # the example's post-processing reshapes each output to (3, 85, grid, grid)
    shapes = [o.reshape([3, -1] + list(o.shape[-2:])).shape for o in outputs]
    assert shapes == [(3, 85, 4, 4), (3, 85, 2, 2), (3, 85, 1, 1)]
    assert all(((o >= 0) & (o <= 1)).all() for o in outputs)  # sigmoid outputs
    rknn.release()


def _torch_classifier(path: Path, quantized: bool = False) -> None:
    torch = pytest.importorskip("torch")

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.relu = torch.nn.ReLU()
            self.fc = torch.nn.Linear(8, 1000)

        def forward(self, x):
            x = self.relu(self.conv(x))
            return self.fc(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(x, 1), 1))

    torch.manual_seed(0)
    net = Net().eval()
    torch.jit.trace(net, torch.zeros(1, 3, SIZE, SIZE)).save(str(path))


def test_pytorch_resnet18(work):
    _torch_classifier(work / "resnet18.pt")
    _dataset(work)
    _images(work, ["space_shuttle_224.jpg"])
    rknn = RKNN(verbose=True)
    rknn.config(mean_values=[123.675, 116.28, 103.53], std_values=[58.395, 58.395, 58.395], target_platform="rk3566")
    assert rknn.load_pytorch(model="./resnet18.pt", input_size_list=[[1, 3, SIZE, SIZE]]) == 0
    assert rknn.build(do_quantization=True, dataset="./dataset.txt") == 0
    assert rknn.export_rknn("./resnet_18.rknn") == 0
    img = np.expand_dims(_imread("./space_shuttle_224.jpg")[:, :, ::-1], 0)
    assert rknn.init_runtime() == 0
    outputs = rknn.inference(inputs=[img], data_format=["nhwc"])
    np.save("./pytorch_resnet18_0.npy", outputs[0])
    assert outputs[0].shape == (1, 1000)
    rknn.release()


@pytest.mark.skipif(importlib.util.find_spec("rknnlink.model.prequant") is None,
                    reason="needs the pre-quantized (QAT) import of load_pytorch (front-ends, issue 11: "
                           "rknnlink.model.prequant)")
def test_pytorch_resnet18_qat(work):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)  # the same weights every run, whatever ran before in this process
    net = torch.nn.Sequential(torch.ao.quantization.QuantStub(), torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(),
                              torch.ao.quantization.DeQuantStub()).eval()
    net.qconfig = torch.ao.quantization.get_default_qconfig("fbgemm")
    prepared = torch.ao.quantization.prepare(net)
    prepared(torch.rand(1, 3, SIZE, SIZE))
    torch.jit.trace(torch.ao.quantization.convert(prepared), torch.rand(1, 3, SIZE, SIZE)).save("resnet18_i8.pt")
    _images(work, ["space_shuttle_224.jpg"])
    rknn = RKNN(verbose=True)
    rknn.config(mean_values=[123.675, 116.28, 103.53], std_values=[58.395, 58.395, 58.395], target_platform="rk3566")
    assert rknn.load_pytorch(model="./resnet18_i8.pt", input_size_list=[[1, 3, SIZE, SIZE]]) == 0
    assert rknn.build(do_quantization=False) == 0
    assert rknn.export_rknn("./resnet_18.rknn") == 0
    assert rknn.init_runtime() == 0
    img = np.expand_dims(_imread("./space_shuttle_224.jpg")[:, :, ::-1], 0)
    assert rknn.inference(inputs=[img], data_format=["nhwc"])[0].shape[0] == 1
    rknn.release()


def test_caffe_mobilenet_v2(work):
    w = _mobilenet_caffe(work, "mobilenet_v2_deploy.prototxt", "mobilenet_v2.caffemodel")
    _dataset(work)
    _images(work, ["dog_224x224.jpg"])
    rknn = RKNN(verbose=True)
    rknn.config(mean_values=[103.94, 116.78, 123.68], std_values=[58.82, 58.82, 58.82], quant_img_RGB2BGR=True,
                target_platform="rk3566")
    assert rknn.load_caffe(model="./mobilenet_v2_deploy.prototxt", blobs="./mobilenet_v2.caffemodel") == 0
    assert rknn.build(do_quantization=True, dataset="./dataset.txt") == 0
    assert rknn.export_rknn("./mobilenet_v2.rknn") == 0
    img = np.expand_dims(_imread("./dog_224x224.jpg"), 0)  # cv2.imread: BGR, as the example feeds it
    assert rknn.init_runtime() == 0
    outputs = rknn.inference(inputs=[img], data_format=["nhwc"])
    np.save("./caffe_mobilenet_v2_0.npy", outputs[0])
    ref = _mobilenet_v2_reference(w)(_normalised(img, **MOBILENET_V2_NORM))
    assert outputs[0].reshape(-1).shape == (1000,) and _cosine(outputs[0], ref) > 0.95, _cosine(outputs[0], ref)
    rknn.release()


def test_tensorflow_ssd_mobilenet_v1(work):
    pb = work / "ssd_mobilenet_v1_coco_2017_11_17.pb"
    _tf_classifier(pb, "Preprocessor/sub", ["concat", "concat_1"], classes=8)
    _dataset(work)
    _images(work, ["road.bmp"], size=SIZE + 8)
    rknn = RKNN(verbose=True)
    rknn.config(mean_values=[127.5, 127.5, 127.5], std_values=[127.5, 127.5, 127.5], target_platform="rk3566")
    assert rknn.load_tensorflow(tf_pb="./ssd_mobilenet_v1_coco_2017_11_17.pb", inputs=["Preprocessor/sub"],
                                outputs=["concat", "concat_1"], input_size_list=[[1, SIZE, SIZE, 3]]) == 0
    assert rknn.build(do_quantization=True, dataset="./dataset.txt") == 0
    assert rknn.export_rknn("./ssd_mobilenet_v1_coco.rknn") == 0
    rgb = Image.open("./road.bmp").convert("RGB").resize((SIZE, SIZE), Image.BICUBIC)  # cvtColor + resize
    img = np.expand_dims(np.asarray(rgb), 0)
    assert rknn.init_runtime() == 0
    outputs = rknn.inference(inputs=[img], data_format=["nhwc"])
    np.save("./tensorflow_ssd_mobilenet_v1_0.npy", outputs[0])
    refs = _run_frozen(pb, {"Preprocessor/sub": (img - 127.5) / 127.5}, ["concat", "concat_1"])
    for output, ref in zip(outputs, refs):
        assert output.shape == ref.shape and _cosine(output, ref) > 0.98, _cosine(output, ref)
    rknn.release()


def _tflite_classifier(path: Path, classes: int = 1001) -> None:
    """mobilenet_v1_1.0_224.tflite's interface (input 'input' NHWC, softmax over 1001 classes), converted by
    TensorFlow's own TFLite converter."""
    import tensorflow as tf

    rng = np.random.default_rng(6)
    w1 = tf.constant(rng.normal(0, 0.3, (3, 3, 3, 16)).astype(np.float32))
    w2 = tf.constant(rng.normal(0, 3.0, (1, 1, 16, classes)).astype(np.float32))  # a peaked softmax

    @tf.function(input_signature=[tf.TensorSpec([1, SIZE, SIZE, 3], tf.float32, name="input")], autograph=False)
    def mobilenet_v1(x):
        y = tf.nn.relu6(tf.nn.conv2d(x, w1, 2, "SAME"))
        y = tf.nn.conv2d(tf.reduce_mean(y, [1, 2], keepdims=True), w2, 1, "VALID")
        return tf.nn.softmax(tf.reshape(y, [1, classes]))

    converter = tf.lite.TFLiteConverter.from_concrete_functions([mobilenet_v1.get_concrete_function()], mobilenet_v1)
    path.write_bytes(converter.convert())


def test_tflite_mobilenet_v1(work):
    _tflite_classifier(work / "mobilenet_v1_1.0_224.tflite")
    _dataset(work)
    _images(work, ["dog_224x224.jpg"])
    rknn = RKNN(verbose=True)
    rknn.config(mean_values=[128, 128, 128], std_values=[128, 128, 128], target_platform="rk3566")
    assert rknn.load_tflite(model="mobilenet_v1_1.0_224.tflite") == 0
    assert rknn.build(do_quantization=True, dataset="./dataset.txt") == 0
    assert rknn.export_rknn("./mobilenet_v1.rknn") == 0
    img = np.expand_dims(_imread("./dog_224x224.jpg")[:, :, ::-1], 0)  # cv2.cvtColor BGR2RGB
    assert rknn.init_runtime() == 0
    outputs = rknn.inference(inputs=[img], data_format=["nhwc"])
    np.save("./tflite_mobilenet_v1_0.npy", outputs[0])
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_path="mobilenet_v1_1.0_224.tflite")
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], ((img - 128.0) / 128.0).astype(np.float32))
    interpreter.invoke()
    ref = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    assert outputs[0].shape == ref.shape == (1, 1001)
    assert np.max(ref) > 0.01 and _cosine(outputs[0], ref) > 0.95, _cosine(outputs[0], ref)
    rknn.release()


def test_functions_accuracy_analysis(work):
    _classifier(work / "resnet50v2.onnx")
    _dataset(work)
    _images(work, ["dog_224x224.jpg"])
    _labels(work)
    rknn = RKNN(verbose=True)
    rknn.config(mean_values=[123.68, 116.28, 103.53], std_values=[57.38, 57.38, 57.38], target_platform="rk3566")
    assert rknn.load_onnx(model="resnet50v2.onnx") == 0
    assert rknn.build(do_quantization=True, dataset="./dataset.txt") == 0
    assert rknn.accuracy_analysis(inputs=["./dog_224x224.jpg"], output_dir="./snapshot") == 0
    golden = np.genfromtxt("./snapshot/golden/resnetv24_dense0_fwd.txt")
    quantized = np.genfromtxt("./snapshot/simulator/resnetv24_dense0_fwd.txt")
    assert golden.shape == quantized.shape == (1000,)
    assert _top5(_softmax(golden))[0] == _top5(_softmax(quantized))[0]
    rknn.release()


def test_functions_model_pruning(work, capsys):
    """MobileNet-Caffe's mobilenet_deploy.prototxt (the old top-level input/input_dim fields), with sparse
    weights: model_pruning=True is accepted and the result is the float network's."""
    w = _mobilenet_caffe(work, "mobilenet_deploy.prototxt", "mobilenet.caffemodel", legacy_input=True,
                         zero_channels=8)
    assert "input_dim" in Path("mobilenet_deploy.prototxt").read_text()
    (work / "dataset.txt").write_text("dog_224x224.jpg")  # the example's: one image, no newline
    _images(work, ["dog_224x224.jpg"])
    _labels(work)
    rknn = RKNN(verbose=True)
    rknn.config(mean_values=[103.94, 116.78, 123.68], std_values=[58.82, 58.82, 58.82], quant_img_RGB2BGR=True,
                target_platform="rk3566", model_pruning=True)
    assert rknn.load_caffe(model="./mobilenet_deploy.prototxt", blobs="./mobilenet.caffemodel") == 0
    assert rknn.build(do_quantization=True, dataset="./dataset.txt") == 0
    assert rknn.export_rknn("./mobilenet.rknn") == 0
    img = np.expand_dims(_imread("./dog_224x224.jpg"), 0)
    assert rknn.init_runtime() == 0
    outputs = rknn.inference(inputs=[img], data_format=["nhwc"])
    np.save("./functions_model_pruning_0.npy", outputs[0])
    output = outputs[0].reshape(-1)
    labels = open("./labels.txt").readlines()
    top5 = [labels[k].strip().split(":")[-1] for k in _top5(output)]  # the example's show_outputs
    ref = _mobilenet_v2_reference(w)(_normalised(img, **MOBILENET_V2_NORM))
    assert output.shape == (1000,) and top5[0] == f" class_{np.argmax(ref)}"
    assert _cosine(output, ref) > 0.95, _cosine(output, ref)
    rknn.release()


def _conv_128_pb(path: Path, size: int) -> None:
    """gen_pb.py's conv_128.pb: inputs input1..input4 (NHWC; 3, 3, 3, 1 channels), each convolved with ones
    (3x3, SAME, one output channel) and summed into 'output'; frozen by TensorFlow itself."""
    import tensorflow as tf

    specs = [tf.TensorSpec([1, size, size, c], tf.float32, name=f"input{k + 1}") for k, c in enumerate((3, 3, 3, 1))]

    @tf.function(input_signature=specs, autograph=False)  # autograph's cache mixes up same-named functions
    def conv_128(x1, x2, x3, x4):
        convs = [tf.nn.conv2d(x, tf.ones([3, 3, int(x.shape[-1]), 1]), 1, "SAME") for x in (x1, x2, x3, x4)]
        return tf.add(tf.add(tf.add(convs[0], convs[1]), convs[2]), convs[3], name="output")

    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    path.write_bytes(convert_variables_to_constants_v2(conv_128.get_concrete_function()).graph.as_graph_def()
                     .SerializeToString())


def test_functions_multi_input(work):
    """Four inputs of three kinds: an RGB image, two NCHW float .npy, a grayscale PNG; one dataset line."""
    size = SIZE
    _conv_128_pb(work / "conv_128.pb", size)
    rng = np.random.default_rng(5)
    _images(work, ["dog_128x128.jpg"], size=size)
    gray = Image.fromarray(rng.integers(0, 256, (4, 4), dtype=np.uint8)).resize((size, size), Image.BILINEAR)
    gray.save("dog_128x128_gray.png")
    for name in ("input2.npy", "input3.npy"):  # gen_pb.py: (rand - 0.5) * 2, float64, NCHW
        np.save(name, (rng.random((1, 3, size, size)) - 0.5) * 2)
    (work / "dataset.txt").write_text("dog_128x128.jpg input2.npy input3.npy dog_128x128_gray.png")
    rknn = RKNN(verbose=True)
    rknn.config(mean_values=[[127.5, 127.5, 127.5], [0, 0, 0], [0, 0, 0], [127.5]],
                std_values=[[128, 128, 128], [1, 1, 1], [1, 1, 1], [128]], target_platform="rk3566")
    assert rknn.load_tensorflow(tf_pb="./conv_128.pb", inputs=["input1", "input2", "input3", "input4"],
                                outputs=["output"], input_size_list=[[1, size, size, 3], [1, size, size, 3],
                                                                     [1, size, size, 3], [1, size, size, 1]]) == 0
    assert rknn.build(do_quantization=True, dataset="./dataset.txt") == 0
    assert rknn.export_rknn("./conv_128.rknn") == 0
    assert rknn.init_runtime() == 0
    img = np.expand_dims(_imread("./dog_128x128.jpg")[:, :, ::-1], 0)  # cv2.cvtColor BGR2RGB: nhwc
    img_gray = np.expand_dims(np.asarray(Image.open("dog_128x128_gray.png").convert("L")), -1)  # IMREAD_GRAYSCALE
    input2 = np.load("input2.npy").astype("float32")  # nchw
    input3 = np.load("input3.npy").astype("float32")  # nchw
    outputs = rknn.inference(inputs=[img, input2, input3, img_gray], data_format=["nhwc", "nchw", "nchw", "nhwc"])
    np.save("./functions_multi_input_0.npy", outputs[0])
    assert outputs[0].reshape((1, -1)).shape == (1, size * size)
    (ref,) = _run_frozen(work / "conv_128.pb", {"input1": (img - 127.5) / 128, "input2": input2.transpose(0, 2, 3, 1),
                                                "input3": input3.transpose(0, 2, 3, 1),
                                                "input4": (img_gray[None] - 127.5) / 128}, ["output"])
    assert outputs[0].size == ref.size
    # the output is NCHW (1, 1, H, W); TensorFlow's is NHWC (1, H, W, 1): the same order for one channel
    assert _cosine(outputs[0], ref) > 0.99, _cosine(outputs[0], ref)
    rknn.release()


def _hybrid_quant(work, load, reference) -> None:
    """step1.py then step2.py with the example's file names; step2 builds from step1's files alone.
    `reference(nhwc)` gives the float network's outputs (scores, boxes) for the normalised NHWC input."""
    _dataset(work)
    _images(work, ["dog_bike_car_300x300.jpg"])
    step1 = RKNN(verbose=True)
    step1.config(mean_values=[127.5, 127.5, 127.5], std_values=[127.5, 127.5, 127.5], target_platform="rk3566")
    assert load(step1) == 0
    assert step1.hybrid_quantization_step1(dataset="./dataset.txt", proposal=False) == 0
    step1.release()
    for suffix in ("model", "data", "quantization.cfg"):
        assert (work / f"ssd_mobilenet_v2.{suffix}").is_file()
    step2 = RKNN(verbose=True)
    assert step2.hybrid_quantization_step2(model_input="./ssd_mobilenet_v2.model",
                                           data_input="./ssd_mobilenet_v2.data",
                                           model_quantization_cfg="./ssd_mobilenet_v2.quantization.cfg") == 0
    assert step2.export_rknn("./ssd_mobilenet_v2.rknn") == 0
    assert step2.accuracy_analysis(inputs=["./dog_bike_car_300x300.jpg"], output_dir=None) == 0
    assert (work / "snapshot" / "error_analysis.txt").is_file()
    img = np.expand_dims(_imread("./dog_bike_car_300x300.jpg")[:, :, ::-1], 0)  # cv2.cvtColor BGR2RGB
    assert step2.init_runtime() == 0
    outputs = step2.inference(inputs=[img], data_format=["nhwc"])
    for index, output in enumerate(outputs):
        np.save(f"./functions_hybrid_quant_{index}.npy", output)
    refs = reference((img - 127.5) / 127.5)
    assert [o.shape for o in outputs] == [r.shape for r in refs]
    for output, ref in zip(outputs, refs):  # step1's mean/std and rk3566 kept: int8 close to float
        assert _cosine(output, ref) > 0.98, _cosine(output, ref)
    assert step2._model_platform() == "rk3566"
    step2.release()


def test_functions_hybrid_quant_step1_step2(work):
    pb = work / "ssd_mobilenet_v2.pb"
    entry = "FeatureExtractor/MobilenetV2/MobilenetV2/input"
    _tf_classifier(pb, entry, ["concat", "concat_1"], classes=8)
    _hybrid_quant(work, lambda r: r.load_tensorflow(tf_pb="./ssd_mobilenet_v2.pb", inputs=[entry],
                                                    outputs=["concat_1", "concat"],
                                                    input_size_list=[[1, SIZE, SIZE, 3]]),
                  lambda x: _run_frozen(pb, {entry: x}, ["concat_1", "concat"]))


def test_functions_hybrid_quant_onnx_twin(work):
    _classifier(work / "ssd_mobilenet_v2.onnx", output="concat")
    ref = _onnx_reference(work / "ssd_mobilenet_v2.onnx")
    _hybrid_quant(work, lambda r: r.load_onnx(model="./ssd_mobilenet_v2.onnx"),
                  lambda x: [ref(x.transpose(0, 3, 1, 2))])


MOBILENET_V2_NORM = dict(mean=[103.94, 116.78, 123.68], std=[58.82, 58.82, 58.82])


def _dynamic_shape(load, reference) -> None:
    _images(Path("."), ["dog_224x224.jpg"], size=40)
    dynamic_input = [[[1, 3, 32, 32]], [[1, 3, 16, 16]], [[1, 3, 24, 24]]]  # the example's 256/160/224, scaled
    rknn = RKNN(verbose=True)
    rknn.config(mean_values=[103.94, 116.78, 123.68], std_values=[58.82, 58.82, 58.82], quant_img_RGB2BGR=True,
                target_platform="rk3566", dynamic_input=dynamic_input)
    assert load(rknn) == 0
    assert rknn.build(do_quantization=True, dataset="../../caffe/mobilenet_v2/dataset.txt") == 0
    assert rknn.export_rknn("./mobilenet_v2.rknn") == 0
    assert rknn.init_runtime() == 0
    img = Image.open("./dog_224x224.jpg")
    for index, size in enumerate((24, 16, 32)):  # cv2.resize, then NCHW, as the example does
        resized = np.asarray(img.resize((size, size)))[:, :, ::-1]
        x = np.transpose(np.expand_dims(resized, 0), (0, 3, 1, 2))
        outputs = rknn.inference(inputs=[x], data_format=["nchw"])
        np.save(f"./functions_dynamic_shape_{index}.npy", outputs[0])
        ref = reference(_normalised(np.expand_dims(resized, 0), **MOBILENET_V2_NORM))
        assert outputs[0].reshape((-1, 1000)).shape == (1, 1000)
        # 16 and 24 use the ranges calibrated on the 32 set
        assert _cosine(outputs[0], ref) > 0.93 and np.argmax(outputs[0]) == np.argmax(ref), (size, _cosine(
            outputs[0], ref))
    rknn.release()


def test_functions_dynamic_shape(work, monkeypatch):
    _dynamic_shape(*_caffe_example(work, monkeypatch, "dynamic_shape"))


def test_functions_dynamic_shape_onnx_twin(work, monkeypatch):
    _dynamic_shape(*_onnx_twin(work, monkeypatch, "dynamic_shape", dynamic=True))


def test_functions_custom_op_convert_custom_onnx_to_rknn(work):
    """The example with its files: inputs and golden outputs read from .npy; then the exported bundle loaded
    back, which needs the op registered again (as the C runtime needs rknn_register_custom_ops)."""
    from scipy.spatial import distance
    from test_custom_op import _dual_residual, cstDualResidual  # the example's class (same interface)

    _dual_residual(work / "dual_residual.onnx")
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((2, 1, 3, 10, 10)).astype(np.float32)
    for name, array in (("input_0", x), ("input_1", y), ("output_0", x * 0.5 - y), ("output_1", y * 0.5 - x)):
        np.save(f"dual_residual_{name}.npy", array)
    rknn = RKNN(verbose=True)
    rknn.config(target_platform="rk3588")
    assert rknn.reg_custom_op(cstDualResidual()) == 0
    assert rknn.load_onnx(model="dual_residual.onnx") == 0
    assert rknn.build(do_quantization=False) == 0
    assert rknn.export_rknn("dual_residual_custom.rknn") == 0
    assert rknn.init_runtime() == 0
    in_data_0 = np.transpose(np.load("dual_residual_input_0.npy"), (0, 2, 3, 1))
    in_data_1 = np.transpose(np.load("dual_residual_input_1.npy"), (0, 2, 3, 1))
    outputs = rknn.inference(inputs=[in_data_0, in_data_1])
    for index, output in enumerate(outputs):  # the example's check: cosine against the golden .npy
        golden = np.load(f"dual_residual_output_{index}.npy").astype(np.float32)
        assert 1 - distance.cosine(output.astype(np.float32).ravel(), golden.ravel()) > 0.99999
        np.testing.assert_allclose(output, golden, rtol=1e-6)  # float, computed by the op's numpy code
    rknn.release()

    # the C runtime refuses the bundle, saying why and what to do (docs/toolkit-compatibility.md)
    from rknnlink.runtime.errors import RknnError
    from rknnlink.runtime.library import RuntimeLibrary

    with pytest.raises(RknnError, match="custom operators.*reg_custom_op"):
        RuntimeLibrary.load(backend="sim").init(Path("dual_residual_custom.rknn").read_bytes())

    loaded = RKNN()
    assert loaded.load_rknn("dual_residual_custom.rknn") == 0
    with pytest.raises(ValueError, match="reg_custom_op"):
        loaded.init_runtime()
    loaded.reg_custom_op(cstDualResidual())
    assert loaded.init_runtime() == 0
    again = loaded.inference(inputs=[x, y], data_format=["nchw", "nchw"])
    np.testing.assert_array_equal(again[0], outputs[0])
    np.testing.assert_array_equal(again[1], outputs[1])
    loaded.release()


def test_functions_custom_op_non_onnx_standard(work):
    from test_custom_op import cstSigmoid

    _yolo_heads(work / "yolox_s.onnx")
    model = onnx.load("yolox_s.onnx")  # the example's edit_onnx: Sigmoid -> cstSigmoid
    for node in model.graph.node:
        if node.op_type == "Sigmoid":
            node.op_type = "cstSigmoid"
    onnx.save(model, "yolox_s_custom.onnx")
    _dataset(work, size=40)  # COCO images of other sizes than the input: resized with a warning, as the toolkit
    _images(work, ["bus.jpg"])
    rknn = RKNN(verbose=True)
    rknn.config(mean_values=[[0, 0, 0]], std_values=[[1, 1, 1]], target_platform="rk3588")
    assert rknn.reg_custom_op(cstSigmoid()) == 0
    assert rknn.load_onnx(model="yolox_s_custom.onnx", input_size_list=[[1, 3, SIZE, SIZE]]) == 0
    assert rknn.build(do_quantization=True, dataset="dataset.txt") == 0
    assert rknn.export_rknn("yolox_s_custom.rknn") == 0
    assert rknn.init_runtime() == 0
    img = _imread("bus.jpg")[:, :, ::-1]
    outputs = rknn.inference(inputs=[img])
    assert [o.shape for o in outputs] == [(1, 255, 4, 4), (1, 255, 2, 2), (1, 255, 1, 1)]
    assert all(((o >= 0) & (o <= 1)).all() for o in outputs)
    rknn.release()


def _multi_batch(load, reference) -> None:
    _dataset(Path("."))
    _images(Path("."), ["dog_224x224.jpg", "goldfish_224x224.jpg", "space_shuttle_224.jpg"])
    rknn = RKNN(verbose=True)
    rknn.config(mean_values=[103.94, 116.78, 123.68], std_values=[58.82, 58.82, 58.82], quant_img_RGB2BGR=True,
                target_platform="rk3566")
    assert load(rknn) == 0
    assert rknn.build(do_quantization=True, dataset="./dataset.txt", rknn_batch_size=4) == 0
    assert rknn.export_rknn("./mobilenet_v2.rknn") == 0
    imgs = [np.expand_dims(_imread(f), 0) for f in ("./dog_224x224.jpg", "./goldfish_224x224.jpg",
                                                   "./space_shuttle_224.jpg")]
    img = np.concatenate((imgs[0], imgs[1], imgs[2], imgs[0]), axis=0)
    assert rknn.init_runtime() == 0
    outputs = rknn.inference(inputs=[img], data_format=["nhwc"])
    np.save("./functions_multi_batch_0.npy", outputs[0])
    per_batch = outputs[0].reshape((-1, 1000))
    assert per_batch.shape == (4, 1000)
    for batch, image in enumerate((imgs[0], imgs[1], imgs[2], imgs[0])):
        ref = reference(_normalised(image, **MOBILENET_V2_NORM))
        assert _cosine(per_batch[batch], ref) > 0.95, (batch, _cosine(per_batch[batch], ref))
    np.testing.assert_array_equal(per_batch[0], per_batch[3])  # the same image in batch 0 and 3
    rknn.release()


def test_functions_multi_batch(work, monkeypatch):
    _multi_batch(*_caffe_example(work, monkeypatch, "multi_batch"))


def test_functions_multi_batch_onnx_twin(work, monkeypatch):
    _multi_batch(*_onnx_twin(work, monkeypatch, "multi_batch"))


def _npu_device_test(monkeypatch, capsys, load, reference) -> None:
    """The connected-board example, unchanged but for the loader: the board comes from RKNNLINK_DEVICE."""
    monkeypatch.setenv("RKNNLINK_DEVICE", "sim")
    _dataset(Path("."))
    _images(Path("."), ["dog_224x224.jpg"])
    rknn = RKNN(verbose=True)
    rknn.config(mean_values=[103.94, 116.78, 123.68], std_values=[58.82, 58.82, 58.82], quant_img_RGB2BGR=True,
                target_platform="rk3588")
    assert load(rknn) == 0
    assert rknn.build(do_quantization=True, dataset="./dataset.txt") == 0
    assert rknn.accuracy_analysis(inputs=["./dog_224x224.jpg"], output_dir="./snapshot", target="rk3588") == 0
    ref = reference(_normalised(np.expand_dims(_imread("./dog_224x224.jpg"), 0), **MOBILENET_V2_NORM))
    golden = np.genfromtxt("./snapshot/golden/prob.txt")
    board = np.genfromtxt("./snapshot/runtime/prob.txt")
    assert _cosine(golden, ref) > 0.9999 and _cosine(board, ref) > 0.95, (_cosine(golden, ref), _cosine(board, ref))
    assert rknn.export_rknn("./mobilenet_v2.rknn") == 0
    assert rknn.export_encrypted_rknn_model("./mobilenet_v2.rknn", None, 3) == -1  # logged, not supported
    rknn.release()

    rknn = RKNN(verbose=True)
    assert rknn.load_rknn("./mobilenet_v2.rknn") == 0
    img = np.expand_dims(_imread("./dog_224x224.jpg"), 0)
    rknn.list_devices()
    assert rknn.init_runtime(target="rk3588", perf_debug=True, eval_mem=True) == 0
    print(rknn.get_sdk_version())
    rknn.eval_perf()
    rknn.eval_memory()
    outputs = rknn.inference(inputs=[img], data_format=["nhwc"])
    np.save("./functions_npu_device_test_0.npy", outputs[0])
    printed = capsys.readouterr().out
    assert "DRV: rknn_server:" in printed and "Network Layer Information Table" in printed
    assert "Memory Profile Info Dump" in printed and outputs[0].reshape(-1).shape == (1000,)
    assert _cosine(outputs[0], ref) > 0.95, _cosine(outputs[0], ref)
    rknn.release()


def test_functions_npu_device_test(work, monkeypatch, capsys):
    _npu_device_test(monkeypatch, capsys, *_caffe_example(work, monkeypatch, "npu_device_test"))


def test_functions_npu_device_test_onnx_twin(work, monkeypatch, capsys):
    _npu_device_test(monkeypatch, capsys, *_onnx_twin(work, monkeypatch, "npu_device_test"))


def _codegen(load, reference) -> None:
    rknn = RKNN(verbose=False)
    rknn.config(mean_values=[103.94, 116.78, 123.68], std_values=[58.82, 58.82, 58.82], quant_img_RGB2BGR=True,
                target_platform="rk3562")
    assert load(rknn) == 0
    assert rknn.build(do_quantization=True, dataset="../../caffe/mobilenet_v2/dataset.txt") == 0
    assert rknn.export_rknn("./mobilenet_v2.rknn") == 0
    assert rknn.codegen(output_path="./rknn_app_demo", inputs=["../../caffe/mobilenet_v2/dog_224x224.jpg"],
                        overwrite=True) == 0
    demo = Path("rknn_app_demo")
    for name in ("CMakeLists.txt", "src/main.c", "data/input_0.npy"):
        assert (demo / name).is_file()
    (model,) = (demo / "model").glob("*.rknn")  # named after the model file
    assert model.read_bytes() == Path("mobilenet_v2.rknn").read_bytes()
    # the demo's input is the example's image as the model takes it (NHWC uint8, BGR: quant_img_RGB2BGR), and
    # the exported model gives the float network's answer on it
    nhwc = np.load(demo / "data" / "input_0.npy")
    np.testing.assert_array_equal(nhwc, np.expand_dims(_imread("../../caffe/mobilenet_v2/dog_224x224.jpg"), 0))
    rknn.release()
    loaded = RKNN()
    assert loaded.load_rknn(str(model)) == 0 and loaded.init_runtime() == 0
    output = loaded.inference(inputs=[nhwc], data_format=["nhwc"])[0]
    ref = reference(_normalised(nhwc, **MOBILENET_V2_NORM))
    assert _cosine(output, ref) > 0.95, _cosine(output, ref)
    loaded.release()


def test_functions_codegen(work, monkeypatch):
    _codegen(*_caffe_example(work, monkeypatch, "codegen"))


def test_functions_codegen_onnx_twin(work, monkeypatch):
    _codegen(*_onnx_twin(work, monkeypatch, "codegen"))


def test_functions_onnx_edit(work):
    from test_tools import _concat_block

    _concat_block(work / "concat_block.onnx")
    rng = np.random.default_rng(4)
    np.save("concat_block_input_0.npy", rng.standard_normal((2, 4, 8, 16)).astype(np.float32))
    np.save("concat_block_input_1.npy", rng.standard_normal((2, 4, 1, 16)).astype(np.float32))
    Path("dataset.txt").write_text("concat_block_input_0.npy concat_block_input_1.npy\n")
    rknn = RKNN(verbose=True)
    rknn.config(target_platform="rk3588")
    rknn.load_onnx("./concat_block.onnx")
    rknn.build(do_quantization=True, dataset="./dataset.txt")
    rknn.export_rknn("./concat_block.rknn")
    from rknnlink.utils import onnx_edit
    assert onnx_edit(model="./concat_block.onnx", export_path="./concat_block_edited.onnx",
                     inputs_transform={"k_cache.1": "a,b,c,d->1,ad,b,c"},
                     outputs_transform={"k_cache": "a,b,c,d->1,ab,c,d"}, dataset="./dataset.txt") == 0
    rknn = RKNN(verbose=True)
    rknn.config(target_platform="rk3588")
    rknn.load_onnx("./concat_block_edited.onnx")
    assert rknn.build(do_quantization=True, dataset="./dataset_for_concat_block_edited.txt") == 0
    assert rknn.export_rknn("./concat_block_edited.rknn") == 0


def _quantize_algorithm_mmse(work, load, reference) -> None:
    _dataset(work)
    _images(work, ["dog_224x224.jpg"])
    rknn = RKNN(verbose=True)
    rknn.config(mean_values=[128, 128, 128], std_values=[128, 128, 128], target_platform="rk3566",
                quantized_method="channel", quantized_algorithm="mmse")
    assert load(rknn) == 0
    assert rknn.build(do_quantization=True, dataset="./dataset.txt") == 0
    assert rknn.accuracy_analysis(inputs=["dog_224x224.jpg"], output_dir=None) == 0
    assert (work / "snapshot" / "error_analysis.txt").is_file()
    img = np.expand_dims(_imread("./dog_224x224.jpg")[:, :, ::-1], 0)
    assert rknn.init_runtime() == 0
    outputs = rknn.inference(inputs=[img], data_format=["nhwc"])
    np.save("./functions_quantize_algorithm_mmse_0.npy", outputs[0])
    ref = reference((img - 128.0) / 128.0)
    assert outputs[0][0].shape == (1001,) and outputs[0].shape == ref.shape
    assert _cosine(outputs[0], ref) > 0.98, _cosine(outputs[0], ref)
    rknn.release()


def test_functions_quantize_algorithm_mmse(work):
    pb, logits = work / "mobilenet_v1_1.0_224_frozen.pb", "MobilenetV1/Logits/SpatialSqueeze"
    _tf_classifier(pb, "input", logits, 1001)
    _quantize_algorithm_mmse(work, lambda r: r.load_tensorflow(tf_pb="mobilenet_v1_1.0_224_frozen.pb", inputs=["input"],
                                                               input_size_list=[[1, SIZE, SIZE, 3]], outputs=[logits]),
                             lambda x: _run_frozen(pb, {"input": x}, [logits])[0])


def test_functions_quantize_algorithm_mmse_onnx_twin(work):
    _classifier(work / "mobilenet_v1.onnx", output="MobilenetV1_Logits_SpatialSqueeze", classes=1001)
    ref = _onnx_reference(work / "mobilenet_v1.onnx")
    _quantize_algorithm_mmse(work, lambda r: r.load_onnx(model="mobilenet_v1.onnx"),
                             lambda x: ref(x.transpose(0, 3, 1, 2)))
