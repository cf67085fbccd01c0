"""Real models (the corpus/ folder): per model and mode (fp16, int8), rknnlink's fidelity and task
agreement against onnxruntime fp32, beside RKNN-Toolkit2 2.5.0's on the same files when
RKNNLINK_TOOLKIT2_PYTHON names the python of a toolkit venv, and both build times.

fidelity = min over outputs of min(cosine, centred cosine); task = the model's own agreement metric
(top-1, matched detections, decoded text, mask IoU, text-map IoU; corpus/metrics.py). The corpus is
regenerated into the cache first when missing (``python -m corpus.build``).

    RKNNLINK_TOOLKIT2_PYTHON=/work/tk2venv/bin/python .venv/bin/python bench/bench_real_models.py \
        [--only resnet18,ppocrv4_det] [--modes fp16,int8] [--algorithm normal] [--small] [--json out.json]
        [--method channel|layer] [--cle default|on|off] [--clipping off|auto] [--test-seed 5000]

--algorithm and --method set quantized_algorithm and quantized_method for both tools, and every row records
them; --cle and --clipping set rknnlink's cross-layer equalisation and activation clipping
(docs/quantization.md; the toolkit has no such options). --toolkit-json takes the toolkit's columns from an
earlier run only when that run used the same algorithm and method. --test-seed N scores every tool on a
held-out test set made from seeds N.. (corpus.build.held_out_tests) instead of the corpus's own (seeds from
TEST_SEED = 1000): a rule fitted on the test images must hold there too. --toolkit-json refuses a file whose
rows were measured on another test set, and a row whose model file differs from the one here
(``model_sha256``: a column of another build of the model would be compared with near-tied images that
build does not have). bench/pool_real_models.py sums the task columns of several test sets.

Top-1 rows also print ``task m`` (and ``tk task m``; the column was called ``top1 m``): top-1 agreement
counted only over the images whose fp32 top-1/top-2 margin is at least MARGIN_MIN (0.1) times the standard
deviation of that image's logits over the classes. The random-weight classifier heads (EfficientNet-B0, both
ViT-Ti) put the first two classes of many images within a few hundredths of a logit of each other, so any
int8 error, however small, flips a coin there; plain top-1 on 16 images then moves by 1/16 per coin and
ranks two tools by luck. The images kept are chosen on fp32 alone, so both tools are counted over the same
ones; ``(n)`` says how many. A top-1 or text row is flagged ``below toolkit`` when its fidelity or its
margin column is below the toolkit's; a plain column below the toolkit's with the margin column at or above
it can only come from the near-tied images, and the note says so. Measured on this corpus: two builds of
EfficientNet-B0 that differ only in the last bits of their BatchNorm statistics moved the toolkit's own
kl_divergence plain top-1 from 0.438 to 0.625, while its fidelity moved by 4e-3 (docs/quantization.md).

Text rows (the CTC recognisers) print a per-step number in the same column: the per-step argmax agreement over
the time steps whose fp32 top-1/top-2 margin is at least MARGIN_MIN standard deviations of that step's
scores over the classes, pooled over every test image (``(n)`` = steps kept). The random-weight CRNN has
near-tied steps in every one of its 16 test lines (4-13 of 32 steps each under 0.1 std, the closest
1e-3 std), so no line could be kept whole and its decoded-text agreement counts coins: one flipped step
changes a line. Per step, the kept steps decide; a wrong step still counts when fp32 had a clear winner.
Plain top-1 and decoded text stay in the ``task`` column. In the JSON rows ``task_margin`` /
``toolkit_task_margin`` hold this number, ``margin_samples`` the count, ``margin_unit`` what it counts
(``images`` or ``steps``).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from corpus import run  # noqa: E402
from corpus.build import TEST_SEED, build_all, held_out_tests  # noqa: E402
from corpus.manifest import BY_NAME  # noqa: E402


def _fmt(v: float, digits: int = 4) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


MARGIN_MIN = 0.1  # an image counts for top1 m when its fp32 top-1/top-2 margin is >= this x std of its logits


def margin_kept(ref: list, min_margin: float = MARGIN_MIN) -> list:
    """Indices of the samples whose fp32 first output has a clear winner: the gap between its two largest
    values is at least ``min_margin`` standard deviations of that output (chosen on fp32 only, so every
    candidate is judged on the same samples)."""
    kept = []
    for i, r in enumerate(ref):
        z = np.sort(np.asarray(r[0], np.float64).ravel())[::-1]
        if z.size > 1 and z.std() > 0 and (z[0] - z[1]) >= min_margin * z.std():
            kept.append(i)
    return kept


def margin_top1(ref: list, result: run.RunResult, min_margin: float = MARGIN_MIN) -> tuple:
    """(top-1 agreement over :func:`margin_kept`'s samples, how many they are); nan when the run failed
    or no sample is kept."""
    kept = margin_kept(ref, min_margin)
    if result.outputs is None or not kept:
        return float("nan"), len(kept)
    hits = [int(np.argmax(ref[i][0])) == int(np.argmax(np.asarray(result.outputs[i][0]))) for i in kept]
    return float(np.mean(hits)), len(kept)


def _clear_steps(scores: np.ndarray, min_margin: float) -> np.ndarray:
    """Per row of ``scores`` (steps x classes): True where the two largest values are at least
    ``min_margin`` standard deviations of the row apart."""
    z = np.sort(np.asarray(scores, np.float64), axis=-1)[:, ::-1]
    std = z.std(axis=-1)
    return (std > 0) & ((z[:, 0] - z[:, 1]) >= min_margin * std) if z.shape[-1] > 1 else np.zeros(len(z), bool)


def margin_steps(ref: list, result: run.RunResult, min_margin: float = MARGIN_MIN) -> tuple:
    """(per-step argmax agreement over the steps with a clear fp32 winner, how many steps they are) for CTC
    outputs (first output (1, T, C) or (T, C)); the steps are chosen on fp32 only, as in
    :func:`margin_kept`. nan when the run failed or no step is kept."""
    hits, kept = 0, 0
    for i, r in enumerate(ref):
        z = np.asarray(r[0], np.float64)
        z = z.reshape(-1, z.shape[-1])
        clear = _clear_steps(z, min_margin)
        kept += int(clear.sum())
        if result.outputs is not None:
            g = np.asarray(result.outputs[i][0], np.float64).reshape(z.shape)
            hits += int((np.argmax(z, -1) == np.argmax(g, -1))[clear].sum())
    if result.outputs is None or not kept:
        return float("nan"), kept
    return hits / kept, kept


MARGIN_METRICS = {"top1": (margin_top1, "images"), "text": (margin_steps, "steps")}


def margin_task(metric: str, ref: list, result: run.RunResult) -> tuple:
    """(margin-aware task agreement, count) for the metrics that have one (top1, text), else (nan, 0)."""
    if metric not in MARGIN_METRICS:
        return float("nan"), 0
    return MARGIN_METRICS[metric][0](ref, result)


def compare_note(metric: str, quant: bool, ours: tuple, theirs: tuple) -> str:
    """The note of a row where both tools ran: ``ours`` and ``theirs`` are (fidelity, task, margin task).
    Top-1 and text rows are ranked by their margin column (module docstring); the plain column still says
    when the near-tied images alone went the toolkit's way more often."""
    fid, task, margin = ours
    tfid, ttask, tmargin = theirs
    tol = 1e-5 if quant else 1e-4  # fp16 rows differ by float noise (1e-6); int8 rows are compared strictly
    plain_below = task < ttask - 1e-3
    ranked = metric in MARGIN_METRICS and not (math.isnan(margin) or math.isnan(tmargin))
    task_below = margin < tmargin - 1e-3 if ranked else plain_below
    if fid < tfid - tol or task_below:
        return "below toolkit"
    return "plain task below toolkit: near-tied images only" if plain_below else ""


def _print_decoded(folder: Path, ref: list, ours: run.RunResult, theirs: run.RunResult,
                   tests: str = "tests") -> None:
    """The trained recogniser reads rendered text: show what fp32, rknnlink and the toolkit read."""
    from corpus.metrics import decode_text, ppocr_charset
    chars = ppocr_charset(folder / "model.onnx")
    held_out = folder / tests / "texts.json"
    truth = (json.loads(held_out.read_text()) if held_out.is_file() else run.meta(folder).get("texts")) or []
    for i, r in enumerate(ref):
        cols = [f"truth {truth[i]!r}" if i < len(truth) else "", f"fp32 {decode_text(r[0], chars)!r}"]
        for label, res in (("rknnlink", ours), ("toolkit", theirs)):
            if res.outputs is not None:
                cols.append(f"{label} {decode_text(res.outputs[i][0].reshape(r[0].shape), chars)!r}")
        print("    " + " | ".join(c for c in cols if c))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="comma-separated corpus models (default: all)")
    ap.add_argument("--modes", default="fp16,int8")
    ap.add_argument("--algorithm", default="normal", help="quantized_algorithm for both tools")
    ap.add_argument("--method", default="channel", choices=("channel", "layer"),
                    help="quantized_method for both tools")
    ap.add_argument("--cle", default="default", choices=("default", "on", "off"),
                    help="rknnlink's cross-layer equalisation: the build's default, forced on or off")
    ap.add_argument("--clipping", default=None, choices=("off", "auto"),
                    help="rknnlink's activation_clipping (quantized_algorithm normal only)")
    ap.add_argument("--weight-rounding", default=None, choices=("nearest", "gptq"),
                    help="rknnlink's weight_rounding (default: the build's default)")
    ap.add_argument("--small", action="store_true", help="the reduced CI copies")
    ap.add_argument("--test-seed", type=int, default=TEST_SEED,
                    help=f"score on test images made from seeds starting here (default {TEST_SEED}, the "
                         "corpus's own; another value is a held-out set)")
    ap.add_argument("--no-toolkit", action="store_true", help="skip RKNN-Toolkit2 even when configured")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    ap.add_argument("--toolkit-json", type=Path, default=None,
                    help="take the toolkit's columns from an earlier --json run instead of running it again "
                         "(same corpus files and algorithm; the toolkit's numbers do not change between runs)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("TQDM_DISABLE", "1")  # calibration progress bars would interleave with the table
    names = [n for n in args.only.split(",") if n] or list(BY_NAME)
    folders = build_all(names, small=args.small)
    tk = None if args.no_toolkit else run.toolkit_python()
    earlier = {}
    if args.toolkit_json:
        earlier = {(r["model"], r["mode"]): r for r in json.loads(args.toolkit_json.read_text()) if "mode" in r}
        seeds = {r.get("test_seed", TEST_SEED) for r in earlier.values()} - {args.test_seed}
        if seeds:
            ap.error(f"{args.toolkit_json} was measured on test seeds from {sorted(seeds)}, not "
                     f"--test-seed {args.test_seed}: use that run's file or rerun the toolkit")
        other = {(r.get("algorithm"), r.get("method")) for r in earlier.values()} - {(args.algorithm, args.method)}
        if other:
            # rows without these keys come from a bench that always ran the toolkit per-channel
            ap.error(f"{args.toolkit_json} holds toolkit rows for (algorithm, method) {sorted(map(str, other))}, "
                     f"not ({args.algorithm!r}, {args.method!r}): rerun the toolkit with these options")
        tk = f"earlier run {args.toolkit_json}"
    print(f"toolkit: {tk or 'not configured (set ' + run.TOOLKIT_ENV + ')'}; algorithm {args.algorithm}, "
          f"method {args.method}, rknnlink cross-layer equalisation {args.cle}, clipping {args.clipping}, "
          f"weight rounding {args.weight_rounding or 'default'}, "
          f"test seeds from {args.test_seed}")
    head = (f"{'model':18s} {'mode':5s} {'metric':12s} {'fid':>7s} {'tk fid':>7s} {'task':>6s} {'tk task':>7s} "
            f"{'task m (n)':>11s} {'tk task m':>9s} {'build s':>7s} {'tk s':>6s}  note")
    print(head)
    print("-" * len(head))
    rows = []
    for name in names:
        folder = folders[name]
        if isinstance(folder, str):
            print(f"{name:18s} {folder}")
            rows.append({"model": name, "skipped": folder})
            continue
        tests = held_out_tests(folder, args.test_seed)
        ref = run.reference(folder, tests)
        digest = run.model_digest(folder)
        metric = run.meta(folder)["metric"]
        for mode in [m for m in args.modes.split(",") if m]:
            quant = mode == "int8"
            equalize = {"default": None, "on": True, "off": False}[args.cle]
            ours = run.run_rknnlink(folder, quant, args.algorithm, args.method, equalize, args.clipping, tests,
                                    args.weight_rounding)
            fid, task = run.score(folder, ref, ours)
            if earlier:
                old = earlier.get((name, mode), {})
                tk_note = [e for e in old.get("note", "").split("; ") if e.startswith("toolkit")]
                missing = "" if old else "toolkit: not in the earlier run"
                if old.get("model_sha256", digest) != digest:
                    tk_note = [f"toolkit: the earlier column is of another build of this model (sha256 "
                               f"{old['model_sha256']}, here {digest}): rerun the toolkit"]
                    old = {}
                theirs = run.RunResult(build_s=old.get("toolkit_build_s", float("nan")),
                                       error=tk_note[0] if tk_note else missing)
                tfid, ttask = old.get("toolkit_fidelity", float("nan")), old.get("toolkit_task", float("nan"))
                tmargin = old.get("toolkit_task_margin", float("nan"))
            else:
                theirs = (run.run_toolkit(folder, quant, args.algorithm, tk, method=args.method, tests=tests) if tk
                          else run.RunResult(error=""))
                tfid, ttask = run.score(folder, ref, theirs) if tk else (float("nan"), float("nan"))
                tmargin = margin_task(metric, ref, theirs)[0] if tk else float("nan")
            margin, n_margin = margin_task(metric, ref, ours)
            if metric not in MARGIN_METRICS:
                tmargin = float("nan")
            note = "; ".join(e for e in (ours.error, theirs.error) if e)
            if tk and not ours.error and not theirs.error:
                note = compare_note(metric, quant, (fid, task, margin), (tfid, ttask, tmargin))
            counted = f"{_fmt(margin, 3)} ({n_margin})" if metric in MARGIN_METRICS else "-"
            print(f"{name:18s} {mode:5s} {metric:12s} {_fmt(fid, 5):>7s} {_fmt(tfid, 5):>7s} {_fmt(task, 3):>6s} "
                  f"{_fmt(ttask, 3):>7s} {counted:>11s} "
                  f"{_fmt(tmargin, 3):>9s} {_fmt(ours.build_s, 2):>7s} {_fmt(theirs.build_s, 2):>6s}  {note}",
                  flush=True)
            if name.startswith("ppocrv4_rec"):
                _print_decoded(folder, ref, ours, theirs, tests)
            rows.append({"model": name, "mode": mode, "algorithm": args.algorithm, "method": args.method,
                         "test_seed": args.test_seed, "model_sha256": digest, "samples": len(ref),
                         "metric": metric, "fidelity": fid, "task": task,
                         "build_s": ours.build_s, "toolkit_fidelity": tfid, "toolkit_task": ttask,
                         "toolkit_build_s": theirs.build_s, "task_margin": margin, "margin_samples": n_margin,
                         "margin_unit": MARGIN_METRICS.get(metric, (None, None))[1],
                         "toolkit_task_margin": tmargin, "note": note})
            if args.json:
                # after every row: a toolkit mmse column takes hours on a loaded machine, and a run cut short
                # keeps the rows it finished
                args.json.write_text(json.dumps(rows, indent=1))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
