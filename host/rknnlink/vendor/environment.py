"""The isolated Python environment that holds Rockchip's RKNN-Toolkit2 (the vendor compiler).

RKNN-Toolkit2 2.5.0 pins numpy<=1.26.4, onnx<=1.18, protobuf<=4.25.4 and torch<=2.4, so it cannot share
rknnlink's environment, and a plain `pip install rknn-toolkit2` would pull a multi-GB CUDA torch. rknnlink
therefore keeps it in a venv of its own, created with pins measured to work
(docs/vendor.md): a CPU torch, the toolkit with --no-deps, its dependencies listed by hand, setuptools<81
(the toolkit imports pkg_resources). Nothing from Rockchip ships with rknnlink: the user's setup command
installs the toolkit from the package registry.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence

from rknnlink.vendor.errors import ToolkitBrokenError, ToolkitNotFoundError, ToolkitSetupError

log = logging.getLogger("rknnlink.vendor")

PYTHON_ENV = "RKNNLINK_TOOLKIT2_PYTHON"
TOOLKIT_VERSION = "2.5.0"
TORCH_VERSION = "2.13.0"
# The toolkit's own requirements (its wheel METADATA), without torch; installed by hand because the toolkit
# itself goes in with --no-deps.
TOOLKIT_DEPENDENCIES = (
    "protobuf>=4.21.6,<=4.25.4", "psutil>=5.9.0", "ruamel.yaml>=0.17.21", "scipy>=1.9.3", "tqdm>=4.64.1",
    "opencv-python>=4.5.5.64", "fast-histogram>=0.11", "numpy<=1.26.4", "onnx>=1.16.1,<=1.18.0",
    "onnxruntime>=1.17.0",
)
SETUPTOOLS_PIN = "setuptools<81"
MARKER = "rknnlink-toolkit2.json"
SETUP_COMMAND = "rknnlink toolkit2 setup"


def default_path() -> Path:
    """~/.cache/rknnlink/toolkit2-<version> (XDG_CACHE_HOME respected)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "rknnlink" / f"toolkit2-{TOOLKIT_VERSION}"


def venv_python(path: Path) -> Path:
    return Path(path) / "bin" / "python"


@dataclass
class SetupReport:
    """What `setup` did: where, how long each step took, and the versions it ended with."""

    path: Path
    python: Path
    seconds: float
    steps: List[tuple] = field(default_factory=list)   # (step name, seconds)
    versions: dict = field(default_factory=dict)


def find_python(path: Optional[Path] = None) -> Path:
    """The toolkit environment's interpreter: $RKNNLINK_TOOLKIT2_PYTHON, else the managed venv.

    Raises ToolkitNotFoundError saying how to create one."""
    env = os.environ.get(PYTHON_ENV)
    if env and path is None:
        python = Path(env).expanduser()
        if not python.is_file():
            raise ToolkitNotFoundError(
                f"{PYTHON_ENV}={env} does not exist: point it at the python of a venv that has rknn-toolkit2 "
                f"{TOOLKIT_VERSION}, or unset it and run `{SETUP_COMMAND}`")
        return python
    root = Path(path) if path is not None else default_path()
    python = venv_python(root)
    if not python.is_file():
        raise ToolkitNotFoundError(
            f"no RKNN-Toolkit2 environment at {root}: create it with `{SETUP_COMMAND}`"
            + (f" --path {root}" if path is not None else "")
            + f" (a few minutes, about 1.5 GB; installs rknn-toolkit2 {TOOLKIT_VERSION} from the package "
              f"registry with a CPU torch), or set {PYTHON_ENV} to the python of an existing toolkit venv")
    return python


def local_torch_wheels() -> List[Path]:
    """CPU torch wheels of the pinned version in pip's find-links directories (pip config and $PIP_FIND_LINKS)."""
    dirs: List[str] = []
    for line in _pip_config_lines():
        key, _, value = line.partition("=")
        if key.strip().endswith("find-links"):
            dirs.extend(value.strip().strip("'\"").split())
    dirs.extend((os.environ.get("PIP_FIND_LINKS") or "").split())
    wheels = []
    for entry in dict.fromkeys(dirs):
        folder = Path(entry.removeprefix("file://"))
        if folder.is_dir():
            wheels.extend(sorted(folder.glob(f"torch-{TORCH_VERSION}+cpu-*.whl")))
    return wheels


def _pip_config_lines() -> List[str]:
    try:
        out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                             timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return out.stdout.splitlines()


def _torch_requirement(torch: Optional[str]) -> str:
    """The torch to install: an explicit spec or wheel, else a local CPU wheel, else the +cpu version."""
    if torch:
        return torch
    wheels = local_torch_wheels()
    if wheels:
        return str(wheels[0])
    return f"torch=={TORCH_VERSION}+cpu"


Runner = Callable[[Sequence[str]], None]


def _run(cmd: Sequence[str], log_file: Path) -> None:
    with open(log_file, "ab") as out:
        out.write(("$ " + " ".join(cmd) + "\n").encode())
        out.flush()
        result = subprocess.run(list(cmd), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        tail = log_file.read_text(errors="replace").splitlines()[-25:]
        raise ToolkitSetupError(f"`{' '.join(cmd)}` failed with status {result.returncode}; the last lines of "
                                f"{log_file}:\n" + "\n".join(tail))


def setup(path: Optional[Path] = None, force: bool = False, torch: Optional[str] = None,
          toolkit: str = f"rknn-toolkit2=={TOOLKIT_VERSION}", python: str = sys.executable) -> SetupReport:
    """Create (or repair) the toolkit venv at `path` with the known-good pins and verify it imports.

    torch: a requirement or wheel file (default: a local torch 2.13.0 CPU wheel, else torch==2.13.0+cpu).
    toolkit: the toolkit requirement or wheel file. The venv is checked afterwards: a CUDA torch or a toolkit
    that does not import fails the setup with the reason."""
    root = Path(path) if path is not None else default_path()
    start = time.monotonic()
    report = SetupReport(path=root, python=venv_python(root), seconds=0.0)
    if force and root.exists():
        import shutil

        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    log_file = root / "setup.log"
    log_file.write_text("")
    pip = [str(report.python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]

    def step(name: str, cmd: Sequence[str]) -> None:
        t0 = time.monotonic()
        log.info("toolkit2 setup: %s", name)
        _run(cmd, log_file)
        report.steps.append((name, round(time.monotonic() - t0, 1)))

    if not report.python.is_file():
        step("venv", [python, "-m", "venv", str(root)])
    torch_req = _torch_requirement(torch)
    step("torch (CPU)", [*pip, torch_req])
    constraints = root / "constraints.txt"
    constraints.write_text(f"torch=={_installed_version(report.python, 'torch')}\n")
    step("toolkit dependencies", [*pip, "-c", str(constraints), *TOOLKIT_DEPENDENCIES, SETUPTOOLS_PIN])
    step("rknn-toolkit2 (--no-deps)", [*pip, "--no-deps", toolkit])
    report.versions = check(report.python)
    report.seconds = round(time.monotonic() - start, 1)
    (root / MARKER).write_text(json.dumps({"versions": report.versions, "setup_seconds": report.seconds,
                                           "steps": report.steps, "torch": torch_req}, indent=1) + "\n")
    return report


def _installed_version(python: Path, package: str) -> str:
    out = subprocess.run([str(python), "-c", f"import importlib.metadata as m; print(m.version({package!r}))"],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise ToolkitSetupError(f"{package} did not install into {python.parent.parent}: {out.stderr.strip()}")
    return out.stdout.strip()


def check(python: Path, timeout: float = 300.0) -> dict:
    """Import the toolkit in its environment; return its versions, or raise ToolkitBrokenError with the fix."""
    from rknnlink.vendor.jobs import runner_command

    try:
        out = subprocess.run([*runner_command(python), "--probe"], capture_output=True, text=True,
                             timeout=timeout, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ToolkitBrokenError(f"the RKNN-Toolkit2 environment's python {python} cannot run ({exc}); "
                                 f"recreate it with `{SETUP_COMMAND} --force`") from exc
    versions = _last_json(out.stdout)
    if out.returncode != 0 or versions is None or versions.get("error"):
        reason = (versions or {}).get("error") or (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise ToolkitBrokenError(f"RKNN-Toolkit2 does not import with {python}: {reason}. Recreate the "
                                 f"environment with `{SETUP_COMMAND} --force`, or fix {PYTHON_ENV}")
    if versions.get("torch_cuda"):
        raise ToolkitBrokenError(f"the toolkit environment {python} has a CUDA torch ({versions.get('torch')}); "
                                 f"rknnlink needs the CPU build: `{SETUP_COMMAND} --force`")
    return versions


def _last_json(text: str) -> Optional[dict]:
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                return None
    return None
