"""load_darknet: a YOLO-style cfg + weights written from torch tensors, compared with the same torch network."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import cosine, run_rknn, write_dataset

torch = pytest.importorskip("torch")
F = torch.nn.functional

CFG = """
[net]
batch=1
width=64
height=64
channels=3

# 0
[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=leaky

# 1
[maxpool]
size=2
stride=2

# 2
[convolutional]
batch_normalize=1
filters=16
size=3
stride=1
pad=1
activation=mish

# 3
[convolutional]
batch_normalize=1
filters=16
size=1
stride=1
pad=1
activation=leaky

# 4
[shortcut]
from=-2
activation=linear

# 5
[maxpool]
size=2
stride=1

# 6
[convolutional]
filters=18
size=1
stride=1
pad=1
activation=linear

# 7
[yolo]
mask=0,1,2
classes=1

# 8
[route]
layers=-4

# 9
[convolutional]
batch_normalize=1
filters=8
size=1
stride=1
pad=1
activation=logistic

# 10
[upsample]
stride=2

# 11
[route]
layers=-1,0

# 12
[convolutional]
filters=18
size=1
stride=1
pad=1
activation=linear

# 13
[yolo]
mask=3,4,5
classes=1
"""

CONVS = [(0, 3, 8, 3, True), (2, 8, 16, 3, True), (3, 16, 16, 1, True), (6, 16, 18, 1, False),
         (9, 16, 8, 1, True), (12, 16, 18, 1, False)]


def _params(seed=0) -> dict:
    g = torch.Generator().manual_seed(seed)
    p = {}
    for idx, cin, cout, k, bn in CONVS:
        layer = {"w": torch.randn(cout, cin, k, k, generator=g) * (2.0 / (cin * k * k)) ** 0.5,
                 "b": torch.randn(cout, generator=g) * 0.1}
        if bn:
            layer.update(scale=torch.rand(cout, generator=g) + 0.5, mean=torch.randn(cout, generator=g) * 0.1,
                         var=torch.rand(cout, generator=g) + 0.5)
        p[idx] = layer
    return p


def _write_weights(path, p: dict) -> None:
    parts = [np.array([0, 2, 0], np.int32).tobytes(), np.array([0], np.int64).tobytes()]
    for idx, *_ in CONVS:
        layer = p[idx]
        names = ["b", "scale", "mean", "var", "w"] if "scale" in layer else ["b", "w"]
        parts += [layer[n].numpy().astype(np.float32).ravel().tobytes() for n in names]
    path.write_bytes(b"".join(parts))


def _torch_reference(x: torch.Tensor, p: dict) -> list:
    def conv(t, idx, act):
        layer = p[idx]
        k = layer["w"].shape[-1]
        y = F.conv2d(t, layer["w"], None if "scale" in layer else layer["b"], padding=k // 2)
        if "scale" in layer:
            y = (y - layer["mean"].view(1, -1, 1, 1)) / torch.sqrt(layer["var"].view(1, -1, 1, 1) + 1e-5)
            y = y * layer["scale"].view(1, -1, 1, 1) + layer["b"].view(1, -1, 1, 1)
        return {"leaky": lambda v: F.leaky_relu(v, 0.1), "mish": F.mish, "logistic": torch.sigmoid,
                "linear": lambda v: v}[act](y)

    l0 = conv(x, 0, "leaky")
    l1 = F.max_pool2d(l0, 2, 2)
    l2 = conv(l1, 2, "mish")
    l3 = conv(l2, 3, "leaky")
    l4 = l3 + l2
    l5 = F.max_pool2d(F.pad(l4, (0, 1, 0, 1), value=-1e30), 2, 1)  # darknet: size 2 stride 1 keeps the size
    head1 = conv(l5, 6, "linear")
    l9 = conv(l4, 9, "logistic")  # route layers=-4 at index 8 is layer 4
    l10 = F.interpolate(l9, scale_factor=2, mode="nearest")
    head2 = conv(torch.cat([l10, l0], 1), 12, "linear")
    return [head1, head2]


@pytest.fixture(scope="module")
def darknet(tmp_path_factory):
    folder = tmp_path_factory.mktemp("darknet")
    (folder / "net.cfg").write_text(CFG)
    p = _params()
    _write_weights(folder / "net.weights", p)
    return folder, p


def test_darknet_heads_match_torch_in_fp16_and_int8(darknet):
    folder, p = darknet
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (1, 64, 64, 3)).astype(np.uint8)
    x = torch.from_numpy(image.transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
    ref = [r.numpy() for r in _torch_reference(x, p)]
    load = lambda r: r.load_darknet(model=str(folder / "net.cfg"), weight=str(folder / "net.weights"))  # noqa: E731
    norm = dict(mean_values=[[0, 0, 0]], std_values=[[255, 255, 255]])  # the toolkit's yolov3 example
    outs = run_rknn(load, [image], **norm)
    assert [o.shape for o in outs] == [(1, 18, 32, 32), (1, 18, 64, 64)]
    for r, o in zip(ref, outs):
        assert cosine(o, r) >= 0.9999, cosine(o, r)
    calib = [rng.integers(0, 256, (1, 3, 64, 64)).astype(np.float32) for _ in range(6)]
    q = run_rknn(load, [image], quantize=True, dataset=write_dataset(folder / "calib", calib), **norm)
    for r, o in zip(ref, q):
        assert cosine(o, r) >= 0.98, cosine(o, r)


def test_weights_of_another_cfg_are_refused(darknet, tmp_path):
    from rknnlink.api import RKNN

    folder, _ = darknet
    short = tmp_path / "short.weights"
    short.write_bytes((folder / "net.weights").read_bytes()[:400])
    with pytest.raises(ValueError, match="weights file ends"):
        RKNN().load_darknet(str(folder / "net.cfg"), str(short))


def test_unsupported_sections_are_listed_in_one_error(tmp_path):
    from rknnlink.api import RKNN

    cfg = tmp_path / "odd.cfg"
    cfg.write_text("[net]\nwidth=8\nheight=8\nchannels=3\n[reorg]\nstride=2\n[local]\n[reorg]\nstride=2\n")
    with pytest.raises(ValueError) as err:
        RKNN().load_darknet(str(cfg), None)
    text = str(err.value)
    assert "[reorg] x2 (first: 'reorg_0')" in text and "[local] x1" in text
