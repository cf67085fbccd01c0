"""Locate (or, failing that, compile) the simulated NPU library for tests."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _build_sim(out_dir: Path) -> Path:
    """Compile runtime_c/ the way setup.py does (used only when no built library is around)."""
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.skip("no C compiler and no built simulator: run `pip install -e .`")
    out = out_dir / "librknnrt_sim.so"
    sources = sorted(str(p) for p in (ROOT / "runtime_c" / "src").rglob("*.c"))
    cmd = [cc, "-std=c11", "-O2", "-fPIC", "-shared", "-D_GNU_SOURCE", f"-I{ROOT / 'runtime_c' / 'include'}",
           f"-I{ROOT / 'runtime_c' / 'src'}", *sources, "-o", str(out), "-lm", "-lpthread"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(f"cannot build the simulator for the tests:\n{result.stderr[-3000:]}")
    return out


def sim_library_path(tmp_dir_factory) -> str:
    """$RKNNLINK_SIM_LIB, the packaged library, or a fresh build; exported so daemons inherit it."""
    from rknnlink.runtime.library import SIM_LIB_ENV, packaged_sim_path

    env = os.environ.get(SIM_LIB_ENV)
    if env and Path(env).is_file():
        return env
    path = packaged_sim_path()
    if not path.is_file():
        path = _build_sim(tmp_dir_factory.mktemp("sim"))
    os.environ[SIM_LIB_ENV] = str(path)
    return str(path)
