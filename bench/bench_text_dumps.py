"""accuracy_analysis text dumps: rknnlink's `%.6f` writer against np.savetxt and against RKNN-Toolkit2 itself.

1. write_floats against np.savetxt(fmt='%.6f') (what a straightforward writer of the one-float-per-line
   files uses, and what rknnlink used before) on a MobileNetV2-sized set of layer outputs (2.4 M
   floats), median of 3 rounds.
2. With RKNNLINK_TOOLKIT2_PYTHON (the python of an RKNN-Toolkit2 2.5.0 venv): accuracy_analysis of the same
   model (a CNN written here, 224x224 input) by rknnlink in this process and by the toolkit in its venv,
   simulator mode, the same image; the text-dump time of each beside its whole accuracy_analysis time.
   rknnlink's dump time is the time spent in write_floats. The toolkit writes its dumps from compiled code
   (C stdio, formatting as it writes, 4 KiB writes), so its dump time is the sum over its .txt tensor dumps
   of last write minus creation (statx birth time and mtime, via GNU stat). Both dump the same tensors
   (golden/ and simulator/): the file count and bytes are printed beside.

    RKNNLINK_TOOLKIT2_PYTHON=/work/tk2venv/bin/python .venv/bin/python bench/bench_text_dumps.py
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import rknnlink.api.textdump as textdump
from rknnlink.api.textdump import write_floats

_TOOLKIT_SCRIPT = r"""
import json, subprocess, sys, time
from pathlib import Path
import numpy as np
from rknn.api import RKNN
model, image, dataset, out = sys.argv[1:5]
rknn = RKNN(verbose=False)
rknn.config(mean_values=[[123.675, 116.28, 103.53]], std_values=[[58.4, 57.1, 57.4]], target_platform="rk3588")
assert rknn.load_onnx(model=model) == 0
assert rknn.build(do_quantization=True, dataset=dataset) == 0
start = time.perf_counter()
assert rknn.accuracy_analysis(inputs=[image], output_dir=out) == 0
total = time.perf_counter() - start
files = [p for sub in ("golden", "simulator") for p in sorted((Path(out) / sub).glob("*.txt"))]
stamps = subprocess.run(["stat", "--printf=%.9W %.9Y %s\n"] + [str(p) for p in files], check=True,
                        capture_output=True, text=True).stdout.split()
birth, mtime, size = (np.array(stamps[k::3], float) for k in range(3))
if (birth <= 0).any():
    raise SystemExit("this file system records no birth times: the toolkit's dump time cannot be measured")
print(json.dumps({"total": total, "dump": float((mtime - birth).sum()), "files": len(files),
                  "bytes": int(size.sum())}))
"""


def _time(fn, arrays, folder: Path) -> float:
    start = time.perf_counter()
    for i, a in enumerate(arrays):
        fn(folder / f"{i}.txt", a)
    return time.perf_counter() - start


def writer_vs_savetxt() -> None:
    rng = np.random.default_rng(0)
    sizes = [112 * 112 * 32, 112 * 112 * 96, 56 * 56 * 144, 28 * 28 * 192, 14 * 14 * 576, 7 * 7 * 1280, 1000]
    arrays = [(rng.standard_normal(n) * 4).astype(np.float32) for n in sizes]
    total = sum(sizes)
    ours, ref = [], []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for _ in range(3):
            ours.append(_time(write_floats, arrays, folder))
            ref.append(_time(lambda p, a: np.savetxt(p, a.ravel(), fmt="%.6f"), arrays, folder))
    o, r = statistics.median(ours), statistics.median(ref)
    print(f"{total / 1e6:.1f} M floats in {len(arrays)} files")
    print(f"rknnlink write_floats : {o:6.2f} s  ({total / o / 1e6:5.1f} M floats/s)")
    print(f"np.savetxt('%.6f')    : {r:6.2f} s  ({total / r / 1e6:5.1f} M floats/s)")
    print(f"speed-up vs np.savetxt: {r / o:.1f}x")


def _cnn(path: Path) -> None:
    """A MobileNet-like stack at 224x224 (conv / depthwise / pointwise, ReLU, pooling, classifier): about
    30 tensors of 0.1-1.6 M floats, the kind of model accuracy_analysis is run on."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits, prev, channels = [], [], "input", 3
    for i, (out, stride, group) in enumerate([(32, 2, 1), (32, 1, 32), (64, 1, 1), (64, 2, 64), (128, 1, 1),
                                              (128, 1, 128), (128, 1, 1), (128, 2, 128), (256, 1, 1)]):
        k = 3 if group > 1 or i == 0 else 1
        fan_in = channels // group * k * k
        w = (rng.standard_normal((out, channels // group, k, k)) * np.sqrt(2 / fan_in)).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(np.zeros(out, np.float32), f"b{i}")]
        nodes += [helper.make_node("Conv", [prev, f"w{i}", f"b{i}"], [f"conv{i}"], name=f"conv{i}", group=group,
                                   strides=[stride] * 2, pads=[k // 2] * 4),
                  helper.make_node("Relu", [f"conv{i}"], [f"relu{i}"], name=f"relu{i}")]
        prev, channels = f"relu{i}", out
    inits.append(numpy_helper.from_array(rng.standard_normal((1000, channels)).astype(np.float32) * 0.05, "fc"))
    nodes += [helper.make_node("GlobalAveragePool", [prev], ["pool"], name="pool"),
              helper.make_node("Flatten", ["pool"], ["flat"], name="flatten"),
              helper.make_node("Gemm", ["flat", "fc"], ["logits"], name="fc", transB=1)]
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                             [1, 3, 224, 224])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 1000])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), str(path))


def _ours(model: Path, image: Path, dataset: Path, out: Path) -> dict:
    from rknnlink.api import RKNN

    spent, depth = [0.0], [0]
    original = textdump.write_floats

    def timed(target, values):  # write_floats(path) calls write_floats(stream): count the outer call only
        depth[0] += 1
        start = time.perf_counter()
        try:
            original(target, values)
        finally:
            depth[0] -= 1
        if depth[0] == 0:
            spent[0] += time.perf_counter() - start

    rknn = RKNN(verbose=False)
    rknn.config(mean_values=[[123.675, 116.28, 103.53]], std_values=[[58.4, 57.1, 57.4]], target_platform="rk3588")
    assert rknn.load_onnx(model=str(model)) == 0
    assert rknn.build(do_quantization=True, dataset=str(dataset)) == 0
    textdump.write_floats = timed  # accuracy_analysis imports it from the module at call time
    try:
        start = time.perf_counter()
        assert rknn.accuracy_analysis(inputs=[str(image)], output_dir=str(out)) == 0
        total = time.perf_counter() - start
    finally:
        textdump.write_floats = original
    rknn.release()
    files = [p for sub in ("golden", "simulator") for p in (out / sub).glob("*.txt")]
    return {"total": total, "dump": spent[0], "files": len(files), "bytes": sum(p.stat().st_size for p in files)}


def against_toolkit(python: str) -> None:
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        _cnn(folder / "cnn.onnx")
        rng = np.random.default_rng(1)
        Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)).save(folder / "image.png")
        (folder / "dataset.txt").write_text(f"{folder / 'image.png'}\n")
        ours = _ours(folder / "cnn.onnx", folder / "image.png", folder / "dataset.txt", folder / "ours")
        done = subprocess.run([python, "-c", _TOOLKIT_SCRIPT, str(folder / "cnn.onnx"), str(folder / "image.png"),
                               str(folder / "dataset.txt"), str(folder / "toolkit")], capture_output=True, text=True,
                              cwd=folder)
        if done.returncode != 0:
            raise SystemExit(f"RKNN-Toolkit2 run failed ({python}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
        tk = json.loads(done.stdout.strip().splitlines()[-1])
    print("\naccuracy_analysis on the same 224x224 CNN (simulator mode), text dumps of golden/ and simulator/")
    for name, r in (("rknnlink", ours), ("RKNN-Toolkit2 2.5.0", tk)):
        print(f"{name:20s}: dumps {r['dump']:6.2f} s for {r['files']} files, {r['bytes'] / 1e6:6.1f} MB "
              f"({r['bytes'] / r['dump'] / 1e6:5.1f} MB/s); whole accuracy_analysis {r['total']:6.2f} s")
    print(f"text-dump speed-up vs RKNN-Toolkit2 (per byte): "
          f"{(tk['dump'] / tk['bytes']) / (ours['dump'] / ours['bytes']):.2f}x")


def main() -> int:
    logging.basicConfig(level=logging.WARNING)
    writer_vs_savetxt()
    python = os.environ.get("RKNNLINK_TOOLKIT2_PYTHON")
    if python:
        against_toolkit(python)
    else:
        print("\n(set RKNNLINK_TOOLKIT2_PYTHON to the python of an RKNN-Toolkit2 venv to compare with the toolkit)",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
