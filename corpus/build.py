"""Regenerate the corpus into the cache: ``python -m corpus.build [--small] [--only a,b] [--out DIR]``.

Per model, ``<cache>/<name>[-small]/`` gets ``model.onnx`` (and ``model_tk2.onnx`` at opset <= 19 when the
model's opset is newer than RKNN-Toolkit2 2.5.0 reads), ``calib/dataset.txt`` with NCHW float32 .npy
files of raw pixels (the form both tools accept), ``tests/NN.npy`` (NHWC uint8, the form ``inference``
takes) and ``meta.json`` (sizes, mean/std, metric, rendered texts). A model whose source is missing is
skipped with the reason (``skipped.txt``), never faked.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np

from . import inputs as corpus_inputs
from .manifest import BY_NAME, MODELS, CorpusModel

LOG = logging.getLogger("corpus.build")
TOOLKIT_MAX_OPSET = 19
TEST_SEED = 1000  # the eval inputs' seeds start here; calibration's start at 0 or 1 and stay far below
VERSION = 2  # bump when a builder changes: cached copies are rebuilt (2: more test images, disjoint lines)


def cache_dir() -> Path:
    return Path(os.environ.get("RKNNLINK_CORPUS_DIR", Path.home() / ".cache" / "rknnlink" / "corpus"))


def model_dir(entry: CorpusModel, small: bool, root: Path | None = None) -> Path:
    return (root or cache_dir()) / (entry.name + ("-small" if small else ""))


def make_inputs(entry: CorpusModel, small: bool, test_seed: int = TEST_SEED) -> tuple:
    """(calibration images, test images, test texts or None): disjoint seeds, raw uint8 HWC RGB.
    ``test_seed`` moves the test images to another seed range (a held-out set, :func:`held_out_tests`)."""
    h, w = entry.size(small)
    n_cal, n_test = (4, 2) if small else (entry.calib, entry.tests)
    if entry.inputs == "photos":
        return corpus_inputs.photo_crops(h, w, n_cal, 1), corpus_inputs.photo_crops(h, w, n_test, test_seed), None
    if entry.inputs == "text_lines":
        cal, _ = corpus_inputs.text_lines(h, w, n_cal, 1)
        # seed 1000: the calibration lines use seeds 1..calib, so an older seed 11 made tests 0..3 copies of
        # calibration lines 10..13
        test, texts = corpus_inputs.text_lines(h, w, n_test, test_seed)
        return cal, test, texts
    if entry.inputs == "text_pages":
        return ([corpus_inputs.text_page(h, w, s) for s in range(n_cal)],
                [corpus_inputs.text_page(h, w, test_seed + s) for s in range(n_test)], None)
    raise ValueError(f"unknown input kind {entry.inputs!r}")


def build_one(entry: CorpusModel, small: bool, root: Path | None = None, force: bool = False) -> Path:
    """Build one model's folder (cached: an up-to-date folder is reused). Raises SourceUnavailableError."""
    out = model_dir(entry, small, root)
    meta_path = out / "meta.json"
    if not force and meta_path.is_file() and json.loads(meta_path.read_text()).get("version") == VERSION:
        return out
    if out.exists():
        shutil.rmtree(out)
    (out / "calib").mkdir(parents=True)
    (out / "tests").mkdir()
    cal, test, texts = make_inputs(entry, small)
    lines = []
    for i, img in enumerate(cal):
        np.save(out / "calib" / f"{i:02d}.npy", img.transpose(2, 0, 1)[None].astype(np.float32))
        lines.append(f"{i:02d}.npy")
    (out / "calib" / "dataset.txt").write_text("\n".join(lines) + "\n")
    for i, img in enumerate(test):
        np.save(out / "tests" / f"{i:02d}.npy", img[None])
    entry.make(out / "model.onnx", small, cal, entry.mean, entry.std, TOOLKIT_MAX_OPSET)
    h, w = entry.size(small)
    meta = {"version": VERSION, "name": entry.name, "source": entry.source, "height": h, "width": w,
            "mean": entry.mean, "std": entry.std, "metric": entry.metric, "texts": texts, "small": small,
            "tests": len(test)}
    meta_path.write_text(json.dumps(meta, indent=1))
    return out


def held_out_tests(folder: Path, seed: int) -> str:
    """Write (once) a second test set of a built model folder, from seeds starting at ``seed`` instead of
    TEST_SEED, into ``<folder>/tests-<seed>/`` and return that subfolder's name (what corpus.run's ``tests``
    takes). Rules fitted on the test images are checked on these: same generators, same count, no image in
    common (the calibration seeds stay below both)."""
    if seed == TEST_SEED:
        return "tests"
    m = json.loads((Path(folder) / "meta.json").read_text())
    sub = f"tests-{seed}"
    out = Path(folder) / sub
    if out.is_dir() and len(list(out.glob("*.npy"))) == m["tests"]:
        return sub
    out.mkdir(exist_ok=True)
    _, test, texts = make_inputs(BY_NAME[m["name"]], m["small"], test_seed=seed)
    for i, img in enumerate(test):
        np.save(out / f"{i:02d}.npy", img[None])
    (out / "texts.json").write_text(json.dumps(texts))
    return sub


def build_all(names: list | None = None, small: bool = False, root: Path | None = None,
              force: bool = False) -> dict:
    """Build every (or the named) corpus model; returns name -> folder, or the reason it was skipped."""
    from .external import SourceUnavailableError
    result = {}
    for entry in MODELS if not names else [BY_NAME[n] for n in names]:
        try:
            result[entry.name] = build_one(entry, small, root, force)
            LOG.info("%s: %s", entry.name, result[entry.name])
        except SourceUnavailableError as exc:
            result[entry.name] = f"skipped: {exc}"
            LOG.warning("%s skipped: %s", entry.name, exc)
    return result


def main(argv: list | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="cache folder (default $RKNNLINK_CORPUS_DIR or "
                    "~/.cache/rknnlink/corpus)")
    ap.add_argument("--only", default="", help="comma-separated model names: " + ", ".join(BY_NAME))
    ap.add_argument("--small", action="store_true", help="the reduced CI copies")
    ap.add_argument("--force", action="store_true", help="rebuild even when the cache is up to date")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    names = [n for n in args.only.split(",") if n] or None
    unknown = [n for n in names or [] if n not in BY_NAME]
    if unknown:
        ap.error(f"unknown models {unknown}; known: {list(BY_NAME)}")
    for name, where in build_all(names, args.small, args.out, args.force).items():
        print(f"{name:20s} {where}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
