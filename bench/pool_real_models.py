"""Pool the task columns of several bench_real_models.py runs, one per test set, into one row per model.

    .venv/bin/python bench/pool_real_models.py rows-1000.json rows-5000.json rows-9000.json

Each file is a ``--json`` output of bench_real_models.py (``--test-seed`` 1000, 5000, ...; with the toolkit's
columns, live or from ``--toolkit-json``), all of one algorithm and method. On 16 images a near-tied image
moves a top-1 row by 1/16 either way; summed over 48 images from three seed ranges the task columns can rank
two tools. Per model and mode it prints the task and margin-task agreement summed over the sets (as counts
where the metric counts images or steps), and on how many sets rknnlink's fidelity is at or above the
toolkit's (fidelity is a cosine over each set's outputs and does not add up across sets). Rows are flagged
as bench_real_models.py flags one set: by fidelity and, for top-1 and text, by the margin column.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from corpus.build import TEST_SEED, cache_dir  # noqa: E402

COUNTED = ("top1", "text")  # metrics whose task column is a fraction of images


def _samples(row: dict) -> int:
    """How many test images a row was scored on (rows of older benches lack it: the corpus's meta says)."""
    if "samples" in row:
        return int(row["samples"])
    meta = json.loads((cache_dir() / row["model"] / "meta.json").read_text())
    return int(meta["tests"])


def _finite(v) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def pool(files: list) -> list:
    """One dict per (model, mode) seen in every file: summed task counts for both tools, per-set fidelity."""
    runs = [[r for r in json.loads(Path(f).read_text()) if "mode" in r] for f in files]
    kinds = {(r.get("algorithm"), r.get("method")) for rows in runs for r in rows}
    if len(kinds) > 1:
        raise SystemExit(f"the files mix algorithm / method {sorted(map(str, kinds))}: pool one at a time")
    seeds = [sorted({r.get("test_seed", TEST_SEED) for r in rows}) for rows in runs]
    if len({tuple(s) for s in seeds}) != len(seeds):
        raise SystemExit(f"two files were scored on the same test set (seeds {seeds}): pool different sets")
    keys = [k for k in dict.fromkeys((r["model"], r["mode"]) for r in runs[0])
            if all(any((r["model"], r["mode"]) == k for r in rows) for rows in runs[1:])]
    pooled = []
    for key in keys:
        rows = [next(r for r in rs if (r["model"], r["mode"]) == key) for rs in runs]
        out = {"model": key[0], "mode": key[1], "metric": rows[0]["metric"], "sets": len(rows)}
        n = [_samples(r) for r in rows]
        for side, prefix in (("ours", ""), ("toolkit", "toolkit_")):
            task = [r.get(prefix + "task") for r in rows]
            if all(_finite(t) for t in task):
                out[side + "_task"] = sum(t * k for t, k in zip(task, n)) / sum(n)
                if rows[0]["metric"] in COUNTED:
                    out[side + "_hits"] = round(sum(t * k for t, k in zip(task, n)))
            margin = [r.get(prefix + "task_margin") for r in rows]
            counted = [int(r.get("margin_samples") or 0) for r in rows]
            if all(_finite(m) for m in margin) and sum(counted):
                out[side + "_margin_hits"] = round(sum(m * c for m, c in zip(margin, counted)))
        out["samples"], out["margin_samples"] = sum(n), sum(int(r.get("margin_samples") or 0) for r in rows)
        pairs = [(r["fidelity"], r.get("toolkit_fidelity")) for r in rows]
        if all(_finite(t) for _, t in pairs):
            out["fidelity_at_or_above"] = sum(ours >= tk - 1e-5 for ours, tk in pairs)
        out["fidelity"] = [r["fidelity"] for r in rows]
        out["toolkit_fidelity"] = [r.get("toolkit_fidelity") for r in rows]
        pooled.append(out)
    return pooled


def _count(row: dict, side: str, what: str, total: str) -> str:
    hits = row.get(f"{side}_{what}")
    return "-" if hits is None else f"{hits}/{row[total]}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", type=Path, help="bench_real_models.py --json outputs, one per test set")
    args = ap.parse_args()
    rows = pool(args.files)
    head = (f"{'model':18s} {'mode':5s} {'metric':12s} {'task':>9s} {'tk task':>9s} {'task m':>9s} "
            f"{'tk task m':>9s} {'fid >= tk':>9s}  note")
    print(head)
    print("-" * len(head))
    for r in rows:
        counted = r["metric"] in COUNTED
        task = _count(r, "ours", "hits", "samples") if counted else f"{r.get('ours_task', float('nan')):.3f}"
        tk_task = (_count(r, "toolkit", "hits", "samples") if counted
                   else ("-" if "toolkit_task" not in r else f"{r['toolkit_task']:.3f}"))
        fid = "-" if "fidelity_at_or_above" not in r else f"{r['fidelity_at_or_above']} of {r['sets']}"
        # ranked as bench_real_models.compare_note ranks one set: a margin column decides where there is one
        below = []
        plain_below = "toolkit_task" in r and r.get("ours_task", 0) < r["toolkit_task"] - 1e-9
        ranked = r.get("toolkit_margin_hits") is not None and r.get("ours_margin_hits") is not None
        if ranked and r["ours_margin_hits"] < r["toolkit_margin_hits"]:
            below.append("task m")
        if plain_below and not ranked:
            below.append("task")
        if "fidelity_at_or_above" in r and r["fidelity_at_or_above"] < r["sets"]:
            below.append("fidelity")
        note = (f"below toolkit: {', '.join(below)}" if below
                else "plain task below toolkit: near-tied images only" if plain_below else "")
        print(f"{r['model']:18s} {r['mode']:5s} {r['metric']:12s} {task:>9s} {tk_task:>9s} "
              f"{_count(r, 'ours', 'margin_hits', 'margin_samples'):>9s} "
              f"{_count(r, 'toolkit', 'margin_hits', 'margin_samples'):>9s} {fid:>9s}  {note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
