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
