"""Builds and runs the C unit tests of the operator kernels (runtime_c/tests/ops): every op family
against reference loops, through both the AVX2 and the portable C code paths."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OPS_TESTS = ROOT / "runtime_c" / "tests" / "ops"


@pytest.mark.skipif(shutil.which("make") is None or shutil.which("cc") is None, reason="needs make and a C compiler")
def test_kernel_unit_tests_pass():
    proc = subprocess.run(["make", "-s", "-C", str(OPS_TESTS), "test"], capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    summaries = [line for line in out.splitlines() if line.endswith("0 failures")]
    assert len(summaries) == 2, out[-2000:]  # AVX2 build and portable build
    assert all(int(line.split()[0]) > 300 for line in summaries), summaries
