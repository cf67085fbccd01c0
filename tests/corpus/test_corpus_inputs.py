"""The corpus's eval inputs are disjoint from its calibration inputs, and there are enough of them for a
task metric to mean something (4 images moved top-1 agreement in steps of 0.25)."""

from __future__ import annotations

import numpy as np
import pytest

from corpus.build import make_inputs
from corpus.manifest import MODELS

KINDS = {}
for _m in MODELS:  # one model per input kind is enough: the inputs depend only on kind, size and counts
    KINDS.setdefault(_m.inputs, _m)


@pytest.mark.parametrize("entry", list(KINDS.values()), ids=list(KINDS))
def test_eval_inputs_are_not_calibration_inputs(entry):
    cal, test, texts = make_inputs(entry, small=False)
    assert len(cal) == entry.calib and len(test) == entry.tests
    seen = {img.tobytes() for img in cal}
    copies = [i for i, img in enumerate(test) if img.tobytes() in seen]
    assert not copies, f"{entry.inputs}: eval images {copies} are calibration images"
    assert len({img.tobytes() for img in test}) == len(test), "eval images repeat"
    if texts is not None:
        assert len(texts) == len(test)


def test_every_full_size_model_has_at_least_8_eval_images():
    few = {m.name: m.tests for m in MODELS if m.tests < 8}
    assert not few, f"too few eval images for a task metric: {few}"


def test_small_copies_keep_their_counts():
    entry = MODELS[0]
    cal, test, _ = make_inputs(entry, small=True)
    assert (len(cal), len(test)) == (4, 2)
    assert not np.array_equal(cal[0], test[0])
