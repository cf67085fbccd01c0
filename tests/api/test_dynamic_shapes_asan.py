"""runtime_c/src/shapes.c under AddressSanitizer and UBSan: the dynamic-shape C API tests against an
instrumented librknnrt_sim.so (the C suite's own models have static shapes only)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLANG = shutil.which("clang-14")


@pytest.mark.slow
@pytest.mark.skipif(CLANG is None, reason="needs clang-14 (Makefile APT_PACKAGES installs it)")
def test_dynamic_shape_c_api_is_clean_under_asan_and_ubsan(tmp_path):
    runtime = ROOT / "runtime_c"
    sources = sorted(str(p) for p in (runtime / "src").rglob("*.c"))
    library = tmp_path / "librknnrt_sim_asan.so"
    flags = ["-std=c11", "-Wall", "-Wextra", "-Werror", "-D_GNU_SOURCE", "-fno-math-errno", "-ffp-contract=off",
             f"-I{runtime / 'include'}", f"-I{runtime / 'src'}", "-O1", "-g", "-fno-omit-frame-pointer",
             "-fsanitize=address,undefined", "-fno-sanitize-recover=undefined", "-fPIC"]
    objects = [tmp_path / f"{i}.o" for i in range(len(sources))]

    def compile_one(pair) -> None:
        subprocess.run([CLANG, *flags, "-c", pair[0], "-o", str(pair[1])], check=True, timeout=600)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        list(pool.map(compile_one, zip(sources, objects)))
    subprocess.run([CLANG, "-fsanitize=address,undefined", "-shared", "-o", str(library), *map(str, objects), "-lm",
                    "-lpthread"], check=True, timeout=300)
    asan_rt = subprocess.run([CLANG, "-print-file-name=libclang_rt.asan-x86_64.so"], capture_output=True,
                             text=True, check=True).stdout.strip()
    env = dict(os.environ, RKNNLINK_SIM_LIB=str(library), LD_PRELOAD=asan_rt,
               ASAN_OPTIONS="detect_leaks=0:abort_on_error=1", UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "c_api or example",
                           str(Path(__file__).with_name("test_dynamic_shapes.py"))], env=env, capture_output=True,
                          text=True, timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "3 passed" in proc.stdout
