"""dataset.txt parsing for calibration, with the toolkit's rules made explicit and checked.

* One line per sample; one path per model input, separated by spaces; blank lines and ``#`` comments are
  skipped. Relative paths are resolved against the folder of dataset.txt (not the working directory), as
  RKNN-Toolkit2 2.5.0 does.
* ``.jpg/.jpeg/.png/.bmp`` are read with Pillow as RGB (grey for 1-channel inputs) and must already have
  the model's height and width; one of another size is resized (bilinear) to it, as RKNN-Toolkit2 2.5.0 does
  silently, with one warning naming the file and both sizes.
* ``.npy`` holds raw (un-normalised) values. For a 4-D model input (N, C, H, W) a 3- or 4-D array is NCHW
  when its channel-first position (axis 1 of the 4-D form) equals C, NHWC when its last axis equals C; if
  both match (e.g. C = H = W = 3) it is taken as NCHW and a note is logged. Other inputs must match the
  model's shape (a missing leading batch of 1 is added).
* Mean/std and the optional RGB->BGR reversal are applied exactly as the runtime applies them to a graph
  input: reverse the channels, then ``(x - mean[c]) / std[c]``.
"""

from __future__ import annotations

import functools
import logging
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np

from .errors import BuildError

LOG = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


@dataclass
class Sample:
    """One calibration sample: raw NCHW arrays (as loaded) and normalised ones (as the model sees them)."""

    raw: list
    normalised: list
    paths: list


def parse_dataset_file(dataset_txt: str | Path) -> list:
    """The list of path lists, resolved against the dataset file's folder; checks that files exist."""
    path = Path(dataset_txt)
    if not path.is_file():
        raise BuildError(f"dataset file {str(path)!r} does not exist; pass build(dataset='path/to/dataset.txt')")
    base = path.resolve().parent
    entries = []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        paths = []
        for item in shlex.split(line):
            p = Path(item)
            p = p if p.is_absolute() else base / p
            if not p.is_file():
                raise BuildError(f"{path.name} line {lineno}: file {item!r} not found (looked for {str(p)!r}; "
                                 "relative paths are resolved against the dataset file's folder)")
            paths.append(p)
        entries.append((lineno, paths))
    if not entries:
        raise BuildError(f"dataset file {str(path)!r} lists no samples")
    return entries


def load_array(path: Path, shape: Optional[Sequence[int]]) -> np.ndarray:
    """Load one image or .npy as a float32 array of exactly ``shape`` (NCHW for 4-D inputs).

    Without a shape, images come back as (1, C, H, W) and arrays as stored (a 3-D array gets a batch of 1).
    """
    suffix = path.suffix.lower()
    if shape is None:
        return _load_unshaped(path, suffix)
    shape = tuple(int(s) for s in shape)
    if suffix in IMAGE_SUFFIXES:
        return _load_image(path, shape)
    if suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except Exception as exc:
            raise BuildError(f"cannot read {str(path)!r} as a .npy array: {exc}") from exc
        return _layout_npy(np.asarray(arr, dtype=np.float32), shape, path)
    raise BuildError(f"{str(path)!r}: unsupported sample type {suffix!r}; use .jpg, .png, .bmp or .npy")


def _load_unshaped(path: Path, suffix: str) -> np.ndarray:
    if suffix in IMAGE_SUFFIXES:
        from PIL import Image
        with Image.open(path) as img:
            arr = np.asarray(img.convert("RGB"), dtype=np.float32)
        return np.ascontiguousarray(arr.transpose(2, 0, 1)[None])
    if suffix == ".npy":
        arr = np.asarray(np.load(path, allow_pickle=False), dtype=np.float32)
        return arr[None] if arr.ndim == 3 else arr
    raise BuildError(f"{str(path)!r}: unsupported sample type {suffix!r}; use .jpg, .png, .bmp or .npy")


@functools.cache
def _warn_resized(path: str, size: tuple, target: tuple) -> None:
    """Once per file and size: calibration passes (normal, mmse, per shape set) read the same images again."""
    LOG.warning("calibration image %r is %dx%d (WxH); resized to the model input's %dx%d", path, *size, *target)


def _load_image(path: Path, shape: tuple) -> np.ndarray:
    from PIL import Image
    if len(shape) != 4 or shape[1] not in (1, 3, 4):
        raise BuildError(f"{str(path)!r}: images need a 4-D model input with 1, 3 or 4 channels, the input "
                         f"shape is {list(shape)}; use a .npy file instead")
    with Image.open(path) as img:
        img = img.convert({1: "L", 3: "RGB", 4: "RGBA"}[shape[1]])
        if img.size != (shape[3], shape[2]):
            _warn_resized(str(path), img.size, (shape[3], shape[2]))
            img = img.resize((shape[3], shape[2]), Image.BILINEAR)
        arr = np.asarray(img, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return np.ascontiguousarray(arr.transpose(2, 0, 1)[None])


def _layout_npy(arr: np.ndarray, shape: tuple, path: Path) -> np.ndarray:
    if len(shape) == 4:
        if arr.ndim == 3:
            arr = arr[None]
        if arr.ndim != 4:
            raise BuildError(f"{str(path)!r} has shape {arr.shape}; a 4-D input {list(shape)} needs a 3- or "
                             "4-D array (NCHW or NHWC)")
        c = shape[1]
        nchw, nhwc = arr.shape[1] == c, arr.shape[3] == c
        if nchw and nhwc:
            LOG.info("%s: shape %s is ambiguous (channels %d first and last); reading it as NCHW", path,
                     arr.shape, c)
        if not nchw and nhwc:
            arr = arr.transpose(0, 3, 1, 2)
        elif not nchw:
            raise BuildError(f"{str(path)!r} has shape {arr.shape}, whose channel count matches neither "
                             f"NCHW nor NHWC for the input {list(shape)}")
    elif arr.ndim == len(shape) - 1:
        arr = arr[None]
    if tuple(arr.shape) != shape:
        raise BuildError(f"{str(path)!r} has shape {tuple(arr.shape)} but the model input needs "
                         f"{list(shape)}")
    return np.ascontiguousarray(arr, dtype=np.float32)


def normalise(raw: np.ndarray, mean: Optional[Sequence[float]], std: Optional[Sequence[float]],
              reverse_channels: bool) -> np.ndarray:
    """Channel reversal then (x - mean[c]) / std[c] along axis 1, as the runtime does for graph inputs."""
    x = raw.astype(np.float32, copy=True)
    if reverse_channels and x.ndim >= 2:
        x = np.ascontiguousarray(x[:, ::-1])
    if mean is not None or std is not None:
        c = x.shape[1] if x.ndim >= 2 else 1
        shape = [1] * x.ndim
        if x.ndim >= 2:
            shape[1] = c
        m = np.broadcast_to(np.asarray(mean if mean is not None else [0.0], np.float32), (c,)).reshape(shape)
        s = np.broadcast_to(np.asarray(std if std is not None else [1.0], np.float32), (c,)).reshape(shape)
        x = (x - m) / s
    return x.astype(np.float32)


def read_dataset(dataset_txt: str | Path, input_shapes: Optional[Sequence[Sequence[int]]] = None,
                 mean_values: Optional[Sequence] = None, std_values: Optional[Sequence] = None,
                 reverse_channels: bool = False, progress: bool | str = True) -> Iterator[Sample]:
    """Yield one Sample per dataset line (a progress bar on a terminal when ``progress``; a str names it).

    ``input_shapes`` are the model's input shapes in order (None: take the files as they are, images as
    NCHW, one input per path of the first line); ``mean_values``/``std_values`` hold one list per input (or
    None); ``reverse_channels`` is config's quant_img_RGB2BGR.
    """
    entries = parse_dataset_file(dataset_txt)
    n_in = len(input_shapes) if input_shapes is not None else len(entries[0][1])
    shapes = list(input_shapes) if input_shapes is not None else [None] * n_in
    for lineno, paths in entries:
        if len(paths) != n_in:
            raise BuildError(f"{Path(dataset_txt).name} line {lineno}: {len(paths)} paths but the model has "
                             f"{n_in} inputs; give one file per input separated by spaces")
    from rknnlink import progress as bars

    desc = progress if isinstance(progress, str) else "calibration"
    with bars.bar(len(entries), desc, "sample", show=None if progress else False) as advance:
        for _lineno, paths in entries:
            raws = [load_array(p, s) for p, s in zip(paths, shapes)]
            norm = []
            for k, raw in enumerate(raws):
                mean = mean_values[k] if mean_values is not None and k < len(mean_values) else None
                std = std_values[k] if std_values is not None and k < len(std_values) else None
                norm.append(normalise(raw, mean, std, reverse_channels and raw.ndim == 4))
            yield Sample(raw=raws, normalised=norm, paths=[str(p) for p in paths])
            advance(1)
