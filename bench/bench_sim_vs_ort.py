"""Simulated NPU vs onnxruntime (one thread): a MobileNetV2-like 224x224 model and the real-model corpus.

Builds the model with onnx.helper (seeded random weights, no BatchNormalization, Clip(0, 6) activations,
residual Adds, GlobalAveragePool, Gemm 1280 -> 1000), converts it with rknnlink.model to fp16 and int8,
then times onnxruntime fp32 (intra_op_num_threads=1) and the simulator on the same input in this process.
The simulator runs with its worker threads (RKNNLINK_SIM_THREADS, default min(online CPUs, 4)) and, for
comparison, with one thread (a busy host makes the threaded contexts back off to serial runs for a while,
so their rows then approach the single-thread ones). Three rounds of interleaved runs; each round gives a
median latency per runner and a ratio per mode, and the printed ratio is the median of the three
(acceptance: <= 1.5 for fp16 and int8, target 1.0).

With --corpus the same measurement runs on every model of the real-model corpus (corpus/, regenerated
into the cache when missing): one table row per model and mode, the ratio with the default simulator
threads and with one thread. A model the simulator cannot build yet (an operator not on this branch) is
skipped with the builder's reason. --profile MODEL puts the simulator's measured time per layer
(rknnlink_layer_info.measured_time_us) beside onnxruntime's profiler for the same ONNX nodes, hottest
first, so the hot spots are visible. onnxruntime runs the model with its nodes named as the builder names them
(paddle2onnx leaves Constant nodes unnamed); its nodes are matched by name, by the tensor a fusion is named after
or by the tensors they write, a fused layer gets the sum of its source nodes, and the header counts what could
not be matched (nodes onnxruntime added, layers of the builder's, layers onnxruntime fused into another node).

Usage: python bench/bench_sim_vs_ort.py [--runs N] [--rounds R] [--width W] [--check]
       python bench/bench_sim_vs_ort.py --corpus [--only a,b] [--runs N] [--rounds R] [--check]
       python bench/bench_sim_vs_ort.py --profile MODEL [--mode int8] [--top 25]
Set RKNNLINK_SIM_LIB to time a freshly built runtime_c/build/librknnrt_sim.so.
"""

from __future__ import annotations

import argparse
import os
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
DEFAULT_SIM_THREADS = 4  # runtime_c/src/sim_core.h SIM_DEFAULT_THREADS


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


def interleaved_ms(runners: dict, runs: int, cpu_ms: dict | None = None) -> dict:
    """Median milliseconds of each runner, running them in turn each round (after one warm-up each).

    With cpu_ms, it also receives each runner's median CPU time of the calling thread: for a runner that
    computes on that thread alone (onnxruntime with one intra-op thread, a one-thread simulator context)
    that is its compute time without the time slices a loaded host takes away (whole 4 ms ones)."""
    for fn in runners.values():
        fn()
    samples: dict = {name: [] for name in runners}
    cpu: dict = {name: [] for name in runners}
    for _ in range(runs):
        for name, fn in runners.items():
            c0, t0 = time.thread_time(), time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - t0)
            cpu[name].append(time.thread_time() - c0)
    if cpu_ms is not None:
        cpu_ms.update({name: statistics.median(v) * 1e3 for name, v in cpu.items()})
    return {name: statistics.median(v) * 1e3 for name, v in samples.items()}


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))


def sim_threads() -> int:
    """Threads a new simulator context uses (the rule of runtime_c/src/workers.c: sim_threads_wanted)."""
    env = os.environ.get("RKNNLINK_SIM_THREADS", "")
    want = int(env) if env.isdigit() and int(env) >= 1 else DEFAULT_SIM_THREADS
    return max(1, min(want, os.cpu_count() or 1))


def init_with_threads(lib: RuntimeLibrary, data: bytes, threads: int):
    """A context with `threads` workers: the simulator reads RKNNLINK_SIM_THREADS at context creation."""
    old = os.environ.get("RKNNLINK_SIM_THREADS")
    os.environ["RKNNLINK_SIM_THREADS"] = str(threads)
    try:
        return lib.init(data)
    finally:
        if old is None:
            del os.environ["RKNNLINK_SIM_THREADS"]
        else:
            os.environ["RKNNLINK_SIM_THREADS"] = old


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=None, help="timed runs per runner and round (30; corpus 10)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds; the ratio printed is their median")
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--check", action="store_true", help="exit 1 when a median ratio exceeds the 1.5x limit")
    ap.add_argument("--corpus", action="store_true", help="every real-model corpus model instead")
    ap.add_argument("--only", default="", help="with --corpus/--profile: comma-separated corpus models")
    ap.add_argument("--profile", default="", help="per-layer simulator vs onnxruntime times of one model")
    ap.add_argument("--mode", default="int8", choices=("fp16", "int8"), help="mode of --profile")
    ap.add_argument("--top", type=int, default=25, help="rows of --profile")
    args = ap.parse_args()
    if args.profile:
        from bench_sim_corpus import profile
        return profile(args.profile, args.mode, args.runs or 10, args.top)
    if args.corpus:
        from bench_sim_corpus import corpus_table
        return corpus_table([n for n in args.only.split(",") if n], args.runs or 10, args.rounds, args.check)
    args.runs = args.runs or 30

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
    threads = sim_threads()
    variants = [(mode, threads) for mode in built]
    if threads > 1:
        variants += [(mode, 1) for mode in built]
    ctxs = {v: init_with_threads(lib, built[v[0]].data, v[1]) for v in variants}
    try:
        runners = {"ort": lambda: sess.run(None, {"input": x})}
        for v, ctx in ctxs.items():
            runners[v] = lambda c=ctx: c.infer([x], formats=["nchw"])
        # Interleave the runners so that load from other processes hits all of them alike; several rounds
        # so that one disturbed round does not decide the ratio.
        rounds = [interleaved_ms(runners, args.runs) for _ in range(max(1, args.rounds))]
        cos = {v: cosine(ctx.infer([x], formats=["nchw"])[0], ref) for v, ctx in ctxs.items()}
    finally:
        for ctx in ctxs.values():
            ctx.close()
    return report(args, threads, rounds, cos)


def report(args: argparse.Namespace, threads: int, rounds: list, cos: dict) -> int:
    """Prints per-round and median latencies and ratios; returns the exit status for --check."""
    print(f"model: MobileNetV2-like 224x224 width {args.width}, {len(rounds)} rounds of {args.runs} runs; "
          "onnxruntime fp32 on one thread")
    print(f"simulator threads: {threads} (RKNNLINK_SIM_THREADS, default min(online CPUs, {DEFAULT_SIM_THREADS}))"
          + ("; single-thread rows for comparison" if threads > 1 else ""))
    t_ort = statistics.median(r["ort"] for r in rounds)
    print(f"onnxruntime fp32               {t_ort:8.2f} ms  (rounds: "
          + " ".join(f"{r['ort']:.2f}" for r in rounds) + ")")
    ok = True
    for v in cos:
        mode, n = v
        ratios = [r[v] / r["ort"] for r in rounds]
        ratio = statistics.median(ratios)
        t = statistics.median(r[v] for r in rounds)
        if n == threads:
            ok = ok and ratio <= LIMIT
        label = f"simulator {mode} {n} thread{'s' if n > 1 else ''}"
        print(f"{label:<30} {t:8.2f} ms  ratio {ratio:5.2f}  (rounds: " + " ".join(f"{q:.2f}" for q in ratios)
              + f"; limit {LIMIT})  cosine vs ort {cos[v]:.5f}")
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
