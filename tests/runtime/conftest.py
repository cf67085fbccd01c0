"""Fixtures for the ctypes binding tests: a real librknnrt_sim.so and small real models."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from simlib import sim_library_path  # noqa: E402


@pytest.fixture(scope="session")
def sim_library(tmp_path_factory: pytest.TempPathFactory) -> str:
    return sim_library_path(tmp_path_factory)


@pytest.fixture(scope="session")
def lib(sim_library: str):
    from rknnlink.runtime import RuntimeLibrary

    return RuntimeLibrary.load(backend="sim")
