"""The TLS data port: next to a TLS gRPC listener the daemon offers its data port with the same certificate,
ends TLS and pumps the frames to the session's worker. Protections hold there as on the other carriers:
ownership (another client's session cannot be reached), per-session connection limits, frame caps checked
before allocation, fail closed (no plain text, no certificate the client does not trust)."""

from __future__ import annotations

import socket
import ssl
import struct
import time

import numpy as np
import pytest
import sim_models

from rknnlink.client import Board
from rknnlink.transport import Endpoint
from rknnlink.v1 import datawire

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


def _tls_connect(daemon) -> ssl.SSLSocket:
    context = ssl.create_default_context(cadata=daemon.cert.decode())
    raw = socket.create_connection(("127.0.0.1", daemon.data_listener.port), timeout=10)
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
        with _tls_connect(tls_daemon) as sock:  # the id alone, without the owner's secret
            sock.sendall(datawire.encode_hello(session.id, b"\0" * 32))
            status, message = datawire.read_hello_reply(sock)
        assert status == datawire.REFUSED and "wrong secret" in message
        assert other.load_model(model[0]).run([X], formats=["nchw"])[0].shape == (1, 4, 8, 8)
        # three data connections per session at most (a pipeline each); the fourth is refused clearly
        pipes = [session.pipeline(depth=1) for _ in range(2)]  # + run()'s kept carrier below
        session.run([X], formats=["nchw"])
        with _tls_connect(tls_daemon) as sock:
            sock.sendall(datawire.encode_hello(session.id, session._secret))
            status, message = datawire.read_hello_reply(sock)
        assert status == datawire.REFUSED and "already has 3 data connections" in message
        for pipe in pipes:
            pipe.close()
        # a closed pipeline frees its slot once the worker has ended it; then a frame announcing more than
        # the cap is refused by the worker before it allocates, and the session lives on
        deadline = time.monotonic() + 10
        while True:
            sock = _tls_connect(tls_daemon)
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
            with _tls_connect(daemon) as sock:
                sock.sendall(datawire.encode_hello(session.id, session._secret))
                assert datawire.read_hello_reply(sock)[0] == 0
                start = time.monotonic()
                assert sock.recv(1) == b""  # closed by the daemon, not by this side
                assert 1.5 < time.monotonic() - start < 8.0
            assert session.run([X], formats=["nchw"])[0].shape == (1, 4, 8, 8)
    finally:
        daemon.stop()
