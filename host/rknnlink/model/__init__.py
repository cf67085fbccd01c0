"""Host-side model building: ONNX -> rknnlink simulator models (fp32/fp16/int8) and their file format.

`rknnlink.model.format` needs numpy only (the board daemon imports it); the builder imports onnx,
onnxruntime, Pillow, tqdm and PyYAML lazily, inside the functions that need them. The builder's public
names are also reachable from this package (``from rknnlink.model import build, BuildConfig``) without
importing anything heavy up front.
"""

from __future__ import annotations

from typing import Any

_BUILDER_NAMES = ("BuildConfig", "BuildResult", "BuildError", "UnsupportedOperatorError", "load_onnx", "build",
                  "hybrid_quantization_step1", "hybrid_quantization_step2", "read_dataset")
_FORMAT_NAMES = ("MAGIC", "SimModel", "SimTensor", "SimOp", "IoSpec", "ModelFormatError", "is_vendor_rknn",
                 "write_model", "read_model")

__all__ = list(_BUILDER_NAMES + _FORMAT_NAMES)


def __getattr__(name: str) -> Any:
    if name in _BUILDER_NAMES:
        from . import builder
        return getattr(builder, name)
    if name in _FORMAT_NAMES:
        from . import format as fmt
        return getattr(fmt, name)
    raise AttributeError(f"module 'rknnlink.model' has no attribute {name!r}")
