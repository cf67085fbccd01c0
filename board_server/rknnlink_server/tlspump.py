"""The TLS data port's pump: bytes between a client's TLS connection and a socket pair handed to the worker.

A TLS session cannot move to another process, so on a TLS listener the daemon ends TLS itself and copies
the plaintext, unread, both ways (the worker checks every frame's length prefix against its caps before it
allocates, exactly as on the plain data port). One thread per connection, non-blocking sockets and a
selector: never two threads on one SSL object (OpenSSL does not allow it), and never blocked writing one
way while the other way is full (a pipeline with large outputs would deadlock a blocking pump). Memory per
connection is two fixed buffers whatever the frames' sizes.
"""

from __future__ import annotations

import logging
import selectors
import socket
import ssl
import time

log = logging.getLogger("rknnlink_server")
CHUNK = 256 << 10


def pump(client: ssl.SSLSocket, worker: socket.socket, idle_limit: float) -> None:
    """Copy until either side closes, or nothing moves for `idle_limit` seconds; closes neither socket."""
    client.setblocking(False)
    worker.setblocking(False)
    up, down = bytearray(CHUNK), bytearray(CHUNK)   # client -> worker, worker -> client
    up_view, down_view = memoryview(up), memoryview(down)
    up_start = up_end = down_start = down_end = 0
    client_open = worker_open = True
    selector = selectors.DefaultSelector()
    last = time.monotonic()
    try:
        while client_open or up_start < up_end:
            client_events = (selectors.EVENT_READ if client_open and up_end == 0 else 0) | \
                (selectors.EVENT_WRITE if down_start < down_end else 0)
            worker_events = (selectors.EVENT_READ if worker_open and down_end == 0 else 0) | \
                (selectors.EVENT_WRITE if up_start < up_end else 0)
            if not worker_open and down_start == down_end:
                return  # the worker closed and everything it said was delivered
            ready = {}
            if client_events & selectors.EVENT_READ and client.pending():
                ready[client] = selectors.EVENT_READ  # decrypted bytes buffered inside the SSL object
            else:
                for sock, events in ((client, client_events), (worker, worker_events)):
                    if events:
                        selector.register(sock, events)
                try:
                    for key, events in selector.select(timeout=1.0):
                        ready[key.fileobj] = events
                finally:
                    for sock in (client, worker):
                        try:
                            selector.unregister(sock)
                        except KeyError:
                            pass
            if not ready:
                if time.monotonic() - last > idle_limit:
                    log.info("TLS data connection idle for %g s: closed", idle_limit)
                    return
                continue
            last = time.monotonic()
            if ready.get(client, 0) & selectors.EVENT_READ:
                try:
                    n = client.recv_into(up_view)
                    if n:
                        up_start, up_end = 0, n
                    else:
                        client_open = False
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    pass
                except (OSError, ssl.SSLError):
                    client_open = False
            if ready.get(worker, 0) & selectors.EVENT_WRITE or (up_start < up_end and worker_open):
                try:
                    up_start += worker.send(up_view[up_start:up_end])
                except BlockingIOError:
                    pass
                except OSError:
                    return
                if up_start == up_end:
                    up_start = up_end = 0
            if ready.get(worker, 0) & selectors.EVENT_READ:
                try:
                    n = worker.recv_into(down_view)
                    if n:
                        down_start, down_end = 0, n
                    else:
                        worker_open = False
                except BlockingIOError:
                    pass
                except OSError:
                    worker_open = False
            if down_start < down_end:
                try:
                    down_start += client.send(down_view[down_start:down_end])
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                    pass
                except (OSError, ssl.SSLError):
                    return
                if down_start == down_end:
                    down_start = down_end = 0
            if not client_open and up_start == up_end and worker_open:
                try:
                    worker.shutdown(socket.SHUT_WR)  # the worker finishes what it has, then closes
                except OSError:
                    pass
                client_open = None  # type: ignore[assignment]  # half-closed: keep delivering replies
                while True:  # drain the worker's last replies
                    if not _drain(worker, client, down_view, idle_limit):
                        return
    finally:
        selector.close()


def _drain(worker: socket.socket, client: ssl.SSLSocket, view: memoryview, idle_limit: float) -> bool:
    """After the client half-closed: worker replies to the client until the worker closes (False then)."""
    worker.setblocking(True)
    worker.settimeout(idle_limit)
    client.setblocking(True)
    try:
        n = worker.recv_into(view)
        if not n:
            return False
        client.sendall(view[:n])
        return True
    except (OSError, ssl.SSLError):
        return False
