"""Cross-layer equalisation (rknnlink.model.rewrite.equalize_cross_layer): it fires on Conv/Gemm pairs joined
through positively homogeneous activations, leaves the fp32 result unchanged, does not fire through SiLU or
ReLU6 or on a tensor with several readers, and lifts per-tensor int8 on a net with badly scaled channels."""

from __future__ import annotations

from pathlib import Path

import factories as fac
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from rknnlink.model.builder import BuildConfig, BuildError, build, load_onnx
from rknnlink.model.rewrite import RESCALED

try:
    from rknnlink.runtime import RuntimeLibrary

    LIB = RuntimeLibrary.load(backend="sim")
except Exception:  # the simulator is not built
    LIB = None

pytestmark = pytest.mark.skipif(LIB is None, reason="simulated NPU library unavailable")


class Net:
    """A small ONNX writer whose Conv output channels have wildly different weight ranges (what BatchNorm
    folding leaves behind in trained nets), so per-tensor int8 weights waste their levels."""

    def __init__(self, size: int = 16, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits, self.k = [], [], 0
        self.size = size

    def c(self, value: np.ndarray) -> str:
        self.k += 1
        self.inits.append(numpy_helper.from_array(np.asarray(value, np.float32), f"w{self.k}"))
        return f"w{self.k}"

    def op(self, op_type: str, *inputs: str, **attrs) -> str:
        self.k += 1
        out = f"{op_type.lower()}{self.k}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=f"n_{out}", **attrs))
        return out

    def conv(self, x: str, cin: int, cout: int, k: int = 3, group: int = 1, spread: float = 3.0) -> str:
        w = self.rng.normal(0, 1, (cout, cin // group, k, k)) / np.sqrt(cin // group * k * k)
        w *= np.exp(self.rng.uniform(-spread, spread, (cout, 1, 1, 1)))  # channel ranges differ up to e^(2 spread)
        b = self.rng.normal(0, 0.1, cout) * np.abs(w).reshape(cout, -1).max(axis=1)
        return self.op("Conv", x, self.c(w), self.c(b), kernel_shape=[k, k], pads=[k // 2] * 4, group=group)

    def model(self, outputs: list, cin: int = 3) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes, "cle", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, self.size, self.size])],
            [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs], self.inits)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def _run_fp32_equalised(model: onnx.ModelProto, x: np.ndarray) -> list:
    """The simulator's fp32 outputs of the equalised graph, against onnxruntime on the original."""
    plain = build(load_onnx(model), BuildConfig(float_dtype="float32", progress=False), False, None)
    assert _rescaled(plain) == []  # float builds do not equalise unless asked
    cfg = BuildConfig(float_dtype="float32", progress=False, cross_layer_equalization=True)
    result = build(load_onnx(model), cfg, False, None)
    with LIB.init(result.data) as ctx:
        got = ctx.infer([x], formats=["nchw"])
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    for r, g in zip(ref, got):
        np.testing.assert_allclose(g.reshape(r.shape), r, rtol=1e-5, atol=1e-5 * float(np.abs(r).max()))
    return result


def _rescaled(result) -> list:
    return sorted(t.name for t in result.sim_model.tensors if t.name.endswith(RESCALED))


def _x(size: int = 16, cin: int = 3, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, cin, size, size)).astype(np.float32)


def test_fires_on_conv_relu_conv_and_depthwise_pointwise_unchanged_in_fp32():
    n = Net()
    a = n.op("Relu", n.conv("x", 3, 8))
    dw = n.op("LeakyRelu", n.conv(a, 8, 8, group=8), alpha=0.1)
    pooled = n.op("MaxPool", dw, kernel_shape=[2, 2], strides=[2, 2])
    pw = n.conv(pooled, 8, 6, k=1)
    result = _run_fp32_equalised(n.model([pw]), _x())
    # conv -> relu -> depthwise, depthwise -> leaky -> maxpool -> pointwise: three rescaled tensors
    assert _rescaled(result) == sorted([a + RESCALED, dw + RESCALED, pooled + RESCALED])
    assert result.sim_model.tensors[result.sim_model.outputs[0].tensor].name == pw  # outputs keep names


def test_fires_on_gemm_pairs():
    n = Net()
    n.nodes.append(helper.make_node("Flatten", ["x"], ["flat"], name="flat", axis=1))
    w1 = n.rng.normal(0, 1, (48, 20)) * np.exp(n.rng.uniform(-3, 3, 20))
    h = n.op("Relu", n.op("Gemm", "flat", n.c(w1), n.c(n.rng.normal(0, 0.1, 20))))
    out = n.op("Gemm", h, n.c(n.rng.normal(0, 1, (5, 20))), n.c(np.zeros(5)), transB=1)
    model = n.model([out], cin=3)
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_value = 4
    model.graph.input[0].type.tensor_type.shape.dim[3].dim_value = 4
    result = _run_fp32_equalised(model, _x(4))
    assert _rescaled(result) == [h + RESCALED]


@pytest.mark.parametrize("act", ["Sigmoid", "Tanh", "Relu6", "SiLU"])
def test_does_not_fire_through_non_homogeneous_activations(act):
    n = Net()
    y = n.conv("x", 3, 8)
    if act == "Relu6":
        y = n.op("Clip", y, n.c(0.0), n.c(6.0))
    elif act == "SiLU":
        y = n.op("Mul", y, n.op("Sigmoid", y))
    else:
        y = n.op(act, y)
    out = n.conv(y, 8, 4)
    assert _rescaled(_run_fp32_equalised(n.model([out]), _x())) == []


def test_does_not_fire_on_a_tensor_with_several_readers_or_a_graph_output():
    n = Net()
    a = n.op("Relu", n.conv("x", 3, 8))
    out1, out2 = n.conv(a, 8, 4), n.conv(a, 8, 4)  # a has two readers
    b = n.op("Relu", n.conv(out1, 4, 4))  # out1 and b are graph outputs, each read by the next Conv too
    out3 = n.conv(b, 4, 4)
    result = _run_fp32_equalised(n.model([out1, out2, b, out3]), _x())
    assert _rescaled(result) == []


def _fidelity(ref: list, got: list) -> float:
    r, g = np.concatenate([np.ravel(v) for v in ref]), np.concatenate([np.ravel(v) for v in got])
    return float(np.dot(r, g) / (np.linalg.norm(r) * np.linalg.norm(g)))


def test_improves_per_tensor_int8_on_badly_scaled_channels(tmp_path):
    n = Net(size=24, seed=3)
    y = n.op("Relu", n.conv("x", 3, 16))
    y = n.op("Relu", n.conv(y, 16, 16, group=16))  # depthwise
    y = n.op("Relu", n.conv(y, 16, 24, k=1))  # pointwise
    y = n.op("Relu", n.conv(y, 24, 24, group=24))
    out = n.conv(y, 24, 8, k=1)
    model = n.model([out])
    images = fac.smooth_images(6, 24, seed=4)
    dataset = fac.write_npy_dataset(tmp_path, images[:4])
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    tests = [np.ascontiguousarray(images[i].transpose(2, 0, 1)[None]) for i in (4, 5)]
    ref = [sess.run(None, {"x": x})[0] for x in tests]
    fid = {}
    for equalize in (False, True):
        cfg = BuildConfig(quantized_method="layer", progress=False, cross_layer_equalization=equalize)
        result = build(load_onnx(model), cfg, True, dataset)
        assert bool(_rescaled(result)) == equalize
        with LIB.init(result.data) as ctx:
            got = [ctx.infer([x], formats=["nchw"])[0] for x in tests]
        fid[equalize] = _fidelity(ref, got)
    # measured: 0.99628 without, 0.99991 with; the per-tensor weight step of the widest channel dominates
    assert 1 - fid[True] < (1 - fid[False]) / 5, fid


def test_defaults_and_depthwise_only(tmp_path):
    """int8 'layer' builds with 'normal' ranges equalise only the pairs with a depthwise Conv by default,
    'mmse' builds every pair; 'normal' 'channel' builds and float builds do not equalise unless asked; a
    bad value is refused."""
    n = Net(size=8, seed=5)
    a = n.op("Relu", n.conv("x", 3, 8))  # full -> full: not depthwise
    b = n.op("Relu", n.conv(a, 8, 8))  # full -> depthwise
    out = n.conv(n.op("Relu", n.conv(b, 8, 8, group=8)), 8, 4, k=1)  # depthwise -> pointwise
    model = n.model([out])
    dataset = fac.write_npy_dataset(tmp_path, fac.smooth_images(2, 8, seed=6))

    def rescaled(**cfg):
        return _rescaled(build(load_onnx(model), BuildConfig(progress=False, **cfg), True, dataset))

    dw = sorted([b + RESCALED, n.nodes[-2].output[0] + RESCALED])
    assert rescaled(quantized_method="layer") == dw
    everything = sorted(dw + [a + RESCALED])
    assert rescaled(quantized_method="layer", quantized_algorithm="mmse") == everything  # measured: it gains
    assert rescaled(quantized_algorithm="mmse") == everything
    assert rescaled(quantized_method="layer", cross_layer_equalization=True) == sorted(dw + [a + RESCALED])
    assert rescaled(quantized_method="layer", cross_layer_equalization=False) == []
    assert rescaled() == []
    assert rescaled(cross_layer_equalization="depthwise") == dw
    with pytest.raises(BuildError, match="cross_layer_equalization"):
        rescaled(cross_layer_equalization="all")


def test_hybrid_quantization_keeps_the_rescaled_tensors(tmp_path):
    """step1 writes the ::cle tensors' ranges under their own names; step2 rebuilds the same graph from
    the saved config and gives them the same quantisation (its outputs differ from a direct build's only
    by bias correction, which needs the dataset step2 does not read)."""
    from rknnlink.model.builder import hybrid_quantization_step1, hybrid_quantization_step2

    n = Net(size=8, seed=7)
    out = n.conv(n.op("Relu", n.conv(n.op("Relu", n.conv("x", 3, 8)), 8, 8, group=8)), 8, 4, k=1)
    model = n.model([out])
    dataset = fac.write_npy_dataset(tmp_path / "calib", fac.smooth_images(2, 8, seed=8))
    cfg = BuildConfig(progress=False, quantized_method="layer")
    onnx_file, data, qcfg = hybrid_quantization_step1(load_onnx(model), cfg, dataset, tmp_path, "net")
    assert RESCALED in Path(qcfg).read_text()
    direct = build(load_onnx(model), cfg, True, dataset)
    step2 = hybrid_quantization_step2(onnx_file, data, qcfg)
    assert _rescaled(step2) == _rescaled(direct) != []
    for name in _rescaled(direct):
        a = next(t for t in direct.sim_model.tensors if t.name == name)
        b = next(t for t in step2.sim_model.tensors if t.name == name)
        assert (b.scale, b.zero_point) == pytest.approx((a.scale, a.zero_point))
    x = np.ascontiguousarray(fac.smooth_images(1, 8, seed=9)[0].transpose(2, 0, 1)[None])
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    with LIB.init(step2.data) as ctx:
        got = ctx.infer([x], formats=["nchw"])[0]
    assert _fidelity(ref, [got]) > 0.99


def test_accuracy_analysis_compares_the_rescaled_tensors(tmp_path):
    """accuracy_analysis computes the ::cle tensors' golden values (the ONNX tensor over the factors) and
    labels them with the ONNX operator that made them."""
    from rknnlink.api import RKNN

    n = Net(size=16, seed=3)
    y = n.op("Relu", n.conv(n.op("Relu", n.conv("x", 3, 8)), 8, 8, group=8))
    onnx.save(n.model([n.conv(y, 8, 4, k=1)]), str(tmp_path / "net.onnx"))
    dataset = fac.write_npy_dataset(tmp_path / "calib", fac.smooth_images(2, 16, seed=1))
    np.save(tmp_path / "in.npy", fac.smooth_images(1, 16, seed=2)[0])
    rknn = RKNN()
    rknn.config(target_platform="rk3588", quantized_method="layer")
    assert rknn.load_onnx(str(tmp_path / "net.onnx")) == 0
    assert rknn.build(do_quantization=True, dataset=str(dataset)) == 0
    assert rknn.accuracy_analysis(inputs=[str(tmp_path / "in.npy")], output_dir=str(tmp_path / "snap")) == 0
    rows = [line.split() for line in (tmp_path / "snap" / "error_analysis.txt").read_text().splitlines()
            if RESCALED in line]
    assert len(rows) == 2 and {r[0] for r in rows} == {"[Relu]"} and y + RESCALED in {r[1] for r in rows}
    assert all(float(r[2]) > 0.999 for r in rows), rows  # entire cosine against the rescaled golden
    rknn.release()
