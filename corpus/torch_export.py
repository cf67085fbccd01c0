"""Export one torch architecture of corpus.torch_models with seeded weights and recalibrated BatchNorm."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SEED = 20261201


def normalised(images: list, mean: list, std: list):
    import torch
    x = np.stack([np.asarray(i, np.float32).transpose(2, 0, 1) for i in images])
    x = (x - np.float32(mean)[None, :, None, None]) / np.float32(std)[None, :, None, None]
    return torch.from_numpy(x)


def export(factory: str, out: Path, small: bool, calib_images: list, mean: list, std: list, opset: int,
           toolkit_opset: int, **kwargs) -> None:
    """Write ``out`` at ``opset``, plus ``model_tk2.onnx`` beside it at ``toolkit_opset`` when lower."""
    import torch

    from . import torch_models
    images = normalised(calib_images, mean, std)
    if factory == "vit":
        kwargs["size"] = images.shape[-1]
    torch.manual_seed(SEED)
    model = getattr(torch_models, f"make_{factory}")(small=small, **kwargs)
    torch_models.recalibrate_batchnorm(model, images)
    model.eval()
    names = ["logits", "boxes"] if factory == "detr" else ["output"]
    targets = [(out, opset)] + ([(out.with_name("model_tk2.onnx"), toolkit_opset)] if opset > toolkit_opset else [])
    with torch.no_grad():
        for path, ops in targets:
            torch.onnx.export(model, (images[:1],), str(path), opset_version=ops, input_names=["images"],
                              output_names=names, dynamo=False)
