"""Send a compile job to RKNN-Toolkit2 in its own environment and get back a vendor .rknn plus its log.

The job is a JSON spec (model, config, dataset, outputs) handed to toolkit_runner.py, our own script, run by
the toolkit environment's python as a subprocess; rknnlink never imports the toolkit.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from rknnlink.vendor import environment
from rknnlink.vendor.errors import ToolkitBrokenError, ToolkitJobError

log = logging.getLogger("rknnlink.vendor")
RUNNER = Path(__file__).resolve().parent / "toolkit_runner.py"
# RKNN.config arguments that go to the toolkit as given (rknnlink's config keeps them under these names).
_CONFIG_KEYS = ("mean_values", "std_values", "quantized_dtype", "quantized_algorithm", "quantized_method",
                "target_platform", "float_dtype", "optimization_level", "custom_string")


def runner_command(python: Path) -> List[str]:
    """`python -I runner`: isolated mode, so nothing of rknnlink's environment (PYTHONPATH, user site) leaks in."""
    return [str(python), "-I", str(RUNNER)]


def toolkit_config(config: Dict[str, Any]) -> Dict[str, Any]:
    """rknnlink's recorded config() -> the toolkit's config() keyword arguments (JSON-ready)."""
    out = {k: config[k] for k in _CONFIG_KEYS if config.get(k) is not None}
    if config.get("quant_img_rgb2bgr"):
        out["quant_img_RGB2BGR"] = True
    return json.loads(json.dumps(out, default=_jsonable))


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"config value {value!r} cannot be sent to the toolkit")


@dataclass
class ToolkitJob:
    """One compile: an ONNX model, the toolkit config, the calibration set, optional simulator inputs."""

    model: Path
    config: Dict[str, Any]
    do_quantization: bool = False
    dataset: Optional[Path] = None
    rknn_batch_size: Optional[int] = None
    inputs: Optional[List[str]] = None
    outputs: Optional[List[str]] = None
    input_size_list: Optional[List[List[int]]] = None
    simulate: Sequence[np.ndarray] = ()        # run the toolkit's own simulator on these after the build
    data_format: Optional[Sequence[str]] = None


@dataclass
class ToolkitResult:
    """The vendor model, the toolkit's log, and (if asked) its simulator's outputs."""

    rknn: bytes
    log: str
    toolkit_version: str
    seconds: float
    stage_seconds: Dict[str, float] = field(default_factory=dict)
    simulator_outputs: List[np.ndarray] = field(default_factory=list)


class VendorToolkit:
    """RKNN-Toolkit2 reached through its environment's python (see environment.find_python)."""

    def __init__(self, python: Optional[Path] = None, timeout: float = 1800.0) -> None:
        self.python = Path(python) if python is not None else environment.find_python()
        self.timeout = timeout
        self._versions: Optional[dict] = None

    @property
    def versions(self) -> dict:
        """Versions inside the environment (imports the toolkit once; ToolkitBrokenError if it cannot)."""
        if self._versions is None:
            self._versions = environment.check(self.python)
        return self._versions

    def compile(self, job: ToolkitJob, workdir: Optional[Path] = None) -> ToolkitResult:
        """Build `job` into a vendor .rknn; ToolkitJobError with the toolkit's reason and log on failure."""
        own = workdir is None
        work = Path(tempfile.mkdtemp(prefix="rknnlink-toolkit2-")) if own else Path(workdir)
        work.mkdir(parents=True, exist_ok=True)
        try:
            return self._compile(job, work)
        finally:
            if own:
                shutil.rmtree(work, ignore_errors=True)

    def _compile(self, job: ToolkitJob, work: Path) -> ToolkitResult:
        paths = {"rknn": work / "model.rknn", "log": work / "toolkit.log", "result": work / "result.json"}
        spec: Dict[str, Any] = {
            "model": {"type": "onnx", "path": str(Path(job.model).resolve()), "inputs": job.inputs,
                      "outputs": job.outputs, "input_size_list": job.input_size_list},
            "config": job.config,
            "build": {"do_quantization": bool(job.do_quantization),
                      "dataset": str(Path(job.dataset).resolve()) if job.dataset else None,
                      "rknn_batch_size": job.rknn_batch_size},
            "outputs": {k: str(v) for k, v in paths.items()},
            "inference": None,
        }
        if job.simulate:
            feeds = []
            for i, array in enumerate(job.simulate):
                feeds.append(str(work / f"input{i}.npy"))
                np.save(feeds[-1], np.ascontiguousarray(array))
            (work / "sim").mkdir(exist_ok=True)
            spec["inference"] = {"inputs": feeds, "data_format": list(job.data_format) if job.data_format else None,
                                 "outputs_dir": str(work / "sim")}
        spec_path = work / "job.json"
        spec_path.write_text(json.dumps(spec, indent=1))
        start = time.monotonic()
        console = work / "console.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
        try:
            with open(console, "wb") as out:
                proc = subprocess.run([*runner_command(self.python), str(spec_path)], stdout=out,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=work, env=env,
                                      timeout=self.timeout)
        except subprocess.TimeoutExpired as exc:
            raise ToolkitJobError(f"RKNN-Toolkit2 did not finish the build within {self.timeout:g} s",
                                  console.read_text(errors="replace"), "timeout") from exc
        except OSError as exc:
            raise ToolkitBrokenError(f"cannot start the toolkit environment's python {self.python}: {exc}; "
                                     f"run `{environment.SETUP_COMMAND} --force`") from exc
        seconds = time.monotonic() - start
        text = console.read_text(errors="replace")
        if paths["log"].is_file():
            text += paths["log"].read_text(errors="replace")
        result = _read_result(paths["result"], text)
        if proc.returncode != 0 or not result.get("ok"):
            stage = result.get("stage", "runner")
            reason = result.get("error") or _last_lines(text)
            if stage == "runner" and "No module named 'rknn'" in (reason or ""):
                raise ToolkitBrokenError(f"{self.python} has no RKNN-Toolkit2 ({reason}); "
                                         f"run `{environment.SETUP_COMMAND} --force`")
            raise ToolkitJobError(f"RKNN-Toolkit2 failed at {stage}: {reason}", text, stage)
        outputs = [np.load(p) for p in result.get("outputs", [])]
        log.info("RKNN-Toolkit2 %s built %s into %d bytes in %.1f s", result.get("toolkit_version"),
                 job.model, result.get("size", 0), seconds)
        return ToolkitResult(rknn=paths["rknn"].read_bytes(), log=text, toolkit_version=result.get("toolkit_version")
                             or "", seconds=seconds, stage_seconds=result.get("seconds", {}),
                             simulator_outputs=outputs)


def _read_result(path: Path, console: str) -> Dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        parsed = environment._last_json(console)
        return parsed if parsed is not None else {"ok": False, "stage": "runner", "error": _last_lines(console)}


def _last_lines(text: str, n: int = 12) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return "\n".join(lines[-n:]) or "no output"
