"""The direct data channel between a client and a session's runtime worker (binary frames, no gRPC).

gRPC costs ~0.5 ms per round trip in Python and the daemon->worker hop adds wake-ups, so inference data may
bypass both: the client opens a TCP connection to the daemon's data port, sends a hello frame (magic,
protocol version, session id, the session's secret from CreateSession), and the daemon hands the socket to
the session's worker process. From then on the client and the worker exchange length-prefixed frames:

    hello        <4sHHH>  b"RKLD", version, len(session_id), len(secret), then both as bytes
    hello reply  <4siI>   b"RKLH", status (0 = accepted), len(message), then the UTF-8 message
    request      <4sQII>  b"RKLQ", request_id, flags (bit 0: raw outputs), n_inputs, then per input
                 <iBBHQ>  dtype, fmt, pass_through, ndim, nbytes + ndim x <q> dims, then every input's bytes
    reply        <4sQiqI> b"RKLR", request_id, status (0 or an RKNN error code), run_us, n (outputs or message
                          bytes); per output <iHxxQ> dtype, ndim, nbytes + ndim x <q> dims, then the bytes;
                          for an error, the UTF-8 text "NAME\\0message"

Replies come in request order, so a client may write several requests before reading (pipelining).
"""

from __future__ import annotations

import socket
import struct
import time
from typing import Any, List, Optional, Sequence, Tuple

from rknnlink.v1.protocol import MAX_DIMS, MAX_TENSORS

VERSION = 1
HELLO = struct.Struct("<4sHHH")
HELLO_REPLY = struct.Struct("<4siI")
REQUEST = struct.Struct("<4sQII")
INPUT = struct.Struct("<iBBHQ")
REPLY = struct.Struct("<4sQiqI")
OUTPUT = struct.Struct("<iHxxQ")
MAGIC_HELLO, MAGIC_HELLO_REPLY, MAGIC_REQUEST, MAGIC_REPLY = b"RKLD", b"RKLH", b"RKLQ", b"RKLR"
MAX_ID = 256
MAX_MESSAGE = 1 << 20
FLAG_RAW = 0x1
REFUSED = 1               # hello reply status: bad hello, unknown session or wrong secret, busy
REFUSED_SESSION_LOST = 2  # hello reply status: the session's worker is gone (the message says why)


class FrameError(ValueError):
    """A frame broke the data-channel format (wrong magic, impossible sizes)."""


class PeerClosedError(ConnectionError):
    """The other side closed the data connection."""


def recv_exact(sock: socket.socket, size: int, deadline: Optional[float] = None) -> bytearray:
    """`size` bytes; with `deadline` (time.monotonic()) socket.timeout once it passes, however the bytes
    trickle in (a per-recv timeout would restart with every byte)."""
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("the peer did not finish its frame in time")
            sock.settimeout(left)
        n = sock.recv_into(view[got:], size - got)
        if n == 0:
            raise PeerClosedError("the data connection was closed" + (" in the middle of a frame" if got else ""))
        got += n
    return buf


def send_parts(sock: socket.socket, parts: Sequence[Any]) -> None:
    """One sendmsg for the whole frame where the kernel takes it; loop only on partial sends."""
    views = [memoryview(p).cast("B") for p in parts]
    views = [v for v in views if v.nbytes]
    while views:
        sent = sock.sendmsg(views)
        while views and sent >= views[0].nbytes:
            sent -= views[0].nbytes
            views.pop(0)
        if views and sent:
            views[0] = views[0][sent:]


# -- hello -------------------------------------------------------------------------------------------------------------
def encode_hello(session_id: str, secret: bytes) -> bytes:
    sid = session_id.encode()
    return HELLO.pack(MAGIC_HELLO, VERSION, len(sid), len(secret)) + sid + bytes(secret)


def read_hello(sock: socket.socket, deadline: Optional[float] = None) -> Tuple[str, bytes]:
    """The client's hello, all of it before `deadline` (time.monotonic())."""
    magic, version, sid_len, secret_len = HELLO.unpack(recv_exact(sock, HELLO.size, deadline))
    if magic != MAGIC_HELLO:
        raise FrameError("not an rknnlink data-channel hello (bad magic)")
    if version != VERSION:
        raise FrameError(f"data-channel protocol {version} is not supported (this side speaks {VERSION})")
    if sid_len > MAX_ID or secret_len > MAX_ID:
        raise FrameError("data-channel hello: session id or secret too long")
    body = recv_exact(sock, sid_len + secret_len, deadline)
    try:
        session_id = body[:sid_len].decode()
    except UnicodeDecodeError as exc:
        raise FrameError("data-channel hello: the session id is not UTF-8") from exc
    return session_id, bytes(body[sid_len:])


def encode_hello_reply(status: int, message: str = "") -> bytes:
    text = message.encode()[:MAX_MESSAGE]
    return HELLO_REPLY.pack(MAGIC_HELLO_REPLY, status, len(text)) + text


def read_hello_reply(sock: socket.socket) -> Tuple[int, str]:
    magic, status, size = HELLO_REPLY.unpack(recv_exact(sock, HELLO_REPLY.size))
    if magic != MAGIC_HELLO_REPLY or size > MAX_MESSAGE:
        raise FrameError("the data port did not answer like an rknnlink daemon")
    return status, recv_exact(sock, size).decode(errors="replace")


# -- requests ----------------------------------------------------------------------------------------------------------
def encode_request(request_id: int, inputs: Sequence[Tuple[int, int, bool, Sequence[int], Any]],
                   raw: bool) -> List[Any]:
    """Frame parts for sendmsg; inputs are (dtype, fmt, pass_through, shape, bytes-like)."""
    head = [REQUEST.pack(MAGIC_REQUEST, request_id, FLAG_RAW if raw else 0, len(inputs))]
    datas = []
    for dtype, fmt, through, shape, data in inputs:
        view = memoryview(data).cast("B")
        head.append(INPUT.pack(dtype, fmt, 1 if through else 0, len(shape), view.nbytes))
        head.append(struct.pack(f"<{len(shape)}q", *shape))
        datas.append(view)
    return [b"".join(head), *datas]


def read_request(sock: socket.socket, max_bytes: int) -> Optional[Tuple[int, bool, List[dict], List[bytearray]]]:
    """(request_id, raw, input metas, input bytes); None when the peer closed between frames."""
    first = sock.recv(REQUEST.size, socket.MSG_WAITALL)
    if not first:
        return None
    if len(first) < REQUEST.size:
        first += bytes(recv_exact(sock, REQUEST.size - len(first)))
    magic, request_id, flags, n_inputs = REQUEST.unpack(first)
    if magic != MAGIC_REQUEST:
        raise FrameError("bad request magic: the data connection is out of step or not an rknnlink client")
    if n_inputs > MAX_TENSORS:
        raise FrameError(f"a request with {n_inputs} inputs (at most {MAX_TENSORS})")
    metas: List[dict] = []
    total = 0
    for _ in range(n_inputs):
        dtype, fmt, through, ndim, nbytes = INPUT.unpack(recv_exact(sock, INPUT.size))
        if ndim > MAX_DIMS:
            raise FrameError(f"an input with {ndim} dimensions (at most {MAX_DIMS})")
        shape = list(struct.unpack(f"<{ndim}q", recv_exact(sock, 8 * ndim)))
        if any(d < 0 for d in shape):
            raise FrameError(f"an input with a negative dimension {shape}")
        total += nbytes
        if total > max_bytes:
            raise FrameError(f"a request of more than {total} bytes (the daemon accepts {max_bytes}; "
                             f"raise rknnlink serve --max-message-mb)")
        metas.append({"dtype": dtype, "shape": shape, "fmt": fmt, "pt": bool(through), "nbytes": nbytes})
    return request_id, bool(flags & FLAG_RAW), metas, [recv_exact(sock, m["nbytes"]) for m in metas]


# -- replies -----------------------------------------------------------------------------------------------------------
def encode_reply(request_id: int, run_us: int, outputs: Sequence[Tuple[int, Sequence[int], Any]]) -> List[Any]:
    """Frame parts of a successful reply; outputs are (dtype, shape, C-contiguous bytes-like)."""
    head = [REPLY.pack(MAGIC_REPLY, request_id, 0, run_us, len(outputs))]
    datas = []
    for dtype, shape, data in outputs:
        view = memoryview(data).cast("B")
        head.append(OUTPUT.pack(dtype, len(shape), view.nbytes))
        head.append(struct.pack(f"<{len(shape)}q", *shape))
        datas.append(view)
    return [b"".join(head), *datas]


def encode_error(request_id: int, code: int, name: Optional[str], message: str) -> List[Any]:
    text = f"{name or ''}\0{message}".encode()[:MAX_MESSAGE]
    return [REPLY.pack(MAGIC_REPLY, request_id, code if code else -1, 0, len(text)) + text]


def read_reply(sock: socket.socket, max_bytes: int) -> Tuple[int, int, int, Any]:
    """(request_id, status, run_us, outputs) with outputs [(dtype, shape, bytearray)], or for status != 0
    (request_id, status, 0, (name, message)). FrameError when the outputs would exceed `max_bytes` in all
    (checked before anything is allocated)."""
    magic, request_id, status, run_us, count = REPLY.unpack(recv_exact(sock, REPLY.size))
    if magic != MAGIC_REPLY:
        raise FrameError("bad reply magic: the data connection is out of step")
    if status != 0:
        if count > MAX_MESSAGE:
            raise FrameError("an error reply with an oversized message")
        name, _, message = recv_exact(sock, count).decode(errors="replace").partition("\0")
        return request_id, status, 0, (name or None, message)
    if count > MAX_TENSORS:
        raise FrameError(f"a reply with {count} outputs")
    metas = []
    total = 0
    for _ in range(count):
        dtype, ndim, nbytes = OUTPUT.unpack(recv_exact(sock, OUTPUT.size))
        total += nbytes
        if ndim > MAX_DIMS or total > max_bytes:
            raise FrameError(f"a reply with impossible dimensions or more than {max_bytes} bytes of outputs")
        metas.append((dtype, struct.unpack(f"<{ndim}q", recv_exact(sock, 8 * ndim)), nbytes))
    return request_id, 0, run_us, [(dtype, shape, recv_exact(sock, nbytes)) for dtype, shape, nbytes in metas]
