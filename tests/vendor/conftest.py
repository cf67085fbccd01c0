"""Fixtures for the vendor path: the C double of librknnrt (compiled here) and vendor-format model files."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))


@pytest.fixture(scope="session")
def vendor_double(tmp_path_factory: pytest.TempPathFactory) -> str:
    """runtime_c/vendor_double built as librknnrt.so with the project's C flags."""
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.skip("no C compiler to build the vendor double")
    out = tmp_path_factory.mktemp("vendor-double") / "librknnrt.so"
    sources = sorted(str(p) for p in (ROOT / "runtime_c" / "vendor_double").glob("*.c"))
    cmd = [cc, "-std=c11", "-Wall", "-Wextra", "-Werror", "-O1", "-g", "-fPIC", "-shared", "-fvisibility=hidden",
           "-D_GNU_SOURCE", f"-I{ROOT / 'runtime_c' / 'include'}", *sources, "-o", str(out), "-lm"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(f"cannot build the vendor double:\n{result.stderr[-3000:]}")
    return str(out)
