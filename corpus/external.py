"""Corpus models that come from libraries: ONNX files inside the rapidocr_onnxruntime wheel, and
ultralytics' YOLOv8 built from its own yaml and exported by its own exporter."""

from __future__ import annotations

import logging
import shutil
import sys
import types
from pathlib import Path

LOG = logging.getLogger(__name__)


class SourceUnavailableError(RuntimeError):
    """The package a corpus model comes from is missing or cannot run here (the message says why)."""


def rapidocr_model(filename: str, out: Path, toolkit_opset: int) -> None:
    """Copy a trained model shipped in the rapidocr_onnxruntime wheel; the input's dynamic dims stay
    (the runner fixes them with input_size_list, as a user does)."""
    try:
        import rapidocr_onnxruntime
    except ImportError as exc:
        raise SourceUnavailableError("pip install rapidocr_onnxruntime (it ships the PP-OCR ONNX files)") from exc
    found = sorted(Path(rapidocr_onnxruntime.__file__).parent.rglob(filename))
    if not found:
        raise SourceUnavailableError(f"rapidocr_onnxruntime {getattr(rapidocr_onnxruntime, '__version__', '?')} does "
                                f"not ship {filename}")
    shutil.copyfile(found[0], out)


def _torchvision_stand_in() -> None:
    """ultralytics imports torchvision at module level, but model building and ONNX export (without NMS)
    never call it, and torchvision's compiled ops do not load against the CPU torch here. Register an
    empty stand-in module so that the imports succeed; any real use raises."""
    try:
        import torchvision  # noqa: F401
        return
    except Exception:  # not installed, or its compiled ops fail to load
        for key in [k for k in sys.modules if k == "torchvision" or k.startswith("torchvision.")]:
            del sys.modules[key]

    class _Missing(types.ModuleType):
        def __getattr__(self, name: str):
            if name.startswith("__"):
                raise AttributeError(name)
            raise SourceUnavailableError(f"torchvision.{name} is needed but torchvision does not load here")

    import importlib.metadata as md
    real_version = md.version

    def version(name: str) -> str:  # ultralytics reads torchvision's version from its metadata
        return "0.0" if name == "torchvision" else real_version(name)

    md.version = version
    for name in ("torchvision", "torchvision.ops", "torchvision.transforms", "torchvision.datasets",
                 "torchvision.models", "torchvision.transforms.functional"):
        mod = _Missing(name)
        mod.__version__ = "0.0"
        mod.__path__ = []
        sys.modules[name] = mod


def ultralytics_model(cfg: str, out: Path, small: bool, calib_images: list, toolkit_opset: int) -> None:
    """YOLOv8 from ultralytics' own yaml (seeded weights, BatchNorm re-estimated on the photos), exported
    by ultralytics' own ONNX exporter at the toolkit's highest opset, without onnxslim."""
    import os
    import tempfile

    import numpy as np
    import torch
    _torchvision_stand_in()
    try:
        from ultralytics import YOLO
        from ultralytics.utils import SETTINGS
    except ImportError as exc:
        raise SourceUnavailableError(f"ultralytics does not import here ({exc}); pip install --no-deps ultralytics "
                                     "and its light dependencies") from exc
    from .torch_models import recalibrate_batchnorm
    SETTINGS.update({"sync": False})  # no usage events
    torch.manual_seed(20261201)
    yolo = YOLO(cfg)
    x = torch.from_numpy(np.stack([np.asarray(i, np.float32).transpose(2, 0, 1) / 255 for i in calib_images]))
    recalibrate_batchnorm(yolo.model, x)
    here = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        try:
            path = yolo.export(format="onnx", imgsz=list(x.shape[-2:]), opset=toolkit_opset, simplify=False,
                               dynamic=False, verbose=False)
        finally:
            os.chdir(here)
        shutil.copyfile(Path(tmp) / path if not Path(path).is_absolute() else path, out)
