"""Model factories shared by the tests (other areas may import them: keep the signatures stable).

All random weights are seeded, so every call returns the same model. Models are built with onnx.helper
(IR version 8, so onnxruntime loads them) except the digits CNN, which torch trains and exports.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ONNX_DATA = Path(onnx.__file__).parent / "backend" / "test" / "data"
PYTORCH_CONVERTED = ONNX_DATA / "pytorch-converted"
LIGHT_MODELS = ONNX_DATA / "light"
IR_VERSION = 8


class _GraphBuilder:
    """A tiny helper to write graphs in a few lines: unique names, seeded He-initialised weights."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list = []
        self.inits: list = []
        self.count = 0

    def name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}_{self.count}"

    def const(self, arr: np.ndarray, prefix: str = "c") -> str:
        name = self.name(prefix)
        self.inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def node(self, op: str, inputs: list, n_out: int = 1, **attrs) -> list:
        name = self.name(op.lower())
        outs = [f"{name}_out{i}" if n_out > 1 else f"{name}_out" for i in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=name, **attrs))
        return outs

    def conv(self, x: str, cin: int, cout: int, k: int = 3, stride: int = 1, group: int = 1,
             bias: bool = True, bn: bool = False) -> str:
        fan_in = cin // group * k * k
        w = self.rng.normal(0, np.sqrt(2.0 / fan_in), (cout, cin // group, k, k)).astype(np.float32)
        ins = [x, self.const(w, "w")]
        if bias:
            ins.append(self.const(self.rng.normal(0, 0.05, cout).astype(np.float32), "b"))
        y = self.node("Conv", ins, kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4,
                      group=group)[0]
        if bn:
            y = self.batchnorm(y, cout)
        return y

    def batchnorm(self, x: str, c: int) -> str:
        r = self.rng
        params = [r.uniform(0.6, 1.2, c), r.normal(0, 0.1, c), r.normal(0, 0.1, c), r.uniform(0.6, 1.4, c)]
        return self.node("BatchNormalization", [x] + [self.const(p.astype(np.float32), "bn") for p in params],
                         epsilon=1e-5)[0]

    def relu6(self, x: str) -> str:
        return self.node("Clip", [x, self.const(np.float32(0.0), "min"), self.const(np.float32(6.0), "max")])[0]

    def gemm(self, x: str, k: int, n: int) -> str:
        w = self.rng.normal(0, np.sqrt(1.0 / k), (n, k)).astype(np.float32)
        b = self.rng.normal(0, 0.05, n).astype(np.float32)
        return self.node("Gemm", [x, self.const(w, "fc_w"), self.const(b, "fc_b")], transB=1)[0]

    def model(self, name: str, inputs: list, outputs: list, opset: int = 13) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, name, inputs, outputs, self.inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=IR_VERSION,
                              producer_name="rknnlink-tests")
        onnx.checker.check_model(m)
        return m


def _vi(name: str, shape: Optional[list]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def mobilenetv2_like(size: int = 224, width: float = 0.75, seed: int = 0, n_classes: int = 1000,
                     blocks: Optional[list] = None) -> onnx.ModelProto:
    """A MobileNetV2-like classifier: stem conv+BN+ReLU6, inverted residual blocks (1x1 expand, 3x3
    depthwise, 1x1 project, each with BatchNormalization to fold), residual Adds, 1x1 conv, global average
    pool, Flatten, Gemm. Input ``input`` [1, 3, size, size], output ``logits`` [1, n_classes]."""
    g = _GraphBuilder(seed)
    ch = lambda c: max(8, int(c * width + 4) // 8 * 8)  # noqa: E731
    # (expansion, out channels, repeats, stride) as in MobileNetV2 (17 blocks, like the toolkit's test net).
    blocks = blocks or [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                        (6, 160, 3, 2), (6, 320, 1, 1)]
    cin = ch(32)
    x = g.relu6(g.conv("input", 3, cin, 3, 2, bias=False, bn=True))
    for t, c, n, s in blocks:
        cout = ch(c)
        for i in range(n):
            hidden = cin * t
            y = x
            if t != 1:
                y = g.relu6(g.conv(y, cin, hidden, 1, bias=False, bn=True))
            y = g.relu6(g.conv(y, hidden, hidden, 3, s if i == 0 else 1, group=hidden, bias=False, bn=True))
            y = g.conv(y, hidden, cout, 1, bias=False, bn=True)
            x = g.node("Add", [x, y])[0] if (i > 0 or s == 1) and cin == cout else y
            cin = cout
    feat = 1280 if width <= 1 else ch(1280)  # MobileNetV2 keeps 1280 head channels for width <= 1
    x = g.relu6(g.conv(x, cin, feat, 1, bias=False, bn=True))
    x = g.node("GlobalAveragePool", [x])[0]
    x = g.node("Flatten", [x], axis=1)[0]
    logits = g.gemm(x, feat, n_classes)
    g.nodes[-1].output[0] = "logits"
    del logits
    return g.model("mobilenetv2_like", [_vi("input", [1, 3, size, size])], [_vi("logits", [1, n_classes])])


def yolo_like(size: int = 128, seed: int = 1, n_anchors: int = 3, n_classes: int = 4) -> onnx.ModelProto:
    """A small YOLO-like detector: conv backbone with SiLU (Mul(x, Sigmoid(x))), a top-down path with
    Resize (nearest, x2) and Concat, and two heads ending in Sigmoid. Input ``images`` [1, 3, size, size];
    outputs ``p_small`` (stride 16) and ``p_large`` (stride 8)."""
    g = _GraphBuilder(seed)

    def silu(x: str) -> str:
        return g.node("Mul", [x, g.node("Sigmoid", [x])[0]])[0]

    x = silu(g.conv("images", 3, 16, 3, 2, bn=True))
    x = silu(g.conv(x, 16, 32, 3, 2, bn=True))
    c3 = silu(g.conv(x, 32, 48, 3, 2, bn=True))          # stride 8
    c4 = silu(g.conv(c3, 48, 64, 3, 2, bn=True))         # stride 16
    lateral = silu(g.conv(c4, 64, 32, 1, bn=True))
    roi = g.const(np.zeros(0, np.float32), "roi")
    scales = g.const(np.array([1, 1, 2, 2], np.float32), "scales")
    up = g.node("Resize", [lateral, roi, scales], mode="nearest", coordinate_transformation_mode="asymmetric",
                nearest_mode="floor")[0]
    merged = g.node("Concat", [up, c3], axis=1)[0]
    p3 = silu(g.conv(merged, 80, 48, 3, bn=True))
    out_ch = n_anchors * (5 + n_classes)
    head_s = g.node("Sigmoid", [g.conv(c4, 64, out_ch, 1)])[0]
    head_l = g.node("Sigmoid", [g.conv(p3, 48, out_ch, 1)])[0]
    for node in g.nodes:
        if head_s in node.output:
            node.output[0] = "p_small"
        if head_l in node.output:
            node.output[0] = "p_large"
    s = size
    return g.model("yolo_like", [_vi("images", [1, 3, s, s])],
                   [_vi("p_small", [1, out_ch, s // 16, s // 16]), _vi("p_large", [1, out_ch, s // 8, s // 8])])


def two_input_model(seed: int = 2) -> onnx.ModelProto:
    """Two inputs: ``image`` [1, 3, 32, 32] through conv layers and ``features`` [1, 10] through Gemm,
    joined by Add and a final Gemm + Softmax. Output ``scores`` [1, 5]."""
    g = _GraphBuilder(seed)
    x = g.node("Relu", [g.conv("image", 3, 8, 3, 2)])[0]
    x = g.node("Relu", [g.conv(x, 8, 16, 3, 2)])[0]
    x = g.node("GlobalAveragePool", [x])[0]
    x = g.node("Reshape", [x, g.const(np.array([1, 16], np.int64), "shape")])[0]
    f = g.node("Tanh", [g.gemm("features", 10, 16)])[0]
    s = g.node("Add", [x, f])[0]
    logits = g.gemm(s, 16, 5)
    g.nodes.append(helper.make_node("Softmax", [logits], ["scores"], name="softmax", axis=-1))
    return g.model("two_inputs", [_vi("image", [1, 3, 32, 32]), _vi("features", [1, 10])], [_vi("scores", [1, 5])])


def conv_bn_act_model(act: str = "Relu", opset: int = 13, seed: int = 3) -> onnx.ModelProto:
    """Conv -> BatchNormalization -> activation -> graph output ``y``; input ``x`` [1, 3, 16, 16]."""
    g = _GraphBuilder(seed)
    y = g.conv("x", 3, 8, 3, bn=True)
    if act == "Clip":
        a = g.relu6(y)
    elif act == "SiLU":
        a = g.node("Mul", [y, g.node("Sigmoid", [y])[0]])[0]
    elif act == "LeakyRelu":
        a = g.node("LeakyRelu", [y], alpha=0.2)[0]
    elif act == "HardSigmoid":
        a = g.node("HardSigmoid", [y], alpha=0.25, beta=0.4)[0]
    else:
        a = g.node(act, [y])[0]
    g.nodes[-1].output[0] = "y"
    del a
    return g.model("conv_bn_act", [_vi("x", [1, 3, 16, 16])], [_vi("y", [1, 8, 16, 16])], opset=opset)


def single_node_model(op: str, in_shapes: list, out_shape: Optional[list] = None, opset: int = 13,
                      consts: Optional[dict] = None, **attrs) -> onnx.ModelProto:
    """One node with float inputs ``x0``, ``x1``... (shapes given) and constant inputs ``consts``
    (input position -> array, '' for an absent input); output ``y``."""
    consts = consts or {}
    n_in = len(in_shapes) + len(consts)
    inputs, names, inits, k = [], [], [], 0
    for pos in range(n_in):
        if pos in consts:
            if isinstance(consts[pos], str):
                names.append(consts[pos])
            else:
                names.append(f"c{pos}")
                inits.append(numpy_helper.from_array(np.asarray(consts[pos]), f"c{pos}"))
        else:
            names.append(f"x{k}")
            inputs.append(_vi(f"x{k}", in_shapes[k]))
            k += 1
    node = helper.make_node(op, names, ["y"], name=f"{op.lower()}_node", **attrs)
    graph = helper.make_graph([node], f"single_{op}", inputs, [_vi("y", out_shape)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=IR_VERSION)


def light_model(name: str, seed: int = 0, bn_passes: int = 0) -> onnx.ModelProto:
    """One of onnx's light model-zoo architectures (``bvlc_alexnet``, ``squeezenet``, ``resnet50`` ...) with
    its ConstantOfShape placeholder weights replaced by seeded random initializers scaled per role (He
    init for conv/fc weights, sane BatchNormalization statistics), so activations stay in range.

    ``bn_passes`` > 0 re-estimates every BatchNormalization's mean/var from its actual input on a random
    batch that many times (deep random nets otherwise drift out of the float16 range)."""
    model = onnx.load(str(LIGHT_MODELS / f"light_{name}.onnx"))
    rng = np.random.default_rng(seed)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    uses: dict = {}
    for node in model.graph.node:
        for slot, n in enumerate(node.input):
            uses.setdefault(n, (node, slot))
    new_nodes, new_inits = [], []
    for node in model.graph.node:
        if node.op_type != "ConstantOfShape" or node.input[0] not in inits:
            new_nodes.append(node)
            continue
        shape = tuple(int(d) for d in inits[node.input[0]])
        consumer, slot = uses.get(node.output[0], (None, -1))
        arr = _random_weight(rng, shape, consumer, slot)
        new_inits.append(numpy_helper.from_array(arr.astype(np.float32), node.output[0]))
    used = {n for node in new_nodes for n in node.input}
    kept = [i for i in model.graph.initializer if i.name in used] + new_inits
    init_names = {i.name for i in kept}
    inputs = [i for i in model.graph.input if i.name not in init_names and i.name in used]
    graph = helper.make_graph(new_nodes, name, inputs, list(model.graph.output), kept)
    out = helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=IR_VERSION)
    for _ in range(bn_passes):
        _reestimate_batchnorm(out, rng)
    return out


def _reestimate_batchnorm(model: onnx.ModelProto, rng: np.random.Generator) -> None:
    """Set each BatchNormalization's mean/var to the statistics of its input on random data (one ORT run)."""
    import onnxruntime as ort
    bns = [n for n in model.graph.node if n.op_type == "BatchNormalization"]
    if not bns:
        return
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for n in bns:
        probe.graph.output.append(onnx.ValueInfoProto(name=n.input[0]))
    sess = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    inp = model.graph.input[0]
    x = rng.standard_normal([d.dim_value for d in inp.type.tensor_type.shape.dim]).astype(np.float32)
    values = sess.run([n.input[0] for n in bns], {inp.name: x})
    inits = {i.name: i for i in model.graph.initializer}
    for n, v in zip(bns, values):
        v = v.astype(np.float64)
        if not np.all(np.isfinite(v)):
            continue  # overflowed upstream: a later pass fixes it once the earlier layers are normalised
        axes = tuple(a for a in range(v.ndim) if a != 1)
        var = v.var(axis=axes)
        # Nearly constant channels (dead ReLUs of a random net) would get huge gains and int8-hostile outliers.
        var = np.maximum(var, 0.1 * float(np.mean(var))) + 1e-3
        for name, stat in ((n.input[3], v.mean(axis=axes)), (n.input[4], var)):
            inits[name].CopyFrom(numpy_helper.from_array(stat.astype(np.float32), name))


def _random_weight(rng: np.random.Generator, shape: tuple, consumer, slot: int) -> np.ndarray:
    op = consumer.op_type if consumer is not None else ""
    if op == "Conv" and slot == 1:
        fan_in = int(np.prod(shape[1:]))
        return rng.normal(0, np.sqrt(2.0 / fan_in), shape)
    if op == "Gemm" and slot == 1:
        trans_b = any(a.name == "transB" and a.i for a in consumer.attribute)
        fan_in = shape[1] if trans_b else shape[0]
        return rng.normal(0, np.sqrt(1.0 / fan_in), shape)
    if op == "BatchNormalization":
        return {1: rng.uniform(0.6, 1.2, shape), 3: rng.normal(0, 0.1, shape),
                4: rng.uniform(0.6, 1.4, shape)}.get(slot, rng.normal(0, 0.1, shape))
    if op == "Mul":
        return rng.uniform(0.6, 1.2, shape)
    return rng.normal(0, 0.05, shape)


def digits_cnn(seed: int = 0, epochs: int = 12) -> tuple:
    """Train a small CNN on scikit-learn's digits with torch and export it (opset 13, dynamo=False).

    Returns (onnx model, x_train, x_test, y_test) with x as float32 [N, 1, 8, 8] in 0..16 and the model
    expecting (x - 8) / 8 (pass mean 8, std 8 to the build; the ONNX model itself takes normalised input).
    """
    import io

    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    torch.manual_seed(seed)
    digits = load_digits()
    x = digits.images.astype(np.float32)[:, None]
    x_train, x_test, y_train, y_test = train_test_split(x, digits.target, test_size=0.3, random_state=seed)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
        torch.nn.Conv2d(16, 32, 3, padding=1, stride=2), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Linear(32 * 4 * 4, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    xt = torch.from_numpy((x_train - 8) / 8)
    yt = torch.from_numpy(y_train.astype(np.int64))
    for _ in range(epochs):
        perm = torch.randperm(len(xt))
        for i in range(0, len(xt), 64):
            idx = perm[i:i + 64]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
    net.eval()
    buf = io.BytesIO()
    torch.onnx.export(net, torch.zeros(1, 1, 8, 8), buf, input_names=["digit"], output_names=["logits"],
                      opset_version=13, dynamo=False)
    model = onnx.load_from_string(buf.getvalue())
    model.graph.name = "digits_cnn"
    return model, x_train, x_test, y_test


def smooth_images(n: int, size: int = 224, seed: int = 0, channels: int = 3) -> np.ndarray:
    """Natural-looking test images: 14x14 uniform colour noise, bilinearly upsampled, plus N(0, 12) pixel
    noise, rounded and clipped to 0..255. float32 [n, size, size, channels] (NHWC, raw pixels)."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    out = np.empty((n, size, size, channels), np.float32)
    for i in range(n):
        small = rng.uniform(0, 255, (14, 14, channels)).astype(np.uint8)
        mode = "RGB" if channels == 3 else "L"
        img = Image.fromarray(small if channels == 3 else small[:, :, 0], mode).resize((size, size),
                                                                                         Image.BILINEAR)
        arr = np.asarray(img, np.float32).reshape(size, size, channels)
        out[i] = np.clip(np.round(arr + rng.normal(0, 12, arr.shape)), 0, 255)
    return out


def write_npy_dataset(folder: Path, images: np.ndarray, layout: str = "nchw") -> Path:
    """Save each image as its own .npy (NCHW with a batch of 1, or NHWC) and list them in dataset.txt
    with paths relative to ``folder``. Returns the dataset.txt path."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, img in enumerate(images):
        arr = img[None] if layout == "nhwc" else img.transpose(2, 0, 1)[None]
        np.save(folder / f"sample{i:03d}.npy", np.ascontiguousarray(arr))
        lines.append(f"sample{i:03d}.npy")
    path = folder / "dataset.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def stats_of(x: np.ndarray, chunks: int = 4):
    """Calibration statistics of `x` fed in `chunks` batches, ranges first and histograms second, as the
    builder's two passes over a dataset do."""
    from rknnlink.model.calibration import TensorStats

    st = TensorStats()
    parts = np.array_split(x, chunks)
    for p in parts:
        st.update_range(p)
    for p in parts:
        st.update_hist(p)
    return st


def quant_mse(x: np.ndarray, lo: float, hi: float) -> float:
    """Mean squared error of int8 quantise/dequantise of `x` with the asymmetric range [lo, hi]."""
    from rknnlink.model.calibration import asymmetric_params

    scale, zp = asymmetric_params(lo, hi)
    q = np.clip(np.round(x / scale) + zp, -128, 127)
    return float(np.mean(((q - zp) * scale - x) ** 2))
