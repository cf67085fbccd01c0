"""rknnlink.v1.tlsstream, the data plane's TLS through memory BIOs: interoperates with ssl.SSLSocket, carries
frames both ways while one thread reads and another writes on the same connection (the worker's reader and
replying threads), reports the peer's close as a socket does, and a receive timeout as BlockingIOError."""

from __future__ import annotations

import hashlib
import socket
import ssl
import struct
import threading

import pytest

from rknnlink.v1 import datawire
from rknnlink.v1.tlsstream import TlsStream


@pytest.fixture(scope="module")
def contexts(tmp_path_factory):
    pytest.importorskip("cryptography")
    from rknnlink_server import tls

    state = tmp_path_factory.mktemp("tlsstream")
    cert, key = tls.generate_self_signed("rknnlink-tlsstream", ["127.0.0.1"])
    (state / "c.pem").write_bytes(cert)
    (state / "k.pem").write_bytes(key)
    server = tls.data_port_context(state / "c.pem", state / "k.pem")
    client = ssl.create_default_context(cadata=cert.decode())
    return server, client


def _pair():
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname(), timeout=30)
    server, _ = listener.accept()
    listener.close()
    server.settimeout(30)
    return server, client


def _connect(contexts, stream_server: bool = True, stream_client: bool = True):
    server_ctx, client_ctx = contexts
    raw_server, raw_client = _pair()
    result = {}

    def accept() -> None:
        if stream_server:
            result["server"] = TlsStream(raw_server, server_ctx, server_side=True).handshake()
        else:
            result["server"] = server_ctx.wrap_socket(raw_server, server_side=True)

    thread = threading.Thread(target=accept)
    thread.start()
    if stream_client:
        client = TlsStream(raw_client, client_ctx, False, "127.0.0.1").handshake()
    else:
        client = client_ctx.wrap_socket(raw_client, server_hostname="127.0.0.1")
    thread.join(30)
    return result["server"], client


@pytest.mark.parametrize("ends", [(True, True), (True, False), (False, True)], ids=["both", "server", "client"])
def test_frames_cross_both_ways_with_a_reader_and_a_writer_thread_per_tls_stream_end(contexts, ends):
    server, client = _connect(contexts, *ends)
    sizes = [1, 5000, 16384, 150528, 1 << 20, 3]
    payloads = [hashlib.sha256(str(i).encode()).digest() * (size // 32 + 1) for i, size in enumerate(sizes)]
    payloads = [p[:size] for p, size in zip(payloads, sizes)]
    received = {"server": [], "client": []}

    def send_all(sock) -> None:
        for p in payloads:
            parts = [datawire.LENGTH.pack(len(p)), p]
            if isinstance(sock, TlsStream):
                datawire.send_parts(sock, parts)
            else:
                sock.sendall(b"".join(parts))

    def read_all(sock, name) -> None:
        reader = datawire.FrameReader(sock)
        for _ in payloads:
            received[name].append(bytes(reader.read(1 << 21)))

    def send_then_read(sock, name) -> None:
        send_all(sock)
        read_all(sock, name)

    # A TlsStream end gets a reader and a writer thread (what the worker and the client do with it). A plain
    # SSLSocket end must not: two threads in one SSL object at once is not allowed by OpenSSL (it failed
    # intermittently in CI), so that end sends everything and then reads, which the TlsStream end allows
    # because its reader keeps draining while its writer waits.
    threads = []
    for sock, name in ((server, "server"), (client, "client")):
        if isinstance(sock, TlsStream):
            threads += [threading.Thread(target=send_all, args=(sock,)),
                        threading.Thread(target=read_all, args=(sock, name))]
        else:
            threads.append(threading.Thread(target=send_then_read, args=(sock, name)))
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a reader or writer is stuck"
    assert received["server"] == payloads and received["client"] == payloads
    client.close()
    assert server.recv(10) == b""  # the peer's close reads as the end of the stream
    server.close()


def test_a_receive_timeout_is_blocking_io_error_and_the_stream_goes_on(contexts):
    server, client = _connect(contexts)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 0, 200_000))
    client.settimeout(None)
    with pytest.raises(BlockingIOError):
        client.recv_into(bytearray(10))
    server.sendall(b"after")
    assert client.recv(5) == b"after"
    server.close()
    client.close()


def test_an_untrusted_certificate_fails_the_handshake(contexts):
    server_ctx, _ = contexts
    raw_server, raw_client = _pair()
    errors = []

    def accept() -> None:
        try:
            TlsStream(raw_server, server_ctx, True).handshake()
        except (OSError, ssl.SSLError) as exc:  # the client's alert, or its close
            errors.append(exc)

    thread = threading.Thread(target=accept)
    thread.start()
    with pytest.raises(ssl.SSLCertVerificationError):
        TlsStream(raw_client, ssl.create_default_context(), False, "127.0.0.1").handshake()
    raw_client.close()
    thread.join(30)
    raw_server.close()
    assert errors, "the server finished a handshake the client refused"


def test_a_frame_reader_sees_a_next_frame_that_waits_inside_tls(contexts):
    """The worker reads ahead only when it knows a next frame is there: bytes the TLS stream already took
    from the socket (the socket no longer shows them) count as pending."""
    import select

    server, client = _connect(contexts)
    try:
        big, small = bytes(range(256)) * 160, b"next frame"  # 40 KiB: longer than the reader's buffer
        client.sendmsg([datawire.LENGTH.pack(len(big)), big, datawire.LENGTH.pack(len(small)), small])
        reader = datawire.FrameReader(server, size=16 << 10)
        assert bytes(reader.read(1 << 20)) == big
        assert not select.select([server.sock], [], [], 0)[0]  # the socket is drained: the rest is in TLS
        assert reader.pending()
        assert bytes(reader.read(1 << 20)) == small
        assert not reader.pending()
    finally:
        client.close()
        server.close()
