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

    for name in ("torchvision", "torchvision.ops", "torchvision.transforms", "torchvision.datasets",
                 "torchvision.models", "torchvision.transforms.functional"):
        mod = _Missing(name)
        mod.__version__ = "0.0"
        mod.__path__ = []
        sys.modules[name] = mod


def ultralytics_model(cfg: str, out: Path, small: bool, calib_images: list, toolkit_opset: int) -> None:
    """YOLOv8 from ultralytics' own yaml (seeded weights, BatchNorm re-estimated on the photos), exported
    by ultralytics' ONNX exporter."""
    import numpy as np
    import torch
    _torchvision_stand_in()
    try:
        from ultralytics.nn.tasks import DetectionModel, SegmentationModel
    except ImportError as exc:
        raise SourceUnavailableError(f"ultralytics does not import here ({exc}); pip install --no-deps ultralytics "
                                "and its light dependencies") from exc
    from .torch_models import recalibrate_batchnorm
    torch.manual_seed(20261201)
    cls = SegmentationModel if "-seg" in cfg else DetectionModel
    model = cls(cfg, verbose=False)
    x = torch.from_numpy(np.stack([np.asarray(i, np.float32).transpose(2, 0, 1) / 255 for i in calib_images]))
    recalibrate_batchnorm(model, x)
    from ultralytics.engine.exporter import Exporter
    model.eval()
    for m in model.modules():
        if hasattr(m, "export"):
            m.export = True
            m.format = "onnx"
    h, w = x.shape[-2:]
    with torch.no_grad():
        torch.onnx.export(model, (x[:1],), str(out), opset_version=toolkit_opset, input_names=["images"],
                          output_names=["output0"] + (["output1"] if cls is SegmentationModel else []),
                          dynamo=False)
    del Exporter, h, w
