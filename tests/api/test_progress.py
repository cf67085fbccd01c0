"""Progress bars: on a terminal only (or RKNNLINK_PROGRESS=1), and never sharing a line with a log message."""

from __future__ import annotations

import logging

import numpy as np

from rknnlink import progress


def test_quiet_when_stderr_is_not_a_terminal(capsys, monkeypatch):
    monkeypatch.delenv("RKNNLINK_PROGRESS", raising=False)
    with progress.bar(3, "work") as advance:
        advance(3)
    assert capsys.readouterr().err == ""


def test_log_lines_go_above_the_bar(capsys, monkeypatch):
    monkeypatch.setenv("RKNNLINK_PROGRESS", "1")
    logger = logging.getLogger("rknnlink.test_progress")
    handler = logging.StreamHandler()  # stderr, as logging.basicConfig sets up
    handler.setFormatter(logging.Formatter("%(levelname).1s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with progress.bar(2, "calibration", "sample") as advance:
            advance(1)
            logger.warning("a message in the middle")
            advance(1)
        # after the bar the original handler is back, and nothing of ours is left on the logger
        assert handler in root.handlers
        assert not any(type(h).__name__ == "_TqdmLogHandler" for h in root.handlers)
    finally:
        root.removeHandler(handler)
    err = capsys.readouterr().err
    lines = [part for chunk in err.split("\n") for part in chunk.split("\r")]
    assert "W a message in the middle" in lines  # a line of its own
    assert any(line.startswith("calibration: 100%") for line in lines)


def test_upload_to_a_board_shows_bytes(capsys, monkeypatch, tmp_path):
    from rknnlink.api import RKNN
    from rknnlink.demo import make_demo_onnx

    monkeypatch.setenv("RKNNLINK_PROGRESS", "1")
    make_demo_onnx(tmp_path / "demo.onnx")
    rknn = RKNN()
    rknn.config(target_platform="rk3588")
    rknn.load_onnx(str(tmp_path / "demo.onnx"))
    rknn.build(do_quantization=False)
    assert rknn.init_runtime(target="rk3588", device_id="sim") == 0
    assert rknn.inference(inputs=[np.zeros((1, 64, 64, 3), np.uint8)])[0].shape == (1, 10)
    rknn.release()
    err = capsys.readouterr().err
    assert "upload to 127.0.0.1:" in err and "100%" in err


def test_steps_bar_counts_every_step(capsys, monkeypatch):
    monkeypatch.setenv("RKNNLINK_PROGRESS", "1")
    with progress.steps(3, "deploy") as step:
        for name in ("a", "b", "c"):
            step(name)
    assert "3/3" in capsys.readouterr().err
