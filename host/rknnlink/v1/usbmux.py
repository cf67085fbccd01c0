"""Multiplexing TCP connections over one USB bulk pipe pair: framing, flow control, keepalive, resets.

Both ends run the same :class:`Mux`: the host (role 'host') turns each accepted loopback connection into
a channel; the board (role 'board') connects each channel to the daemon on 127.0.0.1:50051, or, for an
OPEN with FLAG_DATA, to the daemon's data port (the direct carrier of the data plane, so inference frames
cross the mux unread, without gRPC). A board that can open data channels says so with FLAG_DATA on its
HELLO_ACK (older boards send no flags: the host then offers no data route and the client relays).

Frame = 20-byte little-endian header + payload:
    magic u16 'RL' | type u8 | flags u8 | channel u32 | seq u32 | length u32 | crc32 u32
where crc32 covers the first 16 header bytes and the payload, and seq counts frames per direction since
the last HELLO. Bulk transfers are reliable at the USB layer; what can still happen is a transfer lost
in a stall, reset or unplug. A receiver that sees a seq gap, a bad crc or a bad magic therefore resets the
session (RESET), which closes every channel (their TCP connections drop, gRPC reports UNAVAILABLE and
reconnects), and the host starts a new session with HELLO. Flow control is per channel: a sender may
have at most `window` unacknowledged payload bytes; the receiver returns CREDIT after writing data out.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import struct
import threading
import time
import zlib
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, Optional, Protocol

log = logging.getLogger(__name__)
# The rknnlink USB interface (vendor class): how the host finds the board's bulk pipe.
IFACE_CLASS, IFACE_SUBCLASS, IFACE_PROTOCOL = 0xFF, 0x52, 0x4C

MAGIC = 0x4C52
HEADER = struct.Struct("<HBBIIII")
HEADER_SIZE = HEADER.size
MAX_PAYLOAD = 64 * 1024
DEFAULT_WINDOW = 1024 * 1024
READ_SIZE = 128 * 1024

HELLO, HELLO_ACK, OPEN, DATA, CLOSE, CREDIT, PING, PONG, RESET = range(1, 10)
FLAG_DATA = 0x1  # OPEN: connect to the daemon's data port; HELLO_ACK: this board can
TYPE_NAMES = {HELLO: "HELLO", HELLO_ACK: "HELLO_ACK", OPEN: "OPEN", DATA: "DATA", CLOSE: "CLOSE",
              CREDIT: "CREDIT", PING: "PING", PONG: "PONG", RESET: "RESET"}


class PipeTimeoutError(Exception):
    """A bulk transfer did not complete in time."""


class PipeError(Exception):
    """The pipe is gone (device unplugged, gadget disabled, endpoint closed)."""


class ProtocolError(Exception):
    """A frame failed its magic, length, crc or sequence check."""


class Pipe(Protocol):
    """One bulk OUT + one bulk IN endpoint, seen from one side."""

    def write(self, data: bytes, timeout: Optional[float]) -> None: ...

    def read(self, size: int, timeout: Optional[float]) -> bytes: ...

    def close(self) -> None: ...


@dataclass
class Frame:
    type: int
    channel: int
    seq: int
    payload: bytes = b""
    flags: int = 0


def encode_frame(ftype: int, channel: int, seq: int, payload: bytes = b"", flags: int = 0) -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"frame payload {len(payload)} exceeds {MAX_PAYLOAD}")
    head = HEADER.pack(MAGIC, ftype, flags, channel, seq, len(payload), 0)[:16]
    crc = zlib.crc32(payload, zlib.crc32(head))
    return head + struct.pack("<I", crc) + payload


class FrameDecoder:
    """Reassembles frames from arbitrarily split bulk reads."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def reset(self) -> None:
        self._buf.clear()

    def feed(self, data: bytes) -> Iterator[Frame]:
        """Yields each complete frame; raises ProtocolError at a bad one (call again with b"" to go on)."""
        self._buf += data
        while len(self._buf) >= HEADER_SIZE:
            magic, ftype, flags, channel, seq, length, crc = HEADER.unpack_from(self._buf)
            if magic != MAGIC or length > MAX_PAYLOAD or ftype not in TYPE_NAMES:
                self._resync()
                raise ProtocolError(f"bad frame header (magic {magic:#06x}, type {ftype}, length {length})")
            if len(self._buf) < HEADER_SIZE + length:
                return
            payload = bytes(self._buf[HEADER_SIZE:HEADER_SIZE + length])
            if zlib.crc32(payload, zlib.crc32(bytes(self._buf[:16]))) != crc:
                self._resync()  # the header itself may be the damaged part: look for the next magic
                raise ProtocolError(f"crc mismatch on {TYPE_NAMES[ftype]} frame seq {seq}")
            del self._buf[:HEADER_SIZE + length]
            yield Frame(ftype, channel, seq, payload, flags)

    def _resync(self) -> None:
        """Drops bytes up to the next plausible magic so the next frame can be found."""
        marker = struct.pack("<H", MAGIC)
        index = self._buf.find(marker, 1)
        if index < 0:
            self._buf.clear()
        else:
            del self._buf[:index]


@dataclass
class MuxStats:
    frames_out: int = 0
    frames_in: int = 0
    bytes_out: int = 0
    bytes_in: int = 0
    protocol_errors: int = 0
    resets: int = 0


class _Channel:
    """One multiplexed TCP connection: a socket reader (-> DATA) and a writer fed by a queue (<- DATA)."""

    def __init__(self, mux: Mux, cid: int, sock: socket.socket) -> None:
        self.mux = mux
        self.cid = cid
        self.sock = sock
        self.credit = mux.window
        self.cond = threading.Condition()
        self.outq: queue.Queue[Optional[bytes]] = queue.Queue()
        self.closed = False
        self.remote_closed = False

    def start(self) -> None:
        threading.Thread(target=self._read_socket, name=f"usbmux-r{self.cid}", daemon=True).start()
        threading.Thread(target=self._write_socket, name=f"usbmux-w{self.cid}", daemon=True).start()

    def _read_socket(self) -> None:
        try:
            while True:
                data = self.sock.recv(MAX_PAYLOAD)
                if not data:
                    break
                if not self._take_credit(len(data)):
                    return
                self.mux.send(DATA, self.cid, data)
        except (OSError, PipeError, PipeTimeoutError) as exc:
            log.debug("channel %d reader ends: %s", self.cid, exc)
        if not self.remote_closed and not self.closed and self.mux.alive:
            self.mux.send_quietly(CLOSE, self.cid)  # not when the mux itself dropped the channel
        self.shutdown()

    def _take_credit(self, size: int) -> bool:
        with self.cond:
            while self.credit < size and not self.closed:
                self.cond.wait(0.5)
            if self.closed:
                return False
            self.credit -= size
            return True

    def grant(self, size: int) -> None:
        with self.cond:
            self.credit += size
            self.cond.notify_all()

    def _write_socket(self) -> None:
        # Credit goes back in batches of a quarter window: fewer frames, and the sender always keeps at
        # least three quarters of its window, so it never waits on credit held back here.
        threshold = max(1, self.mux.window // 4)
        owed = 0
        while True:
            data = self.outq.get()
            if data is None:
                break
            try:
                self.sock.sendall(data)
            except OSError:
                break
            owed += len(data)
            if owed >= threshold and self.mux.alive and not self.closed:
                self.mux.send_quietly(CREDIT, self.cid, struct.pack("<I", owed))
                owed = 0
        self.shutdown()

    def peer_closed(self) -> None:
        self.remote_closed = True
        self.outq.put(None)

    def shutdown(self) -> None:
        with self.cond:
            already, self.closed = self.closed, True
            self.cond.notify_all()
        if already:
            return
        self.outq.put(None)
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.mux.forget(self.cid)


@dataclass
class MuxConfig:
    window: int = DEFAULT_WINDOW
    io_timeout: float = 2.0         # one bulk write may take this long before the link is declared stuck
    link_timeout: float = 5.0       # host: no frame from the board for this long -> link dead
    ping_interval: float = 0.5      # host: keepalive when idle
    connect: Optional[Callable[[], socket.socket]] = None   # board: opens the daemon connection
    data_connect: Optional[Callable[[], socket.socket]] = None  # board: opens one to its data port
    on_failure: Optional[Callable[[str], None]] = None


class Mux:
    """One session over a pipe. The host creates a new Mux per session; the board keeps one per open pipe."""

    def __init__(self, pipe: Pipe, role: str, config: Optional[MuxConfig] = None) -> None:
        if role not in ("host", "board"):
            raise ValueError("role must be 'host' or 'board'")
        self.pipe = pipe
        self.role = role
        self.config = config or MuxConfig()
        if self.config.window < 2 * MAX_PAYLOAD:
            raise ValueError(f"the flow-control window must be at least {2 * MAX_PAYLOAD} bytes")
        self.window = self.config.window
        self.stats = MuxStats()
        self.alive = True
        self.failure: Optional[str] = None
        self._tx_lock = threading.Lock()
        self._tx_seq = 0
        self._rx_seq = 0
        self._synced = False            # a HELLO/HELLO_ACK pair was seen in this session
        self._nonce = b""
        self._handshake = threading.Event()
        self._channels: Dict[int, _Channel] = {}
        self._lock = threading.Lock()
        self._next_cid = 1
        self._last_rx = time.monotonic()
        self._last_tx = time.monotonic()
        self._decoder = FrameDecoder()
        self._stopped = threading.Event()
        self._reset_sent = False
        self._reader_thread: Optional[threading.Thread] = None
        self.board_has_data = False     # host: the board's HELLO_ACK offered data channels

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._reader_thread = threading.Thread(target=self._reader, name=f"usbmux-{self.role}-rx", daemon=True)
        self._reader_thread.start()
        if self.role == "host":
            threading.Thread(target=self._keepalive, name="usbmux-ping", daemon=True).start()

    def handshake(self, timeout: float) -> None:
        """Host: starts the session; raises PipeTimeoutError when the board does not answer in time."""
        self._nonce = os.urandom(8)
        with self._tx_lock:
            self._tx_seq = 0
            # A transfer cut short by a timeout leaves the board waiting for the rest of that frame. One
            # frame's worth of zeros completes it (its crc fails) and then fails the magic check, so the
            # board's decoder is back at a frame boundary when HELLO arrives.
            try:
                self.pipe.write(bytes(HEADER_SIZE + MAX_PAYLOAD), self.config.io_timeout)
            except PipeTimeoutError as exc:
                raise PipeTimeoutError(f"the board is not reading its USB endpoint ({exc})") from exc
        self.send(HELLO, 0, self._nonce)
        if not self._handshake.wait(timeout):
            raise PipeTimeoutError(f"the board did not answer HELLO within {timeout:.1f} s")
        if not self.alive:
            raise PipeError(self.failure or "link failed during handshake")

    def join(self, timeout: float) -> None:
        """Waits for the reader to leave the pipe, so a new session can own it."""
        thread = self._reader_thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def close(self) -> None:
        self.alive = False
        self._stopped.set()
        self._close_channels()
        self.pipe.close()

    def fail(self, reason: str) -> None:
        """Marks the session dead, drops every channel and tells the owner (once)."""
        if not self.alive:
            return
        self.alive = False
        self.failure = reason
        self._stopped.set()
        self._handshake.set()
        log.warning("USB link %s: %s", "reset" if self.role == "host" else "session ended", reason)
        if self.config.on_failure is not None:
            self.config.on_failure(reason)  # first, so the owner knows why before connections drop
        self._close_channels()

    def _close_channels(self) -> None:
        with self._lock:
            channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            channel.shutdown()

    @property
    def channel_count(self) -> int:
        with self._lock:
            return len(self._channels)

    # ------------------------------------------------------------ sending
    def send(self, ftype: int, cid: int, payload: bytes = b"", flags: int = 0) -> None:
        with self._tx_lock:
            if ftype in (HELLO, HELLO_ACK):
                self._tx_seq = 0
            frame = encode_frame(ftype, cid, self._tx_seq, payload, flags)
            self._tx_seq = (self._tx_seq + 1) & 0xFFFFFFFF
            try:
                self.pipe.write(frame, self.config.io_timeout)
            except PipeTimeoutError as exc:
                self.fail(f"a bulk write timed out after {self.config.io_timeout:.1f} s ({exc})")
                raise
            except PipeError as exc:
                self.fail(f"the USB pipe failed on write: {exc}")
                raise
            self._last_tx = time.monotonic()
            self.stats.frames_out += 1
            self.stats.bytes_out += len(frame)

    def send_quietly(self, ftype: int, cid: int, payload: bytes = b"", flags: int = 0) -> None:
        try:
            self.send(ftype, cid, payload, flags)
        except (PipeError, PipeTimeoutError):
            pass

    # ------------------------------------------------------------ channels
    def open_channel(self, sock: socket.socket, data: bool = False) -> int:
        """Host: carries an accepted TCP connection to the board's daemon (`data`: to its data port)."""
        with self._lock:
            cid = self._next_cid
            self._next_cid = self._next_cid % 0xFFFFFFF0 + 1
            channel = _Channel(self, cid, sock)
            self._channels[cid] = channel
        self.send(OPEN, cid, flags=FLAG_DATA if data else 0)
        channel.start()
        return cid

    def forget(self, cid: int) -> None:
        with self._lock:
            self._channels.pop(cid, None)

    def _channel(self, cid: int) -> Optional[_Channel]:
        with self._lock:
            return self._channels.get(cid)

    # ------------------------------------------------------------ receiving
    def _reader(self) -> None:
        while not self._stopped.is_set():
            try:
                data = self.pipe.read(READ_SIZE, 0.2 if self.role == "host" else None)
            except PipeTimeoutError:
                if self.role == "host" and time.monotonic() - self._last_rx > self.config.link_timeout:
                    self.fail(f"no answer from the board for {self.config.link_timeout:.1f} s")
                continue
            except PipeError as exc:
                self.fail(f"the USB pipe failed on read: {exc}")
                return
            if not data:
                continue
            self._last_rx = time.monotonic()
            self.stats.bytes_in += len(data)
            if not self._consume(data):
                return

    def _consume(self, data: bytes) -> bool:
        """Handles every frame in `data`, carrying on after damaged ones; False once the session is over."""
        while True:
            try:
                for frame in self._decoder.feed(data):
                    self._handle(frame)
                return True
            except ProtocolError as exc:
                self._protocol_error(str(exc))
            except (PipeError, PipeTimeoutError):
                return False
            if not self.alive:
                return False
            data = b""

    def _protocol_error(self, reason: str) -> None:
        if not self._synced:
            log.debug("USB link: skipping damaged data outside a session: %s", reason)
            return  # leftovers of an earlier session; the decoder resynchronises by itself
        self.stats.protocol_errors += 1
        if self.role == "host":
            self.fail(f"corrupt data from the board: {reason}")
            return
        # Board: drop the session, ask the host for a new one, ignore frames until its HELLO.
        log.warning("USB link: %s; resetting the session", reason)
        self._synced = False
        self.stats.resets += 1
        self.send_quietly(RESET, 0, reason.encode()[:200])
        self._close_channels()

    def _handle(self, frame: Frame) -> None:
        self.stats.frames_in += 1
        if frame.type == HELLO and self.role == "board":
            self._start_board_session(frame)
            return
        if frame.type == HELLO_ACK and self.role == "host":
            if frame.payload == self._nonce:
                self._rx_seq = 1
                self._synced = True
                self.board_has_data = bool(frame.flags & FLAG_DATA)
                self._handshake.set()
            return
        if frame.type == RESET and self.role == "host":
            if self._synced:
                self.fail(f"the board reset the session: {frame.payload.decode(errors='replace')}")
            return
        if not self._synced:
            if self.role == "board" and not self._reset_sent:
                self._reset_sent = True
                self.send_quietly(RESET, 0, b"no session: send HELLO")
            return  # frames of an older session
        if frame.seq != self._rx_seq:
            raise ProtocolError(f"sequence gap: expected frame {self._rx_seq}, got {frame.seq} "
                                f"({TYPE_NAMES[frame.type]}); a transfer was lost")
        self._rx_seq = (self._rx_seq + 1) & 0xFFFFFFFF
        self._dispatch(frame)

    def _start_board_session(self, frame: Frame) -> None:
        if self._synced:
            log.info("USB link: new session from the host; dropping %d open channel(s)", self.channel_count)
        self._close_channels()
        self._rx_seq = 1
        self._synced = True
        self._reset_sent = False
        self.send_quietly(HELLO_ACK, 0, frame.payload, FLAG_DATA if self.config.data_connect is not None else 0)

    def _dispatch(self, frame: Frame) -> None:
        if frame.type == PING:
            self.send_quietly(PONG, 0, frame.payload)
        elif frame.type == PONG:
            pass
        elif frame.type == OPEN and self.role == "board":
            self._board_open(frame.channel, bool(frame.flags & FLAG_DATA))
        elif frame.type == DATA:
            channel = self._channel(frame.channel)
            if channel is not None:
                channel.outq.put(frame.payload)
        elif frame.type == CREDIT and len(frame.payload) == 4:
            channel = self._channel(frame.channel)
            if channel is not None:
                channel.grant(struct.unpack("<I", frame.payload)[0])
        elif frame.type == CLOSE:
            channel = self._channel(frame.channel)
            if channel is not None:
                if frame.payload:
                    log.info("board closed channel %d: %s", frame.channel, frame.payload.decode(errors="replace"))
                channel.peer_closed()

    def _board_open(self, cid: int, data: bool) -> None:
        connect = self.config.data_connect if data else self.config.connect
        try:
            if connect is None:
                raise OSError(f"no daemon {'data port' if data else 'address'} configured")
            sock = connect()
        except OSError as exc:
            self.send_quietly(CLOSE, cid, f"cannot reach the daemon: {exc}".encode()[:200])
            return
        channel = _Channel(self, cid, sock)
        with self._lock:
            self._channels[cid] = channel
        channel.start()

    # ------------------------------------------------------------ keepalive (host)
    def _keepalive(self) -> None:
        interval = self.config.ping_interval
        while not self._stopped.wait(interval / 2):
            if self._synced and time.monotonic() - self._last_tx >= interval:
                try:
                    self.send(PING, 0)
                except (PipeError, PipeTimeoutError):
                    return


def tcp_connector(host: str, port: int, timeout: float = 3.0) -> Callable[[], socket.socket]:
    """Board: a connect function for the daemon address, with TCP_NODELAY set."""
    def connect() -> socket.socket:
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    return connect
