"""The margin-aware text agreement of bench_real_models: per CTC step, argmax agreement over the steps whose
fp32 winner is clear, so a random-weight recogniser's near-tied steps (a coin flip each) do not decide
which tool reads "better", while a flip where fp32 had a clear winner still counts."""

from __future__ import annotations

import numpy as np
import pytest

CLASSES = 6


def _steps(winners: list, gaps: list) -> np.ndarray:
    """(1, T, C) scores: per step, class ``winners[t]`` leads the runner-up (the next class) by ``gaps[t]``,
    every other class sits at 0."""
    z = np.zeros((1, len(winners), CLASSES), np.float32)
    for t, (c, gap) in enumerate(zip(winners, gaps)):
        z[0, t, c] = 1.0
        z[0, t, (c + 1) % CLASSES] = 1.0 - gap
    return z


def test_a_flip_at_a_near_tied_step_is_not_counted(bench):
    from corpus.metrics import text_agreement
    from corpus.run import RunResult
    ref = [[_steps([1, 2, 3, 4], [0.9, 0.9, 1e-3, 0.9])]]
    # step 2 was a near tie in fp32 and flips to its runner-up: the decoded text changes, the steps metric not
    got = RunResult(outputs=[[_steps([1, 2, 4, 4], [0.9, 0.9, 1e-3, 0.9])]])
    assert text_agreement(ref, got.outputs) == 0.0
    assert bench.margin_steps(ref, got) == (1.0, 3)


def test_a_flip_at_a_clear_step_counts(bench):
    from corpus.run import RunResult
    ref = [[_steps([1, 2, 3, 4], [0.9, 0.9, 1e-3, 0.9])], [_steps([5, 0], [0.9, 0.9])]]
    got = RunResult(outputs=[[_steps([1, 3, 3, 4], [0.9, 0.9, 1e-3, 0.9])], [_steps([5, 0], [0.9, 0.9])]])
    agreement, n = bench.margin_steps(ref, got)
    assert n == 5 and agreement == pytest.approx(4 / 5)  # steps pooled over both images


def test_the_steps_are_chosen_on_fp32_alone(bench):
    """A candidate that sharpens a tied step into a clear (wrong) winner still leaves that step out: both
    tools are counted over the same steps."""
    from corpus.run import RunResult
    ref = [[_steps([1, 2], [0.9, 1e-3])]]
    got = RunResult(outputs=[[_steps([1, 3], [0.9, 0.9])]])
    assert bench.margin_steps(ref, got) == (1.0, 1)


def test_a_failed_run_is_nan_with_the_count(bench):
    from corpus.run import RunResult
    agreement, n = bench.margin_steps([[_steps([1, 2], [0.9, 0.9])]], RunResult())
    assert np.isnan(agreement) and n == 2


def test_margin_task_picks_the_metric(bench):
    from corpus.run import RunResult
    ref = [[_steps([1, 2], [0.9, 0.9])]]
    got = RunResult(outputs=[[_steps([1, 2], [0.9, 0.9])]])
    assert bench.margin_task("text", ref, got) == (1.0, 2)
    top = [[np.array([5.0, 1.0, 0.0, 0.0], np.float32)]]
    assert bench.margin_task("top1", top, RunResult(outputs=top)) == (1.0, 1)
    agreement, n = bench.margin_task("mask_iou", ref, got)
    assert np.isnan(agreement) and n == 0
    assert bench.MARGIN_METRICS["text"][1] == "steps" and bench.MARGIN_METRICS["top1"][1] == "images"
