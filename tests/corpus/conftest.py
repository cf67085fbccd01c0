"""The corpus package lives at the repository root (corpus/), next to host/; the bench module beside it
(bench/bench_real_models.py) is what some of these tests check."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="module")
def bench():
    """bench/bench_real_models.py as a module (bench/ is not a package)."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import bench_real_models
    finally:
        sys.path.remove(str(ROOT / "bench"))
    return bench_real_models
