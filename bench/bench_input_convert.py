"""Cost of rknn_inputs_set alone (sim_input_convert: the caller's buffer -> the model's NCHW tensor).

Why: a 224x224x3 uint8 image through bench_link's model costs the session worker about 53 us in this one
conversion (32% of its samples), paid by every path, in process too. This times it per case, for the
layouts and types the runtime converts: uint8/float32 input, NHWC/NCHW, into float32, float16 and int8
(quantised) model tensors, with and without per-channel mean/std.

Each case builds a one-op model (Reshape of the input), prepares the rknn_input array once and calls
rknn_inputs_set in a loop; the figures are medians over rounds of the per-call wall time and thread CPU time
(time.thread_time_ns, which the machine's load moves less). The "portable" columns run the same calls with
RKNNLINK_SIM_ISA=generic, which keeps the conversion on its portable C path (read per call), so both paths
are measured back to back in one process.

Usage: python bench/bench_input_convert.py [--size 224] [--calls 300] [--rounds 5] [--only SUBSTRING]
Set RKNNLINK_SIM_LIB to time a freshly built runtime_c/build/librknnrt_sim.so.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Dict, List, Optional, Tuple

import numpy as np

from rknnlink.model.format import (
    KIND_INPUT,
    KIND_OUTPUT,
    LAYOUT_NCHW,
    QNT_AFFINE,
    IoSpec,
    SimModel,
    SimOp,
    SimTensor,
    write_model,
)
from rknnlink.runtime import RuntimeLibrary

MEAN = [123.675, 116.28, 103.53]
STD = [58.395, 57.12, 57.375]


def identity_model(size: int, channels: int, dtype: str, norm: bool) -> bytes:
    """Reshape of a (1, C, size, size) input of dtype into a flat output: the input conversion is the work."""
    shape = (1, channels, size, size)
    quant = {"qnt_type": QNT_AFFINE, "scale": 0.0186, "zero_point": -14} if dtype == "int8" else {}
    tensors = [SimTensor("image", dtype, shape, kind=KIND_INPUT, **quant),
               SimTensor("flat", dtype, (1, channels * size * size), kind=KIND_OUTPUT, **quant)]
    spec = IoSpec(0, layout=LAYOUT_NCHW, mean=MEAN[:channels] if norm else None, std=STD[:channels] if norm else None)
    mode = {"float32": "fp32", "float16": "fp16", "int8": "int8"}[dtype]
    model = SimModel(target_platform="rk3588", name="identity", build_mode=mode, tensors=tensors,
                     ops=[SimOp("Reshape", "flat", [0], [1])], inputs=[spec], outputs=[IoSpec(1)])
    return write_model(model)


def time_calls(ctx, image: np.ndarray, fmt: str, calls: int, portable: bool) -> Tuple[float, float]:
    """Median-free mean wall and thread-CPU microseconds per rknn_inputs_set over `calls` calls."""
    inputs, keep = ctx._input_structs([image], [fmt], None)
    fn = ctx.lib.fn("rknn_inputs_set")
    if portable:
        os.environ["RKNNLINK_SIM_ISA"] = "generic"
    try:
        fn(ctx.handle, 1, inputs)  # warm
        w0, c0 = time.perf_counter_ns(), time.thread_time_ns()
        for _ in range(calls):
            ret = fn(ctx.handle, 1, inputs)
        w1, c1 = time.perf_counter_ns(), time.thread_time_ns()
    finally:
        if portable:
            os.environ.pop("RKNNLINK_SIM_ISA", None)
    if ret != 0:
        raise RuntimeError(f"rknn_inputs_set returned {ret}: {ctx.last_error_text()}")
    del keep
    return (w1 - w0) / calls / 1e3, (c1 - c0) / calls / 1e3


def cases(size: int) -> List[Tuple[str, str, str, bool, str]]:
    """(name, input dtype, model dtype, mean/std, fmt) of every case timed."""
    out = []
    for src in ("uint8", "float32"):
        for dtype in ("float32", "float16", "int8"):
            for norm in (False, True):
                for fmt in ("nhwc", "nchw"):
                    out.append((f"{src:7} {fmt} -> {dtype:7} {'mean/std' if norm else 'plain':8}", src, dtype, norm,
                                fmt))
    return out


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", default="", help="run only the cases whose name contains this")
    args = parser.parse_args(argv)
    lib = RuntimeLibrary.load(backend="sim")
    rng = np.random.default_rng(0)
    print(f"bench_input_convert: {args.size}x{args.size}x{args.channels}, {args.calls} calls x {args.rounds} "
          f"rounds, medians of per-call means; load average {os.getloadavg()[0]:.2f}")
    print(f"  {'case':<40} {'wall us':>9} {'cpu us':>9} {'portable wall':>14} {'portable cpu':>13} {'cpu x':>7}")
    for name, src, dtype, norm, fmt in cases(args.size):
        if args.only not in name:
            continue
        shape = (1, args.size, args.size, args.channels) if fmt == "nhwc" else (1, args.channels, args.size, args.size)
        if src == "uint8":
            image = rng.integers(0, 256, size=shape, dtype=np.uint8)
        else:
            image = (rng.random(shape, dtype=np.float32) * 255.0).astype(np.float32)
        with lib.init(identity_model(args.size, args.channels, dtype, norm)) as ctx:
            got: Dict[bool, List[Tuple[float, float]]] = {False: [], True: []}
            for _ in range(args.rounds):
                for portable in (False, True):
                    got[portable].append(time_calls(ctx, image, fmt, args.calls, portable))
        fast = [statistics.median(v[i] for v in got[False]) for i in (0, 1)]
        slow = [statistics.median(v[i] for v in got[True]) for i in (0, 1)]
        print(f"  {name:<40} {fast[0]:9.1f} {fast[1]:9.1f} {slow[0]:14.1f} {slow[1]:13.1f} "
              f"{slow[1] / max(fast[1], 1e-9):6.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
