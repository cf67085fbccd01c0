"""Build a loaded model through the toolkit facade, run it on the simulated NPU, compare with a reference."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from rknnlink.api import RKNN


def cosine(a, b) -> float:
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 and nb == 0:
        return 1.0
    return float(a @ b / (na * nb))


def write_dataset(folder: Path, samples: Sequence[np.ndarray]) -> Path:
    """dataset.txt of .npy files (NCHW or rank != 4 as the toolkit expects)."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for k, s in enumerate(samples):
        path = folder / f"calib{k}.npy"
        np.save(path, s)
        lines.append(path.name)
    (folder / "dataset.txt").write_text("\n".join(lines) + "\n")
    return folder / "dataset.txt"


def run_rknn(load: Callable[[RKNN], int], inputs: Sequence[np.ndarray], quantize: bool = False,
             dataset: Optional[Path] = None, data_format: str = "nhwc", **config) -> list:
    """config -> load -> build -> init_runtime -> inference; every call must return 0."""
    rknn = RKNN()
    try:
        assert rknn.config(target_platform="rk3588", **config) == 0
        assert load(rknn) == 0
        assert rknn.build(do_quantization=quantize, dataset=str(dataset) if dataset else None) == 0
        assert rknn.init_runtime() == 0
        return rknn.inference(inputs=list(inputs), data_format=data_format)
    finally:
        rknn.release()
