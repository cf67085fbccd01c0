"""Shared helpers of the front-end tests: building, running and comparing through the toolkit facade."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
if importlib.util.find_spec("rknnlink") is None:
    sys.path.insert(0, str(HERE.parents[1] / "host"))
