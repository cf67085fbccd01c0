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


@pytest.fixture(scope="module")
def tls_daemon_process(sim_library: str, tmp_path_factory: pytest.TempPathFactory):
    """A daemon as a network endpoint serves (TLS gRPC, the TLS data port, the token), on loopback."""
    pytest.importorskip("cryptography")
    import tls_daemon

    d = tls_daemon.start(tmp_path_factory.mktemp("tls-daemon"), sim_library)
    yield d
    d.stop()


@pytest.fixture(params=["direct", "relay", "tls"])
def board(daemon, request):
    """A connected client on each carrier of the data plane: direct to the worker, relayed by the daemon,
    and over the TLS data port of a TLS daemon (the network route, where the worker ends TLS), so the
    fault, soak, fuzz and link tests hold for all of them. A test that also uses the plain `daemon`
    fixture (its address, log, cache or operator token) is about that daemon: it is skipped on 'tls'."""
    from rknnlink.client import Board

    if request.param == "tls":
        if _uses_daemon(request):
            pytest.skip("uses the plain loopback daemon fixture itself, not only the board's carrier")
        d = request.getfixturevalue("tls_daemon_process")
        b = Board.connect(d.address, timeout=10, **d.connect_kwargs())
    else:
        b = Board.connect(daemon.address, timeout=10, use_data_channel=request.param == "direct")
    b.carrier = request.param  # what the tests expect every session of this board to use
    yield b
    b.close()


def _uses_daemon(request) -> bool:
    """Whether the test reads the plain daemon fixture (in its body, or through another of its fixtures);
    asking for it only to order fixtures does not count."""
    import dis
    import inspect

    for name in inspect.signature(request.function).parameters:
        defs = getattr(request, "_arg2fixturedefs", {}).get(name) if name not in ("board", "daemon") else None
        if defs and "daemon" in defs[-1].argnames:
            return True
    return any(ins.argval == "daemon" and ins.opname.startswith(("LOAD_FAST", "LOAD_DEREF", "LOAD_CLOSURE"))
               for ins in dis.get_instructions(request.function))


@pytest.fixture(scope="session")
def conv_model():
    return sim_models.conv_relu_model()
