"""Faults: runtime worker crashes and hangs, clients that vanish, and the daemon's limits."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import sim_models

from rknnlink.client import Board, BoardError, SessionLostError


def _wait(predicate, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _stopped(pid: int) -> bool:
    """Every thread of the process is in the stopped state ('T' in /proc/PID/task/TID/stat)."""
    tasks = Path(f"/proc/{pid}/task")
    try:
        states = [(d / "stat").read_text().rsplit(")", 1)[1].split()[0] for d in tasks.iterdir()]
    except OSError:
        return False
    return bool(states) and all(s in ("T", "t") for s in states)


def _worker_pid(board: Board, session_id: str, operator_token: str = "") -> int:
    return next(s["worker_pid"] for s in board.stats(operator_token)["sessions"] if s["session_id"] == session_id)


def _slow_input() -> np.ndarray:
    return np.ones((1, 16, 128, 128), np.float32)


@pytest.fixture(scope="module")
def slow_model():
    return sim_models.conv_relu_model(16, 16, 128)[0]  # ~3 ms per inference


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSEGV])
def test_worker_crash_during_inference_is_reported_and_contained(board, daemon, slow_model, conv_model, sig):
    bystander = board.load_model(conv_model[0])  # another session: must survive
    session = board.load_model(slow_model)
    pid = _worker_pid(board, session.id)
    crashed_before = board.stats()["workers_crashed"]
    errors = []
    running = threading.Event()  # set by the first result: the crash lands mid-stream, not before it

    def stream() -> None:
        try:
            with session.pipeline(depth=4) as pipe:
                for _ in pipe.map([_slow_input()] for _ in range(5000)):
                    running.set()
        except Exception as exc:  # noqa: BLE001 - inspected below
            errors.append(exc)

    t = threading.Thread(target=stream)
    t.start()
    assert running.wait(60), errors
    os.kill(pid, sig)
    t.join(60)
    assert len(errors) == 1 and isinstance(errors[0], SessionLostError), errors
    message = str(errors[0])
    assert f"crashed (signal {int(sig)})" in message and session.id in message
    assert "the session is lost, create it again" in message
    assert errors[0].status == grpc.StatusCode.UNAVAILABLE
    stats = board.stats()
    assert stats["workers_crashed"] == crashed_before + 1
    assert session.id not in {s["session_id"] for s in stats["sessions"]}
    with pytest.raises(SessionLostError, match="does not exist"):
        session.run([_slow_input()])
    x = np.ones((1, 3, 8, 8), np.float32)
    assert bystander.run([x], formats=["nchw"])[0].shape == (1, 4, 8, 8)
    with board.load_model(slow_model) as again:  # a new session works at once
        assert again.run([_slow_input()])[0].shape == (1, 16, 128, 128)
    bystander.close()


def test_worker_killed_between_calls(board, conv_model):
    session = board.load_model(conv_model[0])
    pid = _worker_pid(board, session.id)
    os.kill(pid, signal.SIGKILL)
    assert _wait(lambda: not _alive(pid), 60)
    with pytest.raises(SessionLostError, match=r"crashed \(signal 9\)"):
        session.run([np.ones((1, 3, 8, 8), np.float32)], formats=["nchw"])


_UPLOADER = r"""
import sys, time, hashlib
import grpc
from rknnlink.v1 import rknnlink_pb2 as pb, rknnlink_pb2_grpc as pb_grpc
address, size = sys.argv[1], int(sys.argv[2])
def chunks():
    yield pb.ModelChunk(sha256=hashlib.sha256(b"never finished").hexdigest(), total_size=size, data=b"x" * (1 << 20))
    print("uploading", flush=True)
    time.sleep(3600)
from rknnlink.v1.protocol import MD_CLIENT_ID, PROTOCOL_VERSION
stub = pb_grpc.RknnLinkStub(grpc.insecure_channel(address))
client_id = stub.Hello(pb.HelloRequest(protocol_version=PROTOCOL_VERSION)).client_id
watch = stub.Watch(pb.WatchRequest(client_id=client_id))
next(watch)
stub.UploadModel(chunks(), metadata=((MD_CLIENT_ID, client_id),))
"""

_HOLDER = r"""
import sys, time
sys.path.insert(0, sys.argv[2])
import sim_models
from rknnlink.client import Board
board = Board.connect(sys.argv[1])
session = board.load_model(sim_models.conv_relu_model(seed=5)[0])
print(session.id, flush=True)
time.sleep(3600)
"""


def _spawn(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ))


def test_client_killed_during_upload(daemon, board):
    before = board.stats()
    proc = _spawn(_UPLOADER, daemon.address, str(8 << 20))
    try:
        assert proc.stdout.readline().strip() == "uploading"
        cache = Path(daemon.workdir.name) / "cache"
        assert _wait(lambda: any(cache.glob(".upload-*")), 10)
    finally:
        proc.kill()
        proc.wait()
    assert _wait(lambda: board.stats()["uploads_aborted"] == before["uploads_aborted"] + 1)
    assert not list(cache.glob(".upload-*"))
    assert board.stats()["models_cached"] == before["models_cached"]
    model = sim_models.conv_relu_model(seed=21)[0]
    with board.load_model(model) as session:  # still serving
        assert session.run([np.ones((1, 3, 8, 8), np.float32)], formats=["nchw"])[0].shape == (1, 4, 8, 8)


def test_sessions_of_a_vanished_client_are_freed(daemon, board):
    proc = _spawn(_HOLDER, daemon.address, str(Path(sim_models.__file__).parent))
    try:
        session_id = proc.stdout.readline().strip()
        stats = board.stats(daemon.operator_token)
        entry = next(s for s in stats["sessions"] if s["session_id"] == session_id)
        clients_with_holder = stats["clients"]
    finally:
        proc.kill()
        proc.wait()
    assert _wait(lambda: session_id not in {s["session_id"] for s in board.stats(daemon.operator_token)["sessions"]})
    assert _wait(lambda: not _alive(entry["worker_pid"]))
    assert board.stats(daemon.operator_token)["clients"] <= clients_with_holder - 1


@pytest.fixture(scope="module")
def strict_daemon(sim_library):
    from rknnlink.client.local import start_local_daemon

    d = start_local_daemon(extra_args=["--call-timeout", "2", "--max-sessions", "2", "--max-cache-mb", "1"])
    yield d
    d.stop()


@pytest.mark.parametrize("carrier", ["direct", "relay"])
def test_hung_worker_hits_the_call_timeout(strict_daemon, conv_model, carrier, monkeypatch):
    from rknnlink.client import data

    monkeypatch.setattr(data, "PROBE_INTERVAL", 1.0)  # the client probes the daemon while a reply is overdue
    with Board.connect(strict_daemon.address, use_data_channel=carrier == "direct") as board:
        session = board.load_model(conv_model[0])
        session.run([np.ones((1, 3, 8, 8), np.float32)], formats=["nchw"])  # the carrier is up: a reply is
        assert session.carrier == carrier                                    # overdue, then the probe tells
        pid = _worker_pid(board, session.id)
        os.kill(pid, signal.SIGSTOP)
        try:
            assert _wait(lambda: _stopped(pid))  # kill() only queues the stop: run once the worker is stopped
            start = time.monotonic()
            with pytest.raises(SessionLostError, match="did not answer within 2 s") as info:
                session.run([np.ones((1, 3, 8, 8), np.float32)], formats=["nchw"])
            assert time.monotonic() - start < 30  # the 2 s call timeout, not a hang
            assert info.value.status == grpc.StatusCode.DEADLINE_EXCEEDED
            assert _wait(lambda: not _alive(pid))
        finally:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        with board.load_model(conv_model[0]) as fresh:
            assert fresh.run([np.ones((1, 3, 8, 8), np.float32)], formats=["nchw"])[0].shape == (1, 4, 8, 8)


def test_session_limit(strict_daemon, conv_model):
    with Board.connect(strict_daemon.address) as board:
        kept = [board.load_model(conv_model[0]) for _ in range(2)]
        with pytest.raises(BoardError, match="--max-sessions 2") as info:
            board.load_model(conv_model[0])
        assert info.value.status == grpc.StatusCode.RESOURCE_EXHAUSTED
        kept[0].close()
        board.load_model(conv_model[0]).close()


def test_model_larger_than_the_cache(strict_daemon):
    with Board.connect(strict_daemon.address) as board:
        with pytest.raises(BoardError, match="--max-cache-mb"):
            board.load_model(sim_models.gemm_model()[0])  # 3 MiB > 1 MiB
        cache = Path(strict_daemon.workdir.name) / "cache"
        assert not list(cache.glob(".upload-*"))


def test_workers_die_with_a_killed_daemon(sim_library, conv_model):
    from rknnlink.client.local import start_local_daemon

    d = start_local_daemon()
    try:
        with Board.connect(d.address) as board:
            session = board.load_model(conv_model[0])
            pid = _worker_pid(board, session.id)
            daemon_pid = board.stats()["daemon_pid"]
            os.kill(daemon_pid, signal.SIGKILL)
            assert _wait(lambda: not _alive(pid), 10)
    finally:
        d.stop()


def test_client_limit(strict_daemon):
    with Board.connect(strict_daemon.address) as probe:
        assert _wait(lambda: probe.stats()["clients"] == 1)
    boards = []
    try:
        for _ in range(2 * 2 + 16 - 1):  # --max-sessions 2 allows 20 clients; the probe above is gone
            boards.append(Board.connect(strict_daemon.address))
        last = Board.connect(strict_daemon.address)
        boards.append(last)
        with pytest.raises(BoardError, match="connected clients") as info:
            Board.connect(strict_daemon.address)
        assert info.value.status == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        for b in boards:
            b.close()
    assert _wait(lambda: _can_connect(strict_daemon.address))


def _can_connect(address: str) -> bool:
    try:
        Board.connect(address).close()
    except BoardError:
        return False
    return True


_STREAMER = r"""
import sys, numpy as np
sys.path.insert(0, sys.argv[2])
import sim_models
from rknnlink.client import Board
board = Board.connect(sys.argv[1])
session = board.load_model(sim_models.conv_relu_model(16, 16, 128, seed=9)[0])
print(session.id, flush=True)
with session.pipeline(depth=8) as pipe:
    for _ in pipe.map([np.ones((1, 16, 128, 128), np.float32)] for _ in range(100000)):
        pass
"""


def test_client_killed_mid_stream(daemon, board, conv_model):
    proc = _spawn(_STREAMER, daemon.address, str(Path(sim_models.__file__).parent))
    try:
        session_id = proc.stdout.readline().strip()
        assert _wait(lambda: next((s["inferences"] for s in board.stats(daemon.operator_token)["sessions"]
                                   if s["session_id"] == session_id), 0) > 20)
        pid = _worker_pid(board, session_id, daemon.operator_token)
    finally:
        proc.kill()
        proc.wait()
    assert _wait(lambda: session_id not in {s["session_id"] for s in board.stats(daemon.operator_token)["sessions"]})
    assert _wait(lambda: not _alive(pid))
    with board.load_model(conv_model[0]) as session:
        assert session.run([np.ones((1, 3, 8, 8), np.float32)], formats=["nchw"])[0].shape == (1, 4, 8, 8)
