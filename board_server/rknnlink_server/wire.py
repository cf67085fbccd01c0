"""Framing between the daemon and its runtime workers over a Unix socket pair.

A frame is `u32 header_len, u32 n_blobs, u64 blob_len[n_blobs]`, then a UTF-8 JSON header, then the blobs
as raw bytes. Tensors travel as blobs, so nothing is converted to text or pickled.
"""

from __future__ import annotations

import json
import socket
import struct
from typing import Any, Dict, List, Sequence, Tuple

from rknnlink.v1.datawire import send_parts

_PREFIX = struct.Struct("<II")
MAX_HEADER = 16 << 20
MAX_BLOBS = 4096


class WorkerGoneError(ConnectionError):
    """The peer closed the socket (the worker died or the daemon went away)."""


def send_frame(sock: socket.socket, header: Dict[str, Any], blobs: Sequence[Any] = ()) -> None:
    """Send one frame; blobs are bytes-like objects (bytes, bytearray, memoryview, contiguous ndarray)."""
    if len(blobs) > MAX_BLOBS:  # the peer would refuse the frame and stop: refuse it here, clearly
        raise ValueError(f"a worker frame with {len(blobs)} blobs (at most {MAX_BLOBS})")
    views = [memoryview(b).cast("B") for b in blobs]
    body = json.dumps(header, separators=(",", ":")).encode()
    prefix = _PREFIX.pack(len(body), len(views)) + struct.pack(f"<{len(views)}Q", *(v.nbytes for v in views))
    send_parts(sock, [prefix + body, *views])



def _recv_exact(sock: socket.socket, size: int) -> bytearray:
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:], size - got)
        if n == 0:
            raise WorkerGoneError("connection closed in the middle of a frame")
        got += n
    return buf


def recv_frame(sock: socket.socket) -> Tuple[Dict[str, Any], List[bytearray]]:
    """Receive one frame: (header, blobs). WorkerGoneError when the peer closed the socket."""
    first = sock.recv(_PREFIX.size, socket.MSG_WAITALL)
    if len(first) == 0:
        raise WorkerGoneError("connection closed")
    if len(first) < _PREFIX.size:
        first += bytes(_recv_exact(sock, _PREFIX.size - len(first)))
    header_len, n_blobs = _PREFIX.unpack(first)
    if header_len > MAX_HEADER or n_blobs > MAX_BLOBS:
        raise ValueError(f"corrupt frame: header {header_len} bytes, {n_blobs} blobs")
    head = _recv_exact(sock, 8 * n_blobs + header_len)  # blob sizes and header in one read
    sizes = struct.unpack_from(f"<{n_blobs}Q", head) if n_blobs else ()
    header = json.loads(head[8 * n_blobs:].decode())
    return header, [_recv_exact(sock, size) for size in sizes]
