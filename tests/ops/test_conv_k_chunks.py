"""Float kxk convolutions whose depth K = C/group * kh * kw is long enough that the im2col GEMM splits it
into chunks (ops/conv.c: CONV_KC_MAX), parking partial sums in the output between chunks. The split must
not change a bit: the AVX-512 tile, the AVX2 kernel (RKNNLINK_SIM_ISA=avx2) and every thread count give
the same bytes, the portable C build (SIM_FORCE_GENERIC, what aarch64 runs) gives the same bytes for any
thread count, and all of them stay close to onnxruntime."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[2]
SHAPE = (1, 40, 13, 11)

# Runs in a child process (the ISA choice and the library are fixed per process): prints one line per
# thread count, the sha256 of the output bytes, then the output itself as .npy into argv[3].
CHILD = """
import hashlib, os, sys
import numpy as np
from rknnlink.runtime import RuntimeLibrary
data = open(sys.argv[1], "rb").read()
x = np.load(sys.argv[2])
lib = RuntimeLibrary.load(backend="sim")
out = None
for threads in ("1", "2", "3"):
    os.environ["RKNNLINK_SIM_THREADS"] = threads
    with lib.init(data) as ctx:
        for _ in range(2):
            out = np.asarray(ctx.infer([x], formats=["nchw"])[0])
            print(hashlib.sha256(out.tobytes()).hexdigest())
np.save(sys.argv[3], out)
"""


def _model() -> onnx.ModelProto:
    """3x3 convs with K from 360 (one chunk) to 1728 (five), odd output sizes (last column tiles partial),
    stride 2, dilation 2, a grouped conv, fused Relu/Clip and one output channel (which must stay unsplit).
    The AVX-512 runs also write their im2col panels with masked loads (output rows of >= 5 positions), the
    AVX2 runs with sim_im2col_row, so the AVX2 == AVX-512 check covers that writer too."""
    rng = np.random.default_rng(11)
    inits, nodes = [], []

    def conv(x: str, cin: int, cout: int, s: int = 1, group: int = 1, act: str = "", dil: int = 1) -> str:
        n = len(nodes)
        w = rng.normal(0, 1.0 / np.sqrt(cin // group * 9), (cout, cin // group, 3, 3)).astype(np.float32)
        b = rng.normal(0, 0.1, cout).astype(np.float32)
        inits.extend([numpy_helper.from_array(w, f"w{n}"), numpy_helper.from_array(b, f"b{n}")])
        nodes.append(helper.make_node("Conv", [x, f"w{n}", f"b{n}"], [f"c{n}"], kernel_shape=[3, 3],
                                      strides=[s, s], pads=[dil] * 4, group=group, dilations=[dil, dil]))
        y = f"c{n}"
        if act == "relu":
            nodes.append(helper.make_node("Relu", [y], [f"a{n}"]))
            y = f"a{n}"
        elif act == "clip":
            nodes.append(helper.make_node("Clip", [y, "lo", "hi"], [f"a{n}"]))
            y = f"a{n}"
        return y

    inits += [numpy_helper.from_array(np.array(0.0, np.float32), "lo"),
              numpy_helper.from_array(np.array(6.0, np.float32), "hi")]
    y = conv("x", 40, 70, act="relu")        # K = 360: one pass, 13x11
    y = conv(y, 70, 70, dil=2)               # K = 630: two chunks, dilated taps
    y = conv(y, 70, 192, act="clip")         # K = 630: two chunks
    y = conv(y, 192, 100, s=2)               # K = 1728: five chunks, 7x6
    y = conv(y, 100, 96, group=2, act="relu")  # K = 450 per group: two chunks per group
    y = conv(y, 96, 1)                       # K = 864 but one output channel: one pass
    graph = helper.make_graph(nodes, "k_chunks", [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)],
                              [helper.make_tensor_value_info(y, TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], ir_version=8)


def _run(tmp: Path, data: Path, x: Path, tag: str, env: dict) -> tuple[list[str], np.ndarray]:
    out = tmp / f"{tag}.npy"
    proc = subprocess.run([sys.executable, "-c", CHILD, str(data), str(x), str(out)], capture_output=True,
                          text=True, timeout=300, env={**os.environ, **env})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.split(), np.load(out)


def _generic_library(tmp: Path) -> Path:
    """The simulator built with the portable C kernels only (as runtime_c/Makefile builds it, plus
    -DSIM_FORCE_GENERIC), so this x86 host runs what an aarch64 board runs."""
    src = ROOT / "runtime_c"
    files = sorted(str(p) for p in [*(src / "src").glob("*.c"), *(src / "src" / "ops").glob("*.c")])
    lib = tmp / "librknnrt_sim.so"
    cmd = ["cc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-D_GNU_SOURCE", "-fno-math-errno", "-ffp-contract=off",
           "-DSIM_FORCE_GENERIC", "-O1", "-fvisibility=hidden", "-fPIC", "-shared", f"-I{src / 'include'}",
           f"-I{src / 'src'}", "-o", str(lib), *files, "-lm", "-lpthread"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return lib


@pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler for the portable build")
def test_k_chunked_conv_same_bits_on_every_path(tmp_path: Path):
    from rknnlink.model.builder import BuildConfig, build

    model = _model()
    x = np.random.default_rng(12).normal(0, 1, SHAPE).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    data = tmp_path / "model.rknn"
    data.write_bytes(build(model, BuildConfig(progress=False), False, None).data)

    wide, out_wide = _run(tmp_path, data, tmp_path / "x.npy", "wide", {})
    avx2, _ = _run(tmp_path, data, tmp_path / "x.npy", "avx2", {"RKNNLINK_SIM_ISA": "avx2"})
    generic, out_generic = _run(tmp_path, data, tmp_path / "x.npy", "generic",
                                {"RKNNLINK_SIM_LIB": str(_generic_library(tmp_path))})
    assert len(wide) == 6 and len(set(wide)) == 1, wide        # every thread count, every run
    assert avx2 == wide                                        # AVX2 kernel == AVX-512 tile, bit for bit
    assert len(generic) == 6 and len(set(generic)) == 1, generic
    assert generic != wide  # the portable kernel rounds a*b before the add: proof the other library ran
    for got in (out_wide, out_generic):
        got = got.reshape(ref.shape).astype(np.float64)
        cos = float(got.ravel() @ ref.ravel() / (np.linalg.norm(got) * np.linalg.norm(ref)))
        assert cos > 0.9999, cos
        assert np.max(np.abs(got - ref)) < 0.02 * np.max(np.abs(ref)) + 1e-3
    assert hashlib.sha256(out_wide.tobytes()).hexdigest() == wide[0]
