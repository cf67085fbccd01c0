"""The daemon's data port, the direct carrier of the data plane: authenticate a client's raw TCP connection
and hand it to the session's worker (SCM_RIGHTS on the worker's Unix socket), so the client talks to the
worker with nothing in between. Offered only on loopback listeners (adb forward, local), where no TLS is
expected; every other route relays the same frames (rknnlink_server.relay). See rknnlink.v1.datawire.
"""

from __future__ import annotations

import hmac
import logging
import socket
import threading
import time
from typing import Callable, Optional, Tuple

from rknnlink.v1 import datawire
from rknnlink_server.errors import loggable
from rknnlink_server.worker import WorkerError

log = logging.getLogger("rknnlink_server")
HANDSHAKE_TIMEOUT = 5.0  # for the whole hello, however slowly it trickles in
MAX_PENDING_HANDSHAKES = 32


class DataListener:
    """Accepts data connections; `lookup(session_id)` returns the daemon's Session or None."""

    def __init__(self, host: str, port: int, lookup: Callable[[str], Optional[object]], max_bytes: int,
                 on_lost: Callable[[object, WorkerError], object]) -> None:
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
        try:
            status, error = self._admit(conn, time.monotonic() + HANDSHAKE_TIMEOUT)
            if error:
                log.warning("data connection refused: %s", loggable(error, 300))
                try:
                    conn.settimeout(1.0)
                    datawire.send_parts(conn, [datawire.encode_hello_reply(status, error)])
                except OSError:
                    pass
        finally:
            conn.close()  # handed over or refused: the daemon keeps no copy
            self._pending.release()

    def _admit(self, conn: socket.socket, deadline: float) -> Tuple[int, str]:
        """Hand `conn` to its session's worker; returns (status, refusal reason), or (0, "") once handed over.

        Status REFUSED_SESSION_LOST carries the message a gRPC call would give for the lost session."""
        try:
            session_id, secret = datawire.read_hello(conn, deadline)
        except socket.timeout:
            return datawire.REFUSED, f"no complete hello within {HANDSHAKE_TIMEOUT:g} s"
        except (datawire.FrameError, datawire.PeerClosedError, OSError) as exc:
            return datawire.REFUSED, f"bad hello: {exc}"
        session = self._lookup(session_id)
        expected = getattr(session, "secret", b"") if session is not None else b""
        if session is None or not expected or not hmac.compare_digest(expected, secret):
            return datawire.REFUSED, (f"unknown session {session_id[:32]!r} or wrong secret: use the session id "
                                      f"and data_secret from CreateSession")
        worker = session.worker
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
