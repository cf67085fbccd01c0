"""The TLS data port's routing preamble: which session a TLS data connection is for, said before TLS starts.

A TLS session cannot move from one process to another, so the session's worker must do the handshake
itself; the daemon has to know which worker to hand the raw connection to before any TLS byte is read. The
client therefore writes one short plaintext preamble, then starts TLS on the same connection:

    route        <4sHH>   b"RKLT", version, len(session_id), then the session id as UTF-8 bytes

The session id is not a credential (every gRPC call on it also needs the caller's token and ownership, and
the data connection's hello inside TLS carries the session's secret), so saying it in clear text reveals
only which session the connection is for. Everything after the preamble is TLS; inside it the connection
speaks the direct carrier's hello and frames (rknnlink.v1.datawire), answered by the worker.
"""

from __future__ import annotations

import socket
import struct
from typing import Optional

from rknnlink.v1 import datawire

ROUTE = struct.Struct("<4sHH")
MAGIC_ROUTE = b"RKLT"
TLS_HANDSHAKE_RECORD = 0x16  # the first byte of a TLS ClientHello: a client that sent no preamble


class RouteError(ValueError):
    """The connection did not start with a routing preamble; `tls` says it started TLS straight away (a
    client older than the preamble), else it is no rknnlink client at all."""

    def __init__(self, message: str, tls: bool = False) -> None:
        super().__init__(message)
        self.tls = tls


def encode_route(session_id: str) -> bytes:
    sid = session_id.encode()
    return ROUTE.pack(MAGIC_ROUTE, datawire.VERSION, len(sid)) + sid


def read_route(sock: socket.socket, deadline: Optional[float] = None) -> str:
    """The session id a connection is for, read whole before `deadline` (time.monotonic()) without reading
    past the preamble (the TLS handshake that follows is the worker's). A TLS ClientHello in its place is
    only peeked at, so the daemon can still answer that client inside TLS."""
    first = sock.recv(1, socket.MSG_PEEK)
    if first and first[0] == TLS_HANDSHAKE_RECORD:
        raise RouteError("the client started TLS without the routing preamble", tls=True)
    magic, version, sid_len = ROUTE.unpack(datawire.recv_exact(sock, ROUTE.size, deadline))
    if magic != MAGIC_ROUTE:
        raise RouteError("not an rknnlink TLS data connection (no routing preamble)")
    if version != datawire.VERSION:
        raise RouteError(f"data-plane protocol {version} is not supported (this side speaks {datawire.VERSION})")
    if sid_len > datawire.MAX_ID:
        raise RouteError("routing preamble: the session id is too long")
    try:
        return datawire.recv_exact(sock, sid_len, deadline).decode()
    except UnicodeDecodeError as exc:
        raise RouteError("routing preamble: the session id is not UTF-8") from exc
