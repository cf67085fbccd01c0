"""ctypes binding to the librknnrt C ABI: the vendor runtime on a board, the rknnlink simulated NPU elsewhere.

    lib = RuntimeLibrary.load(backend="auto")
    with lib.init(model_bytes) as ctx:
        outputs = ctx.infer([image])
"""

from rknnlink.runtime.abi import ERROR_CODES, ERROR_NAMES
from rknnlink.runtime.errors import RknnError
from rknnlink.runtime.library import (
    SIM_LIB_ENV,
    VENDOR_LIB_ENV,
    VENDOR_LIB_PATHS,
    DumpInfo,
    LayerInfo,
    RuntimeContext,
    RuntimeLibrary,
    TensorAttr,
    numpy_dtype,
    rknn_type_of,
)

__all__ = [
    "ERROR_CODES", "ERROR_NAMES", "RknnError", "RuntimeLibrary", "RuntimeContext", "TensorAttr", "LayerInfo",
    "DumpInfo", "SIM_LIB_ENV", "VENDOR_LIB_ENV", "VENDOR_LIB_PATHS", "numpy_dtype", "rknn_type_of",
]
