"""TLS over a socket through memory BIOs: the data plane's TLS connections with few, large system calls.

An ssl.SSLSocket reads and writes one TLS record (at most 16 KiB) per system call, and reads a record's
header and body separately: a 150 KB frame costs about thirty calls each way. Here the socket is read into a
256 KiB buffer at once and fed to an ssl.SSLObject, and everything one frame's parts encrypt to goes out in
one sendall. The object looks enough like a socket for the data plane's readers and writers
(rknnlink.v1.datawire: recv_into, sendmsg, timeouts, select on its descriptor); a receive timeout set on the
descriptor (SO_RCVTIMEO) shows up as BlockingIOError as on a plain socket. OpenSSL does not allow two
threads on one connection at once, so every use of the TLS object takes a lock, held only in memory work:
one thread may wait in a receive while another sends (a reader and a replying thread, as the worker's loop
has them); a send's records go out whole and in order.

Measured alternatives (bench/bench_link.py's frame, 2 cores): an SSLSocket on a non-blocking descriptor
(waits in poll() outside the lock) saves the BIO copies but wakes and raises SSLWantReadError per partial
record, and cost more per round trip; sending a frame in 32 KiB chunks, so the peer decrypts one while
this side encrypts the next, cost more system calls and wake-ups than the overlap gained under load
(again in session 6 with 16, 32 and 64 KiB chunks: 30-90 us more CPU per run on each side at load 9).
kTLS, which would take the BIO copies away, needs Python 3.12's OP_ENABLE_KTLS and a kernel with CONFIG_TLS.

Both ends of the TLS data port use it: the client (rknnlink.client.data.DirectCarrier) and the session's
worker, which ends TLS itself (rknnlink_server.tlsdata).
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from typing import Any, Optional, Sequence

READ_SIZE = 256 << 10
RECORD_BYTES = 16384   # the most plaintext one TLS record carries
COALESCE_BYTES = 4096  # parts smaller than this share a record with the next part


class TlsStream:
    """A TLS connection on `sock` (blocking, or with a timeout); see the module's docstring."""

    def __init__(self, sock: socket.socket, context: ssl.SSLContext, server_side: bool,
                 server_hostname: Optional[str] = None) -> None:
        self.sock = sock
        self._incoming, self._outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_side=server_side,
                                     server_hostname=server_hostname)
        self._buf = bytearray(READ_SIZE)
        self._lock = threading.Lock()       # the TLS object and its BIOs
        self._send_lock = threading.Lock()  # one frame's records on the socket at a time
        self.family = sock.family

    def handshake(self, deadline: Optional[float] = None) -> TlsStream:
        """The TLS handshake; socket.timeout once `deadline` (time.monotonic()) passes, however slowly the
        peer's bytes trickle in. ssl.SSLError when the peer is refused or refuses."""
        while True:
            try:
                with self._lock:
                    self._tls.do_handshake()
                self._flush()
                return self
            except ssl.SSLWantReadError:
                self._flush()
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise socket.timeout("the TLS handshake did not finish in time") from None
                    self.sock.settimeout(left)
                if not self._fill():
                    raise ConnectionResetError("the peer closed the connection during the TLS handshake") from None

    def _flush(self) -> None:
        with self._send_lock:
            with self._lock:
                data = self._outgoing.read() if self._outgoing.pending else b""
            if data:
                self.sock.sendall(data)

    def _fill(self) -> bool:
        """Read what the socket has (waiting for at least one byte, without the lock); False at the end of
        the stream. One reading thread at a time (the buffer is the reader's)."""
        n = self.sock.recv_into(self._buf)
        with self._lock:
            if not n:
                self._incoming.write_eof()
                return False
            self._incoming.write(memoryview(self._buf)[:n])
        return True

    # -- what the data plane's readers and writers use --------------------------------------------------------------
    def recv_into(self, view: Any, nbytes: int = 0) -> int:
        """As many decrypted bytes as the received records hold, up to `nbytes`: one call per frame part,
        not one per 16 KiB record; it waits for the socket only when no record is ready. 0: the peer closed."""
        view = memoryview(view).cast("B")
        size = nbytes or view.nbytes
        while True:
            got = 0
            with self._lock:
                try:  # one record per read, and only while bytes are there: a WantRead costs several us
                    while got < size and (self._incoming.pending or self._tls.pending()):
                        got += self._tls.read(size - got, view[got:])
                except ssl.SSLWantReadError:  # the rest of a record is still on its way
                    pass
                except (ssl.SSLZeroReturnError, ssl.SSLEOFError):  # close_notify, or an end without it:
                    return got                                     # a closed peer all the same
            if got:
                return got
            if not self._fill():
                return 0

    def recv(self, size: int, _flags: int = 0) -> bytes:
        buf = bytearray(size)
        return bytes(buf[:self.recv_into(buf)])

    def sendmsg(self, buffers: Sequence[Any], *_args: Any) -> int:
        """Every part encrypted, then all of it in one sendall; returns the plaintext bytes taken (all).

        A part smaller than COALESCE_BYTES (a frame's header) shares a record with the start of the next
        part, so a request is whole records (not a tiny one in front) and no part is copied whole."""
        total, small = 0, b""
        with self._send_lock:
            with self._lock:
                for part in buffers:
                    view = memoryview(part).cast("B")
                    total += view.nbytes
                    if small:
                        head = view[:RECORD_BYTES - len(small)]
                        self._tls.write(small + head)
                        small, view = b"", view[head.nbytes:]
                    if view.nbytes < COALESCE_BYTES:
                        small = bytes(view)
                    else:
                        self._tls.write(view)
                if small:
                    self._tls.write(small)
                data = self._outgoing.read()
            self.sock.sendall(data)
        return total

    def sendall(self, data: Any) -> None:
        self.sendmsg([data])

    def pending(self) -> int:
        """Decrypted bytes ready to read without touching the socket."""
        with self._lock:
            return self._tls.pending()

    def buffered(self) -> int:
        """Bytes received from the socket and not yet read: decrypted, or still inside their records (the
        socket no longer shows them, so a reader deciding whether more is on its way asks here too)."""
        with self._lock:
            return self._tls.pending() + self._incoming.pending

    def fileno(self) -> int:
        return self.sock.fileno()

    def settimeout(self, value: Optional[float]) -> None:
        self.sock.settimeout(value)

    def gettimeout(self) -> Optional[float]:
        return self.sock.gettimeout()

    def setsockopt(self, *args: Any) -> None:
        self.sock.setsockopt(*args)

    def getsockname(self) -> Any:
        return self.sock.getsockname()

    def shutdown(self, how: int) -> None:
        self.sock.shutdown(how)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> TlsStream:
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.close()
