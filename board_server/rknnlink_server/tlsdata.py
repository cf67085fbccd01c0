"""TLS data connections ended in the session's worker: the handshake, the hello inside TLS, then the worker's
usual frame loop on the TLS socket.

The daemon's TLS data port reads only the plaintext routing preamble (rknnlink.v1.dataroute) and hands the
raw TCP connection to the session's worker over the SCM_RIGHTS attach, with the data port's certificate and
key paths and the session's id and secret in the attach header; nothing is pumped by the daemon. Here the
worker does the TLS handshake (an absolute deadline for the handshake and the hello together, however slowly
the bytes trickle in), checks the hello's session id and secret, answers the hello inside TLS and serves
frames (rknnlink.v1.tlsstream: TLS through memory BIOs, a few large system calls per frame). Fail closed:
a failed handshake or a wrong secret ends the connection before any frame is read.

Limits per worker: MAX_HANDSHAKES connections between attach and a checked hello, MAX_CONNECTIONS checked
ones (a client's pipelines). The worker's loop may read with one thread while another replies: the TLS
stream locks its TLS object (rknnlink.v1.tlsstream). An idle limit is the socket's timeout.
"""

from __future__ import annotations

import hmac
import logging
import socket
import ssl
import threading
import time
from typing import Any, Callable, Dict, Optional, Tuple

from rknnlink.v1 import datawire
from rknnlink.v1.tlsstream import TlsStream

log = logging.getLogger("rknnlink_server.worker")
HANDSHAKE_TIMEOUT = 5.0  # the TLS handshake and the hello inside it, together
MAX_HANDSHAKES = 8
MAX_CONNECTIONS = 3      # like a client's long-lived calls: checked TLS data connections of one session


def unknown_session(session_id: str) -> str:
    """The refusal for an unknown session or a wrong secret (the same words for both: nothing to probe)."""
    return (f"unknown session {session_id[:32]!r} or wrong secret: use the session id and data_secret from "
            f"CreateSession")


class _Admission:
    """How many TLS connections this worker is handshaking and serving."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.handshaking = 0
        self.serving = 0
        self.contexts: Dict[Tuple[str, str], ssl.SSLContext] = {}

    def context(self, cert: str, key: str) -> ssl.SSLContext:
        with self.lock:
            context = self.contexts.get((cert, key))
            if context is None:
                from rknnlink_server.tls import data_port_context

                context = data_port_context(cert, key)
                self.contexts[(cert, key)] = context
            return context


_ADMISSION = _Admission()


def serve(worker: Any, conn: socket.socket, header: Dict[str, Any],
          serve_data: Callable[..., None]) -> None:
    """Handshake, hello and frames of one TLS data connection handed over by the daemon's data port (the
    attach `header`: max_bytes, and under "tls" the cert and key paths, session_id, secret (hex) and the idle
    limit). `serve_data(worker, sock, max_bytes, greet, timeout=)` is the worker's frame loop."""
    admission, tls = _ADMISSION, header["tls"]
    with admission.lock:
        if admission.handshaking >= MAX_HANDSHAKES:
            log.warning("TLS data connection refused: %d handshakes already in progress", MAX_HANDSHAKES)
            conn.close()
            return
        admission.handshaking += 1
    counted = False
    try:
        tls_conn = _handshake(conn, tls, admission)
        if tls_conn is None:
            return
        conn = tls_conn
        with admission.lock:
            admission.handshaking -= 1
            counted = True
            full = admission.serving >= MAX_CONNECTIONS
            if not full:
                admission.serving += 1
        if full:
            _refuse(conn, f"session {str(tls.get('session_id', ''))[:32]!r} already has {MAX_CONNECTIONS} data "
                          f"connections: close one (a pipeline) first")
            return
        try:
            conn.settimeout(5.0)
            conn.sendall(datawire.encode_hello_reply(0, "attached"))
            serve_data(worker, conn, int(header.get("max_bytes", 64 << 20)), False,
                       timeout=float(tls.get("idle", 120.0)))
            conn = None  # closed by serve_data
        finally:
            with admission.lock:
                admission.serving -= 1
    except (OSError, datawire.PeerClosedError, datawire.FrameError) as exc:
        log.info("TLS data connection ended: %s", exc)
    finally:
        if not counted:
            with admission.lock:
                admission.handshaking -= 1
        if conn is not None:
            conn.close()


def _handshake(conn: socket.socket, tls: Dict[str, Any], admission: _Admission) -> Optional[TlsStream]:
    """The TLS handshake and a checked hello by the deadline (a timer cuts the socket then), or None (refused,
    logged, `conn` closed)."""
    deadline = time.monotonic() + HANDSHAKE_TIMEOUT
    cutter = conn.dup()  # shutting a duplicate down cuts the connection, whichever object wraps it by then
    timer = threading.Timer(max(0.0, deadline - time.monotonic()), _cut, args=(cutter,))
    timer.daemon = True
    timer.start()
    tls_conn: Optional[TlsStream] = None
    try:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.settimeout(max(0.0, deadline - time.monotonic()))
        context = admission.context(str(tls["cert"]), str(tls["key"]))
        tls_conn = TlsStream(conn, context, server_side=True).handshake(deadline)
        session_id, secret = datawire.read_hello(tls_conn, deadline)
        expected = bytes.fromhex(str(tls.get("secret", "")))
        if session_id != tls.get("session_id") or not expected or not hmac.compare_digest(expected, secret):
            _refuse(tls_conn, unknown_session(session_id))
            return None
        return tls_conn
    except socket.timeout:
        log.warning("TLS data connection refused: no handshake and hello within the %g s deadline",
                    HANDSHAKE_TIMEOUT)
    except (OSError, ssl.SSLError, datawire.FrameError, datawire.PeerClosedError) as exc:
        log.warning("TLS data connection refused: %s", str(exc)[:200])
        if tls_conn is not None and isinstance(exc, datawire.FrameError):
            _refuse(tls_conn, f"bad hello: {exc}")
            return None
    finally:
        timer.cancel()
        cutter.close()
    (tls_conn or conn).close()
    return None


def _refuse(conn: TlsStream, message: str) -> None:
    """A refusal hello reply, then close (the caller's copy is closed here)."""
    log.warning("TLS data connection refused: %s", message[:300])
    try:
        conn.settimeout(1.0)
        conn.sendall(datawire.encode_hello_reply(datawire.REFUSED, message))
    except OSError:
        pass
    conn.close()


def _cut(conn: socket.socket) -> None:
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
