"""Builds and runs the C unit tests of the operator kernels (runtime_c/tests/ops): every op family
against reference loops, through both the AVX2 and the portable C code paths; and the convolution-side
kernels give the same bytes for any simulator thread count."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[2]
OPS_TESTS = ROOT / "runtime_c" / "tests" / "ops"


@pytest.mark.skipif(shutil.which("make") is None or shutil.which("cc") is None, reason="needs make and a C compiler")
def test_kernel_unit_tests_pass():
    proc = subprocess.run(["make", "-s", "-C", str(OPS_TESTS), "test"], capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    summaries = [line for line in out.splitlines() if line.endswith("0 failures")]
    assert len(summaries) == 2, out[-2000:]  # AVX2 build and portable build
    assert all(int(line.split()[0]) > 300 for line in summaries), summaries


def _conv_side_model() -> onnx.ModelProto:
    """Depthwise 3x3/5x5/7x7 (stride 1 and 2, fused HardSwish and SiLU), ConvTranspose (stride == kernel and
    overlapping), MaxPool, an SE block (GlobalAveragePool, 1x1 convs on 1x1, HardSigmoid) and 1x1 convs."""
    rng = np.random.default_rng(3)
    inits, nodes = [], []

    def const(name: str, a: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(a.astype(np.float32), name))
        return name

    def conv(x: str, cin: int, cout: int, k: int, s: int = 1, group: int = 1, transpose: bool = False,
             act: str = "") -> str:
        n = len(nodes)
        shape = (cin, cout // group, k, k) if transpose else (cout, cin // group, k, k)
        w = const(f"w{n}", rng.normal(0, 1.0 / np.sqrt(cin // group * k * k), shape))
        b = const(f"b{n}", rng.normal(0, 0.1, cout))
        attrs = dict(kernel_shape=[k, k], strides=[s, s], group=group)
        if not transpose:
            attrs["pads"] = [k // 2] * 4
        nodes.append(helper.make_node("ConvTranspose" if transpose else "Conv", [x, w, b], [f"c{n}"], **attrs))
        y = f"c{n}"
        if act == "hs":
            nodes.append(helper.make_node("HardSwish", [y], [f"a{n}"]))
            y = f"a{n}"
        elif act == "silu":
            nodes.append(helper.make_node("Sigmoid", [y], [f"s{n}"]))
            nodes.append(helper.make_node("Mul", [y, f"s{n}"], [f"a{n}"]))
            y = f"a{n}"
        elif act == "relu":
            nodes.append(helper.make_node("Relu", [y], [f"a{n}"]))
            y = f"a{n}"
        return y

    y = conv("x", 3, 16, 3, 2, act="relu")                       # 16x20x20
    y = conv(y, 16, 16, 3, 1, group=16, act="hs")
    y = conv(y, 16, 16, 5, 2, group=16, act="silu")              # 10x10
    y = conv(y, 16, 32, 1, act="hs")
    y = conv(y, 32, 32, 7, 1, group=32)
    se = "se"
    nodes.append(helper.make_node("GlobalAveragePool", [y], [se]))
    se = conv(se, 32, 8, 1, act="relu")
    se = conv(se, 8, 32, 1)
    nodes.append(helper.make_node("HardSigmoid", [se], ["gate"], alpha=1.0 / 6, beta=0.5))
    nodes.append(helper.make_node("Mul", [y, "gate"], ["scaled"]))
    y = conv("scaled", 32, 16, 2, 2, transpose=True)             # 20x20
    y = conv(y, 16, 8, 3, 2, transpose=True, act="relu")         # overlapping taps: 41x41
    nodes.append(helper.make_node("MaxPool", [y], ["pooled"], kernel_shape=[2, 2], strides=[2, 2]))
    graph = helper.make_graph(nodes, "conv_side",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 40, 40])],
                              [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], ir_version=8)


def test_conv_side_kernels_are_bit_identical_for_any_thread_count(tmp_path: Path, monkeypatch):
    """Depthwise, ConvTranspose, pooling, SE-block and pointwise kernels split work over the simulator's
    threads: 1, 2 and 3 threads give the same bytes, in fp16 and int8 (and stay close to onnxruntime)."""
    from rknnlink.model.builder import BuildConfig, build
    from rknnlink.runtime import RuntimeLibrary

    model = _conv_side_model()
    rng = np.random.default_rng(4)
    x = rng.normal(0, 1, (1, 3, 40, 40)).astype(np.float32)
    for i in range(4):
        np.save(tmp_path / f"c{i}.npy", rng.normal(0, 1, (1, 3, 40, 40)).astype(np.float32))
    (tmp_path / "dataset.txt").write_text("".join(f"c{i}.npy\n" for i in range(4)))
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    lib = RuntimeLibrary.load(backend="sim")
    for quant in (False, True):
        built = build(model, BuildConfig(progress=False), quant, tmp_path / "dataset.txt" if quant else None)
        outs = []
        for threads in ("1", "2", "3"):
            monkeypatch.setenv("RKNNLINK_SIM_THREADS", threads)
            with lib.init(built.data) as ctx:
                outs.append([np.asarray(ctx.infer([x], formats=["nchw"])[0]) for _ in range(2)])
        got = outs[0][0].reshape(ref.shape)
        assert all(o.tobytes() == got.tobytes() for run in outs for o in run), f"quant={quant}"
        cos = float((got.ravel() @ ref.ravel()) / (np.linalg.norm(got) * np.linalg.norm(ref)))
        assert cos > (0.99 if quant else 0.9999), (quant, cos)
