"""Client side of the direct data channel (rknnlink.v1.datawire): inference frames straight to the worker."""

from __future__ import annotations

import logging
import select
import socket
from collections import deque
from typing import Any, Callable, Deque, Iterable, Iterator, List, Optional, Sequence, Tuple

import grpc
import numpy as np

from rknnlink.client.errors import BoardError, RemoteRknnError, SessionLostError
from rknnlink.runtime import numpy_dtype
from rknnlink.v1 import datawire

log = logging.getLogger(__name__)
CONNECT_TIMEOUT = 5.0
PROBE_INTERVAL = 10.0  # seconds without a reply before the daemon is asked whether the worker still lives


class DataRefusedError(ConnectionError):
    """The daemon refused a data connection (the client then uses gRPC); `status` is the hello reply's."""

    def __init__(self, message: str, status: int = datawire.REFUSED) -> None:
        super().__init__(message)
        self.message, self.status = message, status


class DataConnection:
    """One authenticated TCP connection to a session's worker. Not thread-safe (callers hold a lock)."""

    def __init__(self, address: Tuple[str, int], session_id: str, secret: bytes, max_reply_bytes: int) -> None:
        self.max_reply_bytes = max_reply_bytes
        self._expected: Deque[int] = deque()  # request ids sent and not answered yet, oldest first
        self.sock = socket.create_connection(address, timeout=CONNECT_TIMEOUT)
        try:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sock.sendall(datawire.encode_hello(session_id, secret))
            status, message = datawire.read_hello_reply(self.sock)
            if status == datawire.REFUSED_SESSION_LOST:
                kind, _, rest = message.partition("\0")
                status_name, _, text = rest.partition("\0")
                raise SessionLostError(text, getattr(grpc.StatusCode, status_name, None), kind)
            if status != 0:
                raise DataRefusedError(f"the daemon refused the data connection: {message}", status)
            self.sock.settimeout(None)
        except BaseException:
            self.sock.close()
            raise
        self.closed = False

    def send(self, request_id: int, inputs: Sequence[Tuple[int, int, bool, Sequence[int], Any]], raw: bool) -> None:
        datawire.send_parts(self.sock, datawire.encode_request(request_id, inputs, raw))
        self._expected.append(request_id)

    def receive(self, probe: Optional[Callable[[], None]] = None) -> List[np.ndarray]:
        """The next reply's outputs; RemoteRknnError for a runtime error, ConnectionError when it closed.

        While no reply comes, `probe` runs every PROBE_INTERVAL seconds (it raises when the session is lost)."""
        if probe is not None:
            poller = select.poll()
            poller.register(self.sock, select.POLLIN)
            while not poller.poll(PROBE_INTERVAL * 1000):
                probe()
        rid, status, _run_us, body = datawire.read_reply(self.sock, self.max_reply_bytes)
        expected = self._expected.popleft() if self._expected else None
        if rid != expected and not (status != 0 and rid == 0):  # id 0: the worker refused the frame itself
            raise datawire.FrameError(f"the worker answered request {rid} where request {expected} was due: "
                                      f"the data connection is out of step")
        if status != 0:
            name, message = body
            raise RemoteRknnError(status, name, message, None, "rknn-error")
        outs = []
        for dtype, shape, data in body:
            arr = np.frombuffer(data, dtype=numpy_dtype(dtype))
            outs.append(arr.reshape(shape) if shape else arr)
        return outs

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.sock.close()


class OrderedResults:
    """Result collection shared by the pipelines: subclasses provide submit(), _receive(), `depth`,
    `_ready` (results collected early) and `_inflight` (requests whose results are still on the wire)."""

    depth: int
    _ready: Deque[List[np.ndarray]]
    _inflight: int

    def submit(self, inputs: Any, **kwargs: Any) -> int:
        raise NotImplementedError

    def _receive(self) -> List[np.ndarray]:
        raise NotImplementedError

    def get(self) -> List[np.ndarray]:
        """The oldest outstanding result (blocks until it arrives)."""
        if self._ready:
            return self._ready.popleft()
        if self._inflight == 0:
            raise BoardError("no request is outstanding; submit() first")
        return self._receive()

    def results(self) -> Iterator[List[np.ndarray]]:
        """Every outstanding result, in submission order."""
        while self._ready or self._inflight:
            yield self.get()

    def map(self, inputs: Iterable[Any], **kwargs: Any) -> Iterator[List[np.ndarray]]:
        """Run every item of `inputs`, keeping `depth` in flight; yields results in order."""
        for item in inputs:
            self.submit(item, **kwargs)
            while self._ready:
                yield self._ready.popleft()
            if self._inflight >= self.depth:
                yield self._receive()
        yield from self.results()


class DataPipeline(OrderedResults):
    """Session.pipeline() over the data channel: same interface as rknnlink.client.board.Pipeline."""

    def __init__(self, conn: DataConnection, depth: int, encode: Callable[..., Tuple[list, bool]],
                 next_id: Callable[[], int], on_lost: Callable[[BaseException], Exception],
                 probe: Optional[Callable[[], None]] = None) -> None:
        if depth < 1:
            raise ValueError("depth must be >= 1")
        self.conn, self.depth = conn, depth
        self._encode, self._next_id, self._on_lost, self._probe = encode, next_id, on_lost, probe
        self._ready: Deque[List[np.ndarray]] = deque()
        self._inflight = 0
        self.closed = False

    def submit(self, inputs: Any, formats: Optional[Sequence[Optional[str]]] = None,
               pass_through: Optional[Sequence[bool]] = None, want_float: bool = True) -> int:
        if self.closed:
            raise BoardError("the pipeline is closed; open a new one with session.pipeline()")
        while self._inflight >= self.depth:
            self._ready.append(self._receive())
        request_id = self._next_id()
        tensors, raw = self._encode(inputs, formats, pass_through, want_float)
        try:
            self.conn.send(request_id, tensors, raw)
        except OSError as exc:
            self._fail(exc)
        self._inflight += 1
        return request_id

    def _fail(self, exc: BaseException) -> None:
        self.closed = True
        self._inflight = 0
        self.conn.close()
        raise self._on_lost(exc) from None

    def _receive(self) -> List[np.ndarray]:
        try:
            outs = self.conn.receive(self._probe)
        except RemoteRknnError:
            self._inflight -= 1
            raise
        except (OSError, datawire.FrameError) as exc:
            self._fail(exc)
        self._inflight -= 1
        return outs

    def close(self) -> None:
        """Close the connection; results still in flight are discarded (the worker notices the close)."""
        self.closed = True
        self.conn.close()

    def __enter__(self) -> DataPipeline:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
