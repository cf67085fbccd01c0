"""Fixtures for daemon/client tests: a real `rknnlink serve` subprocess on 127.0.0.1 and real models."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "runtime"))

import sim_models  # noqa: E402
from simlib import sim_library_path  # noqa: E402


@pytest.fixture(scope="session")
def sim_library(tmp_path_factory: pytest.TempPathFactory) -> str:
    return sim_library_path(tmp_path_factory)


@pytest.fixture(scope="module")
def daemon(sim_library: str, tmp_path_factory: pytest.TempPathFactory):
    from rknnlink.client.local import start_local_daemon

    log_path = tmp_path_factory.mktemp("daemon") / "daemon.log"
    d = start_local_daemon(platform="rk3588", backend="sim", log_path=log_path)
    d.log_path = log_path
    yield d
    d.stop()


@pytest.fixture(params=["direct", "relay"])
def board(daemon, request):
    """A connected client on each carrier of the data plane: direct to the worker and relayed by the daemon,
    so the fault, soak, fuzz and link tests hold for both."""
    from rknnlink.client import Board

    b = Board.connect(daemon.address, timeout=10, use_data_channel=request.param == "direct")
    b.carrier = request.param  # what the tests expect every session of this board to use
    yield b
    b.close()


@pytest.fixture(scope="session")
def conv_model():
    return sim_models.conv_relu_model()
