"""The TLS data port: next to a TLS gRPC listener the daemon offers its data port with the same certificate;
a plaintext routing preamble names the session, the daemon hands the raw connection to that session's
worker, and the worker ends TLS itself. Protections hold there as on the other carriers: ownership (another
client's session cannot be reached), per-session connection limits, frame caps checked before allocation,
handshakes with an absolute deadline, fail closed (no plain text, no certificate the client does not trust)."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import struct
import threading
import time

import numpy as np
import pytest
import sim_models

from rknnlink.client import Board, SessionLostError
from rknnlink.runtime import RuntimeLibrary
from rknnlink.transport import Endpoint
from rknnlink.v1 import dataroute, datawire

X = np.ones((1, 3, 8, 8), np.float32)


@pytest.fixture(scope="module")
def tls_daemon(sim_library, tmp_path_factory):
    pytest.importorskip("cryptography")
    from rknnlink_server import tls
    from rknnlink_server.server import Daemon, DaemonConfig

    state = tmp_path_factory.mktemp("tls")
    cert, key = tls.generate_self_signed("rknnlink-TLSDATA", ["127.0.0.1"])
    (state / "cert.pem").write_bytes(cert)
    (state / "key.pem").write_bytes(key)
    config = DaemonConfig(listen="127.0.0.1:0", backend="sim", platform="rk3588", library=sim_library,
                          cache_dir=state / "cache")
    daemon = Daemon(config, server_credentials=tls.server_credentials(cert, key),
                    data_tls=tls.data_port_context(state / "cert.pem", state / "key.pem")).start()
    daemon.cert = cert
    yield daemon
    daemon.stop()


def _board(daemon, **kwargs) -> Board:
    endpoint = Endpoint(address=daemon.address, kind="tcp", tls_root_cert=daemon.cert)
    return Board.connect(daemon.address, timeout=10, **{**endpoint.connect_kwargs(), **kwargs})


def test_runs_and_pipelines_over_the_tls_data_port(tls_daemon):
    model = sim_models.conv_relu_model()
    with _board(tls_daemon) as board:
        assert board.data_port == tls_daemon.data_listener.port
        session = board.load_model(model[0])
        assert session.carrier == "tls"
        first = session.run([X], formats=["nchw"])[0]
        assert session._link.carrier.kind == "tls" and first.shape == (1, 4, 8, 8)
        with session.pipeline(depth=3) as pipe:
            outs = list(pipe.map([[X * i] for i in range(8)], formats=["nchw"]))
        assert len(outs) == 8 and np.allclose(outs[1][0], first)
    with _board(tls_daemon, data_tls=None) as board:  # no TLS context for the data port: the gRPC relay
        relayed = board.load_model(model[0])
        assert relayed.carrier == "relay" and np.allclose(relayed.run([X], formats=["nchw"])[0], first)


def _tls_connect(daemon, session_id: str) -> ssl.SSLSocket:
    """A TLS data connection routed to `session_id` (the plaintext preamble, then TLS), as the client makes it."""
    context = ssl.create_default_context(cadata=daemon.cert.decode())
    raw = socket.create_connection(("127.0.0.1", daemon.data_listener.port), timeout=10)
    raw.sendall(dataroute.encode_route(session_id))
    return context.wrap_socket(raw, server_hostname="127.0.0.1")


def test_plain_text_and_untrusted_clients_are_refused(tls_daemon):
    with socket.create_connection(("127.0.0.1", tls_daemon.data_listener.port), timeout=10) as plain:
        plain.sendall(datawire.encode_hello("whatever", b"x" * 32))  # not a TLS ClientHello
        with pytest.raises((OSError, datawire.FrameError, datawire.PeerClosedError)):  # never a hello reply
            datawire.read_hello_reply(plain)
    untrusted = ssl.create_default_context()  # the system roots: the self-signed certificate fails
    with socket.create_connection(("127.0.0.1", tls_daemon.data_listener.port), timeout=10) as raw:
        with pytest.raises(ssl.SSLCertVerificationError):
            untrusted.wrap_socket(raw, server_hostname="127.0.0.1")


def test_another_clients_session_is_unreachable_and_limits_hold(tls_daemon):
    model = sim_models.conv_relu_model()
    with _board(tls_daemon) as owner, _board(tls_daemon) as other:
        session = owner.load_model(model[0])
        with _tls_connect(tls_daemon, session.id) as sock:  # the id alone, without the owner's secret
            sock.sendall(datawire.encode_hello(session.id, b"\0" * 32))
            status, message = datawire.read_hello_reply(sock)
        assert status == datawire.REFUSED and "wrong secret" in message
        assert other.load_model(model[0]).run([X], formats=["nchw"])[0].shape == (1, 4, 8, 8)
        # three data connections per session at most (a pipeline each); the fourth is refused clearly
        pipes = [session.pipeline(depth=1) for _ in range(2)]  # + run()'s kept carrier below
        session.run([X], formats=["nchw"])
        with _tls_connect(tls_daemon, session.id) as sock:
            sock.sendall(datawire.encode_hello(session.id, session._secret))
            status, message = datawire.read_hello_reply(sock)
        assert status == datawire.REFUSED and "already has 3 data connections" in message
        for pipe in pipes:
            pipe.close()
        # a closed pipeline frees its slot once the worker has ended it; then a frame announcing more than
        # the cap is refused by the worker before it allocates, and the session lives on
        deadline = time.monotonic() + 10
        while True:
            sock = _tls_connect(tls_daemon, session.id)
            sock.sendall(datawire.encode_hello(session.id, session._secret))
            status, message = datawire.read_hello_reply(sock)
            if status == 0 or time.monotonic() > deadline:
                break
            sock.close()
            time.sleep(0.1)
        assert status == 0, message
        with sock:
            sock.sendall(struct.pack("<Q", 1 << 40))
            body = datawire.FrameReader(sock).read(1 << 20)
            rid, status, _us, payload = datawire.parse_reply(body, 1 << 20)
            assert rid == 0 and status != 0 and "frame" in payload[1]
        assert session.run([X], formats=["nchw"])[0].shape == (1, 4, 8, 8)


def test_an_idle_tls_data_connection_is_closed(sim_library, tmp_path):
    """Nothing moving for --idle-timeout + --call-timeout seconds (here 1 + 1) closes a pumped connection;
    the session serves new ones."""
    from rknnlink_server import tls
    from rknnlink_server.server import Daemon, DaemonConfig

    cert, key = tls.generate_self_signed("rknnlink-TLSIDLE", ["127.0.0.1"])
    (tmp_path / "cert.pem").write_bytes(cert)
    (tmp_path / "key.pem").write_bytes(key)
    config = DaemonConfig(listen="127.0.0.1:0", backend="sim", platform="rk3588", library=sim_library,
                          cache_dir=tmp_path / "cache", idle_timeout=1.0, call_timeout=1.0)
    daemon = Daemon(config, server_credentials=tls.server_credentials(cert, key),
                    data_tls=tls.data_port_context(tmp_path / "cert.pem", tmp_path / "key.pem")).start()
    daemon.cert = cert
    try:
        with _board(daemon) as board:
            session = board.load_model(sim_models.conv_relu_model()[0])
            with _tls_connect(daemon, session.id) as sock:
                sock.sendall(datawire.encode_hello(session.id, session._secret))
                assert datawire.read_hello_reply(sock)[0] == 0
                start = time.monotonic()
                sock.settimeout(60)
                assert sock.recv(1) == b""  # closed by the worker, not by this side (nor by its timeout)
                assert time.monotonic() - start > 1.5
            assert session.run([X], formats=["nchw"])[0].shape == (1, 4, 8, 8)
    finally:
        daemon.stop()


def test_outputs_are_bit_identical_to_in_process_and_the_daemon_holds_no_copy(tls_daemon, sim_library):
    """Several inputs, run() and a pipeline, against RuntimeContext.infer in this process; the worker, not
    the daemon, ends TLS (the daemon process has no TCP connection to the client's port)."""
    model = sim_models.conv_relu_model(seed=3)[0]
    rng = np.random.default_rng(1)
    inputs = [rng.standard_normal((1, 3, 8, 8)).astype(np.float32) for _ in range(6)]
    with RuntimeLibrary.load(path=sim_library, backend="sim").init(model) as ctx, _board(tls_daemon) as board:
        expected = [ctx.infer([x], ["nchw"])[0] for x in inputs]
        session = board.load_model(model)
        assert session.carrier == "tls"
        for x, want in zip(inputs, expected):
            got = session.run([x], formats=["nchw"])[0]
            assert got.dtype == want.dtype and got.tobytes() == want.tobytes()
        with session.pipeline(depth=3) as pipe:
            piped = list(pipe.map([[x] for x in inputs], formats=["nchw"]))
        assert [p[0].tobytes() for p in piped] == [w.tobytes() for w in expected]
        client_port = session._link.carrier.sock.getsockname()[1]
        conns = _tcp_peers_of(os.getpid(), tls_daemon.data_listener.port)
        assert client_port not in conns, "the daemon still holds the client's connection"


def _tcp_peers_of(pid: int, local_port: int) -> set:
    """Remote ports of the established TCP connections on `local_port` whose socket `pid` holds open."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    peers = set()
    for line in open("/proc/net/tcp").read().splitlines()[1:]:  # noqa: SIM115 - read whole at once
        fields = line.split()
        local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
        if state == "01" and int(local.split(":")[1], 16) == local_port and inode in inodes:
            peers.add(int(remote.split(":")[1], 16))
    return peers


def test_an_unknown_session_or_a_client_without_preamble_is_refused_inside_tls(tls_daemon):
    with _tls_connect(tls_daemon, "no-such-session") as sock:
        sock.sendall(datawire.encode_hello("no-such-session", b"\0" * 32))
        status, message = datawire.read_hello_reply(sock)
    assert status == datawire.REFUSED and "unknown session" in message
    context = ssl.create_default_context(cadata=tls_daemon.cert.decode())  # TLS at once: an older client
    with context.wrap_socket(socket.create_connection(("127.0.0.1", tls_daemon.data_listener.port), timeout=10),
                             server_hostname="127.0.0.1") as sock:
        sock.sendall(datawire.encode_hello("whatever", b"\0" * 32))
        status, message = datawire.read_hello_reply(sock)
    assert status == datawire.REFUSED and "routing preamble" in message and "update" in message


def _closed_by_peer(sock: socket.socket) -> bool:
    """True when the peer closes (or resets) `sock` within a generous minute; never asserts a duration."""
    sock.settimeout(60)
    try:
        return sock.recv(1 << 16) == b""
    except ConnectionResetError:
        return True


def test_a_trickling_handshake_is_cut_by_its_deadline_and_the_session_serves_on(tls_daemon):
    """One byte per 0.4 s: of the preamble (the daemon's deadline), and of a ClientHello after it (the
    worker's): both connections are cut however the bytes keep coming, and the session keeps serving."""
    model = sim_models.conv_relu_model()[0]
    with _board(tls_daemon) as board:
        session = board.load_model(model)
        # a real ClientHello's bytes, captured from an in-memory handshake
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        client = ssl.create_default_context(cadata=tls_daemon.cert.decode()).wrap_bio(
            incoming, outgoing, server_hostname="127.0.0.1")
        with pytest.raises(ssl.SSLWantReadError):
            client.do_handshake()
        hello = outgoing.read()
        for prefix, trickled in ((b"", dataroute.encode_route(session.id)),
                                 (dataroute.encode_route(session.id), hello)):
            sock = socket.create_connection(("127.0.0.1", tls_daemon.data_listener.port), timeout=10)
            sock.sendall(prefix)
            stop = threading.Event()

            def trickle(data: bytes = trickled, sock: socket.socket = sock, stop: threading.Event = stop) -> None:
                for i in range(len(data)):
                    if stop.wait(0.4):
                        return
                    try:
                        sock.send(data[i:i + 1])
                    except OSError:
                        return

            thread = threading.Thread(target=trickle, daemon=True)
            thread.start()
            try:
                assert _closed_by_peer(sock)
            finally:
                stop.set()
                thread.join(10)
                sock.close()
            assert session.run([X], formats=["nchw"])[0].shape == (1, 4, 8, 8)


def test_a_plain_hello_on_the_tls_port_gets_nothing_and_the_session_serves_on(tls_daemon):
    model = sim_models.conv_relu_model()[0]
    with _board(tls_daemon) as board:
        session = board.load_model(model)
        for first in (datawire.encode_hello(session.id, session._secret),       # no preamble, no TLS
                      dataroute.encode_route(session.id) + datawire.encode_hello(session.id, session._secret)):
            with socket.create_connection(("127.0.0.1", tls_daemon.data_listener.port), timeout=10) as plain:
                plain.sendall(first)
                assert _closed_by_peer(plain)  # never a plaintext hello reply, never a frame
        assert session.run([X], formats=["nchw"])[0].shape == (1, 4, 8, 8)


def test_worker_killed_mid_frame_ends_the_connection_and_the_session_is_reported_lost(tls_daemon):
    model = sim_models.conv_relu_model()[0]
    with _board(tls_daemon) as board:
        session = board.load_model(model)
        assert session.run([X], formats=["nchw"])[0].shape == (1, 4, 8, 8)
        pid = next(s["worker_pid"] for s in board.stats()["sessions"] if s["session_id"] == session.id)
        sock = _tls_connect(tls_daemon, session.id)
        sock.sendall(datawire.encode_hello(session.id, session._secret))
        assert datawire.read_hello_reply(sock)[0] == 0
        sock.sendall(struct.pack("<Q", 1 << 20) + b"\0" * 1000)  # the start of a frame the worker waits for
        os.kill(pid, signal.SIGKILL)
        with sock:
            sock.settimeout(60)
            with pytest.raises((OSError, datawire.PeerClosedError)):
                if not sock.recv(1):
                    raise datawire.PeerClosedError("closed")
        with pytest.raises(SessionLostError, match=r"crashed \(signal 9\)"):
            session.run([X], formats=["nchw"])
        assert board.load_model(model).run([X], formats=["nchw"])[0].shape == (1, 4, 8, 8)


def _tls_frame_once(daemon, session, frame: bytes):
    """One frame over a TLS data connection of `session` (preamble, TLS, hello); the parsed reply."""
    with _tls_connect(daemon, session.id) as s:
        s.sendall(datawire.encode_hello(session.id, session._secret))
        assert datawire.read_hello_reply(s)[0] == 0
        s.sendall(frame)
        return datawire.parse_reply(datawire.FrameReader(s).read(1 << 22), 1 << 20)


@pytest.mark.parametrize("attack", ["a million empty tensors", "5000 inputs"])
def test_input_caps_hold_over_tls_before_anything_is_allocated(tls_daemon, attack):
    """The data channel's caps (inputs, dims, bytes) hold where the worker ends TLS: a clear error reply, the
    worker's memory bounded (measured), the same session and worker serve on."""
    psutil = pytest.importorskip("psutil")
    if attack == "5000 inputs":  # correctly framed, each input one byte
        body = datawire.REQUEST.pack(datawire.MAGIC_REQUEST, 1, 0, 5000)
        body += (datawire.INPUT.pack(3, 0, 0, 1, 1) + (1).to_bytes(8, "little")) * 5000 + b"\0" * 5000
    else:  # claims 4 M inputs, then 8 MB of zeroed headers
        body = datawire.REQUEST.pack(datawire.MAGIC_REQUEST, 1, 0, 4_000_000) + bytes(2 * 4_000_000)
    frame = datawire.LENGTH.pack(len(body)) + body
    with _board(tls_daemon) as board:
        session = board.load_model(sim_models.conv_relu_model()[0])
        assert session.run([X], formats=["nchw"])[0].shape == (1, 4, 8, 8) and session.carrier == "tls"
        pid = next(s["worker_pid"] for s in board.stats()["sessions"] if s["session_id"] == session.id)
        worker = psutil.Process(pid)
        before = worker.memory_info().rss
        for _ in range(3):
            _rid, status, _us, (_name, text) = _tls_frame_once(tls_daemon, session, frame)
            assert status != 0 and "at most 256" in text
        assert worker.memory_info().rss - before < 96 << 20
        assert session.run([X], formats=["nchw"])[0].shape == (1, 4, 8, 8)
        assert next(s["worker_pid"] for s in board.stats()["sessions"] if s["session_id"] == session.id) == pid
