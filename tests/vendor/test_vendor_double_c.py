"""The vendor double's C ABI under ASan/UBSan (runtime_c/vendor_double/tests/check_double.c)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from vendor_files import vendor_rknn

ROOT = Path(__file__).resolve().parents[2]

DOUBLE = ROOT / "runtime_c" / "vendor_double"


def test_double_abi_is_clean_under_sanitizers(tmp_path):
    cc = shutil.which("clang-14") or shutil.which("clang") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    exe = tmp_path / "check_double"
    sources = [str(p) for p in sorted(DOUBLE.glob("*.c"))] + [str(DOUBLE / "tests" / "check_double.c")]
    build = subprocess.run([cc, "-std=c11", "-Wall", "-Wextra", "-Werror", "-O1", "-g", "-D_GNU_SOURCE",
                            "-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
                            f"-I{ROOT / 'runtime_c' / 'include'}", *sources, "-o", str(exe), "-lm"],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-3000:]
    model = tmp_path / "m.rknn"
    shape = [1, 3, 8, 8]
    model.write_bytes(vendor_rknn([("in", shape, "float32")],
                                  [("a", shape, "float32"), ("b", shape, "int8"), ("c", shape, "float16")]))
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    env = dict(os.environ, RKNN_LOG_LEVEL="5", RKNN_DUMP_DIR=str(dumps), ASAN_OPTIONS="detect_leaks=1")
    run = subprocess.run([str(exe), str(model)], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    assert "double ok" in run.stdout
    # the context and its duplicate both ran: each run writes the same four file names
    assert sorted(p.name for p in dumps.iterdir()) == [
        "000_InputOperator_in_shape_1_3_8_8_float.npy", "001_OutputOperator_a_shape_1_3_8_8_float.npy",
        "002_OutputOperator_b_shape_1_3_8_8_float.npy", "003_OutputOperator_c_shape_1_3_8_8_float.npy"]
    assert "dump npy tensor to:" in run.stderr
