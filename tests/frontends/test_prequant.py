"""Pre-quantised ONNX (QDQ) models keep their own scales and zero points with build(do_quantization=False)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from helpers import cosine

onnx = pytest.importorskip("onnx")
quantization = pytest.importorskip("onnxruntime.quantization")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

RNG = np.random.default_rng(3)


def _float_model(path):
    w1 = RNG.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32)
    w2 = RNG.normal(0, 0.2, (16, 8, 3, 3)).astype(np.float32)
    fc = RNG.normal(0, 0.1, (10, 16)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc", "fcb"], ["logits"], transB=1),
    ]
    inits = [numpy_helper.from_array(a, n) for n, a in (
        ("w1", w1), ("b1", RNG.normal(0, 0.1, 8).astype(np.float32)), ("w2", w2),
        ("b2", RNG.normal(0, 0.1, 16).astype(np.float32)), ("fc", fc), ("fcb", np.zeros(10, np.float32)))]
    graph = helper.make_graph(nodes, "qdq_net", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                              [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))


class _Reader(quantization.CalibrationDataReader):
    def __init__(self, samples):
        self.samples = iter(samples)

    def get_next(self):
        x = next(self.samples, None)
        return None if x is None else {"input": x}


@pytest.mark.parametrize("activation_type", ["QInt8", "QUInt8"])
def test_qdq_onnx_keeps_its_quantization(tmp_path, activation_type, caplog):
    import onnxruntime as ort

    fp32, qdq = tmp_path / "net.onnx", tmp_path / "net_qdq.onnx"
    _float_model(fp32)
    samples = [RNG.uniform(-1, 1, (1, 3, 16, 16)).astype(np.float32) for _ in range(8)]
    quantization.quantize_static(str(fp32), str(qdq), _Reader(samples), quant_format=quantization.QuantFormat.QDQ,
                                 activation_type=getattr(quantization.QuantType, activation_type),
                                 weight_type=quantization.QuantType.QInt8, per_channel=True)
    x = RNG.uniform(-1, 1, (1, 3, 16, 16)).astype(np.float32)
    ref = ort.InferenceSession(str(qdq), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    from rknnlink.api import RKNN
    from rknnlink.model import prequant

    rknn = RKNN()
    rknn.config(target_platform="rk3588")
    with caplog.at_level(logging.INFO, logger="rknnlink"):
        assert rknn.load_onnx(str(qdq)) == 0
    assert "pre-quantised" in caplog.text
    assert rknn.build(do_quantization=False) == 0
    assert rknn._build.sim_model.build_mode == "int8"
    # every activation of the built model that the QDQ model quantised has the model's own scale/zero point
    _, quant = prequant.strip_qdq(onnx.load(str(qdq)))
    built = rknn._build.quant_params
    checked = 0
    for name, q in quant.items():
        if name in built and built[name]["dtype"] == "int8":
            shift = 128 if q["dtype"] == "uint8" else 0
            assert built[name]["scale"][0] == pytest.approx(q["scale"], rel=1e-6), name
            assert built[name]["zero_point"][0] == q["zero_point"] - shift, name
            checked += 1
    assert checked >= 5, (sorted(quant), sorted(built))
    assert rknn.init_runtime() == 0
    out = rknn.inference(inputs=[x], data_format="nchw")[0]
    rknn.release()
    # onnxruntime runs QDQ with its own integer kernels (QLinearConv...); rounding differs by a few LSBs
    assert cosine(out, ref) >= 0.995, cosine(out, ref)


def test_int16_activation_is_mapped_with_a_warning(caplog):
    from rknnlink.model.prequant import fixed_ranges

    with caplog.at_level(logging.WARNING, logger="rknnlink"):
        ranges = fixed_ranges({"t16": {"scale": 1e-4, "zero_point": 0, "dtype": "int16"},
                               "t8": {"scale": 0.02, "zero_point": -5, "dtype": "int8"},
                               "u8": {"scale": 0.02, "zero_point": 128, "dtype": "uint8"}})
    assert "t16" in caplog.text and "not representable" in caplog.text
    assert "'t8'" not in caplog.text and "'u8'" not in caplog.text
    from rknnlink.model.calibration import asymmetric_params

    assert asymmetric_params(*ranges["t8"]) == (pytest.approx(0.02), -5)
    assert asymmetric_params(*ranges["u8"]) == (pytest.approx(0.02), 0)


def test_qat_torchscript_keeps_its_quantization(tmp_path):
    """A quantised TorchScript model (torch.ao eager QAT/PTQ flow) through load_pytorch: int8 with torch's own
    scales (torch's exporter writes QuantizeLinear -> Cast -> DequantizeLinear)."""
    torch = pytest.importorskip("torch")
    from rknnlink.api import RKNN

    torch.manual_seed(0)  # the same weights and inputs every run, whatever ran before in this process
    net = torch.nn.Sequential(torch.ao.quantization.QuantStub(), torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(),
                              torch.nn.Conv2d(8, 4, 3), torch.ao.quantization.DeQuantStub()).eval()
    net.qconfig = torch.ao.quantization.get_default_qconfig("fbgemm")
    prepared = torch.ao.quantization.prepare(net)
    for _ in range(4):
        prepared(torch.rand(1, 3, 16, 16) * 2 - 1)
    quantized = torch.ao.quantization.convert(prepared)
    path = tmp_path / "qat.pt"
    torch.jit.trace(quantized, torch.rand(1, 3, 16, 16)).save(str(path))
    x = (torch.rand(1, 3, 16, 16) * 2 - 1)
    ref = quantized(x).numpy()
    rknn = RKNN()
    rknn.config(target_platform="rk3588")
    assert rknn.load_pytorch(str(path), input_size_list=[[1, 3, 16, 16]]) == 0
    assert rknn._prequant
    assert rknn.build(do_quantization=False) == 0
    assert rknn._build.sim_model.build_mode == "int8"
    out_scale = float(quantized[3].scale)  # the last quantised conv's output scale
    assert any(q["scale"][0] == pytest.approx(out_scale, rel=1e-6) for q in rknn._build.quant_params.values()
               if q["qtype"] == "asym")
    assert rknn.init_runtime() == 0
    out = rknn.inference(inputs=[x.numpy()], data_format="nchw")[0]
    rknn.release()
    assert cosine(out, ref) >= 0.99, cosine(out, ref)
