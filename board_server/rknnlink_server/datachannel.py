"""The daemon's data port, the direct carrier of the data plane: authenticate a client's TCP connection and
hand it to the session's worker (SCM_RIGHTS on the worker's Unix socket), so the client talks to the worker
with nothing in between. A plain data port is offered only next to a loopback plain-text gRPC listener (adb
forward, local). Next to a TLS listener the data port speaks TLS with the same certificate (fail closed:
without a certificate there is no data port): the daemon ends TLS and pumps the plaintext, unread, through
a socket pair handed to the worker (rknnlink_server.tlspump), because a TLS session cannot move to another
process. Routes without a byte stream to the data port relay the frames over gRPC (rknnlink_server.relay).
See rknnlink.v1.datawire.
"""

from __future__ import annotations

import hmac
import logging
import socket
import ssl
import threading
import time
from typing import Callable, Optional, Tuple

from rknnlink.v1 import datawire
from rknnlink_server.errors import loggable
from rknnlink_server.tlspump import pump
from rknnlink_server.worker import WorkerError

log = logging.getLogger("rknnlink_server")
HANDSHAKE_TIMEOUT = 5.0  # for the whole hello, however slowly it trickles in
MAX_PENDING_HANDSHAKES = 32
MAX_TLS_PUMPS_PER_SESSION = 3  # like a client's long-lived calls: TLS connections pumped for one session


class DataListener:
    """Accepts data connections; `lookup(session_id)` returns the daemon's Session or None."""

    def __init__(self, host: str, port: int, lookup: Callable[[str], Optional[object]], max_bytes: int,
                 on_lost: Callable[[object, WorkerError], object], tls: Optional[ssl.SSLContext] = None,
                 idle_limit: float = 120.0) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind((host, port))
            self.sock.listen(64)
        except OSError:
            self.sock.close()
            raise
        self.port = self.sock.getsockname()[1]
        self._lookup, self._max_bytes, self._on_lost = lookup, max_bytes, on_lost
        self.tls, self._idle_limit = tls, idle_limit
        self._pumps: dict = {}  # session id -> TLS connections being pumped
        self._pumps_lock = threading.Lock()
        self._stopping = threading.Event()
        self._pending = threading.BoundedSemaphore(MAX_PENDING_HANDSHAKES)
        self._thread = threading.Thread(target=self._accept_loop, name="data-accept", daemon=True)

    def start(self) -> DataListener:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stopping.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _peer = self.sock.accept()
            except OSError:
                if self._stopping.is_set():
                    return
                continue
            if not self._pending.acquire(blocking=False):
                conn.close()  # too many half-open handshakes: refuse rather than queue threads
                continue
            threading.Thread(target=self._handshake, args=(conn,), name="data-hello", daemon=True).start()

    def _handshake(self, conn: socket.socket) -> None:
        deadline = time.monotonic() + HANDSHAKE_TIMEOUT
        peer: Optional[socket.socket] = None  # the daemon's end of the worker's socket pair (TLS only)
        session_id = ""
        try:
            if self.tls is not None:
                wrapped = self._tls_handshake(conn, deadline)
                if wrapped is None:
                    return  # refused (logged); the raw socket is closed below
                conn = wrapped
            status, error, session_id, peer = self._admit(conn, deadline)
            if error:
                log.warning("data connection refused: %s", loggable(error, 300))
                try:
                    conn.settimeout(1.0)
                    conn.sendall(datawire.encode_hello_reply(status, error))
                except OSError:
                    pass
        finally:
            self._pending.release()
            if peer is None:
                conn.close()  # handed over or refused: the daemon keeps no copy
        if peer is None:
            return
        try:
            pump(conn, peer, self._idle_limit)  # type: ignore[arg-type]
        finally:
            for sock in (peer, conn):
                try:
                    sock.close()
                except OSError:
                    pass
            with self._pumps_lock:
                self._pumps[session_id] -= 1
                if not self._pumps[session_id]:
                    del self._pumps[session_id]

    def _tls_handshake(self, conn: socket.socket, deadline: float) -> Optional[ssl.SSLSocket]:
        """The TLS handshake, done by `deadline` however slowly the bytes trickle in (a timer cuts it)."""
        timer = threading.Timer(max(0.0, deadline - time.monotonic()), _cut, args=(conn,))
        timer.daemon = True
        timer.start()
        try:
            conn.settimeout(HANDSHAKE_TIMEOUT)
            return self.tls.wrap_socket(conn, server_side=True)  # type: ignore[union-attr]
        except (OSError, ssl.SSLError) as exc:
            log.warning("TLS data connection refused: %s", loggable(str(exc), 200))
            return None
        finally:
            timer.cancel()

    def _admit(self, conn: socket.socket, deadline: float) -> Tuple[int, str, str, Optional[socket.socket]]:
        """Hand `conn` (plain) or a socket pair's end (TLS) to its session's worker; returns (status, refusal
        reason, session id, the daemon's end of the pair to pump or None), reason "" once handed over.

        Status REFUSED_SESSION_LOST carries the message a gRPC call would give for the lost session."""
        try:
            session_id, secret = datawire.read_hello(conn, deadline)
        except socket.timeout:
            return datawire.REFUSED, f"no complete hello within {HANDSHAKE_TIMEOUT:g} s", "", None
        except (datawire.FrameError, datawire.PeerClosedError, OSError) as exc:
            return datawire.REFUSED, f"bad hello: {exc}", "", None
        session = self._lookup(session_id)
        expected = getattr(session, "secret", b"") if session is not None else b""
        if session is None or not expected or not hmac.compare_digest(expected, secret):
            return datawire.REFUSED, (f"unknown session {session_id[:32]!r} or wrong secret: use the session id "
                                      f"and data_secret from CreateSession"), "", None
        handed, peer = conn, None
        if self.tls is not None:
            with self._pumps_lock:
                if self._pumps.get(session_id, 0) >= MAX_TLS_PUMPS_PER_SESSION:
                    return datawire.REFUSED, (f"session {session_id[:32]!r} already has "
                                              f"{MAX_TLS_PUMPS_PER_SESSION} data connections: close one (a "
                                              f"pipeline) first"), "", None
                self._pumps[session_id] = self._pumps.get(session_id, 0) + 1
            peer, handed = socket.socketpair()
        status, error = self._attach(session, handed, deadline)
        if peer is not None:
            handed.close()
            if error:
                peer.close()
                peer = None
                with self._pumps_lock:
                    self._pumps[session_id] -= 1
                    if not self._pumps[session_id]:
                        del self._pumps[session_id]
        return status, error, session_id, peer

    def _attach(self, session: object, conn: socket.socket, deadline: float) -> Tuple[int, str]:
        worker = session.worker  # type: ignore[attr-defined]
        if not worker.lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            return datawire.REFUSED, "the session is busy with another call; retry when it ends"
        try:
            worker.attach(conn, self._max_bytes, greet=True)
        except WorkerError as exc:
            return datawire.REFUSED_SESSION_LOST, str(self._on_lost(session, exc))
        except OSError as exc:
            return datawire.REFUSED, f"cannot hand the connection to the worker: {exc}"
        except Exception as exc:  # noqa: BLE001 - an RknnError reply: the worker refused it
            return datawire.REFUSED, f"the worker refused the connection: {exc}"
        finally:
            worker.lock.release()
        return 0, ""


def _cut(conn: socket.socket) -> None:
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
