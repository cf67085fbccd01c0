"""Run a built corpus model three ways on its test inputs: onnxruntime fp32 (the reference), rknnlink's
simulator (fp16 or int8, through the toolkit-compatible API a user calls) and, when a toolkit venv is
given, RKNN-Toolkit2 2.5.0's simulator (a subprocess: the toolkit is never imported here)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from .metrics import fidelity, task_metric

TOOLKIT_ENV = "RKNNLINK_TOOLKIT2_PYTHON"


@dataclass
class RunResult:
    outputs: Optional[list] = None  # [sample][output] arrays
    build_s: float = float("nan")
    error: str = ""
    extra: dict = field(default_factory=dict)


def meta(folder: Path) -> dict:
    return json.loads((Path(folder) / "meta.json").read_text())


def model_digest(folder: Path) -> str:
    """The first 16 hex digits of the sha256 of ``<folder>/model.onnx``: which build of a model a measured
    column belongs to (a toolkit column says nothing about another build's near-tied images)."""
    digest = hashlib.sha256()
    with open(Path(folder) / "model.onnx", "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def test_inputs(folder: Path, tests: str = "tests") -> list:
    """The NHWC uint8 test images of ``<folder>/<tests>`` (a held-out set: corpus.build.held_out_tests)."""
    return [np.load(p) for p in _test_files(folder, tests)]


def _test_files(folder: Path, tests: str = "tests") -> list:
    return sorted((Path(folder) / tests).glob("*.npy"))


def _input_name(model) -> str:
    init = {i.name for i in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in init][0]


def reference(folder: Path, tests: str = "tests") -> list:
    """onnxruntime fp32 outputs for every test input (normalised as the runtime would)."""
    import onnx
    import onnxruntime as ort
    m = meta(folder)
    path = Path(folder) / "model.onnx"
    sess_opts = ort.SessionOptions()
    sess_opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), sess_opts, providers=["CPUExecutionProvider"])
    name = _input_name(onnx.load(str(path), load_external_data=False))
    mean, std = np.float32(m["mean"]), np.float32(m["std"])
    out = []
    for x in test_inputs(folder, tests):
        feed = ((x[0].astype(np.float32) - mean) / std).transpose(2, 0, 1)[None]
        out.append([np.asarray(o, np.float32) for o in sess.run(None, {name: feed})])
    return out


def run_rknnlink(folder: Path, quantize: bool, algorithm: str = "normal", method: str = "channel",
                 equalize: Optional[bool | str] = None, clipping: Optional[str] = None,
                 tests: str = "tests", weight_rounding: Optional[str] = None) -> RunResult:
    """``equalize``: cross-layer equalisation forced on/off (None: the build's default); ``clipping``: the
    build's activation_clipping; ``tests``: the test set's subfolder; ``weight_rounding``: the build's
    weight_rounding (None: its default)."""
    from rknnlink.api import RKNN
    m = meta(folder)
    rknn = RKNN()
    try:
        rknn.config(mean_values=[m["mean"]], std_values=[m["std"]], target_platform="rk3588",
                    quantized_algorithm=algorithm, quantized_method=method, cross_layer_equalization=equalize,
                    activation_clipping=clipping, weight_rounding=weight_rounding)
        if rknn.load_onnx(str(Path(folder) / "model.onnx"), input_size_list=[[1, 3, m["height"], m["width"]]]) != 0:
            return RunResult(error="load_onnx failed")
        t0 = time.perf_counter()
        try:
            rc = rknn.build(do_quantization=quantize, dataset=str(Path(folder) / "calib" / "dataset.txt"))
        except Exception as exc:  # the facade raises ValueError like the toolkit
            return RunResult(error=f"build: {exc}"[:300])
        build_s = time.perf_counter() - t0
        if rc != 0:
            return RunResult(error="build failed", build_s=build_s)
        rknn.init_runtime()
        try:
            outs = [[np.asarray(o, np.float32) for o in rknn.inference(inputs=[x], data_format=["nhwc"])]
                    for x in test_inputs(folder, tests)]
        except Exception as exc:  # a simulator failure is this row's result; the table goes on
            return RunResult(error=f"run: {exc}"[:200], build_s=build_s)
        return RunResult(outputs=outs, build_s=build_s)
    finally:
        rknn.release()


def toolkit_python() -> Optional[str]:
    p = os.environ.get(TOOLKIT_ENV)
    return p if p and Path(p).is_file() else None


def run_toolkit(folder: Path, quantize: bool, algorithm: str = "normal", python: Optional[str] = None,
                timeout: float = 1800, method: str = "channel", tests: str = "tests") -> RunResult:
    """RKNN-Toolkit2 in its own venv (opset <= 19 copy when the model is newer), with the same
    quantized_algorithm and quantized_method as rknnlink's row (a comparison of per-tensor rknnlink
    against per-channel toolkit would say nothing)."""
    python = python or toolkit_python()
    if python is None:
        return RunResult(error=f"no toolkit: set {TOOLKIT_ENV}")
    folder = Path(folder)
    m = meta(folder)
    onnx_path = folder / "model_tk2.onnx"
    if not onnx_path.is_file():
        onnx_path = folder / "model.onnx"
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "out.npz")
        job = {"onnx": str(onnx_path), "mean": m["mean"], "std": m["std"],
               "input_size": [1, 3, m["height"], m["width"]], "dataset": str(folder / "calib" / "dataset.txt"),
               "tests": [str(p) for p in _test_files(folder, tests)], "quantize": quantize,
               "algorithm": algorithm, "method": method, "out": out}
        job_path = Path(tmp) / "job.json"
        job_path.write_text(json.dumps(job))
        script = Path(__file__).with_name("toolkit_job.py")
        try:
            proc = subprocess.run([python, str(script), str(job_path)], cwd=tmp, capture_output=True, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            return RunResult(error=f"toolkit timed out after {timeout:.0f} s")
        if proc.returncode != 0:
            err = Path(out + ".err")
            text = err.read_text() if err.is_file() else proc.stderr
            last = [ln for ln in text.strip().splitlines() if ln.strip()][-1:] or ["?"]
            return RunResult(error=f"toolkit: {last[0][:200]}")
        data = np.load(out)
        n = len(job["tests"])
        outs = [[data[k] for k in sorted((k for k in data.files if k.startswith(f"s{i}_")),
                                          key=lambda s: int(s.split("_o")[1]))] for i in range(n)]
        return RunResult(outputs=outs, build_s=float(data["build_s"]))


def score(folder: Path, ref: list, result: RunResult) -> tuple:
    """(fidelity, task agreement) of a run against the fp32 reference, (nan, nan) when it failed."""
    if result.outputs is None:
        return float("nan"), float("nan")
    got = [[np.asarray(o).reshape(r.shape) if np.asarray(o).size == r.size else np.asarray(o)
            for o, r in zip(g, rr)] for g, rr in zip(result.outputs, ref)]
    fid = fidelity(ref, got)
    try:
        task = task_metric(meta(folder)["metric"])(ref, got)
    except Exception:
        task = float("nan")
    return fid, task
