"""The corpus manifest: every model, how it is made, what it is fed and how it is judged.

A model is built by ``make(out_path, small)`` (writes ONNX), fed raw uint8 RGB images of (height, width)
made by ``inputs`` ('photos', 'text_lines' or 'text_pages'), normalised by the runtime with ``mean``/
``std`` (the RKNN.config values), and judged by ``metric`` (corpus.metrics.METRICS) against onnxruntime
fp32. ``small`` builds the reduced copy CI runs end to end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

IMAGENET_MEAN = [123.675, 116.28, 103.53]
IMAGENET_STD = [58.395, 57.12, 57.375]
HALF = [127.5, 127.5, 127.5]


@dataclass(frozen=True)
class CorpusModel:
    name: str
    source: str                 # where the network comes from (a wheel, a library's builder, torch code here)
    make: Callable              # make(out_path: Path, small: bool, calib_images: list) -> None
    height: int
    width: int
    inputs: str                 # 'photos' | 'text_lines' | 'text_pages'
    metric: str
    opset: int
    mean: list = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list = field(default_factory=lambda: list(IMAGENET_STD))
    small_size: Optional[tuple] = None  # (height, width) of the CI copy, when it differs
    requires: tuple = ()        # python packages the builder imports
    calib: int = 16
    tests: int = 16             # eval images: 4 made task agreement move in steps of 0.25 (issue 8)

    def size(self, small: bool) -> tuple:
        return self.small_size if small and self.small_size else (self.height, self.width)


def _torch(factory: str, opset: int, **kwargs) -> Callable:
    def make(out: Path, small: bool, calib_images: list, mean: list, std: list, toolkit_opset: int) -> None:
        from . import torch_export
        torch_export.export(factory, out, small, calib_images, mean, std, opset, toolkit_opset, **kwargs)
    return make


def _rapidocr(filename: str) -> Callable:
    def make(out: Path, small: bool, calib_images: list, mean: list, std: list, toolkit_opset: int) -> None:
        from .external import rapidocr_model
        rapidocr_model(filename, out, toolkit_opset)
    return make


def _ultralytics(cfg: str) -> Callable:
    def make(out: Path, small: bool, calib_images: list, mean: list, std: list, toolkit_opset: int) -> None:
        from .external import ultralytics_model
        ultralytics_model(cfg, out, small, calib_images, toolkit_opset)
    return make


ZERO_ONE = ([0.0, 0.0, 0.0], [255.0, 255.0, 255.0])

MODELS: list = [
    CorpusModel("ppocrv4_det", "rapidocr_onnxruntime wheel: ch_PP-OCRv4_det_infer.onnx (trained)",
                _rapidocr("ch_PP-OCRv4_det_infer.onnx"), 320, 320, "text_pages", "text_map_iou", 0,
                small_size=(96, 96), requires=("rapidocr_onnxruntime",), calib=12, tests=8),
    CorpusModel("ppocrv4_rec", "rapidocr_onnxruntime wheel: ch_PP-OCRv4_rec_infer.onnx (trained)",
                _rapidocr("ch_PP-OCRv4_rec_infer.onnx"), 48, 320, "text_lines", "text", 0, HALF, HALF,
                small_size=(48, 160), requires=("rapidocr_onnxruntime",)),
    CorpusModel("ppocr_cls", "rapidocr_onnxruntime wheel: ch_ppocr_mobile_v2.0_cls_infer.onnx (trained)",
                _rapidocr("ch_ppocr_mobile_v2.0_cls_infer.onnx"), 48, 192, "text_lines", "top1", 0, HALF, HALF,
                requires=("rapidocr_onnxruntime",)),
    CorpusModel("yolov8n", "ultralytics: yolov8n.yaml, seeded weights, its own ONNX export",
                _ultralytics("yolov8n.yaml"), 320, 320, "photos", "detections", 0, *ZERO_ONE,
                small_size=(96, 96), requires=("ultralytics",), calib=12, tests=8),
    CorpusModel("yolov8n_seg", "ultralytics: yolov8n-seg.yaml, seeded weights, its own ONNX export",
                _ultralytics("yolov8n-seg.yaml"), 320, 320, "photos", "detections", 0, *ZERO_ONE,
                small_size=(96, 96), requires=("ultralytics",), calib=12, tests=8),
    CorpusModel("resnet18", "torch (this repo): ResNet-18", _torch("resnet18", 11), 224, 224, "photos", "top1",
                11, small_size=(64, 64)),
    CorpusModel("mobilenetv3_small", "torch (this repo): MobileNetV3-Small, HardSwish decomposed (opset 13)",
                _torch("mobilenetv3", 13), 224, 224, "photos", "top1", 13, small_size=(64, 64)),
    CorpusModel("efficientnet_b0", "torch (this repo): EfficientNet-B0 (SiLU, SE)", _torch("efficientnet", 14),
                224, 224, "photos", "top1", 14, small_size=(64, 64)),
    CorpusModel("convnext_tiny", "torch (this repo): ConvNeXt-T-like, 4 stages (LayerNormalization, GELU)",
                _torch("convnext", 17), 224, 224, "photos", "top1", 17, small_size=(64, 64)),
    CorpusModel("vit_tiny", "torch (this repo): ViT-Ti/16, decomposed LayerNorm and erf GELU (opset 13)",
                _torch("vit", 13), 224, 224, "photos", "top1", 13, small_size=(64, 64)),
    CorpusModel("vit_tiny_gelu20", "torch (this repo): ViT-Ti/16, tanh GELU, opset 20 (Gelu op)",
                _torch("vit", 20, gelu="tanh"), 224, 224, "photos", "top1", 20, small_size=(64, 64)),
    CorpusModel("detr_like", "torch (this repo): conv backbone + transformer encoder/decoder, object queries",
                _torch("detr", 18), 256, 256, "photos", "queries", 18, small_size=(64, 64)),
    CorpusModel("unet", "torch (this repo): U-Net (ConvTranspose, Resize, Concat)", _torch("unet", 16), 256, 256,
                "photos", "mask_iou", 16, small_size=(64, 64)),
    CorpusModel("crnn_lstm", "torch (this repo): CRNN, bidirectional LSTM, CTC head", _torch("crnn", 19), 32, 128,
                "text_lines", "text", 19, HALF, HALF),
]

BY_NAME = {m.name: m for m in MODELS}
