"""USB mux framing and flow control on an in-memory pipe pair (no USB, no FIFOs), plus security helpers."""

from __future__ import annotations

import os
import queue
import socket
import struct
import threading
import time
import zlib

import grpc
import pytest

from rknnlink.transport import security
from rknnlink.v1.usbmux import (
    DATA,
    HEADER_SIZE,
    HELLO,
    MAX_PAYLOAD,
    PING,
    FrameDecoder,
    Mux,
    MuxConfig,
    PipeError,
    PipeTimeoutError,
    ProtocolError,
    encode_frame,
)
from rknnlink_server import tls


def test_frames_survive_any_split():
    frames = [encode_frame(DATA, 7, i, os.urandom(i * 997 % MAX_PAYLOAD)) for i in range(20)]
    stream = b"".join(frames)
    for chunk in (1, 3, 20, 4096, len(stream)):
        decoder = FrameDecoder()
        got = []
        for start in range(0, len(stream), chunk):
            got.extend(decoder.feed(stream[start:start + chunk]))
        assert [(f.type, f.channel, f.seq) for f in got] == [(DATA, 7, i) for i in range(20)]
        assert [f.payload for f in got] == [frame[HEADER_SIZE:] for frame in frames]


def test_header_layout_and_crc():
    frame = encode_frame(PING, 0x01020304, 5, b"abc")
    magic, ftype, flags, channel, seq, length, crc = struct.unpack_from("<HBBIIII", frame)
    assert (magic, ftype, flags, channel, seq, length) == (0x4C52, PING, 0, 0x01020304, 5, 3)
    assert crc == zlib.crc32(frame[HEADER_SIZE:], zlib.crc32(frame[:16]))
    with pytest.raises(ValueError):
        encode_frame(DATA, 1, 0, bytes(MAX_PAYLOAD + 1))


def test_corruption_is_reported_and_the_decoder_resynchronises():
    good = [encode_frame(DATA, 1, i, b"payload-%d" % i) for i in range(3)]
    damaged = bytearray(good[1])
    damaged[-1] ^= 0xFF
    decoder = FrameDecoder()
    seen, errors = [], []
    data = b"garbage!" + good[0] + bytes(damaged) + good[2]
    while True:
        try:
            seen.extend(f.seq for f in decoder.feed(data))
            break
        except ProtocolError as exc:
            errors.append(str(exc))
            data = b""
    assert seen == [0, 2]
    assert any("bad frame header" in e for e in errors) and any("crc mismatch" in e for e in errors)


class QueuePipe:
    """One side of an in-memory bulk pipe pair; `stalled` makes writes time out like a stuck endpoint."""

    def __init__(self, rx: queue.Queue, tx: queue.Queue) -> None:
        self.rx, self.tx = rx, tx
        self.stalled = threading.Event()
        self.closed = False
        self.sizes = []

    def write(self, data: bytes, timeout):
        if self.closed:
            raise PipeError("closed")
        if self.stalled.is_set():
            raise PipeTimeoutError("stalled")
        self.sizes.append(len(data))
        self.tx.put(bytes(data))

    def read(self, size: int, timeout):
        try:
            return self.rx.get(timeout=timeout if timeout is not None else 1e6)
        except queue.Empty:
            raise PipeTimeoutError("no data") from None

    def close(self) -> None:
        self.closed = True


def _pair():
    host_to_board, board_to_host = queue.Queue(), queue.Queue()
    return QueuePipe(board_to_host, host_to_board), QueuePipe(host_to_board, board_to_host)


def _echo_server():
    server = socket.create_server(("127.0.0.1", 0))

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return

            def echo(c=conn):
                with c:
                    while data := c.recv(65536):
                        c.sendall(data)
            threading.Thread(target=echo, daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    return server


def test_a_stream_much_larger_than_the_window_arrives_intact():
    from rknnlink.v1.usbmux import tcp_connector

    server = _echo_server()
    host_pipe, board_pipe = _pair()
    window = 128 * 1024
    board = Mux(board_pipe, "board", MuxConfig(window=window, connect=tcp_connector(*server.getsockname())))
    host = Mux(host_pipe, "host", MuxConfig(window=window, ping_interval=10))
    board.start()
    host.start()
    host.handshake(5)
    client, inner = socket.socketpair()
    host.open_channel(inner)
    payload = os.urandom(3 * 1024 * 1024)
    received = bytearray()

    def reader():
        while len(received) < len(payload):
            chunk = client.recv(1 << 20)
            if not chunk:
                return
            received.extend(chunk)

    thread = threading.Thread(target=reader)
    thread.start()
    client.sendall(payload)
    thread.join(30)
    assert bytes(received) == payload
    assert max(host_pipe.sizes) <= HEADER_SIZE + MAX_PAYLOAD
    assert host.stats.protocol_errors == 0 and board.stats.protocol_errors == 0
    client.close()
    host.close()
    board.close()
    server.close()


def test_a_stalled_write_fails_the_host_session_with_the_reason():
    host_pipe, board_pipe = _pair()
    reasons = []
    board = Mux(board_pipe, "board", MuxConfig())
    host = Mux(host_pipe, "host", MuxConfig(ping_interval=0.1, on_failure=reasons.append))
    board.start()
    host.start()
    host.handshake(5)
    host_pipe.stalled.set()
    deadline = threading.Event()
    for _ in range(50):
        if reasons:
            break
        deadline.wait(0.05)
    assert reasons and "timed out" in reasons[0]
    assert not host.alive
    host.close()
    board.close()


def test_handshake_without_a_board_times_out():
    host_pipe, _board_pipe = _pair()
    host = Mux(host_pipe, "host", MuxConfig())
    host.start()
    with pytest.raises(PipeTimeoutError):
        host.handshake(0.3)
    host.close()
    assert HELLO  # the frame type the handshake sent


def test_token_interceptor_and_certificate_helpers(tmp_path):
    cert, key = tls.load_or_create_identity(tmp_path, "rknnlink-unit", ["127.0.0.1"])
    assert tls.load_or_create_identity(tmp_path, "other", []) == (cert, key)  # reused, not regenerated
    assert (tmp_path / "key.pem").stat().st_mode & 0o777 == 0o600
    assert security.certificate_names(cert) == ["rknnlink-unit"]
    assert len(security.fingerprint(cert)) == 64
    token = tls.load_or_create_token(tmp_path / "token")
    assert tls.load_or_create_token(tmp_path / "token") == token and len(token) >= 32
    assert security.is_loopback("127.0.0.1") and security.is_loopback("::1")
    assert not security.is_loopback("0.0.0.0") and not security.is_loopback("192.168.1.5")

    from concurrent import futures

    server = grpc.server(futures.ThreadPoolExecutor(2), interceptors=[tls.token_interceptor(token)])
    handler = grpc.unary_unary_rpc_method_handler(lambda request, _ctx: request)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("t.E", {"E": handler})])
    port = server.add_secure_port("127.0.0.1:0", tls.server_credentials(cert, key))
    server.start()
    try:
        for presented, expected in ((token, "OK"), ("bad", "UNAUTHENTICATED"), (None, "UNAUTHENTICATED")):
            with security.open_channel(f"127.0.0.1:{port}", root_cert=cert, server_name="rknnlink-unit",
                                       token=presented) as channel:
                try:
                    assert channel.unary_unary("/t.E/E")(b"hi", timeout=5) == b"hi"
                    code = "OK"
                except grpc.RpcError as exc:
                    code = exc.code().name
            assert code == expected, presented
    finally:
        server.stop(0)
    with pytest.raises(ValueError):
        tls.token_interceptor("")


class TapPipe(QueuePipe):
    """Counts DATA payload bytes written and CREDIT granted through this side of the pipe."""

    def __init__(self, rx, tx) -> None:
        super().__init__(rx, tx)
        self.data_bytes = 0
        self.credit_bytes = 0

    def write(self, data: bytes, timeout):
        if len(data) >= HEADER_SIZE and data[:2] == b"RL":
            ftype, length = data[2], struct.unpack_from("<I", data, 12)[0]
            if ftype == DATA:
                self.data_bytes += length
            elif ftype == 6 and length == 4:  # CREDIT
                self.credit_bytes += struct.unpack_from("<I", data, HEADER_SIZE)[0]
        super().write(data, timeout)


def test_a_slow_reader_holds_the_sender_to_its_window():
    from rknnlink.v1.usbmux import tcp_connector

    window = 256 * 1024
    release = threading.Event()
    received = bytearray()
    server = socket.create_server(("127.0.0.1", 0))

    def slow_consumer():
        conn, _ = server.accept()
        release.wait(30)
        with conn:
            while data := conn.recv(1 << 20):
                received.extend(data)

    threading.Thread(target=slow_consumer, daemon=True).start()
    host_to_board, board_to_host = queue.Queue(), queue.Queue()
    host_pipe, board_pipe = TapPipe(board_to_host, host_to_board), TapPipe(host_to_board, board_to_host)
    board = Mux(board_pipe, "board", MuxConfig(window=window, connect=tcp_connector(*server.getsockname())))
    host = Mux(host_pipe, "host", MuxConfig(window=window, ping_interval=10))
    board.start()
    host.start()
    host.handshake(5)
    client, inner = socket.socketpair()
    host.open_channel(inner)
    payload = os.urandom(48 * 1024 * 1024)  # well beyond what loopback socket buffers absorb
    threading.Thread(target=client.sendall, args=(payload,), daemon=True).start()
    time.sleep(1.5)
    stalled_sent = host_pipe.data_bytes
    assert stalled_sent - board_pipe.credit_bytes <= window
    assert stalled_sent < len(payload) // 2, "the sender did not stop at its window"
    release.set()
    deadline = time.monotonic() + 60
    while len(received) < len(payload) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert bytes(received) == payload
    assert host_pipe.data_bytes - board_pipe.credit_bytes <= window
    client.close()
    host.close()
    board.close()
    server.close()
