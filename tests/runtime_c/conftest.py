"""Builds runtime_c (library, C tests, ABI probe, fuzz tools) once per session and exposes the paths."""

import ctypes
import os
import shutil
import subprocess
from pathlib import Path
from typing import Optional

import pytest

REPO = Path(__file__).resolve().parents[2]
RUNTIME_C = REPO / "runtime_c"
BUILD = RUNTIME_C / "build"


def make(*targets: str, timeout: float = 600, env: Optional[dict] = None) -> subprocess.CompletedProcess:
    """Runs `make -C runtime_c TARGETS` and returns the finished process (output captured for messages)."""
    return subprocess.run(["make", "-C", str(RUNTIME_C), *targets], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


@pytest.fixture(scope="session")
def run_make():
    return make


@pytest.fixture(scope="session")
def c_build() -> Path:
    proc = make("all", "build/test_core", "build/leak_cycle", "build/abi_probe", "build/gen_corpus")
    assert proc.returncode == 0, f"runtime_c build failed:\n{proc.stdout}\n{proc.stderr}"
    return BUILD


@pytest.fixture(scope="session")
def sim_lib(c_build: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(c_build / "librknnrt_sim.so"))
    lib.rknn_init.argtypes = [ctypes.POINTER(ctypes.c_uint64), ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint32,
                              ctypes.c_void_p]
    lib.rknn_destroy.argtypes = [ctypes.c_uint64]
    lib.rknn_query.argtypes = [ctypes.c_uint64, ctypes.c_int, ctypes.c_void_p, ctypes.c_uint32]
    lib.rknn_create_mem2.argtypes = [ctypes.c_uint64, ctypes.c_uint64, ctypes.c_uint64]
    lib.rknn_create_mem2.restype = ctypes.c_void_p
    lib.rknn_destroy_mem.argtypes = [ctypes.c_uint64, ctypes.c_void_p]
    lib.rknn_dup_context.argtypes = [ctypes.POINTER(ctypes.c_uint64), ctypes.POINTER(ctypes.c_uint64)]
    lib.rknnlink_sim_init_error.restype = ctypes.c_char_p
    return lib


@pytest.fixture(scope="session")
def clang14() -> str:
    path = shutil.which("clang-14")
    if path is None:
        pytest.skip("clang-14 is not installed (apt-get install clang-14 libclang-rt-14-dev; see Makefile)")
    return path
