"""The corpus's eval inputs are disjoint from its calibration inputs, and there are enough of them for a
task metric to mean something (4 images moved top-1 agreement in steps of 0.25)."""

from __future__ import annotations

import json

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


HELD_OUT_SEED = 5000


@pytest.mark.parametrize("entry", list(KINDS.values()), ids=list(KINDS))
def test_held_out_inputs_share_no_image_with_the_corpus(entry):
    """A held-out set (bench --test-seed) checks rules fitted on the test images: it must not contain them
    or a calibration image."""
    cal, test, _ = make_inputs(entry, small=False)
    _, held, texts = make_inputs(entry, small=False, test_seed=HELD_OUT_SEED)
    assert len(held) == len(test)
    seen = {img.tobytes() for img in cal + test}
    assert not [i for i, img in enumerate(held) if img.tobytes() in seen]
    assert texts is None or len(texts) == len(held)


def test_held_out_tests_are_written_beside_the_corpus_tests_and_read_back(tmp_path):
    from corpus import run
    from corpus.build import TEST_SEED, held_out_tests
    entry = KINDS["photos"]
    (tmp_path / "meta.json").write_text(json.dumps({"name": entry.name, "small": True, "tests": 2}))
    assert held_out_tests(tmp_path, TEST_SEED) == "tests"
    sub = held_out_tests(tmp_path, HELD_OUT_SEED)
    got = run.test_inputs(tmp_path, sub)
    _, want, _ = make_inputs(entry, small=True, test_seed=HELD_OUT_SEED)
    assert len(got) == 2 and all(np.array_equal(g[0], w) for g, w in zip(got, want))
    assert held_out_tests(tmp_path, HELD_OUT_SEED) == sub  # cached: written once
