"""The daemon's data port, the direct carrier of the data plane: authenticate a client's TCP connection and
hand it to the session's worker (SCM_RIGHTS on the worker's Unix socket), so the client talks to the worker
with nothing in between. A plain data port is offered only next to a loopback plain-text gRPC listener (adb
forward, local). Next to a TLS listener the data port speaks TLS with the same certificate (fail closed:
without a certificate there is no data port): a TLS session cannot move to another process, so the client
names its session in a plaintext routing preamble (rknnlink.v1.dataroute), the daemon hands the raw
connection to that session's worker, and the worker ends TLS itself (rknnlink_server.tlsdata). Routes
without a byte stream to the data port relay the frames over gRPC (rknnlink_server.relay).
See rknnlink.v1.datawire.
"""

from __future__ import annotations

import hmac
import logging
import socket
import ssl
import threading
import time
from typing import Any, Callable, Dict, Optional, Tuple

from rknnlink.v1 import dataroute, datawire
from rknnlink_server.errors import loggable
from rknnlink_server.tlsdata import unknown_session
from rknnlink_server.worker import WorkerError

log = logging.getLogger("rknnlink_server")
HANDSHAKE_TIMEOUT = 5.0  # for the whole hello, however slowly it trickles in
MAX_PENDING_HANDSHAKES = 32


class DataListener:
    """Accepts data connections; `lookup(session_id)` returns the daemon's Session or None."""

    def __init__(self, host: str, port: int, lookup: Callable[[str], Optional[object]], max_bytes: int,
                 on_lost: Callable[[object, WorkerError], object], tls: Optional[ssl.SSLContext] = None,
                 idle_limit: float = 120.0) -> None:
        if tls is not None and not getattr(tls, "cert_path", ""):
            raise ValueError("the TLS data port needs the context of rknnlink_server.tls.data_port_context (the "
                             "session workers end TLS with its certificate and key files)")
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
        try:
            if self.tls is not None:
                self._route_tls(conn, deadline)
                return
            status, error = self._admit(conn, deadline)
            if error:
                log.warning("data connection refused: %s", loggable(error, 300))
                try:
                    conn.settimeout(1.0)
                    conn.sendall(datawire.encode_hello_reply(status, error))
                except OSError:
                    pass
        finally:
            self._pending.release()
            conn.close()  # handed over or refused: the daemon keeps no copy

    def _route_tls(self, conn: socket.socket, deadline: float) -> None:
        """A TLS data connection: its routing preamble names the session, whose worker gets the raw connection
        and ends TLS itself (rknnlink_server.tlsdata: handshake, secret, frames). Refusals the daemon can give
        (unknown session, a busy or lost worker, a client without the preamble) go back inside TLS."""
        try:
            conn.settimeout(HANDSHAKE_TIMEOUT)
            session_id = dataroute.read_route(conn, deadline)
        except dataroute.RouteError as exc:
            if exc.tls:  # a client from before the preamble: tell it inside TLS what to do
                self._refuse_in_tls(conn, deadline, datawire.REFUSED, (
                    "this daemon's TLS data port expects a routing preamble before TLS (data-plane protocol "
                    f"{datawire.VERSION}): update the host (`pip install -U rknnlink`)"))
            else:
                log.warning("TLS data connection refused: %s", loggable(str(exc), 200))
            return
        except socket.timeout:
            log.warning("TLS data connection refused: no routing preamble within %g s", HANDSHAKE_TIMEOUT)
            return
        except (OSError, datawire.PeerClosedError) as exc:
            log.info("TLS data connection ended before its routing preamble: %s", exc)
            return
        session = self._lookup(session_id)
        secret = getattr(session, "secret", b"") if session is not None else b""
        if session is None or not secret:
            self._refuse_in_tls(conn, deadline, datawire.REFUSED, unknown_session(session_id))
            return
        status, error = self._attach(session, conn, deadline, tls={
            "cert": self.tls.cert_path, "key": self.tls.key_path,  # type: ignore[union-attr]
            "session_id": session_id, "secret": bytes(secret).hex(), "idle": self._idle_limit})
        if error:
            self._refuse_in_tls(conn, deadline, status, error)

    def _refuse_in_tls(self, conn: socket.socket, deadline: float, status: int, message: str) -> None:
        """End TLS here only to refuse: the handshake, the client's hello, then the refusal."""
        log.warning("TLS data connection refused: %s", loggable(message.replace("\0", " "), 300))
        wrapped = self._tls_handshake(conn, deadline)
        if wrapped is None:
            return
        try:
            datawire.read_hello(wrapped, deadline)
            wrapped.settimeout(1.0)
            wrapped.sendall(datawire.encode_hello_reply(status, message))
        except (OSError, datawire.FrameError, datawire.PeerClosedError):
            pass
        finally:
            wrapped.close()

    def _tls_handshake(self, conn: socket.socket, deadline: float) -> Optional[ssl.SSLSocket]:
        """The TLS handshake, done by `deadline` however slowly the bytes trickle in (a timer cuts it)."""
        timer = threading.Timer(max(0.0, deadline - time.monotonic()), _cut, args=(conn,))
        timer.daemon = True
        timer.start()
        try:
            conn.settimeout(max(0.0, deadline - time.monotonic()))
            return self.tls.wrap_socket(conn, server_side=True)  # type: ignore[union-attr]
        except (OSError, ssl.SSLError) as exc:
            log.warning("TLS data connection refused: %s", loggable(str(exc), 200))
            return None
        finally:
            timer.cancel()

    def _admit(self, conn: socket.socket, deadline: float) -> Tuple[int, str]:
        """Hand a plain `conn` to its session's worker after its hello; returns (status, refusal reason),
        reason "" once handed over. Status REFUSED_SESSION_LOST carries the message a gRPC call would give for
        the lost session."""
        try:
            session_id, secret = datawire.read_hello(conn, deadline)
        except socket.timeout:
            return datawire.REFUSED, f"no complete hello within {HANDSHAKE_TIMEOUT:g} s"
        except (datawire.FrameError, datawire.PeerClosedError, OSError) as exc:
            return datawire.REFUSED, f"bad hello: {exc}"
        session = self._lookup(session_id)
        expected = getattr(session, "secret", b"") if session is not None else b""
        if session is None or not expected or not hmac.compare_digest(expected, secret):
            return datawire.REFUSED, unknown_session(session_id)
        return self._attach(session, conn, deadline)

    def _attach(self, session: object, conn: socket.socket, deadline: float,
                tls: Optional[Dict[str, Any]] = None) -> Tuple[int, str]:
        worker = session.worker  # type: ignore[attr-defined]
        if not worker.lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            return datawire.REFUSED, "the session is busy with another call; retry when it ends"
        try:
            worker.attach(conn, self._max_bytes, greet=True, tls=tls)
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
