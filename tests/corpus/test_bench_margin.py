"""The margin-aware top-1 of bench_real_models: images whose fp32 winner is a near tie are left out, for
every candidate alike, so a coin flip on a random-weight head does not decide which tool looks better."""

from __future__ import annotations

import numpy as np


def _logits(top: float, second: float, rest: int = 8) -> list:
    return [np.array([top, second] + [0.0] * rest, np.float32)]


def test_near_ties_are_left_out_and_clear_winners_kept(bench):
    clear, tie = _logits(5.0, 1.0), _logits(1.0, 0.999)
    assert bench.margin_kept([clear, tie, clear]) == [0, 2]


def test_margin_top1_counts_only_the_kept_samples(bench):
    from corpus.run import RunResult
    ref = [_logits(5.0, 1.0), _logits(1.0, 0.999), _logits(0.0, 4.0)]
    # the tie flips (class 1 wins) and so does the third, clear image (class 0 instead of 1)
    got = RunResult(outputs=[_logits(5.0, 1.0), _logits(0.9, 1.0), _logits(4.0, 0.0)])
    agreement, n = bench.margin_top1(ref, got)
    assert n == 2 and agreement == 0.5
    flipped_tie_only = RunResult(outputs=[_logits(5.0, 1.0), _logits(0.9, 1.0), _logits(0.0, 4.0)])
    assert bench.margin_top1(ref, flipped_tie_only) == (1.0, 2)


def test_margin_top1_of_a_failed_run_is_nan(bench):
    from corpus.run import RunResult
    agreement, n = bench.margin_top1([_logits(5.0, 1.0)], RunResult())
    assert np.isnan(agreement) and n == 1


def test_a_top1_row_is_ranked_by_its_margin_column(bench):
    """compare_note: fidelity and the margin column decide a top-1 row; a plain top-1 below the toolkit's
    with the margin column at or above it is said to come from the near-tied images; a metric without a
    margin column (IoU) is ranked by its plain task."""
    nan = float("nan")
    assert bench.compare_note("top1", True, (0.99, 0.875, 1.0), (0.98, 0.938, 1.0)) == \
        "plain task below toolkit: near-tied images only"
    assert bench.compare_note("top1", True, (0.99, 1.0, 0.9), (0.98, 0.938, 1.0)) == "below toolkit"
    assert bench.compare_note("top1", True, (0.97, 1.0, 1.0), (0.98, 0.938, 1.0)) == "below toolkit"
    assert bench.compare_note("top1", True, (0.99, 0.875, nan), (0.98, 0.938, nan)) == "below toolkit"
    assert bench.compare_note("mask_iou", True, (0.99, 0.80, nan), (0.98, 0.81, nan)) == "below toolkit"
    assert bench.compare_note("top1", True, (0.99, 1.0, 1.0), (0.98, 0.938, 0.9)) == ""
