"""Shared setup for the model-building tests.

If rknnlink is not installed yet (`pip install -e .` not run), the source tree's host/ folder is used.
This folder is put on sys.path so `import factories` works under any pytest import mode.
"""

import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
if importlib.util.find_spec("rknnlink") is None:
    sys.path.insert(0, str(HERE.parents[1] / "host"))
