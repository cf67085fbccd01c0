"""A shared daemon attacked by a careless or hostile client on loopback (issue 10): each attack fails with a
clear error, the victim and bystanders keep working, the daemon's memory stays bounded (psutil RSS)."""

from __future__ import annotations

import hashlib
import hmac
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import psutil
import pytest
import sim_models

from rknnlink.client import Board, BoardError
from rknnlink.v1 import datawire
from rknnlink.v1.messages import make_stub, pb
from rknnlink.v1.protocol import MD_CLIENT_ID, MD_SESSION_ID, PROTOCOL_VERSION

X = np.ones((1, 3, 8, 8), np.float32)


@pytest.fixture(scope="module")
def shared(sim_library):
    """A daemon with short grace and idle limits, so expiry is observable in a test."""
    from rknnlink.client.local import start_local_daemon

    d = start_local_daemon(extra_args=["--client-grace", "1", "--idle-timeout", "2"])
    yield d
    d.stop()


def _rss(daemon) -> int:
    return psutil.Process(daemon.process.pid).memory_info().rss


def _raw(address: str):
    channel = grpc.insecure_channel(address, [("grpc.max_send_message_length", -1)])
    return channel, make_stub(channel)


def _hello(stub) -> str:
    return stub.Hello(pb.HelloRequest(protocol_version=PROTOCOL_VERSION, client_name="attacker"), timeout=10).client_id


def _frame(parts) -> bytes:
    return b"".join(bytes(p) for p in parts)


def _many_inputs_frame(n: int) -> bytes:
    """A request frame with `n` one-byte inputs (more than the protocol's 256), correctly framed."""
    head = datawire.REQUEST.pack(datawire.MAGIC_REQUEST, 1, 0, n)
    body = head + (datawire.INPUT.pack(3, 0, 0, 1, 1) + (1).to_bytes(8, "little")) * n + b"\0" * n
    return datawire.LENGTH.pack(len(body)) + body


def _relay_once(stub, session_id: str, frame: bytes, metadata=()):
    """One frame through a Relay stream; the parsed reply (request_id, status, run_us, payload)."""
    md = tuple(metadata) + ((MD_SESSION_ID, session_id),)
    replies = stub.Relay(iter([pb.RelayFrame(frame=frame)]), metadata=md, timeout=30)
    return datawire.parse_reply(memoryview(next(replies).frame)[datawire.LENGTH.size:], 1 << 20)


def _direct_once(board, session, frame: bytes):
    """One frame through a direct data connection; the parsed reply."""
    with socket.create_connection(("127.0.0.1", board.data_port)) as s:
        s.sendall(datawire.encode_hello(session.id, session._secret))
        assert datawire.read_hello_reply(s)[0] == 0
        s.sendall(frame)
        return datawire.parse_reply(datawire.read_frame(s, 1 << 22), 1 << 20)


def _code(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


# -- sessions belong to their client ----------------------------------------------------------------------------------
def test_another_clients_session_answers_as_if_it_did_not_exist(shared, conv_model):
    with Board.connect(shared.address) as victim, Board.connect(shared.address) as attacker:
        session = victim.load_model(conv_model[0])
        session.run([X], formats=["nchw"])
        channel, stub = _raw(shared.address)
        md = ((MD_CLIENT_ID, attacker.client_id),)
        request = pb.SessionRequest(session_id=session.id)
        missing = _code(lambda: stub.GetPerfRun(pb.SessionRequest(session_id="0" * 16), metadata=md, timeout=10))
        run = _frame(datawire.encode_request(1, [(0, 1, False, (1, 3, 8, 8), X)], False))
        attacks = {
            "GetDumps": lambda m: list(stub.GetDumps(pb.DumpsRequest(session_id=session.id), metadata=m,
                                                     timeout=10)),
            "Relay": lambda m: _relay_once(stub, session.id, run, m),
            "CloseSession": lambda m: stub.CloseSession(request, metadata=m, timeout=10),
            "GetPerf": lambda m: stub.GetPerf(request, metadata=m, timeout=10),
            "GetMemory": lambda m: stub.GetMemory(request, metadata=m, timeout=10),
            "GetSdkVersion": lambda m: stub.GetSdkVersion(request, metadata=m, timeout=10),
        }
        for name, attack in attacks.items():
            err = _code(lambda: attack(md))  # noqa: B023 - called at once
            assert err.code() == grpc.StatusCode.NOT_FOUND, (name, err)
            assert err.details().replace(session.id, "0" * 16) == missing.details(), name
            err = _code(lambda: attack(()))  # noqa: B023 - no Hello at all: nothing about the session either
            assert err.code() == grpc.StatusCode.NOT_FOUND, (name, err)
        channel.close()
        assert session.run([X], formats=["nchw"])[0].shape == (1, 4, 8, 8)  # the victim's session is intact
        session.perf_run_us()
        session.close()


def test_stats_list_only_the_callers_sessions(shared, conv_model):
    with Board.connect(shared.address) as victim, Board.connect(shared.address) as other:
        session = victim.load_model(conv_model[0])
        assert [s["session_id"] for s in victim.stats()["sessions"]] == [session.id]
        assert other.stats()["sessions"] == []
        everything = other.stats(shared.operator_token)["sessions"]
        assert session.id in {s["session_id"] for s in everything}
        with pytest.raises(BoardError, match="wrong operator token") as info:
            other.stats("not-the-token")
        assert info.value.status == grpc.StatusCode.PERMISSION_DENIED
        session.close()


def test_no_session_without_an_owner(shared, conv_model):
    with Board.connect(shared.address) as board:
        sha = board.upload_model(conv_model[0])
        before = board.stats(shared.operator_token)["sessions_open"]
    channel, stub = _raw(shared.address)
    with channel:
        err = _code(lambda: stub.CreateSession(pb.CreateSessionRequest(model_sha256=sha), timeout=10))
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and "call Hello first" in err.details()
        forged = pb.CreateSessionRequest(client_id="f" * 32, model_sha256=sha)
        assert _code(lambda: stub.CreateSession(forged, timeout=10)).code() == grpc.StatusCode.FAILED_PRECONDITION
    with Board.connect(shared.address) as board:
        assert board.stats(shared.operator_token)["sessions_open"] == before


def test_a_model_hash_alone_does_not_run_another_clients_model(shared):
    model = sim_models.conv_relu_model(seed=77)[0]
    sha = hashlib.sha256(model).hexdigest()
    with Board.connect(shared.address) as victim, Board.connect(shared.address) as attacker:
        victim.load_model(model)
        channel, stub = _raw(shared.address)
        md = ((MD_CLIENT_ID, attacker.client_id),)
        with channel:
            for proof in (b"", hmac.new(victim.client_id.encode(), model, hashlib.sha256).digest(), b"x" * 32):
                request = pb.CreateSessionRequest(model_sha256=sha, model_proof=proof)
                err = _code(lambda: stub.CreateSession(request, metadata=md, timeout=10))  # noqa: B023
                assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and "not in the board's cache" in err.details()
            upload = stub.UploadModel(iter([pb.ModelChunk(sha256=sha, total_size=len(model), data=b"")]),
                                      metadata=md, timeout=10)
            assert upload.already_present  # present, but still not the attacker's to run:
            err = _code(lambda: stub.CreateSession(pb.CreateSessionRequest(model_sha256=sha), metadata=md, timeout=10))
            assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
        with Board.connect(shared.address) as holder:  # a client with the bytes proves it; nothing re-sent
            holder.load_model(model).run([X], formats=["nchw"])
            assert holder.model_bytes_sent == 0


# -- inputs are capped before anything is allocated ----------------------------------------------------------------
@pytest.mark.parametrize("carrier", ["relay", "direct"])
def test_a_million_empty_tensors_fail_clearly_and_memory_stays_bounded(shared, conv_model, carrier):
    """8 MB of empty tensor headers (4 M entries) used to grow the daemon by GBs on the gRPC path."""
    with Board.connect(shared.address) as board, Board.connect(shared.address) as bystander:
        session = board.load_model(conv_model[0])
        other = bystander.load_model(conv_model[0])
        head = datawire.REQUEST.pack(datawire.MAGIC_REQUEST, 1, 0, 4_000_000)
        body = head + bytes(2 * 4_000_000)  # claims 4 M inputs, then 8 MB of zeroed headers
        attack = datawire.LENGTH.pack(len(body)) + body
        channel, stub = _raw(shared.address)
        worker = psutil.Process(next(s["worker_pid"] for s in board.stats()["sessions"]))
        before, worker_before = _rss(shared), worker.memory_info().rss
        with channel:
            for _ in range(3):
                if carrier == "relay":
                    _rid, status, _us, (_name, text) = _relay_once(stub, session.id, attack, board._metadata)
                else:
                    _rid, status, _us, (_name, text) = _direct_once(board, session, attack)
                assert status != 0 and "4000000 inputs (at most 256)" in text
        growth = _rss(shared) - before
        assert growth < 96 << 20, f"daemon RSS grew by {growth >> 20} MiB"
        assert worker.memory_info().rss - worker_before < 96 << 20
        assert other.run([X], formats=["nchw"])[0].shape == (1, 4, 8, 8)
        assert session.run([X], formats=["nchw"])[0].shape == (1, 4, 8, 8)


@pytest.mark.parametrize("carrier", ["relay", "direct"])
def test_more_than_4096_inputs_is_a_clear_error_not_a_worker_exit(shared, conv_model, carrier):
    with Board.connect(shared.address) as board:
        session = board.load_model(conv_model[0])
        pid = next(s["worker_pid"] for s in board.stats()["sessions"])
        with pytest.raises(ValueError, match="at most 256"):  # the client refuses it locally
            session.run([np.zeros(1, np.uint8)] * 5000)
        attack = _many_inputs_frame(5000)
        if carrier == "relay":
            channel, stub = _raw(shared.address)
            with channel:
                _rid, status, _us, (_name, text) = _relay_once(stub, session.id, attack, board._metadata)
        else:
            _rid, status, _us, (_name, text) = _direct_once(board, session, attack)
        assert status != 0 and "at most 256" in text
        assert session.run([X], formats=["nchw"])[0].shape == (1, 4, 8, 8)  # same session, same worker
        assert next(s["worker_pid"] for s in board.stats()["sessions"]) == pid


def test_a_relay_message_that_is_not_one_frame_is_refused(shared, conv_model):
    with Board.connect(shared.address) as board:
        session = board.load_model(conv_model[0])
        channel, stub = _raw(shared.address)
        with channel:
            err = _code(lambda: _relay_once(stub, session.id, b"not a frame at all", board._metadata))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "exactly one data-plane frame" in err.details()
        assert session.run([X], formats=["nchw"])[0].shape == (1, 4, 8, 8)


def test_idle_relay_streams_are_limited_per_client_and_cut(shared, conv_model):
    """A client holds at most 3 long-lived calls; idle relay streams are cancelled after --idle-timeout (2 s)."""
    stop = threading.Event()
    with Board.connect(shared.address) as board, Board.connect(shared.address, use_data_channel=False) as bystander:
        session = board.load_model(conv_model[0])
        relayed = bystander.load_model(conv_model[0])
        assert relayed.carrier == "relay" and relayed.run([X], formats=["nchw"])[0].shape == (1, 4, 8, 8)
        channel, stub = _raw(shared.address)
        md = board._metadata + ((MD_SESSION_ID, session.id),)

        def silent():
            stop.wait(30)
            return
            yield

        try:
            streams = [stub.Relay(silent(), metadata=md) for _ in range(4)]
            codes = []
            start = time.monotonic()
            for call in streams:
                with pytest.raises(grpc.RpcError) as info:
                    next(call)
                codes.append(info.value.code())
            assert sorted(c.name for c in codes) == ["CANCELLED"] * 3 + ["RESOURCE_EXHAUSTED"], codes
            assert time.monotonic() - start < 25  # cut by the idle limit, long before the streams' own 30 s
            # The bystander's kept relay was cut by the idle limit too: run() opens a new one by itself.
            assert relayed.run([X], formats=["nchw"])[0].shape == (1, 4, 8, 8)
            assert session.run([X], formats=["nchw"])[0].shape == (1, 4, 8, 8)
        finally:
            stop.set()
            channel.close()


# -- connection slots and limits ---------------------------------------------------------------------------------------
def test_hellos_without_watch_expire(shared):
    """Hello without Watch used to hold a client slot forever: 48 of them locked every later client out."""
    channel, stub = _raw(shared.address)
    with channel:
        filled = 0
        with pytest.raises(grpc.RpcError) as info:
            for _ in range(100):
                _hello(stub)
                filled += 1
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "connected clients" in info.value.details()
    assert filled >= 40
    deadline = time.monotonic() + 60  # --client-grace 1: the watchdog forgets them (generous: a loaded CI machine)
    while True:
        try:
            with Board.connect(shared.address) as board:
                assert board.load_model(sim_models.conv_relu_model(seed=3)[0]).run([X], formats=["nchw"])
                break
        except BoardError as exc:
            assert "connected clients" in str(exc)
            assert time.monotonic() < deadline, "clients that never watch were not forgotten"
            time.sleep(0.5)


def test_concurrent_create_session_is_bounded_by_max_sessions(shared, conv_model):
    model = conv_model[0]
    with Board.connect(shared.address) as board:
        sha = board.upload_model(model)
        proof = hmac.new(board.client_id.encode(), model, hashlib.sha256).digest()
        channel, stub = _raw(shared.address)

        def create(_):
            try:
                return stub.CreateSession(pb.CreateSessionRequest(model_sha256=sha, model_proof=proof),
                                          metadata=board._metadata, timeout=120).session_id
            except grpc.RpcError as exc:
                return exc

        with channel, ThreadPoolExecutor(120) as pool:
            results = list(pool.map(create, range(120)))
        created = [r for r in results if isinstance(r, str)]
        refused = [r for r in results if not isinstance(r, str)]
        assert len(created) == 16, [r for r in refused if r.code() != grpc.StatusCode.RESOURCE_EXHAUSTED][:3]
        assert all(r.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "--max-sessions 16" in r.details()
                   for r in refused)
        assert len(board.stats(shared.operator_token)["sessions"]) == 16
    deadline = time.monotonic() + 20  # the board's close freed them
    with Board.connect(shared.address) as probe:
        while probe.stats(shared.operator_token)["sessions_open"] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert probe.stats(shared.operator_token)["sessions_open"] == 0


# -- long-lived calls --------------------------------------------------------------------------------------------------
def test_idle_streams_cannot_starve_other_clients(shared, conv_model):
    """40 clients each hold a Watch and as many stalled uploads as they may (160 long-lived calls, more than
    the 128 RPC threads that used to be the whole pool); a bystander still works, the stalls are cancelled."""
    stop = threading.Event()
    channel, stub = _raw(shared.address)
    refusals = []

    def stalled_chunks(n):
        yield pb.ModelChunk(sha256=hashlib.sha256(b"stall %d" % n).hexdigest(), total_size=1 << 20, data=b"x")
        stop.wait(30)

    calls = []
    watches = []
    for c in range(40):
        cid = _hello(stub)
        watch = stub.Watch(pb.WatchRequest(client_id=cid))
        next(watch)
        watches.append(watch)
        md = ((MD_CLIENT_ID, cid),)
        for n in range(4):
            calls.append(stub.UploadModel.future(stalled_chunks(c * 10 + n), metadata=md))
    try:
        time.sleep(0.5)
        with Board.connect(shared.address) as bystander:
            start = time.monotonic()
            session = bystander.load_model(sim_models.conv_relu_model(seed=41)[0])
            assert session.run([X], formats=["nchw"])[0].shape == (1, 4, 8, 8)
            assert time.monotonic() - start < 45  # served while the stalled uploads still hold their calls
            aborted_before = bystander.stats()["uploads_aborted"]
        for call in calls:  # the 4th of each client: refused at once; the others: cancelled when idle (2 s)
            try:
                call.result(timeout=15)
            except grpc.RpcError as exc:
                refusals.append(exc.code())
        assert refusals.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 40
        assert refusals.count(grpc.StatusCode.CANCELLED) == 120
        with Board.connect(shared.address) as board:
            assert board.stats()["uploads_aborted"] >= aborted_before
    finally:
        stop.set()
        for watch in watches:
            watch.cancel()
        channel.close()


def test_a_full_server_says_busy_not_lost():
    """gRPC's concurrent-call cap (which the daemon sets) answers RESOURCE_EXHAUSTED; the client explains it."""
    from concurrent import futures

    from rknnlink.client.errors import translate

    release, entered = threading.Event(), threading.Event()

    def slow(_request, _context):
        entered.set()
        release.wait(30)
        return b""

    server = grpc.server(futures.ThreadPoolExecutor(2), maximum_concurrent_rpcs=1)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.T", {
        "Slow": grpc.unary_unary_rpc_method_handler(slow)}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary("/t.T/Slow")
            first = call.future(b"")
            assert entered.wait(60), "the first call never reached the server"
            with pytest.raises(grpc.RpcError) as info:
                call(b"", timeout=5)
            err = translate(info.value, f"127.0.0.1:{port}")
            assert isinstance(err, BoardError) and "is busy" in str(err) and "lost" not in str(err)
            release.set()
            first.result()
    finally:
        server.stop(0)


# -- client strings ----------------------------------------------------------------------------------------------------
def test_a_huge_hello_is_bounded_and_escaped_in_the_log(shared):
    channel, stub = _raw(shared.address)
    log_path = Path(shared.workdir.name) / "daemon.log"
    size_before = log_path.stat().st_size
    name = "x" * 1000 + "\n2026-01-01 00:00:00 E forged line" + "y" * (60 << 20)

    def hello() -> None:
        stub.Hello(pb.HelloRequest(protocol_version=PROTOCOL_VERSION, client_name=name,
                                   client_version="1\r\nforged"), timeout=30)

    with channel:
        # gRPC itself must hold one 60 MB message while it arrives, and whether the allocator gives that back
        # at once is its business (a CI run kept 70 MiB, a loaded run here 68 MiB more after the first): the
        # first Hello pays for it, and up to one more such buffer may stay. A daemon that kept the names would
        # grow by 60 MB with each further Hello (240 MB over four); one that bounds them reuses the memory.
        hello()
        rss_before = _rss(shared)
        for _ in range(4):
            hello()
    time.sleep(0.3)
    text = log_path.read_text(errors="replace")[size_before:]
    assert log_path.stat().st_size - size_before < 4 * 4096
    assert not any(line.startswith("2026-01-01") or line.startswith("forged") for line in text.splitlines())
    growth = _rss(shared) - rss_before
    assert growth < 128 << 20, f"daemon RSS grew by {growth >> 20} MiB over four more 60 MB Hellos"


# -- the data channel's handshake --------------------------------------------------------------------------------------
def test_trickling_data_handshakes_are_cut_at_an_absolute_deadline(shared, conv_model):
    with Board.connect(shared.address) as board:
        port = board.data_port
        socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(40)]
        start = time.monotonic()
        closed_at = {}
        while len(closed_at) < len(socks) and time.monotonic() - start < 30:
            for i, s in enumerate(socks):
                if i in closed_at:
                    continue
                try:
                    s.send(b"R")  # one byte at a time: a per-recv timeout would never fire
                    s.settimeout(0.01)
                    if s.recv(4096) == b"":
                        closed_at[i] = time.monotonic() - start
                except socket.timeout:
                    pass
                except OSError:
                    closed_at[i] = time.monotonic() - start
            time.sleep(0.2)
        for s in socks:
            s.close()
        # An absolute 5 s deadline closes them all; a per-recv timeout would keep every trickling socket open.
        assert len(closed_at) == 40 and max(closed_at.values()) < 20.0, closed_at
        session = board.load_model(conv_model[0])
        assert session.run([X], formats=["nchw"])[0].shape == (1, 4, 8, 8)
        assert session.uses_data_channel


# -- the client trusts no reply ----------------------------------------------------------------------------------------
def _fake_worker(reply: bytes):
    """A data port that accepts the hello and answers the first request with `reply` (a hostile daemon)."""
    from rknnlink.v1 import datawire

    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        conn, _ = listener.accept()
        with conn:
            datawire.read_hello(conn)
            conn.sendall(datawire.encode_hello_reply(0, "attached"))
            datawire.parse_request(datawire.read_frame(conn, 1 << 20))
            conn.sendall(reply)
            time.sleep(0.5)

    threading.Thread(target=serve, daemon=True).start()
    return listener


@pytest.mark.parametrize("case", ["wrong-id", "huge", "huge-frame"])
def test_the_client_checks_reply_ids_and_sizes(case):
    from rknnlink.client.data import DirectCarrier, Pipeline

    if case == "wrong-id":
        reply = _frame(datawire.encode_reply(7, 1, [(0, [1], np.ones(1, np.float32))]))
        match = "out of step"
    elif case == "huge-frame":
        reply = datawire.LENGTH.pack(1 << 40) + datawire.REPLY.pack(datawire.MAGIC_REPLY, 1, 0, 1, 1)
        match = "a frame of 1099511627776 bytes"
    else:
        body = datawire.REPLY.pack(datawire.MAGIC_REPLY, 1, 0, 1, 1) + datawire.OUTPUT.pack(0, 1, 1 << 40)
        reply = datawire.LENGTH.pack(len(body) + 8) + body + bytes(8)
        match = "more than"
    listener = _fake_worker(reply)
    rss_before = psutil.Process().memory_info().rss
    with listener:
        carrier = DirectCarrier(listener.getsockname(), "s", b"k")
        pipe = Pipeline(carrier, 1, lambda x, *_: ([(0, 0, False, (1,), x)], False), lambda: 1, 1 << 20,
                        on_lost=lambda exc: exc)
        with pytest.raises(datawire.FrameError, match=match):
            pipe.run(np.ones(1, np.float32))
        assert pipe.closed and carrier.closed
    assert psutil.Process().memory_info().rss - rss_before < 64 << 20


def test_no_data_dial_on_the_hosts_loopback_without_a_forward(shared, conv_model):
    """USB bridge / adb without the data forward: the endpoint says there is no data carrier."""
    from rknnlink.transport import Endpoint

    for kind in ("usb", "adb"):
        kwargs = Endpoint(address=shared.address, kind=kind).connect_kwargs()
        assert kwargs["use_data_channel"] is False
        with Board.connect(shared.address, **kwargs) as board:
            session = board.load_model(conv_model[0])
            assert session.carrier == "relay" and session.run([X], formats=["nchw"])[0].shape == (1, 4, 8, 8)
    with_forward = Endpoint(address=shared.address, kind="adb", data_address="127.0.0.1:1").connect_kwargs()
    assert with_forward["data_address"] == "127.0.0.1:1" and "use_data_channel" not in with_forward


# -- the model cache ---------------------------------------------------------------------------------------------------
def test_a_full_cache_filesystem_is_resource_exhausted_without_paths(sim_library):
    """The daemon runs with a 1 MiB file-size limit (its writes fail with EFBIG, like a full filesystem)."""
    import resource

    from rknnlink.client.local import start_local_daemon

    def limit_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

    d = start_local_daemon(preexec_fn=limit_files)
    try:
        with Board.connect(d.address) as board:
            with pytest.raises(BoardError) as info:
                board.load_model(sim_models.gemm_model()[0])  # 3 MiB
            message = str(info.value)
            assert info.value.status == grpc.StatusCode.RESOURCE_EXHAUSTED and "out of space" in message
            assert d.workdir.name not in message and ".part" not in message and "Errno" not in message
            cache = Path(d.workdir.name) / "cache"
            assert not list(cache.glob(".upload-*"))
            session = board.load_model(sim_models.conv_relu_model(seed=12)[0])  # small models still work
            assert session.run([X], formats=["nchw"])[0].shape == (1, 4, 8, 8)
    finally:
        d.stop()
