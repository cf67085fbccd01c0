"""bench/pool_real_models.py: the task columns of several test sets summed per model."""

from __future__ import annotations

import json
import sys

import pytest


def _row(seed: int, task: float, tk_task: float, margin: float, tk_margin: float, kept: int, fid: float,
         method: str = "layer") -> dict:
    return {"model": "resnet18", "mode": "int8", "algorithm": "normal", "method": method, "test_seed": seed,
            "metric": "top1", "samples": 16, "fidelity": fid, "toolkit_fidelity": 0.995, "task": task,
            "toolkit_task": tk_task, "task_margin": margin, "toolkit_task_margin": tk_margin, "margin_samples": kept}


def _files(tmp_path, rows: list) -> list:
    paths = []
    for k, row in enumerate(rows):
        paths.append(tmp_path / f"rows{k}.json")
        paths[-1].write_text(json.dumps([row]))
    return paths


def test_counts_add_up_over_the_sets(tmp_path, pool_module, capsys):
    files = _files(tmp_path, [_row(1000, 15 / 16, 1.0, 12 / 12, 12 / 12, 12, 0.996),
                              _row(5000, 14 / 16, 13 / 16, 9 / 10, 8 / 10, 10, 0.994)])
    (got,) = pool_module.pool(files)
    assert (got["ours_hits"], got["toolkit_hits"], got["samples"]) == (29, 29, 32)
    assert (got["ours_margin_hits"], got["toolkit_margin_hits"], got["margin_samples"]) == (21, 20, 22)
    assert got["fidelity_at_or_above"] == 1  # 0.996 >= 0.995 on the first set only
    sys.argv = ["pool_real_models.py", *map(str, files)]
    assert pool_module.main() == 0
    line = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("resnet18")][0]
    assert "29/32" in line and "21/22" in line and "below toolkit: fidelity" in line


def test_refuses_mixed_methods_and_a_set_given_twice(tmp_path, pool_module):
    mixed = _files(tmp_path, [_row(1000, 1, 1, 1, 1, 1, 1), _row(5000, 1, 1, 1, 1, 1, 1, method="channel")])
    with pytest.raises(SystemExit, match="mix algorithm"):
        pool_module.pool(mixed)
    twice = _files(tmp_path, [_row(5000, 1, 1, 1, 1, 1, 1), _row(5000, 1, 1, 1, 1, 1, 1)])
    with pytest.raises(SystemExit, match="same test set"):
        pool_module.pool(twice)
