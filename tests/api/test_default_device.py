"""Connected-board scripts unchanged: init_runtime(target=...) without device_id finds the board."""

from __future__ import annotations

import numpy as np
import pytest

from rknnlink.api import RKNN
from rknnlink.demo import make_demo_onnx


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    work = tmp_path_factory.mktemp("default_device")
    make_demo_onnx(work / "demo.onnx")
    rknn = RKNN()
    rknn.config(target_platform="rk3588")
    rknn.load_onnx(str(work / "demo.onnx"))
    rknn.build(do_quantization=False)
    yield rknn
    rknn.release()


@pytest.fixture()
def no_adb(monkeypatch, tmp_path):
    """No adb server on this machine: point adb at a port nothing listens on."""
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", "1")
    monkeypatch.setenv("ADB_SERVER_SOCKET", "tcp:127.0.0.1:1")
    monkeypatch.delenv("RKNNLINK_DEVICE", raising=False)


def test_environment_variable_sim_names_a_simulated_board(built, monkeypatch, capsys):
    monkeypatch.setenv("RKNNLINK_DEVICE", "sim")
    assert built.init_runtime(target="rk3588", perf_debug=True, eval_mem=True) == 0
    out = built.inference(inputs=[np.zeros((1, 64, 64, 3), np.uint8)])
    assert out[0].shape == (1, 10)
    assert "DRV: rknn_server:" in built.get_sdk_version()  # a board (daemon) answered, not in-process
    built.release()


def test_a_daemon_on_loopback_is_listed_and_used(built, monkeypatch, capsys, no_adb):
    from rknnlink.client.local import start_local_daemon

    daemon = start_local_daemon(platform="rk3588", backend="sim")
    try:
        monkeypatch.setenv("RKNNLINK_LOOPBACK_PORT", daemon.address.rsplit(":", 1)[1])
        adb, ntb = built.list_devices()
        printed = capsys.readouterr().out
        assert (adb, ntb) == ([], [])
        assert f"tcp:{daemon.address}" in printed and printed.startswith("*" * 25)
        assert built.init_runtime(target="rk3588") == 0
        assert built._runtime.location == daemon.address
        built.release()
    finally:
        daemon.stop()


def test_no_device_is_a_value_error_that_says_what_to_do(built, monkeypatch, no_adb):
    monkeypatch.setenv("RKNNLINK_LOOPBACK_PORT", "1")
    with pytest.raises(ValueError, match="RKNNLINK_DEVICE=sim"):
        built.init_runtime(target="rk3588")


def test_transport_failures_raise_value_error(built, monkeypatch):
    monkeypatch.delenv("RKNNLINK_DEVICE", raising=False)
    with pytest.raises(ValueError, match="cannot use device 'tcp:127.0.0.1:1'") as info:
        built.init_runtime(target="rk3588", device_id="tcp:127.0.0.1:1")
    assert info.value.__cause__ is not None
    with pytest.raises(ValueError, match="not HOST:PORT"):
        built.init_runtime(target="rk3588", device_id="tcp:nonsense")


def test_sim_board_of_an_unreleased_runtime_stops_with_the_process(built, tmp_path):
    """A script that never calls release() (or a failed test whose traceback keeps the object alive) must not
    leave the simulated board's daemon running after it exits."""
    import os
    import subprocess
    import sys
    import time

    psutil = pytest.importorskip("psutil")
    assert built.export_rknn(str(tmp_path / "demo.rknn")) == 0
    script = f"""
import gc, os, psutil
from rknnlink.api import RKNN
gc.disable()
rknn = RKNN()
assert rknn.load_rknn({str(tmp_path / 'demo.rknn')!r}) == 0
assert rknn.init_runtime(target='rk3588') == 0
rknn.cycle = rknn  # kept alive past shutdown, as a traceback would keep it
print(' '.join(str(c.pid) for c in psutil.Process().children(recursive=True)), flush=True)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "RKNNLINK_DEVICE": "sim"})
    assert done.returncode == 0, done.stderr
    pids = [int(p) for p in done.stdout.split()]
    assert pids, "the simulated board's daemon was not a child of the script"

    def running(pid: int) -> bool:
        try:  # the process may end between any two calls: that is the outcome waited for, not an error
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    deadline = time.monotonic() + 60  # generous: the daemon and its workers wind down on a loaded machine
    while time.monotonic() < deadline and any(running(p) for p in pids):
        time.sleep(0.2)
    alive = [p for p in pids if running(p)]
    assert not alive, f"processes still running after the script exited: {alive}"
