"""The TLS data port's pump: bytes between a client's TLS connection and a socket pair handed to the worker.

A TLS session cannot move to another process, so on a TLS listener the daemon ends TLS itself and copies
the plaintext, unread, both ways (the worker checks every frame's length prefix against its caps before it
allocates, exactly as on the plain data port). One thread per connection, non-blocking sockets and a
selector: never two threads on one SSL object (OpenSSL does not allow it), and never blocked writing one
way while the other way is full (a pipeline with large outputs would deadlock a blocking pump). Each pass
moves all it can without waiting (a TLS read returns one 16 KiB record: a frame takes several), then waits.
Memory per connection is two fixed buffers whatever the frames' sizes.
"""

from __future__ import annotations

import logging
import selectors
import socket
import ssl
import time

log = logging.getLogger("rknnlink_server")
CHUNK = 256 << 10
_WOULD_BLOCK = (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError)
EOF_ = -1


class _Buffer:
    """Bytes read from one side and not yet written to the other."""

    def __init__(self) -> None:
        self.view = memoryview(bytearray(CHUNK))
        self.start = self.end = 0

    def fill(self, sock: socket.socket) -> int:
        """Read what is available without waiting; bytes read, or EOF_ when the peer closed (or broke)."""
        got = 0
        while self.end < CHUNK:
            try:
                n = sock.recv_into(self.view[self.end:])
            except _WOULD_BLOCK:
                break
            except OSError:  # ssl.SSLError included: the peer is gone
                return EOF_ if not got else got
            if not n:
                return EOF_ if not got else got
            self.end += n
            got += n
        return got

    def drain(self, sock: socket.socket) -> bool:
        """Write what the socket takes without waiting; False when the socket broke."""
        while self.start < self.end:
            try:
                self.start += sock.send(self.view[self.start:self.end])
            except _WOULD_BLOCK:
                return True
            except OSError:
                return False
        self.start = self.end = 0
        return True


def pump(client: ssl.SSLSocket, worker: socket.socket, idle_limit: float) -> None:
    """Copy until the worker closes (after the client's close: once its last replies are delivered), a side
    breaks, or nothing moves for `idle_limit` seconds; closes neither socket."""
    client.setblocking(False)
    worker.setblocking(False)
    up, down = _Buffer(), _Buffer()  # client -> worker, worker -> client
    client_open, worker_open = True, True
    selector = selectors.DefaultSelector()
    registered = {client: 0, worker: 0}
    last = time.monotonic()

    def want(sock: socket.socket, events: int) -> None:
        old = registered[sock]
        if events != old:
            if not old:
                selector.register(sock, events)
            elif not events:
                selector.unregister(sock)
            else:
                selector.modify(sock, events)
            registered[sock] = events

    try:
        while True:
            moved = True
            while moved:
                moved = False
                if client_open and up.start == up.end:
                    n = up.fill(client)
                    if n == EOF_:
                        client_open = False
                        try:
                            worker.shutdown(socket.SHUT_WR)  # the worker finishes what it has, then closes
                        except OSError:
                            pass
                    moved |= n > 0
                if up.start < up.end:
                    before = up.start
                    if not up.drain(worker):
                        return
                    moved |= up.start != before or up.end == 0
                if worker_open and down.start == down.end:
                    n = down.fill(worker)
                    if n == EOF_:
                        worker_open = False
                    moved |= n > 0
                if down.start < down.end:
                    before = down.start
                    if not down.drain(client):
                        return
                    moved |= down.start != before or down.end == 0
                if moved:
                    last = time.monotonic()
            if not worker_open and down.start == down.end:
                return  # the worker closed and everything it said was delivered
            # (a TLS record still buffered in the SSL object is read by the next pass: the client side is
            # waited on only when the buffer toward the worker is empty, and fill() reads until it would block)
            want(client, (selectors.EVENT_READ if client_open and up.start == up.end else 0)
                 | (selectors.EVENT_WRITE if down.start < down.end else 0))
            want(worker, (selectors.EVENT_READ if worker_open and down.start == down.end else 0)
                 | (selectors.EVENT_WRITE if up.start < up.end else 0))
            if not selector.select(timeout=1.0) and time.monotonic() - last > idle_limit:
                log.info("TLS data connection idle for %g s: closed", idle_limit)
                return
    finally:
        selector.close()
