"""The data plane's frames: how inference requests and replies travel between a client and a session's worker.

Every route carries the same frames; only the carrier differs (docs/protocol.md, "The data plane"):
  * direct: a TCP connection to the daemon's data port, authenticated by a hello and then handed to the
    session's worker (SCM_RIGHTS), so client and worker talk with nothing in between;
  * relayed: a gRPC `Relay` stream, whose daemon end pumps the frames, unread, into a socket it handed to the
    worker the same way (TLS network endpoints, the USB bridge, adb without a data forward).

    hello        <4sHHH>  b"RKLD", version, len(session_id), len(secret), then both as bytes (direct only)
    hello reply  <4siI>   b"RKLH", status (0 = accepted), len(message), then the UTF-8 message (direct only)

After the hello every frame starts with its length, so a relay forwards it without parsing it:

    frame        <Q>      number of bytes after this prefix, then the body:
    request      <4sQII>  b"RKLQ", request_id, flags (bit 0: raw outputs, bit 1: inputs in a slot), n_inputs,
                          then per input
                 <iBBHQ>  dtype, fmt, pass_through, ndim, nbytes + ndim x <q> dims, then every input's bytes;
                          with bit 1, instead of the bytes a <I> slot index: the inputs are in that slot of
                          the connection's shared-memory ring (rknnlink.v1.shmring, local peers only)
    reply        <4sQiqI> b"RKLR", request_id, status (0 or an RKNN error code), run_us, n (outputs or message
                          bytes); per output <iHxxQ> dtype, ndim, nbytes + ndim x <q> dims, then the bytes;
                          for an error, the UTF-8 text "NAME\\0message"

    ring setup   shmring.SETUP (client to worker, once, nothing in flight; only after the worker's hello reply
                          offered shmring.CAPABILITY) and its answer shmring.ACK: framed like the others; with
                          the queue (QUEUE_CAPABILITY) requests and replies then go through the ring, and only
                          what does not fit there travels as these frames (shmring.Queue)

Replies come in request order, so a client may write several requests before reading (pipelining). A reader
checks a frame's length against its limit before it allocates, then reads the whole frame into one buffer
and parses it there: tensors are views of that buffer, never copies.
"""

from __future__ import annotations

import select
import socket
import struct
import time
from typing import Any, Callable, List, Optional, Sequence, Tuple

import numpy as np

from rknnlink.v1 import shmring
from rknnlink.v1.protocol import MAX_DIMS, MAX_TENSORS, PROTOCOL_VERSION

VERSION = PROTOCOL_VERSION
HELLO = struct.Struct("<4sHHH")
HELLO_REPLY = struct.Struct("<4siI")
LENGTH = struct.Struct("<Q")
REQUEST = struct.Struct("<4sQII")
INPUT = struct.Struct("<iBBHQ")
REPLY = struct.Struct("<4sQiqI")
OUTPUT = struct.Struct("<iHxxQ")
MAGIC_HELLO, MAGIC_HELLO_REPLY, MAGIC_REQUEST, MAGIC_REPLY = b"RKLD", b"RKLH", b"RKLQ", b"RKLR"
MAX_ID = 256
MAX_MESSAGE = 1 << 20
# Bytes of a frame beyond its tensor data: the largest header of MAX_TENSORS tensors of MAX_DIMS dimensions.
MAX_OVERHEAD = REQUEST.size + MAX_TENSORS * (INPUT.size + 8 * MAX_DIMS) + MAX_MESSAGE
FLAG_RAW = 0x1
FLAG_SLOT = 0x2   # the request's inputs are in a slot of the connection's shared-memory ring
SLOT = struct.Struct("<I")
REFUSED = 1               # hello reply status: bad hello, unknown session or wrong secret, busy
REFUSED_SESSION_LOST = 2  # hello reply status: the session's worker is gone (the message says why)


class FrameError(ValueError):
    """A frame broke the data-plane format (wrong magic, impossible sizes)."""


class PeerClosedError(ConnectionError):
    """The other side closed the data connection."""


def recv_exact(sock: socket.socket, size: int, deadline: Optional[float] = None) -> bytearray:
    """`size` bytes; with `deadline` (time.monotonic()) socket.timeout once it passes, however the bytes
    trickle in (a per-recv timeout would restart with every byte)."""
    buf = bytearray(size)
    recv_into_exact(sock, memoryview(buf), deadline)
    return buf


def recv_into_exact(sock: socket.socket, view: memoryview, deadline: Optional[float] = None) -> None:
    """Fill `view` from `sock` (see recv_exact)."""
    size = view.nbytes
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


def peer_closed(sock: socket.socket) -> bool:
    """Whether the peer closed or reset `sock`, looked at without reading (a peek): how the two ends of a
    ring's queue, which exchange nothing on the socket while they wait, notice that the other died."""
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def send_parts(sock: socket.socket, parts: Sequence[Any], drain: Optional[Callable[[], bool]] = None) -> None:
    """One sendmsg for the whole frame where the kernel takes it; loop only on partial sends.

    `drain`: while the frame does not fit (the peer is not reading), call it whenever bytes wait to be read
    (it reads one frame; False: stop calling it): two peers that both write before they read would otherwise
    wait for each other forever once the socket buffers are full (a pipeline of large inputs and outputs)."""
    views = [memoryview(p).cast("B") for p in parts]
    views = [v for v in views if v.nbytes]
    flags = socket.MSG_DONTWAIT if drain is not None else 0
    while views:
        try:
            sent = sock.sendmsg(views, (), flags)
        except BlockingIOError:
            sent = 0
        while views and sent >= views[0].nbytes:
            sent -= views[0].nbytes
            views.pop(0)
        if views and sent:
            views[0] = views[0][sent:]
        if views and drain is not None:
            poller = select.poll()
            poller.register(sock, select.POLLIN | select.POLLOUT)
            if any(events & select.POLLIN for _fd, events in poller.poll()) and not drain():
                drain, flags = None, 0


# -- hello (direct carrier) ----------------------------------------------------------------------------------------
def encode_hello(session_id: str, secret: bytes) -> bytes:
    sid = session_id.encode()
    return HELLO.pack(MAGIC_HELLO, VERSION, len(sid), len(secret)) + sid + bytes(secret)


def read_hello(sock: socket.socket, deadline: Optional[float] = None) -> Tuple[str, bytes]:
    """The client's hello, all of it before `deadline` (time.monotonic())."""
    magic, version, sid_len, secret_len = HELLO.unpack(recv_exact(sock, HELLO.size, deadline))
    if magic != MAGIC_HELLO:
        raise FrameError("not an rknnlink data-channel hello (bad magic)")
    if version != VERSION:
        raise FrameError(f"data-plane protocol {version} is not supported (this side speaks {VERSION}): update "
                         f"the older side (`pip install -U rknnlink` on the host, `rknnlink deploy` for the board)")
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


# -- frames --------------------------------------------------------------------------------------------------------
def frame_limit(max_tensor_bytes: int) -> int:
    """The largest frame body a reader accepts when the tensors of one frame may total `max_tensor_bytes`."""
    return max_tensor_bytes + MAX_OVERHEAD


def read_frame(sock: socket.socket, limit: int) -> Optional[memoryview]:
    """The next frame's body (its length checked against `limit` before anything is allocated), or None
    when the peer closed between frames."""
    prefix = sock.recv(LENGTH.size, socket.MSG_WAITALL)
    if not prefix:
        return None
    if len(prefix) < LENGTH.size:
        prefix += bytes(recv_exact(sock, LENGTH.size - len(prefix)))
    (size,) = LENGTH.unpack(prefix)
    if size > limit:
        raise FrameError(f"a frame of {size} bytes (this side accepts {limit}; raise rknnlink serve "
                         f"--max-message-mb for larger tensors)")
    body = memoryview(bytearray(size))
    recv_into_exact(sock, body)
    return body


class FrameReader:
    """Reads frames from a stream socket with as few syscalls as the bytes allow: one recv_into a reused
    buffer usually brings a small frame whole (or a big frame's length and first bytes); a big frame's rest
    goes straight into its own buffer. Small frames are copied out (their tensors may outlive the next read).

    `wait` (optional) is called whenever a recv times out (the socket's SO_RCVTIMEO, see set_wait_interval),
    then the read goes on: the client uses it to probe the daemon while a reply is overdue."""

    def __init__(self, sock: socket.socket, size: int = 1 << 16, wait: Optional[Callable[[], None]] = None) -> None:
        self.sock, self.wait = sock, wait
        self._buf = bytearray(size)
        self._view = memoryview(self._buf)
        self._start = self._end = 0
        self._buffered = getattr(sock, "buffered", None)  # a TLS stream holds received bytes of its own
        self._poll: Optional[select.poll] = None

    def set_wait_interval(self, seconds: float) -> None:
        """Let a blocking recv give up after `seconds` (kernel SO_RCVTIMEO: no poll() per read)."""
        whole = int(seconds)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                             struct.pack("ll", whole, int((seconds - whole) * 1e6)))

    def pending(self) -> bool:
        """True when bytes of a next frame are buffered here or waiting in the socket."""
        if self._end > self._start:
            return True
        if self._buffered is not None and self._buffered():
            return True
        if self._poll is None:  # registered once: a poll(0) per call is half a select's cost (no fd lists)
            self._poll = select.poll()
            self._poll.register(self.sock, select.POLLIN)
        return bool(self._poll.poll(0))

    def has_frame(self) -> bool:
        """True when a whole next frame is buffered here: read() returns it without a system call."""
        have = self._end - self._start
        return have >= LENGTH.size and have - LENGTH.size >= LENGTH.unpack_from(self._buf, self._start)[0]

    def _recv_into(self, view: memoryview) -> int:
        while True:
            try:
                n = self.sock.recv_into(view)
            except BlockingIOError:
                if self.wait is None:
                    raise
                self.wait()
                continue
            if n == 0:
                raise PeerClosedError("the data connection was closed in the middle of a frame")
            return n

    def _fill(self) -> None:
        if self._end == len(self._buf):  # move the unread rest to the front
            rest = self._end - self._start
            self._view[:rest] = self._view[self._start:self._end]
            self._start, self._end = 0, rest
        self._end += self._recv_into(self._view[self._end:])

    def read(self, limit: int) -> Optional[memoryview]:
        """The next frame's body (its length checked against `limit` before a frame buffer is allocated),
        or None when the peer closed between frames."""
        while self._end - self._start < LENGTH.size:
            if self._end == self._start:
                self._start = self._end = 0
                try:
                    self._fill()
                except PeerClosedError:
                    return None
            else:
                self._fill()
        (size,) = LENGTH.unpack_from(self._buf, self._start)
        if size > limit:
            raise FrameError(f"a frame of {size} bytes (this side accepts {limit}; raise rknnlink serve "
                             f"--max-message-mb for larger tensors)")
        self._start += LENGTH.size
        have = self._end - self._start
        if size + LENGTH.size <= len(self._buf):
            if have < size and self._start + size > len(self._buf):  # make room behind the unread part
                self._view[:have] = self._view[self._start:self._end]
                self._start, self._end = 0, have
            while self._end - self._start < size:
                self._fill()
            body = bytearray(self._view[self._start:self._start + size])
            self._start += size
        else:  # uninitialised (numpy.empty): every byte is received into it, zeroing it first costs a pass
            body = np.empty(size, np.uint8)
            body[:have] = self._view[self._start:self._end]
            self._start = self._end = 0
            view = memoryview(body)
            while have < size:
                have += self._recv_into(view[have:])
        if self._start == self._end:
            self._start = self._end = 0
        return memoryview(body)


# A tensor's header with its dims, by number of dims; a frame's length prefix with the request/reply header.
_INPUT_HEADS = [struct.Struct(INPUT.format + "q" * n) for n in range(MAX_DIMS + 1)]
_OUTPUT_HEADS = [struct.Struct(OUTPUT.format + "q" * n) for n in range(MAX_DIMS + 1)]
_FRAMED_REQUEST = struct.Struct(LENGTH.format + REQUEST.format[1:])
_FRAMED_REPLY = struct.Struct(LENGTH.format + REPLY.format[1:])


def _tensor_head(heads: List[struct.Struct], shape: Sequence[int]) -> struct.Struct:
    if len(shape) >= len(heads):
        raise ValueError(f"a tensor with {len(shape)} dimensions (the data plane carries at most {MAX_DIMS})")
    return heads[len(shape)]


def _framed(head: List[bytes], datas: List[memoryview]) -> List[Any]:
    header = b"".join(head)
    size = len(header) + sum(d.nbytes for d in datas)
    return [LENGTH.pack(size) + header, *datas]


class _Reader:
    """Sequential parsing of one frame body; every read is checked against the body's end."""

    def __init__(self, body: memoryview) -> None:
        self.body, self.pos = body, 0

    def take(self, size: int) -> memoryview:
        end = self.pos + size
        if end > self.body.nbytes:
            raise FrameError("a frame shorter than its header says")
        view = self.body[self.pos:end]
        self.pos = end
        return view

    def unpack(self, st: struct.Struct) -> tuple:
        return st.unpack(self.take(st.size))

    def dims(self, ndim: int) -> Tuple[int, ...]:
        if ndim > MAX_DIMS:
            raise FrameError(f"a tensor with {ndim} dimensions (at most {MAX_DIMS})")
        return struct.unpack(f"<{ndim}q", self.take(8 * ndim))


# -- requests ------------------------------------------------------------------------------------------------------
def encode_request(request_id: int, inputs: Sequence[Tuple[int, int, bool, Sequence[int], Any]],
                   raw: bool, slot: Optional[int] = None) -> List[Any]:
    """Frame parts for sendmsg; inputs are (dtype, fmt, pass_through, shape, bytes-like), referenced, not copied.
    With `slot`, the frame names that slot of the ring instead of carrying the bytes (the caller has written
    them there, at shmring.spans of their sizes)."""
    heads, datas, size = [], [], REQUEST.size
    for dtype, fmt, through, shape, data in inputs:
        view = memoryview(data).cast("B")
        head = _tensor_head(_INPUT_HEADS, shape).pack(dtype, fmt, 1 if through else 0, len(shape), view.nbytes,
                                                      *shape)
        heads.append(head)
        datas.append(view)
        size += len(head) + view.nbytes
    flags = FLAG_RAW if raw else 0
    if slot is not None:
        size += SLOT.size - sum(d.nbytes for d in datas)
        return [_FRAMED_REQUEST.pack(size, MAGIC_REQUEST, request_id, flags | FLAG_SLOT, len(inputs))
                + b"".join(heads) + SLOT.pack(slot)]
    return [_FRAMED_REQUEST.pack(size, MAGIC_REQUEST, request_id, flags, len(inputs)) + b"".join(heads), *datas]


def _slot_spans(metas: List[dict], ring: Optional[shmring.Ring]) -> List[Tuple[int, int]]:
    """Where a slotted request's inputs lie in their slot; FrameError when no ring was set up or they do not
    fit in one slot (a client's bad length is never a read outside the ring)."""
    if ring is None:
        raise FrameError("a request names a shared-memory slot, but this connection has no ring")
    spans, need = shmring.spans([m["nbytes"] for m in metas])
    if need > ring.input_bytes:
        raise FrameError(f"a request's inputs of {need} bytes exceed the ring's slots of {ring.input_bytes}")
    return spans


def _slot_views(ring: shmring.Ring, slot: int, spans: List[Tuple[int, int]]) -> List[memoryview]:
    try:
        return ring.views(slot, spans)
    except shmring.RingError as exc:
        raise FrameError(str(exc)) from None


_REQUEST_ID = struct.Struct("<Q")  # REQUEST's request id, right after its magic
_REQUEST_ID_AT = len(MAGIC_REQUEST)
_REQUEST_REST_AT = _REQUEST_ID_AT + _REQUEST_ID.size


def request_id_and_rest(body: Any) -> Optional[Tuple[int, bytes]]:
    """A request body's id and every byte after it, or None when the body is no request. Two requests of one
    layout in one ring slot differ only in their id: the rest keys a run bound to that slot (a board worker's
    queue), and the same rest parses the same."""
    if len(body) < REQUEST.size or body[:_REQUEST_ID_AT] != MAGIC_REQUEST:
        return None
    return _REQUEST_ID.unpack_from(body, _REQUEST_ID_AT)[0], bytes(body[_REQUEST_REST_AT:])


def parse_request(body: memoryview, ring: Optional[shmring.Ring] = None) -> Tuple[int, bool, List[dict],
                                                                                 List[memoryview]]:
    """(request_id, raw, input metas, input bytes as views of `body`, or of the slot of `ring` the request
    names)."""
    r = _Reader(body)
    magic, request_id, flags, n_inputs = r.unpack(REQUEST)
    if magic != MAGIC_REQUEST:
        raise FrameError("bad request magic: the data connection is out of step or not an rknnlink client")
    if n_inputs > MAX_TENSORS:
        raise FrameError(f"a request with {n_inputs} inputs (at most {MAX_TENSORS})")
    metas: List[dict] = []
    for _ in range(n_inputs):
        dtype, fmt, through, ndim, nbytes = r.unpack(INPUT)
        shape = list(r.dims(ndim))
        if any(d < 0 for d in shape):
            raise FrameError(f"an input with a negative dimension {shape}")
        metas.append({"dtype": dtype, "shape": shape, "fmt": fmt, "pt": bool(through), "nbytes": nbytes})
    if flags & FLAG_SLOT:
        (slot,) = r.unpack(SLOT)
        spans = _slot_spans(metas, ring)
        datas = _slot_views(ring, slot, spans)  # type: ignore[arg-type] - _slot_spans checked it
    else:
        datas = [r.take(m["nbytes"]) for m in metas]
    if r.pos != body.nbytes:
        raise FrameError("a request frame longer than its tensors")
    return request_id, bool(flags & FLAG_RAW), metas, datas


Layout = Tuple[bool, Tuple[Tuple[int, int, bool, Tuple[int, ...]], ...]]


class RequestParser:
    """parse_request for one connection, whose requests mostly repeat one layout (a pipeline's frames): a
    body of the last parsed one's size whose header (every byte but the request id's) is the same reuses that
    parse, so a request costs one comparison of its header instead of a parse.

    parse(body) -> (request_id, layout, input bytes as views of `body`), where layout is the hashable
    (raw, ((dtype, fmt, pass_through, shape), ...)); FrameError as parse_request.

    `ring`: the connection's shared-memory ring once set up (slotted requests name its slots); `slotted`:
    whether the last parsed request was one (its inputs are in the ring, not in the body), `slot` its slot."""

    _ID = struct.Struct("<Q")

    def __init__(self) -> None:
        self._size = -1
        self._head = b""
        self._layout: Optional[Layout] = None
        self._spans: List[Tuple[int, int]] = []
        self.ring: Optional[shmring.Ring] = None
        self.slotted = False
        self.slot = -1  # the slot of the last parsed request, when it was slotted

    def parse(self, body: memoryview) -> Tuple[int, Layout, List[memoryview]]:
        head = self._head
        if (body.nbytes == self._size and body[:4] == MAGIC_REQUEST and self._layout is not None
                and body[12:12 + len(head)] == head):
            if self.slotted:  # the same flags: FLAG_SLOT is part of the compared header
                slot = self.slot = SLOT.unpack_from(body, body.nbytes - SLOT.size)[0]
                return self._ID.unpack_from(body, 4)[0], self._layout, _slot_views(self.ring, slot, self._spans)
            return self._ID.unpack_from(body, 4)[0], self._layout, [body[a:b] for a, b in self._spans]
        self._layout = None  # a failed parse leaves nothing to reuse
        request_id, raw, metas, datas = parse_request(body, self.ring)
        slotted = bool(REQUEST.unpack_from(body)[2] & FLAG_SLOT)
        if slotted:
            end = body.nbytes - SLOT.size
            spans = _slot_spans(metas, self.ring)
            self.slot = SLOT.unpack_from(body, end)[0]
        else:
            end = body.nbytes - sum(m["nbytes"] for m in metas)
            spans, at = [], end
            for m in metas:
                spans.append((at, at + m["nbytes"]))
                at += m["nbytes"]
        self._size, self._head, self._spans, self.slotted = body.nbytes, bytes(body[12:end]), spans, slotted
        self._layout = (raw, tuple((m["dtype"], m["fmt"], m["pt"], tuple(m["shape"])) for m in metas))
        return request_id, self._layout, datas


# -- replies -------------------------------------------------------------------------------------------------------
def encode_reply(request_id: int, run_us: int, outputs: Sequence[Tuple[int, Sequence[int], Any]]) -> List[Any]:
    """Frame parts of a successful reply; outputs are (dtype, shape, C-contiguous bytes-like)."""
    heads, datas, size = [], [], REPLY.size
    for dtype, shape, data in outputs:
        view = memoryview(data).cast("B")
        head = _tensor_head(_OUTPUT_HEADS, shape).pack(dtype, len(shape), view.nbytes, *shape)
        heads.append(head)
        datas.append(view)
        size += len(head) + view.nbytes
    return [_FRAMED_REPLY.pack(size, MAGIC_REPLY, request_id, 0, run_us, len(outputs)) + b"".join(heads), *datas]


def output_heads(outputs: Sequence[Tuple[int, Sequence[int], int]]) -> bytes:
    """A reply's output headers: per output (dtype code, shape, nbytes), each with its dims."""
    return b"".join(_tensor_head(_OUTPUT_HEADS, shape).pack(dtype, len(shape), nbytes, *shape)
                    for dtype, shape, nbytes in outputs)


class ReplyEncoder:
    """encode_reply for one connection, whose replies mostly repeat one output layout (a pipeline's): the
    output headers of the last layout are kept, so a reply costs one pack of the fields that change, and
    outputs of at most SMALL_REPLY bytes in all are joined to the header (one small buffer for the kernel).

    `type_of(numpy dtype) -> dtype code` (rknnlink.runtime.library.output_type_of); encode() takes the output
    arrays themselves (C-contiguous numpy arrays)."""

    SMALL_REPLY = 4096

    def __init__(self, type_of: Callable[[Any], int]) -> None:
        self._type_of = type_of
        self._key: Any = None
        self._heads = b""
        self._size = 0
        self._small = True

    def encode(self, request_id: int, run_us: int, arrays: Sequence[Any]) -> List[Any]:
        """As encode_reply(request_id, run_us, [(type_of(a.dtype), a.shape, a) for a in arrays])."""
        key = tuple((a.dtype, a.shape) for a in arrays)
        if key != self._key:
            self._heads = output_heads([(self._type_of(a.dtype), a.shape, a.nbytes) for a in arrays])
            data_bytes = sum(a.nbytes for a in arrays)
            self._size = REPLY.size + len(self._heads) + data_bytes
            self._small = data_bytes <= self.SMALL_REPLY
            self._key = key
        head = _FRAMED_REPLY.pack(self._size, MAGIC_REPLY, request_id, 0, run_us, len(arrays)) + self._heads
        if self._small:
            return [b"".join([head, *(a.tobytes() for a in arrays)])]
        return [head, *arrays]


def encode_error(request_id: int, code: int, name: Optional[str], message: str) -> List[Any]:
    text = f"{name or ''}\0{message}".encode()[:MAX_MESSAGE]
    return _framed([REPLY.pack(MAGIC_REPLY, request_id, code if code else -1, 0, len(text)), text], [])


def parse_reply(body: memoryview, max_bytes: int) -> Tuple[int, int, int, Any]:
    """(request_id, status, run_us, outputs) with outputs [(dtype, shape, memoryview of body)], or for
    status != 0 (request_id, status, 0, (name, message)). FrameError when the outputs would exceed
    `max_bytes` in all or the frame is malformed."""
    r = _Reader(body)
    magic, request_id, status, run_us, count = r.unpack(REPLY)
    if magic != MAGIC_REPLY:
        raise FrameError("bad reply magic: the data connection is out of step")
    if status != 0:
        if count > MAX_MESSAGE:
            raise FrameError("an error reply with an oversized message")
        name, _, message = bytes(r.take(count)).decode(errors="replace").partition("\0")
        return request_id, status, 0, (name or None, message)
    if count > MAX_TENSORS:
        raise FrameError(f"a reply with {count} outputs")
    metas = []
    total = 0
    for _ in range(count):
        dtype, ndim, nbytes = r.unpack(OUTPUT)
        total += nbytes
        if total > max_bytes:
            raise FrameError(f"a reply with more than {max_bytes} bytes of outputs")
        metas.append((dtype, r.dims(ndim), nbytes))
    return request_id, 0, run_us, [(dtype, shape, r.take(nbytes)) for dtype, shape, nbytes in metas]


class ReplyParser:
    """parse_reply for one connection, whose replies mostly repeat one layout: a successful reply of the last
    one's size with the same output headers reuses that parse (see RequestParser)."""

    _HEAD = struct.Struct("<Qiq")  # request_id, status, run_us: the fields after the magic that change

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._size = -1
        self._head = b""
        self._outputs: List[Tuple[int, Tuple[int, ...], int, int]] = []  # dtype, shape, start, end

    def parse(self, body: memoryview) -> Tuple[int, int, int, Any]:
        """As parse_reply(body, max_bytes)."""
        head = self._head
        if body.nbytes == self._size and body[:4] == MAGIC_REPLY and body[24:24 + len(head)] == head:
            request_id, status, run_us = self._HEAD.unpack_from(body, 4)
            if status == 0:
                return request_id, 0, run_us, [(dtype, shape, body[a:b]) for dtype, shape, a, b in self._outputs]
        reply = parse_reply(body, self.max_bytes)
        if reply[1] == 0:
            outputs, at = [], body.nbytes - sum(data.nbytes for _d, _s, data in reply[3])
            end = at
            for dtype, shape, data in reply[3]:
                outputs.append((dtype, shape, at, at + data.nbytes))
                at += data.nbytes
            self._size, self._head, self._outputs = body.nbytes, bytes(body[24:end]), outputs
        return reply
