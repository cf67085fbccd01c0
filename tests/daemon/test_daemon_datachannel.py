"""The data plane (rknnlink.v1.datawire frames between client and session worker): the direct carrier's own
handshake and refusals, and for both carriers (direct, relayed by the daemon) exact outputs, runtime errors,
a killed worker and leaks."""

from __future__ import annotations

import os
import signal
import socket
import struct
import threading

import numpy as np
import pytest
import sim_models
from soak_client import MEASURED, WARM_UP, assert_flat, soak

from rknnlink.client import Board, SessionLostError
from rknnlink.client.errors import RemoteRknnError
from rknnlink.runtime import RuntimeLibrary
from rknnlink.v1 import datawire


@pytest.fixture()
def direct_board(daemon):
    """For the tests of the direct carrier's own handshake: that carrier only."""
    b = Board.connect(daemon.address, timeout=10, use_data_channel=True)
    yield b
    b.close()


def _data_address(board: Board) -> tuple:
    target = board.data_target()
    assert target is not None, "the loopback daemon must advertise a data port"
    return target


def _worker_pid(board: Board, session_id: str) -> int:
    return next(s["worker_pid"] for s in board.stats()["sessions"] if s["session_id"] == session_id)


def _refusal(address: tuple, payload: bytes) -> tuple:
    with socket.create_connection(address, timeout=10) as s:
        s.sendall(payload)
        return datawire.read_hello_reply(s)


def test_daemon_advertises_a_data_port_and_a_session_secret(daemon, direct_board, conv_model):
    board = direct_board
    assert board.data_port > 0 and board.data_port != int(daemon.address.rpartition(":")[2])
    with board.load_model(conv_model[0]) as session:
        assert len(session._secret) >= 16
        assert session.uses_data_channel


def test_outputs_are_bit_identical_to_in_process_unary_and_pipelined(board, sim_library):
    model, *_ = sim_models.conv_relu_model(3, 8, 32, seed=3)
    rng = np.random.default_rng(5)
    xs = [rng.standard_normal((1, 3, 32, 32)).astype(np.float32) for _ in range(6)]
    with RuntimeLibrary.load(path=sim_library, backend="sim").init(model) as ctx:
        want = [ctx.infer([x], ["nchw"])[0] for x in xs]
    with board.load_model(model) as session:
        got = [session.run([x], formats=["nchw"])[0] for x in xs]
        assert session.carrier == board.carrier and session._link.carrier.kind == board.carrier
        with session.pipeline(depth=4) as pipe:
            assert pipe.carrier_kind == board.carrier
            piped = [out[0] for out in pipe.map(([x] for x in xs), formats=["nchw"])]
        for w, g, p in zip(want, got, piped):
            assert g.dtype == w.dtype and g.shape == w.shape and g.tobytes() == w.tobytes()
            assert p.tobytes() == w.tobytes()


def test_runtime_errors_come_back_and_the_connection_stays_usable(board, conv_model):
    with board.load_model(conv_model[0]) as session:
        with pytest.raises(RemoteRknnError, match="do not match shape|input"):
            session.run([np.ones((1, 3, 8, 8), np.float32)[..., :5]], formats=["nchw"])
        assert session.run([np.ones((1, 3, 8, 8), np.float32)], formats=["nchw"])[0].shape == (1, 4, 8, 8)
        assert session.carrier == board.carrier


def test_wrong_secret_garbage_hello_and_garbage_frames_are_refused(direct_board, conv_model):
    board = direct_board
    with board.load_model(conv_model[0]) as session:
        address = _data_address(board)
        x = np.ones((1, 3, 8, 8), np.float32)
        want = session.run([x], formats=["nchw"])[0]
        status, message = _refusal(address, datawire.encode_hello(session.id, b"x" * 32))
        assert status == datawire.REFUSED and "wrong secret" in message
        status, message = _refusal(address, datawire.encode_hello("no-such-session", session._secret))
        assert status == datawire.REFUSED and "unknown session" in message
        status, message = _refusal(address, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == datawire.REFUSED and "bad magic" in message
        # A valid hello, then garbage frames: an error reply, and only that connection closes.
        for garbage in (b"\x00" * 64, struct.pack("<4sQII", b"RKLQ", 1, 0, 10_000),
                        struct.pack("<4sQII", b"RKLQ", 1, 0, 1) + struct.pack("<iBBHQ", 0, 0, 0, 99, 4),
                        b"\xff" * 64):
            with socket.create_connection(address, timeout=10) as s:
                s.sendall(datawire.encode_hello(session.id, session._secret))
                assert datawire.read_hello_reply(s)[0] == 0
                s.sendall(datawire.LENGTH.pack(len(garbage)) + garbage if garbage[0] != 0xFF else garbage)
                _rid, status, _us, (name, text) = datawire.parse_reply(datawire.read_frame(s, 1 << 20), 1 << 20)
                assert status == -5 and "corrupt data-plane frame" in text  # RKNN_ERR_PARAM_INVALID
                assert s.recv(1) == b""  # the worker closed this connection
        # A client that disconnects mid-frame does not disturb the worker either.
        with socket.create_connection(address, timeout=10) as s:
            s.sendall(datawire.encode_hello(session.id, session._secret))
            datawire.read_hello_reply(s)
            s.sendall(datawire.LENGTH.pack(1000) + struct.pack("<4sQII", b"RKLQ", 1, 0, 1))
        assert session.run([x], formats=["nchw"])[0].tobytes() == want.tobytes()
        with board.load_model(conv_model[0]) as other:  # the daemon keeps serving new sessions
            assert other.run([x], formats=["nchw"])[0].tobytes() == want.tobytes()


@pytest.mark.parametrize("pipelined", [False, True])
def test_worker_killed_during_a_data_channel_run(board, pipelined):
    model = sim_models.conv_relu_model(16, 16, 128)[0]  # ~3 ms per inference
    x = np.ones((1, 16, 128, 128), np.float32)
    session = board.load_model(model)
    pid = _worker_pid(board, session.id)
    errors = []
    running = threading.Event()  # set by the first result: the kill lands mid-stream, not before it

    def work() -> None:
        try:
            if pipelined:
                with session.pipeline(depth=4) as pipe:
                    for _ in pipe.map([x] for _ in range(100_000)):
                        running.set()
            else:
                for _ in range(100_000):
                    session.run([x])
                    running.set()
        except Exception as exc:  # noqa: BLE001 - inspected below
            errors.append(exc)

    t = threading.Thread(target=work)
    t.start()
    assert running.wait(60), errors
    assert session.carrier == board.carrier
    os.kill(pid, signal.SIGKILL)
    t.join(60)
    assert len(errors) == 1 and isinstance(errors[0], SessionLostError), errors
    assert "the NPU runtime worker crashed (signal 9)" in str(errors[0]) and session.id in str(errors[0])
    with pytest.raises(SessionLostError, match="does not exist"):
        session.run([x])


@pytest.mark.parametrize("carrier", ["direct", "relay"])
def test_ten_thousand_data_channel_inferences_leak_nothing(daemon, carrier):
    result = soak(daemon.address, carrier, "mixed")  # half run(), half pipelines of 500
    assert result["warm"]["total"] == WARM_UP * 2.0 and result["done"]["total"] == MEASURED * 2.0
    assert_flat(result)
    assert result["done"]["inferences"] == WARM_UP + MEASURED


def test_session_close_closes_the_worker_side(board, conv_model):
    session = board.load_model(conv_model[0])
    x = np.ones((1, 3, 8, 8), np.float32)
    session.run([x], formats=["nchw"])
    carrier = session._link.carrier
    session.close()
    assert carrier.closed and session._link is None


def test_relay_without_a_data_port(sim_library, conv_model):
    from rknnlink.client.local import start_local_daemon

    x = np.ones((1, 3, 8, 8), np.float32)
    with start_local_daemon(platform="rk3588", backend="sim", extra_args=["--no-data-port"]) as daemon:
        with Board.connect(daemon.address, timeout=10) as board:
            assert board.data_port == 0 and board.data_target() is None
            with board.load_model(conv_model[0]) as session:
                assert session.carrier == "relay" and session._secret == b""
                out = session.run([x], formats=["nchw"])[0]
                with session.pipeline(depth=2) as pipe:
                    assert pipe.carrier_kind == "relay"
                    assert [o[0].tobytes() for o in pipe.map([x] for _ in range(3))] == [out.tobytes()] * 3


def test_client_can_turn_the_data_channel_off(daemon, conv_model):
    x = np.ones((1, 3, 8, 8), np.float32)
    with Board.connect(daemon.address, timeout=10, use_data_channel=False) as board:
        assert board.data_port > 0 and board.data_target() is None
        with board.load_model(conv_model[0]) as session:
            assert session.carrier == "relay"
            assert session.run([x], formats=["nchw"])[0].shape == (1, 4, 8, 8)
