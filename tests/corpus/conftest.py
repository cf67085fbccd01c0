"""The corpus package lives at the repository root (corpus/), next to host/; the bench module beside it
(bench/bench_real_models.py) is what some of these tests check."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def bench_script(name: str):
    """bench/<name>.py as a module (bench/ is not a package)."""
    import importlib
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(ROOT / "bench"))


@pytest.fixture(scope="module")
def bench():
    """bench/bench_real_models.py as a module."""
    return bench_script("bench_real_models")


@pytest.fixture(scope="module")
def pool_module():
    """bench/pool_real_models.py as a module."""
    return bench_script("pool_real_models")
