"""RKNN-Toolkit2's example scripts (rknn-toolkit2/examples) with only the import changed.

Each test makes the call sequence of one example with the example's arguments and reads back what the
example reads back. The models are small stand-ins generated here (same inputs, outputs and file names;
smaller images to stay fast); images are saved as the example's .jpg files and read the way its cv2 calls
would give them (HWC uint8). Examples that load Caffe or TensorFlow models get stand-ins in those formats
(written with rknnlink's caffe.proto and with TensorFlow); each also has an ONNX twin running the same body.
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



def _caffe_classifier(folder: Path, classes: int = 1000, size: int = SIZE) -> None:
    """The same classifier as a Caffe deploy prototxt + caffemodel at the examples' relative path
    (../caffe/mobilenet_v2/ from the work folder), written with rknnlink's caffe.proto."""
    from google.protobuf import text_format

    from rknnlink.model.frontends import caffe_pb2

    rng = np.random.default_rng(0)
    proto = (f'name: "mobilenet_v2"\nlayer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ dim: 1 '
             f'dim: 3 dim: {size} dim: {size} }} }} }}\n'
             'layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { '
             'num_output: 16 kernel_size: 3 pad: 1 stride: 2 } }\n'
             'layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }\n'
             'layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2" convolution_param { '
             'num_output: 32 kernel_size: 3 pad: 1 } }\n'
             'layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }\n'
             'layer { name: "pool" type: "Pooling" bottom: "conv2" top: "pool" pooling_param { pool: AVE '
             'global_pooling: true } }\n'
             f'layer {{ name: "fc" type: "InnerProduct" bottom: "pool" top: "fc" inner_product_param {{ '
             f'num_output: {classes} }} }}\n'
             'layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }\n')
    shapes = {"conv1": [(16, 3, 3, 3), (16,)], "conv2": [(32, 16, 3, 3), (32,)], "fc": [(classes, 32), (classes,)]}
    net = caffe_pb2.NetParameter()
    text_format.Parse(proto, net)
    for layer in net.layer:
        for shape in shapes.get(layer.name, []):
            blob = layer.blobs.add()
            blob.shape.dim.extend(shape)
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
            blob.data.extend((rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).ravel().tolist())
    model_dir = folder.parent / "caffe" / "mobilenet_v2"
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "mobilenet_v2_deploy.prototxt").write_text(proto)
    (model_dir / "mobilenet_v2.caffemodel").write_bytes(net.SerializeToString())


def _load_caffe_standin(rknn: RKNN) -> int:
    """The examples' load_caffe call (paths relative to examples/functions/<name>/)."""
    return rknn.load_caffe(model="../caffe/mobilenet_v2/mobilenet_v2_deploy.prototxt",
                           blobs="../caffe/mobilenet_v2/mobilenet_v2.caffemodel")


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


def _hybrid_quant(work, load) -> None:
    """step1.py / step2.py file names as the example reads them."""
    _dataset(work)
    _images(work, ["dog_bike_car_300x300.jpg"])
    step1 = RKNN(verbose=True)
    step1.config(mean_values=[127.5, 127.5, 127.5], std_values=[127.5, 127.5, 127.5], target_platform="rk3566")
    assert load(step1) == 0
    assert step1.hybrid_quantization_step1(dataset="./dataset.txt", proposal=False) == 0
    step1.release()
    step2 = RKNN(verbose=True)
    assert step2.hybrid_quantization_step2(model_input="./ssd_mobilenet_v2.model",
                                           data_input="./ssd_mobilenet_v2.data",
                                           model_quantization_cfg="./ssd_mobilenet_v2.quantization.cfg") == 0
    assert step2.export_rknn("./ssd_mobilenet_v2.rknn") == 0
    assert step2.accuracy_analysis(inputs=["./dog_bike_car_300x300.jpg"], output_dir=None) == 0
    img = np.expand_dims(_imread("./dog_bike_car_300x300.jpg")[:, :, ::-1], 0)
    assert step2.init_runtime() == 0
    outputs = step2.inference(inputs=[img], data_format=["nhwc"])
    np.save("./functions_hybrid_quant_0.npy", outputs[0])
    assert step2._model_platform() == "rk3566"
    step2.release()


def test_functions_hybrid_quant_step1_step2(work):
    _tf_classifier(work / "ssd_mobilenet_v2.pb", "FeatureExtractor/MobilenetV2/MobilenetV2/input",
                   ["concat", "concat_1"], classes=8)
    _hybrid_quant(work, lambda r: r.load_tensorflow(tf_pb="./ssd_mobilenet_v2.pb",
                                                    inputs=["FeatureExtractor/MobilenetV2/MobilenetV2/input"],
                                                    outputs=["concat_1", "concat"],
                                                    input_size_list=[[1, SIZE, SIZE, 3]]))


def test_functions_hybrid_quant_onnx_twin(work):
    _classifier(work / "ssd_mobilenet_v2.onnx", output="concat")
    _hybrid_quant(work, lambda r: r.load_onnx(model="./ssd_mobilenet_v2.onnx"))


def _dynamic_shape(work, load) -> None:
    _dataset(work, size=32)
    _images(work, ["dog_224x224.jpg"], size=40)
    dynamic_input = [[[1, 3, 32, 32]], [[1, 3, 16, 16]], [[1, 3, 24, 24]]]
    rknn = RKNN(verbose=True)
    rknn.config(mean_values=[103.94, 116.78, 123.68], std_values=[58.82, 58.82, 58.82], quant_img_RGB2BGR=True,
                target_platform="rk3566", dynamic_input=dynamic_input)
    assert load(rknn) == 0
    assert rknn.build(do_quantization=True, dataset="./dataset.txt") == 0
    assert rknn.export_rknn("./mobilenet_v2.rknn") == 0
    assert rknn.init_runtime() == 0
    img = Image.open("./dog_224x224.jpg")
    for size in (24, 16, 32):  # cv2.resize then NCHW, as the example does
        resized = np.asarray(img.resize((size, size)))[:, :, ::-1]
        x = np.transpose(np.expand_dims(resized, 0), (0, 3, 1, 2))
        outputs = rknn.inference(inputs=[x], data_format=["nchw"])
        assert outputs[0].reshape((-1, 1000)).shape == (1, 1000)
    rknn.release()


def test_functions_dynamic_shape(work):
    _caffe_classifier(work)
    _dynamic_shape(work, _load_caffe_standin)


def test_functions_dynamic_shape_onnx_twin(work):
    _classifier(work / "mobilenet_v2.onnx", output="prob", dynamic=True)
    _dynamic_shape(work, lambda r: r.load_onnx(model="mobilenet_v2.onnx"))


def test_functions_custom_op_convert_custom_onnx_to_rknn(work):
    from test_custom_op import _dual_residual, cstDualResidual  # the example's class (same interface)

    _dual_residual(work / "dual_residual.onnx")
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((2, 1, 3, 10, 10)).astype(np.float32)
    np.save("dual_residual_input_0.npy", x)
    np.save("dual_residual_input_1.npy", y)
    rknn = RKNN(verbose=True)
    rknn.config(target_platform="rk3588")
    assert rknn.reg_custom_op(cstDualResidual()) == 0
    assert rknn.load_onnx(model="dual_residual.onnx") == 0
    assert rknn.build(do_quantization=False) == 0
    assert rknn.export_rknn("dual_residual_custom.rknn") == 0
    assert rknn.init_runtime() == 0
    in0 = np.transpose(np.load("dual_residual_input_0.npy"), (0, 2, 3, 1))
    in1 = np.transpose(np.load("dual_residual_input_1.npy"), (0, 2, 3, 1))
    outputs = rknn.inference(inputs=[in0, in1])
    from scipy.spatial import distance
    assert 1 - distance.cosine(outputs[0].ravel(), (x * 0.5 - y).ravel()) > 0.99999
    assert 1 - distance.cosine(outputs[1].ravel(), (y * 0.5 - x).ravel()) > 0.99999
    rknn.release()


def test_functions_custom_op_non_onnx_standard(work):
    from test_custom_op import cstSigmoid

    _yolo_heads(work / "yolox_s.onnx")
    model = onnx.load("yolox_s.onnx")  # the example's edit_onnx: Sigmoid -> cstSigmoid
    for node in model.graph.node:
        if node.op_type == "Sigmoid":
            node.op_type = "cstSigmoid"
    onnx.save(model, "yolox_s_custom.onnx")
    _dataset(work)
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


def _multi_batch(work, load) -> None:
    _dataset(work)
    _images(work, ["dog_224x224.jpg", "goldfish_224x224.jpg", "space_shuttle_224.jpg"])
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
    per_batch = outputs[0].reshape((-1, 1000))
    assert per_batch.shape == (4, 1000)
    np.testing.assert_array_equal(per_batch[0], per_batch[3])  # the same image in batch 0 and 3
    rknn.release()


def test_functions_multi_batch(work):
    _caffe_classifier(work)
    _multi_batch(work, _load_caffe_standin)


def test_functions_multi_batch_onnx_twin(work):
    _classifier(work / "mobilenet_v2.onnx", output="prob")
    _multi_batch(work, lambda r: r.load_onnx(model="mobilenet_v2.onnx"))


def _npu_device_test(work, monkeypatch, capsys, load) -> None:
    """The connected-board example, unchanged but for the loader: the board comes from RKNNLINK_DEVICE."""
    monkeypatch.setenv("RKNNLINK_DEVICE", "sim")
    _dataset(work)
    _images(work, ["dog_224x224.jpg"])
    rknn = RKNN(verbose=True)
    rknn.config(mean_values=[103.94, 116.78, 123.68], std_values=[58.82, 58.82, 58.82], quant_img_RGB2BGR=True,
                target_platform="rk3588")
    assert load(rknn) == 0
    assert rknn.build(do_quantization=True, dataset="./dataset.txt") == 0
    assert rknn.accuracy_analysis(inputs=["./dog_224x224.jpg"], output_dir="./snapshot", target="rk3588") == 0
    assert (work / "snapshot" / "runtime" / "prob.txt").is_file()
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
    rknn.release()


def test_functions_npu_device_test(work, monkeypatch, capsys):
    _caffe_classifier(work)
    _npu_device_test(work, monkeypatch, capsys, _load_caffe_standin)


def test_functions_npu_device_test_onnx_twin(work, monkeypatch, capsys):
    _classifier(work / "mobilenet_v2.onnx", output="prob")
    _npu_device_test(work, monkeypatch, capsys, lambda r: r.load_onnx(model="mobilenet_v2.onnx"))


def _codegen(work, load) -> None:
    _dataset(work)
    _images(work, ["dog_224x224.jpg"])
    rknn = RKNN(verbose=False)
    rknn.config(mean_values=[103.94, 116.78, 123.68], std_values=[58.82, 58.82, 58.82], quant_img_RGB2BGR=True,
                target_platform="rk3562")
    assert load(rknn) == 0
    assert rknn.build(do_quantization=True, dataset="./dataset.txt") == 0
    assert rknn.export_rknn("./mobilenet_v2.rknn") == 0
    assert rknn.codegen(output_path="./rknn_app_demo", inputs=["./dog_224x224.jpg"], overwrite=True) == 0
    for name in ("CMakeLists.txt", "src/main.c", "model/mobilenet_v2.rknn", "data/input_0.npy"):
        assert (work / "rknn_app_demo" / name).is_file()
    rknn.release()


def test_functions_codegen(work):
    _caffe_classifier(work)
    _codegen(work, _load_caffe_standin)


def test_functions_codegen_onnx_twin(work):
    _classifier(work / "mobilenet_v2.onnx", output="prob")
    _codegen(work, lambda r: r.load_onnx(model="mobilenet_v2.onnx"))


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


def _quantize_algorithm_mmse(work, load) -> None:
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
    assert outputs[0][0].shape == (1001,)
    rknn.release()


def test_functions_quantize_algorithm_mmse(work):
    _tf_classifier(work / "mobilenet_v1_1.0_224_frozen.pb", "input", "MobilenetV1/Logits/SpatialSqueeze", 1001)
    _quantize_algorithm_mmse(work, lambda r: r.load_tensorflow(tf_pb="mobilenet_v1_1.0_224_frozen.pb", inputs=["input"],
                                      input_size_list=[[1, SIZE, SIZE, 3]],
                                      outputs=["MobilenetV1/Logits/SpatialSqueeze"]))


def test_functions_quantize_algorithm_mmse_onnx_twin(work):
    _classifier(work / "mobilenet_v1.onnx", output="MobilenetV1_Logits_SpatialSqueeze", classes=1001)
    _quantize_algorithm_mmse(work, lambda r: r.load_onnx(model="mobilenet_v1.onnx"))
