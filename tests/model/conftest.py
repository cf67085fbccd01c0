"""Shared fixtures for the model-building tests.

If rknnlink is not installed yet (`pip install -e .` not run), the source tree's host/ folder is used.
"""

import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("rknnlink") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "host"))
