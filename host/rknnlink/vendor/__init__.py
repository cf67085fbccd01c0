"""Bridge to Rockchip's RKNN-Toolkit2 (the vendor compiler) in an isolated environment rknnlink manages.

    rknnlink toolkit2 setup                       # once: creates ~/.cache/rknnlink/toolkit2-2.5.0
    result = VendorToolkit().compile(ToolkitJob(model="m.onnx", config={"target_platform": "rk3588"}))
    Path("m.rknn").write_bytes(result.rknn)       # runs on the board's librknnrt

RKNNLINK_TOOLKIT2_PYTHON names the python of an existing toolkit venv instead. See docs/vendor.md.
"""

from rknnlink.vendor.environment import PYTHON_ENV, TOOLKIT_VERSION, default_path, find_python, setup
from rknnlink.vendor.errors import (
    ToolkitBrokenError,
    ToolkitError,
    ToolkitJobError,
    ToolkitNotFoundError,
    ToolkitSetupError,
)
from rknnlink.vendor.jobs import ToolkitJob, ToolkitResult, VendorToolkit, toolkit_config

__all__ = [
    "PYTHON_ENV", "TOOLKIT_VERSION", "default_path", "find_python", "setup", "ToolkitError", "ToolkitBrokenError",
    "ToolkitJobError", "ToolkitNotFoundError", "ToolkitSetupError", "ToolkitJob", "ToolkitResult", "VendorToolkit",
    "toolkit_config",
]
