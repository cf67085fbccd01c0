"""load_caffe: a prototxt + caffemodel written from a torch model's weights, compared with that torch model."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import cosine, run_rknn, write_dataset

torch = pytest.importorskip("torch")
F = torch.nn.functional

PROTOTXT = """
name: "caffe_test_net"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 32 dim: 32 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 8 kernel_size: 3 pad: 1 } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" batch_norm_param { eps: 1e-5 } }
layer { name: "scale1" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
        convolution_param { num_output: 8 kernel_size: 3 pad: 1 group: 2 } }
layer { name: "prelu2" type: "PReLU" bottom: "conv2" top: "conv2" }
layer { name: "sum" type: "Eltwise" bottom: "pool1" bottom: "conv2" top: "sum"
        eltwise_param { operation: SUM coeff: 1 coeff: 0.5 } }
layer { name: "slice" type: "Slice" bottom: "sum" top: "s1" top: "s2" slice_param { axis: 1 slice_point: 3 } }
layer { name: "cat" type: "Concat" bottom: "s2" bottom: "s1" top: "cat" }
layer { name: "drop" type: "Dropout" bottom: "cat" top: "cat" }
layer { name: "deconv" type: "Deconvolution" bottom: "cat" top: "deconv"
        convolution_param { num_output: 4 kernel_size: 2 stride: 2 } }
layer { name: "pool2" type: "Pooling" bottom: "deconv" top: "pool2"
        pooling_param { pool: AVE kernel_size: 3 stride: 2 } }
layer { name: "up" type: "Upsample" bottom: "pool2" top: "up" upsample_param { scale: 2 } }
layer { name: "interp" type: "Interp" bottom: "cat" top: "interp" interp_param { height: 20 width: 20 } }
layer { name: "norm" type: "Normalize" bottom: "cat" top: "norm"
        norm_param { across_spatial: false channel_shared: false } }
layer { name: "perm" type: "Permute" bottom: "norm" top: "perm" permute_param { order: 0 order: 2 order: 3 order: 1 } }
layer { name: "flat" type: "Flatten" bottom: "perm" top: "flat" }
layer { name: "prior" type: "PriorBox" bottom: "cat" bottom: "data" top: "prior"
        prior_box_param { min_size: 8 max_size: 16 aspect_ratio: 2 flip: true clip: true
                          variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 } }
layer { name: "fc" type: "InnerProduct" bottom: "pool2" top: "fc" inner_product_param { num_output: 10 } }
layer { name: "resh" type: "Reshape" bottom: "fc" top: "resh" reshape_param { shape { dim: 0 dim: 2 dim: -1 } } }
layer { name: "prob" type: "Softmax" bottom: "resh" top: "prob" softmax_param { axis: 2 } }
"""


def _weights(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)

    def r(*shape, s=0.3):
        return torch.randn(*shape, generator=g) * s

    return {"conv1": [r(8, 3, 3, 3), r(8, s=0.1)],
            "bn1": [r(8, s=0.2), torch.rand(8, generator=g) + 0.5, torch.tensor([2.0])],
            "scale1": [torch.rand(8, generator=g) + 0.5, r(8, s=0.1)],
            "conv2": [r(8, 4, 3, 3), r(8, s=0.1)], "prelu2": [torch.rand(8, generator=g) * 0.3],
            "deconv": [r(8, 4, 2, 2), r(4, s=0.1)], "norm": [torch.rand(8, generator=g) * 10 + 5],
            "fc": [r(10, 1024, s=0.05), r(10, s=0.1)]}


def _torch_reference(x: torch.Tensor, w: dict) -> dict:
    y = F.conv2d(x, w["conv1"][0], w["conv1"][1], padding=1)
    mean, var = w["bn1"][0] / w["bn1"][2], w["bn1"][1] / w["bn1"][2]  # Caffe divides by the third blob
    y = (y - mean.view(1, -1, 1, 1)) / torch.sqrt(var.view(1, -1, 1, 1) + 1e-5)
    y = F.relu(y * w["scale1"][0].view(1, -1, 1, 1) + w["scale1"][1].view(1, -1, 1, 1))
    pool1 = F.max_pool2d(y, 3, 2, ceil_mode=True)                       # 32 -> 16 (Caffe rounds up)
    conv2 = F.prelu(F.conv2d(pool1, w["conv2"][0], w["conv2"][1], padding=1, groups=2), w["prelu2"][0])
    s = pool1 + 0.5 * conv2
    cat = torch.cat([s[:, 3:], s[:, :3]], 1)
    deconv = F.conv_transpose2d(cat, w["deconv"][0], w["deconv"][1], stride=2)  # 32
    pool2 = F.avg_pool2d(deconv, 3, 2, ceil_mode=True)                  # 32 -> 16, last window clipped
    up = F.interpolate(pool2, scale_factor=2, mode="nearest")
    interp = F.interpolate(cat, size=(20, 20), mode="bilinear", align_corners=True)
    norm = cat / torch.sqrt((cat * cat).sum(1, keepdim=True) + 1e-10) * w["norm"][0].view(1, -1, 1, 1)
    flat = norm.permute(0, 2, 3, 1).reshape(1, -1)
    fc = F.linear(pool2.reshape(1, -1), w["fc"][0], w["fc"][1])
    prob = torch.softmax(fc.reshape(1, 2, 5), 2)
    return {"up": up, "interp": interp, "flat": flat, "prob": prob}


def _write(folder, w: dict):
    from google.protobuf import text_format

    from rknnlink.model.frontends import caffe_pb2

    proto = folder / "net.prototxt"
    proto.write_text(PROTOTXT)
    net = caffe_pb2.NetParameter()
    text_format.Parse(PROTOTXT, net)
    for layer in net.layer:
        for t in w.get(layer.name, []):
            blob = layer.blobs.add()
            blob.shape.dim.extend(t.shape)
            blob.data.extend(t.numpy().ravel().tolist())
    model = folder / "net.caffemodel"
    model.write_bytes(net.SerializeToString())
    return proto, model


@pytest.fixture(scope="module")
def caffe_net(tmp_path_factory):
    folder = tmp_path_factory.mktemp("caffe")
    w = _weights()
    proto, model = _write(folder, w)
    return folder, proto, model, w


def test_caffe_net_matches_torch_in_fp16_and_int8(caffe_net):
    folder, proto, model, w = caffe_net
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (1, 3, 32, 32)).astype(np.float32)
    ref = _torch_reference(torch.from_numpy(x), w)
    outs = run_rknn(lambda r: r.load_caffe(str(proto), blobs=str(model)), [x], data_format="nchw")
    # graph outputs are the unconsumed blobs in layer order; the constant PriorBox blob is left out
    assert len(outs) == 4
    for (name, r), o in zip(ref.items(), outs):
        assert o.shape == tuple(r.shape), name
        assert cosine(o, r.numpy()) >= 0.9999, (name, cosine(o, r.numpy()))
    dataset = write_dataset(folder / "calib", [rng.uniform(-1, 1, x.shape).astype(np.float32) for _ in range(6)])
    q = run_rknn(lambda r: r.load_caffe(str(proto), blobs=str(model)), [x], quantize=True, dataset=dataset,
                 data_format="nchw")
    for (name, r), o in zip(ref.items(), q):
        assert cosine(o, r.numpy()) >= 0.98, (name, cosine(o, r.numpy()))


def test_prior_box_matches_ssd_layout():
    from rknnlink.model.frontends import caffe_pb2
    from rknnlink.model.frontends.caffe import prior_boxes

    p = caffe_pb2.PriorBoxParameter(min_size=[30.0], max_size=[60.0], aspect_ratio=[2.0], flip=True, clip=False,
                                    variance=[0.1, 0.1, 0.2, 0.2])
    boxes = prior_boxes((2, 2), (300, 300), p)
    assert boxes.shape == (1, 2, 2 * 2 * 4 * 4)  # ratios 1, sqrt(min*max), 2, 1/2 -> 4 priors per cell
    first = boxes[0, 0, :4]
    cx = cy = 0.5 * 150  # step = 300 / 2
    np.testing.assert_allclose(first, [(cx - 15) / 300, (cy - 15) / 300, (cx + 15) / 300, (cy + 15) / 300],
                               rtol=1e-6)
    np.testing.assert_allclose(boxes[0, 1, :4], [0.1, 0.1, 0.2, 0.2])


def test_random_weights_when_blobs_is_none(caffe_net):
    _, proto, _, _ = caffe_net
    x = np.zeros((1, 3, 32, 32), np.float32)
    outs = run_rknn(lambda r: r.load_caffe(str(proto)), [x], data_format="nchw")
    assert len(outs) == 4 and all(np.all(np.isfinite(o)) for o in outs)


def test_v1_format_is_refused_with_the_upgrade_advice(tmp_path):
    from rknnlink.api import RKNN

    proto = tmp_path / "old.prototxt"
    proto.write_text('name: "old"\ninput: "data"\ninput_dim: 1\ninput_dim: 3\ninput_dim: 8\ninput_dim: 8\n'
                     'layers { name: "conv" type: CONVOLUTION bottom: "data" top: "conv" }\n')
    with pytest.raises(ValueError, match="upgrade_net_proto_text"):
        RKNN().load_caffe(str(proto))


def test_unsupported_layers_are_listed_in_one_error(tmp_path):
    from rknnlink.api import RKNN

    proto = tmp_path / "odd.prototxt"
    proto.write_text(
        'input: "data"\ninput_shape { dim: 1 dim: 3 dim: 8 dim: 8 }\n'
        'layer { name: "a" type: "Crop" bottom: "data" top: "a" }\n'
        'layer { name: "b" type: "SPP" bottom: "a" top: "b" }\n'
        'layer { name: "c" type: "SPP" bottom: "data" top: "c" }\n'
        'layer { name: "d" type: "DetectionOutput" bottom: "c" top: "d" }\n')
    with pytest.raises(ValueError) as err:
        RKNN().load_caffe(str(proto))
    text = str(err.value)
    assert "Crop x1 (first: 'a')" in text and "SPP x2 (first: 'b')" in text and "DetectionOutput" in text
