"""The shared-memory input ring of a local direct carrier (rknnlink.v1.shmring): in use where both ends offer
it, the same outputs as the byte frames and in process, a client's bad slot or length is a clear error that
ends only its connection, a client dying mid-pipeline leaves no descriptor or mapping in the worker, an old
peer on either side keeps the byte frames, and every check of Ring.attach holds. The byte path itself runs
the data plane's main tests again below (with the ring turned off in the client)."""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import sim_models
from test_daemon_datachannel import (  # noqa: F401 - collected again here, on the byte path
    test_outputs_are_bit_identical_to_in_process_unary_and_pipelined,
    test_runtime_errors_come_back_and_the_connection_stays_usable,
    test_worker_killed_during_a_data_channel_run,
)
from test_daemon_link import test_oversized_messages, test_run_and_pipeline_equal_in_process  # noqa: F401
from test_daemon_pipeline import (  # noqa: F401
    test_large_inputs_and_outputs_with_a_late_reader_do_not_deadlock,
    test_mixed_layouts_in_one_pipeline_equal_in_process,
)

from rknnlink.client import Board, RemoteRknnError
from rknnlink.runtime import RknnError, RuntimeLibrary
from rknnlink.v1 import datawire, shmring

HERE = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def byte_path(request, monkeypatch):
    """The tests imported from the other modules run here with the client's ring off: the byte frames."""
    if request.function.__module__ != __name__:
        callspec = getattr(request.node, "callspec", None)
        if callspec is not None and callspec.params.get("board", "direct") != "direct":
            pytest.skip("the relay and the TLS data port have no ring: their own modules run these")
        monkeypatch.setenv(shmring.ENV_SWITCH, "0")
    yield


@pytest.fixture(params=["queue", "inputs"])
def ring_mode(request, monkeypatch):
    """Both uses of the ring: the queue (requests and replies in it, shmring.Queue) and inputs only (the
    requests' frames name their slots), which a client with RKNNLINK_DATA_SHM_QUEUE=0 or an older worker
    gets."""
    if request.param == "inputs":
        monkeypatch.setenv(shmring.QUEUE_ENV_SWITCH, "0")
    return request.param


@pytest.fixture()
def inputs_only(monkeypatch):
    """The ring for inputs only: for the tests that write slotted frames on the socket themselves."""
    monkeypatch.setenv(shmring.QUEUE_ENV_SWITCH, "0")


@pytest.fixture()
def direct(daemon):
    b = Board.connect(daemon.address, timeout=10, use_data_channel=True)
    yield b
    b.close()


def _worker_pid(board: Board, session_id: str) -> int:
    return next(s["worker_pid"] for s in board.stats()["sessions"] if s["session_id"] == session_id)


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _ring_maps(pid: int) -> int:
    return sum("rknnlink-slots" in line for line in Path(f"/proc/{pid}/maps").read_text().splitlines())


def _images(n: int, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=(1, 32, 32, 3), dtype=np.uint8) for _ in range(n)]


def _eventually(check, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


def test_a_local_pipeline_uses_the_ring_and_every_result_is_its_own(direct, sim_library, ring_mode):
    """Depth 4 over 3x as many items as slots: each result is that of its own input in process (a slot
    reused too early, or an output aliasing a slot, would give another item's), and results kept from the
    start are unchanged at the end."""
    model = sim_models.pool_model(32, 3)
    images = _images(40)
    with RuntimeLibrary.load(path=sim_library, backend="sim").init(model) as ctx:
        want = [ctx.infer([x])[0] for x in images]
    with direct.load_model(model) as session:
        with session.pipeline(depth=4) as pipe:
            got = [out[0] for out in pipe.map([x] for x in images)]
            assert pipe.uses_ring and pipe._ring.n_slots == 4 + shmring.KEPT_BACK
        assert session.run([images[0]])[0].tobytes() == want[0].tobytes()
        assert session._link.uses_ring  # run() is a pipeline of depth 1: a ring of one slot and one kept back
    for w, g in zip(want, got):
        assert g.tobytes() == w.tobytes()


def test_inputs_larger_than_the_slots_go_in_the_frame(direct, conv_model, sim_library, ring_mode):
    """The slots are sized by the first request; a larger later one (another layout) travels in its frame,
    in order with the slotted ones around it."""
    model = conv_model[0]
    small = np.ones((1, 3, 8, 8), np.float32)
    big = np.ones((1, 3, 8, 8), np.float64) * 2  # twice the bytes: not in a slot, converted by the worker
    with RuntimeLibrary.load(path=sim_library, backend="sim").init(model) as ctx:
        want = [ctx.infer([x], ["nchw"])[0] for x in (small, big, small)]
    with direct.load_model(model) as session, session.pipeline(depth=3) as pipe:
        for x in (small, big, small):
            pipe.submit([x], formats=["nchw"])
        got = [r[0] for r in pipe.results()]
        assert pipe.uses_ring
    assert [g.tobytes() for g in got] == [w.tobytes() for w in want]


def _corrupt_reply(pipe) -> str:
    rid, status, _us, payload = datawire.parse_reply(pipe.carrier.receive(1 << 20, None), 1 << 20)
    assert rid == 0 and status == -5, (rid, status, payload)  # RKNN_ERR_PARAM_INVALID, the frame refused
    return payload[1]


def test_a_bad_slot_index_or_length_is_an_error_for_that_connection_only(direct, conv_model, inputs_only):
    x = np.ones((1, 3, 8, 8), np.float32)
    with direct.load_model(conv_model[0]) as session:
        want = session.run([x], formats=["nchw"])[0]
        pid = _worker_pid(direct, session.id)
        cases = [
            ("slot", lambda ring: datawire.encode_request(7, [(0, 1, False, x.shape, x)], False, ring.n_slots)),
            ("slot", lambda ring: datawire.encode_request(7, [(0, 1, False, x.shape, x)], False, 2 ** 32 - 1)),
            ("exceed", lambda ring: datawire.encode_request(
                7, [(3, 1, False, (ring.slot_bytes + 1,), np.zeros(ring.slot_bytes + 1, np.uint8))], False, 0)),
        ]
        for word, frame in cases:
            pipe = session.pipeline(depth=2)
            pipe.run([x], formats=["nchw"])
            assert pipe.uses_ring
            pipe.carrier.send(frame(pipe._ring))
            assert word in _corrupt_reply(pipe)
            with pytest.raises(datawire.PeerClosedError):  # the worker closed this connection
                pipe.carrier.receive(1 << 20, None)
            pipe.close()
        # A slotted frame on a connection without a ring (a client that never set one up).
        with session.pipeline(depth=1) as pipe:
            pipe.carrier.send(datawire.encode_request(7, [(0, 1, False, x.shape, x)], False, 0))
            assert "no ring" in _corrupt_reply(pipe)
        assert _eventually(lambda: _ring_maps(pid) == 1)  # only run()'s kept carrier's
        assert session.run([x], formats=["nchw"])[0].tobytes() == want.tobytes()


def _post_raw(queue: shmring.Queue, body: bytes, length: int = -1) -> None:
    """Post an entry as a misbehaving client could: any body, any length word."""
    at = shmring.ENTRY_AT + (queue.posted % shmring.ENTRIES) * shmring.ENTRY_BYTES
    queue.mm[at + 4:at + 4 + len(body)] = body
    struct.pack_into("<I", queue.mm, at, len(body) if length < 0 else length)
    queue.posted += 1
    struct.pack_into("<I", queue.mm, shmring.POSTED_AT, queue.posted)
    shmring.futex_wake(queue.posted_address)


def test_a_bad_queue_entry_is_an_error_for_that_connection_only(direct, conv_model):
    """Through the queue: an entry naming a slot outside the ring, inputs beyond a slot's input bytes, a
    request without a slot, a length beyond the entry, or something else than a request: an error reply
    (request id 0, by frame) and that connection ends; the worker unmaps its ring and serves on."""
    x = np.ones((1, 3, 8, 8), np.float32)

    def request(slot, tensors=((0, 1, False, x.shape, x),)):
        return bytes(b"".join(datawire.encode_request(7, list(tensors), False, slot))[datawire.LENGTH.size:])

    with direct.load_model(conv_model[0]) as session:
        want = session.run([x], formats=["nchw"])[0]
        pid = _worker_pid(direct, session.id)
        cases = [
            ("slot", lambda ring: (request(ring.n_slots), -1)),
            ("slot", lambda ring: (request(2 ** 32 - 1), -1)),
            ("exceed", lambda ring: (request(0, [(3, 1, False, (ring.input_bytes + 1,),
                                                  np.zeros(ring.input_bytes + 1, np.uint8))]), -1)),
            ("without its slot", lambda ring: (request(None, [(0, 1, False, (1,), np.zeros(1, np.float32))]), -1)),
            ("queue entry of", lambda ring: (request(0), shmring.MAX_ENTRY_BODY + 1)),
            ("magic", lambda ring: (b"RKLS" + bytes(60), -1)),
        ]
        for word, entry in cases:
            pipe = session.pipeline(depth=2)
            pipe.run([x], formats=["nchw"])
            assert pipe._queue is not None
            _post_raw(pipe._queue, *entry(pipe._ring))
            pipe._expected.append(7)
            with pytest.raises(RemoteRknnError, match=word):
                pipe.get()
            assert pipe.closed
            pipe.close()
        assert _eventually(lambda: _ring_maps(pid) == 1)  # only run()'s kept carrier's
        assert session.run([x], formats=["nchw"])[0].tobytes() == want.tobytes()


def test_through_the_queue_large_outputs_and_errors_come_by_frame_in_order(direct, sim_library):
    """Replies larger than a slot's reply area travel as frames the reply entries announce, in order with
    the ones in the ring; so do runtime errors' replies where they do not fit (they fit here) - a failed run
    is its own request's error, and the pipeline goes on."""
    model = sim_models.conv_relu_model(4, 4, 32)[0]  # 16 KiB of float32 out: more than REPLY_AREA
    small = sim_models.pool_model(32, 3)
    xs = [np.random.default_rng(i).standard_normal((1, 4, 32, 32)).astype(np.float32) for i in range(9)]
    with RuntimeLibrary.load(path=sim_library, backend="sim").init(model) as ctx:
        want = [ctx.infer([x], ["nchw"])[0] for x in xs]
    assert want[0].nbytes > shmring.REPLY_AREA
    with direct.load_model(model) as session, session.pipeline(depth=3) as pipe:
        got = [r[0] for r in pipe.map(([x] for x in xs), formats=["nchw"])]
        assert pipe._queue is not None
        pipe.submit([xs[0]], formats=["nchw"])
        pipe.submit([xs[1][:, :2]], formats=["nchw"])  # wrong element count: this request's error only
        pipe.submit([xs[2]], formats=["nchw"])
        first = pipe.get()[0]
        with pytest.raises(RknnError):
            pipe.get()
        third = pipe.get()[0]
    assert [g.tobytes() for g in got] == [w.tobytes() for w in want]
    assert first.tobytes() == want[0].tobytes() and third.tobytes() == want[2].tobytes()
    with direct.load_model(small) as session, session.pipeline(depth=2) as pipe:
        x = _images(1)[0]
        assert pipe.run([x])[0].nbytes <= shmring.REPLY_AREA and pipe._queue is not None


def test_closing_a_queue_ends_the_workers_connection_at_once(direct):
    """Pipeline.close posts the queue's close entry, which wakes the worker: it unmaps the ring right away
    (not after its next look at the socket); a client that only closes its socket is noticed within
    QUEUE_POLL."""
    model = sim_models.pool_model(32, 3)
    x = _images(1)[0]
    with direct.load_model(model) as session:
        pid = _worker_pid(direct, session.id)
        pipe = session.pipeline(depth=2)
        pipe.run([x])
        assert pipe._queue is not None and _ring_maps(pid) == 1
        pipe.close()
        assert _eventually(lambda: _ring_maps(pid) == 0, timeout=5)
        pipe = session.pipeline(depth=2)
        pipe.run([x])
        pipe.carrier.close()  # the socket only: the queue is not marked closed
        assert _eventually(lambda: _ring_maps(pid) == 0, timeout=10)
        pipe.close()


def test_a_second_setup_and_a_forged_one_are_refused_and_the_connection_goes_on(direct, conv_model, inputs_only):
    x = np.ones((1, 3, 8, 8), np.float32)
    with direct.load_model(conv_model[0]) as session, session.pipeline(depth=2) as pipe:
        want = pipe.run([x], formats=["nchw"])[0]
        ring = shmring.Ring.create(1, shmring.PAGE)
        try:
            assert not pipe.carrier.attach_ring(ring)  # this connection has its ring already
        finally:
            ring.close()
        assert pipe.run([x], formats=["nchw"])[0].tobytes() == want.tobytes()
    with direct.load_model(conv_model[0]) as session, session.pipeline(depth=2) as pipe:
        ring = shmring.Ring.create(1, shmring.PAGE)
        try:
            ring.token = b"\0" * shmring.TOKEN_BYTES  # claims another file's token
            assert not pipe.carrier.attach_ring(ring)
        finally:
            ring.close()
        assert pipe.run([x], formats=["nchw"])[0].tobytes() == want.tobytes()
        assert pipe.uses_ring  # the refused setup left the connection as it was: the real one was taken


def test_a_setup_naming_another_process_is_refused_even_with_its_file_and_token(direct, conv_model):
    """The ring file and token are real and the process named holds that file at that descriptor, but it
    does not hold this connection (what a client behind an adb forward could try against other processes
    of a board): refused, and the connection goes on."""
    x = np.ones((1, 3, 8, 8), np.float32)
    with direct.load_model(conv_model[0]) as session, session.pipeline(depth=2) as pipe:
        ring = shmring.Ring.create(1, shmring.PAGE)
        holder = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE,
                                  pass_fds=(ring.fd,))
        body = shmring.SETUP.pack(shmring.MAGIC_SETUP, holder.pid, ring.fd, ring.n_slots, ring.slot_bytes,
                                  ring.token)
        try:
            assert Path(f"/proc/{holder.pid}/fd/{ring.fd}").exists()
            ring.setup_frame_body = lambda queue=False: body
            assert not pipe.carrier.attach_ring(ring)
        finally:
            holder.kill()
            holder.wait()
            ring.close()
        want = session.run([x], formats=["nchw"])[0]
        assert pipe.run([x], formats=["nchw"])[0].tobytes() == want.tobytes()
        assert pipe.uses_ring  # the real setup that followed was taken


def test_peer_is_names_the_process_at_the_other_end_only():
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        a, b = socket.socketpair()
        with a, b:
            assert shmring.peer_is(a, os.getpid()) and not shmring.peer_is(a, child.pid)
        with socket.create_server(("127.0.0.1", 0)) as listener:
            with socket.create_connection(listener.getsockname()):
                accepted, _ = listener.accept()
                with accepted:
                    assert shmring.peer_is(accepted, os.getpid())
                    assert not shmring.peer_is(accepted, child.pid)
    finally:
        child.kill()
        child.wait()


_DYING_CLIENT = r"""
import sys
import numpy as np
from rknnlink.client import Board, RemoteRknnError
board = Board.connect(sys.argv[1], timeout=10, use_data_channel=True)
session = board.load_model(open(sys.argv[2], "rb").read())
pipe = session.pipeline(depth=4)
x = np.ones((1, 32, 32, 3), np.uint8)
pipe.run([x])
assert pipe.uses_ring
for _ in range(4):
    pipe.submit([x])
print(next(s["worker_pid"] for s in board.stats()["sessions"] if s["session_id"] == session.id), flush=True)
sys.stdin.readline()
"""


def test_a_client_killed_mid_pipeline_leaves_no_descriptor_or_mapping(daemon, direct, tmp_path, ring_mode):
    model = sim_models.pool_model(32, 3)
    (tmp_path / "m.rknn").write_bytes(model)
    with direct.load_model(model) as session:
        session.run([np.zeros((1, 32, 32, 3), np.uint8)])
        pid = _worker_pid(direct, session.id)
        fds_before = _fds(pid)
    client = subprocess.Popen([sys.executable, "-c", _DYING_CLIENT, daemon.address, str(tmp_path / "m.rknn")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        line = client.stdout.readline().strip()
        assert line, "the client died before its pipeline ran"
        worker = int(line)  # the session's worker (sessions are listed to their own client)
        assert _ring_maps(worker) == 1
        os.kill(client.pid, signal.SIGKILL)
        client.wait(30)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    # the daemon frees the vanished client's session: its worker goes, or at least unmaps the ring
    assert _eventually(lambda: not Path(f"/proc/{worker}").exists() or _ring_maps(worker) == 0)
    with direct.load_model(model) as session:  # the daemon serves on; a fresh session's worker is clean
        x = np.full((1, 32, 32, 3), 7, np.uint8)
        with session.pipeline(depth=4) as pipe:
            assert len(list(pipe.map([x] for _ in range(10)))) == 10
        assert _fds(_worker_pid(direct, session.id)) <= fds_before + 1


def test_many_pipelines_leak_no_descriptor_and_no_mapping(direct, ring_mode):
    model = sim_models.pool_model(32, 3)
    x = _images(1)[0]
    with direct.load_model(model) as session:
        want = session.run([x])[0]
        pid = _worker_pid(direct, session.id)
        for _ in range(3):  # warm: the worker's threads and lazily opened files
            with session.pipeline(depth=4) as pipe:
                list(pipe.map([x] for _ in range(8)))
        client_fds, worker_fds = _fds(os.getpid()), _fds(pid)
        for _ in range(30):
            with session.pipeline(depth=4) as pipe:
                assert all(r[0].tobytes() == want.tobytes() for r in pipe.map([x] for _ in range(8)))
                assert pipe.uses_ring
        assert _fds(os.getpid()) == client_fds and _ring_maps(os.getpid()) <= 1  # run()'s kept ring
        assert _eventually(lambda: _fds(pid) <= worker_fds and _ring_maps(pid) <= 1)


def test_a_dump_after_the_pipeline_closed_replays_a_copy_of_its_inputs(direct, ring_mode):
    """The last run is kept for a dump's replay; when its inputs were in the ring, the worker copies them
    before it unmaps the ring (else the replay would read unmapped memory)."""
    model = sim_models.pool_model(32, 3)
    x = _images(1, seed=5)[0]
    with direct.load_model(model) as session:
        pid = _worker_pid(direct, session.id)
        with session.pipeline(depth=2) as pipe:
            want = pipe.run([x])[0]
            assert pipe.uses_ring
        assert _eventually(lambda: _ring_maps(pid) == 0)
        dumps = session.dump_tensors()
        assert dumps and np.allclose(dumps[-1][1].reshape(-1), want.reshape(-1))


@pytest.mark.parametrize("depth", [1, 3])
def test_a_dump_replays_the_last_run_while_its_slot_could_be_written_again(direct, depth, ring_mode):
    """A dump (dumps off until now) replays the last successful run in place, in its ring slot. A later
    request that fails (float16 of the same byte size, the wrong element count) must not have been written
    into that slot: the client keeps it back until a later run succeeds. Without that, depth 1 (one slot)
    puts the failed request's bytes where the replay reads, and depth 3 does once the slots have cycled."""
    model = sim_models.pool_model(32, 3)
    x = _images(1, seed=7)[0]
    bad = np.full((1, 32, 16, 3), 7.0, np.float16)  # the same 3072 bytes, half the elements: refused
    assert bad.nbytes == x.nbytes
    with direct.load_model(model) as session, session.pipeline(depth=depth) as pipe:
        for _ in range(2 * (depth + 1)):  # every slot twice: the queue's runs bound to their slots too
            want = pipe.run([x])[0]
        assert pipe.uses_ring
        for _ in range(depth + 1):
            with pytest.raises(RknnError):
                pipe.run([bad])
        dumps = session.dump_tensors()
        assert dumps and np.allclose(dumps[-1][1].reshape(-1), want.reshape(-1))
        assert pipe.run([x])[0].tobytes() == want.tobytes()  # the pipeline goes on, its slots still in use


def test_an_old_worker_without_the_offer_keeps_the_byte_frames(sim_library, conv_model, monkeypatch):
    """A daemon whose workers do not offer the ring (an older one, or RKNNLINK_DATA_SHM=0 there): the client
    sends no setup, the byte frames carry the inputs, results are the same."""
    from rknnlink.client.local import start_local_daemon

    monkeypatch.setenv(shmring.ENV_SWITCH, "0")
    d = start_local_daemon(platform="rk3588", backend="sim")
    monkeypatch.delenv(shmring.ENV_SWITCH)
    try:
        x = np.ones((1, 3, 8, 8), np.float32)
        with Board.connect(d.address, timeout=10, use_data_channel=True) as board, \
                board.load_model(conv_model[0]) as session, session.pipeline(depth=4) as pipe:
            assert not pipe.carrier.shm
            got = [r[0] for r in pipe.map(([x] for _ in range(6)), formats=["nchw"])]
            assert not pipe.uses_ring and session.carrier == "direct"
        with RuntimeLibrary.load(path=sim_library, backend="sim").init(conv_model[0]) as ctx:
            want = ctx.infer([x], ["nchw"])[0]
        assert all(g.tobytes() == want.tobytes() for g in got)
    finally:
        d.stop()


# -- Ring.attach's checks, without a daemon ------------------------------------------------------------------------
def _attach(ring: shmring.Ring, **change) -> shmring.Ring:
    claims = {"pid": os.getpid(), "fd": ring.fd, "n_slots": ring.n_slots, "slot_bytes": ring.slot_bytes,
              "token": ring.token, **change}
    return shmring.Ring.attach(**claims)


def test_attach_maps_the_same_memory_and_close_gives_back_its_descriptor():
    """(Python's mmap keeps a duplicate of the descriptor while mapped: one per ring, closed with it.)"""
    ring = shmring.Ring.create(2, shmring.PAGE)
    try:
        fds = _fds(os.getpid())
        other = _attach(ring)
        assert _fds(os.getpid()) == fds + 1
        ring.slot(1)[:5] = b"hello"
        assert bytes(other.views(1, [(0, 5)])[0]) == b"hello"
        other.close()
        assert _fds(os.getpid()) == fds
    finally:
        ring.close()
    assert ring.fd == -1


@pytest.mark.parametrize("change, words", [
    ({"token": b"x" * 16}, "token"),
    ({"n_slots": 3}, "not a ring of"),
    ({"slot_bytes": 2 * shmring.PAGE}, "not a ring of"),
    ({"n_slots": 0}, "outside the limits"),
    ({"n_slots": shmring.MAX_SLOTS + 1}, "outside the limits"),
    ({"slot_bytes": 100}, "outside the limits"),
    ({"fd": 10_000}, "cannot open"),
    ({"pid": 2 ** 31 - 1}, "cannot open"),
])
def test_attach_refuses_every_claim_that_does_not_hold(change, words):
    ring = shmring.Ring.create(2, shmring.PAGE)
    try:
        with pytest.raises(shmring.RingError, match=words):
            _attach(ring, **change)
    finally:
        ring.close()


def test_attach_refuses_an_unsealed_file_and_what_is_not_a_regular_file():
    size = shmring.ring_bytes(1, shmring.PAGE)
    fd = os.memfd_create("rknnlink-slots", os.MFD_CLOEXEC)  # no sealing: it could shrink under the worker
    r, w = os.pipe()
    try:
        os.ftruncate(fd, size)
        with pytest.raises(shmring.RingError, match="sealed"):
            shmring.Ring.attach(os.getpid(), fd, 1, shmring.PAGE, b"\0" * 16)
        with pytest.raises(shmring.RingError, match="not a ring"):
            shmring.Ring.attach(os.getpid(), r, 1, shmring.PAGE, b"\0" * 16)
    finally:
        for f in (fd, r, w):
            os.close(f)
    ring = shmring.Ring.create(1, shmring.PAGE)
    try:
        with pytest.raises(OSError):  # sealed: the client itself cannot shrink it any more
            os.ftruncate(ring.fd, 0)
        assert fcntl.fcntl(ring.fd, fcntl.F_GET_SEALS) & fcntl.F_SEAL_SHRINK
    finally:
        ring.close()


def test_slot_frames_parse_to_views_of_the_ring_and_bad_ones_are_frame_errors():
    ring = shmring.Ring.create(2, shmring.PAGE)
    try:
        a, b = np.arange(10, dtype=np.float32), np.arange(3, dtype=np.uint8)
        spans, _need = shmring.spans([a.nbytes, b.nbytes])
        for (start, end), data in zip(spans, (a, b)):
            ring.slot(1)[start:end] = memoryview(data).cast("B")
        parser = datawire.RequestParser()
        parser.ring = ring
        for request_id in (1, 2):  # the second reuses the first's parse
            parts = datawire.encode_request(request_id, [(0, 0, False, (10,), a), (3, 0, False, (3,), b)], True, 1)
            assert len(parts) == 1
            got_id, layout, datas = parser.parse(memoryview(bytearray(parts[0]))[datawire.LENGTH.size:])
            assert got_id == request_id and parser.slotted and layout[0] is True
            assert [bytes(d) for d in datas] == [a.tobytes(), b.tobytes()] and all(ring.owns(d) for d in datas)
            del datas
        bad = datawire.encode_request(3, [(0, 0, False, (10,), a), (3, 0, False, (3,), b)], True, 2)
        with pytest.raises(datawire.FrameError, match="slot 2"):
            parser.parse(memoryview(bytearray(bad[0]))[datawire.LENGTH.size:])
        with pytest.raises(datawire.FrameError, match="no ring"):
            datawire.parse_request(memoryview(bytearray(bad[0]))[datawire.LENGTH.size:])
    finally:
        ring.close()


def test_has_frame_only_for_a_whole_buffered_frame():
    """FrameReader.has_frame: what lets the worker hold a reply (the next request is read without waiting)."""
    import socket

    left, right = socket.socketpair()
    with left, right:
        reader = datawire.FrameReader(right, 8192)
        assert not reader.has_frame()
        frames = [b"one", b"two"]
        left.sendall(b"".join(datawire.LENGTH.pack(len(f)) + f for f in frames) + datawire.LENGTH.pack(9) + b"par")
        assert bytes(reader.read(1 << 10)) == b"one"  # one recv brought everything that was sent
        assert reader.has_frame()
        assert bytes(reader.read(1 << 10)) == b"two"
        assert not reader.has_frame()  # a prefix and part of a body only
        left.sendall(b"t of it")
        assert bytes(reader.read(1 << 10)) == b"part of i" and not reader.has_frame()


def test_a_setup_behind_queued_requests_is_answered_after_them(direct, monkeypatch):
    """A client (not this one: it sets up with nothing in flight) that sends a setup right behind pipelined
    byte frames, all in one write: the worker's runner answers the requests first, then the reader the
    setup, in order - the runner tells the reader when it is idle, so the setup never waits for a wake-up
    that does not come."""
    import threading

    monkeypatch.setenv(shmring.ENV_SWITCH, "0")  # this client's frames carry their bytes
    x = np.ones((1, 16, 128, 128), np.float32)
    model = sim_models.conv_relu_model(16, 16, 128)[0]  # ~3 ms a run: the setup comes while one is running
    with direct.load_model(model) as session, session.pipeline(depth=4) as pipe:
        want = pipe.run([x], formats=["nchw"])[0]
        ring = shmring.Ring.create(1, shmring.PAGE)
        try:
            body = ring.setup_frame_body()
            frames = [datawire.encode_request(100 + i, [(0, 1, False, x.shape, x)], False) for i in range(3)]
            pipe.carrier.send([part for parts in frames for part in parts]
                              + [datawire.LENGTH.pack(len(body)) + body])
            box: dict = {}

            def collect() -> None:
                box["replies"] = [datawire.parse_reply(pipe.carrier.receive(1 << 24, None), 1 << 24)
                                  for _ in range(3)]
                box["ack"] = shmring.parse_ack(pipe.carrier.receive(1 << 16, None))

            thread = threading.Thread(target=collect, daemon=True)
            thread.start()
            thread.join(60)
            assert not thread.is_alive(), "the setup behind the requests was never answered"
            assert [r[0] for r in box["replies"]] == [100, 101, 102]
            assert all(bytes(r[3][0][2]) == want.tobytes() for r in box["replies"])
            assert box["ack"][0] == 0
        finally:
            ring.close()
        assert pipe.run([x], formats=["nchw"])[0].tobytes() == want.tobytes()


def test_queue_counters_wrap_and_a_waiting_client_is_woken_by_the_count_it_waits_for():
    """The queue's counters are u32 and wrap; the client sleeps until the done count it asked for (WANTED_AT)
    and the worker's counting wakes it then, across the wrap, with replies in the ring and by frame."""
    import threading

    ring = shmring.Ring.create(2, 2 * shmring.PAGE)
    client, worker = shmring.Queue(ring), shmring.Queue(ring)
    try:
        assert shmring._reached(0, 0xFFFFFFFF) and shmring._reached(5, 5) and not shmring._reached(0xFFFFFFFF, 0)
        client.done = worker.done = 0xFFFFFFFE  # two replies before the wrap
        struct.pack_into("<I", ring.mm, shmring.DONE_AT, 0xFFFFFFFE)
        reply = datawire.encode_error(9, -5, "RKNN_ERR_PARAM_INVALID", "x")
        box = {}

        def wait() -> None:  # as the client's loop: a wait ends early when the count moved but is not there yet
            deadline = time.monotonic() + 30
            while not client.wait_done(client.done + 2, 30.0) and time.monotonic() < deadline:
                pass
            box["woken"] = shmring._reached(client.done_count(), client.done + 2)

        struct.pack_into("<I", ring.mm, shmring.WANTED_AT, 0xFFFFFFF0)
        waiter = threading.Thread(target=wait)
        waiter.start()
        assert _eventually(lambda: struct.unpack_from("<I", ring.mm, shmring.WANTED_AT)[0] == 0)
        assert worker.answer(0, reply)  # the first: in the ring, not yet what the client waits for
        assert not client.wait_done(client.done + 2, 0.01)
        assert worker.answer(1, reply)  # the second, past the wrap: the client wakes
        waiter.join(30)
        assert box == {"woken": True} and client.done_count() == 0
        assert bytes(client.reply(0)) == bytes(b"".join(reply))[8:]
        assert bytes(client.reply(1)) == bytes(b"".join(reply))[8:]
        assert not worker.answer(-1, reply)  # no slot: by frame, announced in the reply entry
        assert client.wait_done(client.done + 1, 0.01) and client.reply(-1) is None
    finally:
        client.close()
        worker.close()
        ring.close()


def _policies(pid: int) -> list:
    """The scheduling policy of every thread of a process (/proc stat field 41; SCHED_BATCH is 3)."""
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out.append(int((task / "stat").read_text().rsplit(")", 1)[1].split()[38]))
        except (OSError, IndexError, ValueError):
            pass
    return out


def test_a_queue_loop_runs_under_sched_batch_and_the_control_thread_does_not(direct):
    """The worker's queue loop leaves the client's CPU to the client when a post wakes it (SCHED_BATCH; the
    runtime's own threads, started from it at the first run, inherit it); the worker's main thread (the
    control plane) keeps the ordinary policy."""
    model = sim_models.pool_model(32, 3)
    x = _images(1)[0]
    with direct.load_model(model) as session:
        pid = _worker_pid(direct, session.id)
        with session.pipeline(depth=2) as pipe:
            pipe.run([x])
            assert pipe._queue is not None
            assert os.SCHED_BATCH in _policies(pid)
            assert all(p in (os.SCHED_OTHER, os.SCHED_BATCH) for p in _policies(pid))
            main = int((Path(f"/proc/{pid}/task/{pid}") / "stat").read_text().rsplit(")", 1)[1].split()[38])
            assert main == os.SCHED_OTHER


def test_the_queue_is_offered_on_a_weakly_ordered_machine_only_with_a_fence(monkeypatch):
    """On aarch64 / armv7 (the boards) a core may publish a counter before the data it announces: the queue
    is used there only with libatomic's fence, found at run time; without it, the inputs-only ring (signalled
    through the socket) is what a worker offers. On x86 (TSO) no fence is needed."""
    import ctypes
    import platform

    real_cdll = ctypes.CDLL

    def reset() -> None:
        monkeypatch.setattr(shmring, "_fence_state", -1)
        monkeypatch.setattr(shmring, "_fence_call", None)

    reset()
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    assert shmring.fence_available() and shmring._fence_call is None
    shmring.fence()  # a no-op

    reset()
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    assert shmring.fence_available() and shmring._fence_call is not None  # this machine has libatomic.so.1
    shmring.fence()  # the real atomic_thread_fence(memory_order_seq_cst)

    def no_libatomic(name, *args, **kwargs):
        if name and "atomic" in str(name):
            raise OSError(f"{name}: cannot open shared object file")
        return real_cdll(name, *args, **kwargs)

    reset()
    monkeypatch.setattr(ctypes, "CDLL", no_libatomic)
    monkeypatch.delenv(shmring.QUEUE_ENV_SWITCH, raising=False)
    monkeypatch.delenv(shmring.ENV_SWITCH, raising=False)
    assert shmring.futex_available() and not shmring.fence_available() and not shmring.queue_enabled()
    assert shmring.enabled()  # the inputs-only ring is still used
