"""Simulated NPU vs onnxruntime (one thread) on a MobileNetV2-like 224x224 model.

Builds the model with onnx.helper (seeded random weights, no BatchNormalization, Clip(0, 6) activations,
residual Adds, GlobalAveragePool, Gemm 1280 -> 1000), converts it with rknnlink.model to fp16 and int8,
then times onnxruntime fp32 (intra_op_num_threads=1) and the simulator on the same input in this process.
Prints median latencies and the simulator/onnxruntime ratios (acceptance: <= 1.5 for fp16 and int8).

Usage: python bench/bench_sim_vs_ort.py [--runs N] [--width W] [--check]
Set RKNNLINK_SIM_LIB to time a freshly built runtime_c/build/librknnrt_sim.so.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from rknnlink.model.builder import BuildConfig, build
from rknnlink.runtime import RuntimeLibrary

LIMIT = 1.5


class _Net:
    """Writes a BN-free MobileNetV2-like graph with He-initialised seeded weights."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list = []
        self.inits: list = []
        self.n = 0

    def _name(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    def _const(self, arr: np.ndarray, prefix: str) -> str:
        name = self._name(prefix)
        self.inits.append(numpy_helper.from_array(arr.astype(np.float32), name))
        return name

    def node(self, op: str, inputs: list, **attrs) -> str:
        name = self._name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [name + "_y"], name=name, **attrs))
        return name + "_y"

    def conv(self, x: str, cin: int, cout: int, k: int, stride: int = 1, group: int = 1, relu6: bool = True) -> str:
        fan_in = cin // group * k * k
        w = self.rng.normal(0.0, np.sqrt(2.0 / fan_in), (cout, cin // group, k, k))
        b = self.rng.normal(0.0, 0.05, cout)
        y = self.node("Conv", [x, self._const(w, "w"), self._const(b, "b")], kernel_shape=[k, k],
                      strides=[stride, stride], pads=[k // 2] * 4, group=group)
        if relu6:
            y = self.node("Clip", [y, self._const(np.array(0.0), "lo"), self._const(np.array(6.0), "hi")])
        return y

    def gemm(self, x: str, k: int, n: int) -> str:
        w = self.rng.normal(0.0, np.sqrt(1.0 / k), (n, k))
        b = self.rng.normal(0.0, 0.05, n)
        return self.node("Gemm", [x, self._const(w, "fc_w"), self._const(b, "fc_b")], transB=1)


def mobilenetv2_like(width: float = 1.0, seed: int = 0) -> onnx.ModelProto:
    net = _Net(seed)
    ch = lambda c: max(8, int(c * width + 4) // 8 * 8)  # noqa: E731
    cin = ch(32)
    x = net.conv("input", 3, cin, 3, 2)
    for t, c, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                       (6, 320, 1, 1)]:
        cout = ch(c)
        for i in range(n):
            hidden = cin * t
            y = net.conv(x, cin, hidden, 1) if t != 1 else x
            y = net.conv(y, hidden, hidden, 3, s if i == 0 else 1, group=hidden)
            y = net.conv(y, hidden, cout, 1, relu6=False)
            x = net.node("Add", [x, y]) if (i > 0 or s == 1) and cin == cout else y
            cin = cout
    x = net.conv(x, cin, 1280, 1)
    x = net.node("GlobalAveragePool", [x])
    x = net.node("Flatten", [x], axis=1)
    net.gemm(x, 1280, 1000)
    net.nodes[-1].output[0] = "logits"
    graph = helper.make_graph(net.nodes, "mobilenetv2_like_bnfree",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 224, 224])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 1000])], net.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.checker.check_model(model)
    return model


def interleaved_ms(runners: dict, runs: int) -> dict:
    """Median milliseconds of each runner, running them in turn each round (after one warm-up each)."""
    for fn in runners.values():
        fn()
    samples: dict = {name: [] for name in runners}
    for _ in range(runs):
        for name, fn in runners.items():
            t0 = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - t0)
    return {name: statistics.median(v) * 1e3 for name, v in samples.items()}


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--check", action="store_true", help="exit 1 when a ratio exceeds the 1.5x limit")
    args = ap.parse_args()

    model = mobilenetv2_like(args.width)
    rng = np.random.default_rng(1)
    x = rng.normal(0.0, 1.0, (1, 3, 224, 224)).astype(np.float32)

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    ref = sess.run(None, {"input": x})[0]

    lib = RuntimeLibrary.load(backend="sim")
    with tempfile.TemporaryDirectory() as tmp:
        lines = []
        for i in range(8):
            np.save(Path(tmp) / f"c{i}.npy", rng.normal(0.0, 1.0, (1, 3, 224, 224)).astype(np.float32))
            lines.append(f"c{i}.npy")
        (Path(tmp) / "dataset.txt").write_text("\n".join(lines) + "\n")
        built = {mode: build(model, BuildConfig(progress=False), quant, Path(tmp) / "dataset.txt" if quant else None)
                 for mode, quant in (("fp16", False), ("int8", True))}
    ctxs = {mode: lib.init(b.data) for mode, b in built.items()}
    try:
        runners = {"ort": lambda: sess.run(None, {"input": x})}
        for mode, ctx in ctxs.items():
            runners[mode] = lambda c=ctx: c.infer([x], formats=["nchw"])
        # Interleave the runners so that load from other processes hits all of them alike.
        times = interleaved_ms(runners, args.runs)
        cos = {mode: cosine(ctx.infer([x], formats=["nchw"])[0], ref) for mode, ctx in ctxs.items()}
    finally:
        for ctx in ctxs.values():
            ctx.close()
    t_ort = times["ort"]
    results = {mode: (times[mode], cos[mode]) for mode in ctxs}

    print(f"model: MobileNetV2-like 224x224 width {args.width}, runs {args.runs}, one thread")
    print(f"onnxruntime fp32      {t_ort:8.2f} ms")
    ok = True
    for mode, (t, cos) in results.items():
        ratio = t / t_ort
        ok = ok and ratio <= LIMIT
        print(f"simulator {mode:<11} {t:8.2f} ms  ratio {ratio:5.2f}  (limit {LIMIT})  cosine vs ort {cos:.5f}")
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
