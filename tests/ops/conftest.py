"""Shared fixtures for the per-operator tests: the simulated NPU library (skipped when not built)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def sim_lib():
    try:
        from rknnlink.runtime import RuntimeLibrary

        return RuntimeLibrary.load(backend="sim")
    except Exception as exc:  # the simulator is built by `pip install -e .`
        pytest.skip(f"simulated NPU library unavailable: {exc}")
