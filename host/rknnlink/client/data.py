"""The client's data plane: one Pipeline of datawire frames over one of two carriers.

* DirectCarrier: a TCP connection to the daemon's data port, handed to the session's worker after a hello
  (loopback daemons, adb with a data forward, a farm relay of the data port);
  over TLS (the same certificate as the gRPC listener) where the daemon listens with TLS: a plaintext
  routing preamble names the session, and its worker ends TLS (kind "tls");
* RelayCarrier: a gRPC `Relay` stream through the daemon, which pumps the same frames to the worker (TLS
  network endpoints, the USB bridge, adb without a data forward).

Which one a session uses is not guessed: the endpoint (Board.connect's data_address, or the loopback
daemon's data port from Hello) says whether a direct route exists. Session.run is a Pipeline of depth 1.
"""

from __future__ import annotations

import logging
import queue
import select
import socket
import ssl
import threading
import time
from collections import deque
from typing import Any, Callable, Deque, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import grpc
import numpy as np

from rknnlink.client.errors import BoardError, RemoteRknnError, SessionLostError
from rknnlink.runtime import RknnError, numpy_dtype
from rknnlink.v1 import dataroute, datawire, relaywire, shmring
from rknnlink.v1.tlsstream import TlsStream

log = logging.getLogger(__name__)
CONNECT_TIMEOUT = 5.0
PROBE_INTERVAL = 10.0  # seconds without a reply before the daemon is asked whether the worker still lives
CLOSE_TIMEOUT = 5.0    # seconds a closed relay stream may take to end before it is cancelled
TLS_POLL = 0.002       # seconds between looks for replies while a TLS send is under way
Probe = Optional[Callable[[], None]]


class DataRefusedError(ConnectionError):
    """The daemon refused a direct data connection; `status` is the hello reply's."""

    def __init__(self, message: str, status: int = datawire.REFUSED) -> None:
        super().__init__(message)
        self.message, self.status = message, status


class Carrier:
    """Moves whole data-plane frames between this client and one session's worker. Not thread-safe."""

    kind = ""
    closed = False
    shm = False  # the peer offered a shared-memory ring (rknnlink.v1.shmring): see attach_ring
    shm_queue = False  # ... and its queue (requests and replies in the ring, shmring.Queue)

    def attach_ring(self, ring: shmring.Ring, queue: bool = False) -> bool:
        """Hand `ring` to the worker (nothing may be in flight), with its queue if `queue`; False when it
        refused it."""
        return False

    def peer_gone(self) -> bool:
        """Whether the worker closed the connection (looked at without reading: a queue's wait)."""
        return False

    def send(self, parts: Sequence[Any], drain: Optional[Callable[[], bool]] = None) -> None:
        """Send one frame. While the frame does not fit, `drain` (if given) is called whenever replies are
        waiting: it takes one in (False: none is due, stop calling). A carrier that never blocks ignores it."""
        raise NotImplementedError

    def receive(self, limit: int, probe: Probe) -> memoryview:
        """The next frame's body; ConnectionError (or grpc.RpcError) when the carrier broke.

        While no reply comes, `probe` runs every PROBE_INTERVAL seconds (it raises when the session is lost)."""
        raise NotImplementedError

    def alive(self) -> bool:
        """False once the carrier is known to be unusable (closed here, or ended by the daemon)."""
        return not self.closed

    def close(self) -> None:
        raise NotImplementedError


class DirectCarrier(Carrier):
    """One authenticated TCP connection to a session's worker."""

    kind = "direct"

    def __init__(self, address: Tuple[str, int], session_id: str, secret: bytes,
                 tls: Optional[Tuple[ssl.SSLContext, str]] = None) -> None:
        """`tls`: (client context, certificate name) for a TLS data port."""
        self.sock = socket.create_connection(address, timeout=CONNECT_TIMEOUT)
        try:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if tls is not None:  # the plaintext route to the session's worker, which ends TLS
                self.kind = "tls"
                self.sock.sendall(dataroute.encode_route(session_id))
                self.sock = TlsStream(self.sock, tls[0], False, tls[1]).handshake(time.monotonic() + CONNECT_TIMEOUT)
            self.sock.sendall(datawire.encode_hello(session_id, secret))
            status, message = datawire.read_hello_reply(self.sock)
            if status == datawire.REFUSED_SESSION_LOST:
                kind, _, rest = message.partition("\0")
                status_name, _, text = rest.partition("\0")
                raise SessionLostError(text, getattr(grpc.StatusCode, status_name, None), kind)
            if status != 0:
                raise DataRefusedError(f"the daemon refused the data connection: {message}", status)
            # a ring needs a worker that offers it on this host: a plain connection to loopback
            self.shm = (tls is None and shmring.CAPABILITY in message.split() and shmring.enabled()
                        and shmring.peer_on_this_host(self.sock))
            self.shm_queue = self.shm and shmring.QUEUE_CAPABILITY in message.split() and shmring.queue_enabled()
            self.sock.settimeout(None)
        except BaseException:
            self.sock.close()
            raise
        self._reader = datawire.FrameReader(self.sock)
        self._reader.set_wait_interval(PROBE_INTERVAL)  # a kernel receive timeout: no poll() per reply
        self._writer: Optional[threading.Thread] = None  # TLS only, see _send_tls_draining
        self.closed = False

    def send(self, parts: Sequence[Any], drain: Optional[Callable[[], bool]] = None) -> None:
        if self.kind != "tls" or drain is None:
            datawire.send_parts(self.sock, parts, drain)
        else:
            self._send_tls_draining(parts, drain)

    def _send_tls_draining(self, parts: Sequence[Any], drain: Callable[[], bool]) -> None:
        """A TLS stream's send blocks until all of it is out (rknnlink.v1.tlsstream), so a writer thread sends
        while this one takes in the replies that come meanwhile (the stream allows one reader and one writer
        at once); it returns once the frame is sent, so the caller's buffers are free again, as with sendmsg."""
        if self._writer is None:
            self._writes: queue.SimpleQueue = queue.SimpleQueue()
            self._writer = threading.Thread(target=self._write_loop, name="tls-send", daemon=True)
            self._writer.start()
        done, failure = threading.Event(), []
        self._writes.put((parts, done, failure))
        while not done.wait(TLS_POLL):  # returns at once when the frame is out
            if drain is not None and (self.sock.pending() > 0 or select.select([self.sock], [], [], 0)[0]):
                if not drain():
                    drain = None
        if failure:
            raise failure[0]

    def _write_loop(self) -> None:
        while True:
            item = self._writes.get()
            if item is None:
                return
            parts, done, failure = item
            try:
                datawire.send_parts(self.sock, parts)
            except Exception as exc:  # noqa: BLE001 - raised by the sending thread
                failure.append(exc)
            finally:
                done.set()

    def receive(self, limit: int, probe: Probe) -> memoryview:
        self._reader.wait = probe
        body = self._reader.read(limit)
        if body is None:
            raise datawire.PeerClosedError("the worker closed the data connection")
        return body

    def peer_gone(self) -> bool:
        return datawire.peer_closed(self.sock)

    def attach_ring(self, ring: shmring.Ring, queue: bool = False) -> bool:
        """The setup frame, then the worker's ack (it has opened the memfd, or says why it could not)."""
        if not self.shm or (queue and not self.shm_queue):
            return False
        body = ring.setup_frame_body(queue)
        datawire.send_parts(self.sock, [datawire.LENGTH.pack(len(body)) + body])
        try:
            status, message = shmring.parse_ack(self.receive(1 << 16, None))
        except shmring.RingError as exc:
            raise datawire.FrameError(str(exc)) from None
        if status != 0:
            log.info("the worker did not take the shared-memory ring (%s); inputs go in the frames", message)
        return status == 0

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self._writer is not None:
                self._writes.put(None)
            self.sock.close()


class RelayCarrier(Carrier):
    """One gRPC Relay stream; the daemon pumps its frames to and from the session's worker.

    While a reply is overdue, a watchdog thread probes the daemon every PROBE_INTERVAL seconds: the probe
    lets the daemon's per-call timeout end a hung worker, which then ends this stream with the session-lost
    status (the probe's own error is only logged)."""

    kind = "relay"
    _END = object()

    def __init__(self, relay: Callable[..., Any], metadata: Sequence[Tuple[str, str]]) -> None:
        """`relay`: the Relay method with raw bytes messages (rknnlink.v1.relaywire.relay_call)."""
        self._outgoing: queue.SimpleQueue = queue.SimpleQueue()
        self._call = relay(iter(self._outgoing.get, self._END), metadata=tuple(metadata))
        self.closed = False
        self._waiting_since = 0.0  # time.monotonic() when receive() started waiting; 0 when not waiting
        self._probe: Probe = None
        self._watchdog: Optional[threading.Thread] = None

    def send(self, parts: Sequence[Any], drain: Optional[Callable[[], bool]] = None) -> None:
        self._outgoing.put(relaywire.encode(parts))  # never blocks: no drain needed

    def receive(self, limit: int, probe: Probe) -> memoryview:
        if probe is not None and self._watchdog is None:
            self._probe = probe
            self._watchdog = threading.Thread(target=self._watch, name="relay-probe", daemon=True)
            self._watchdog.start()
        self._waiting_since = time.monotonic()
        try:
            message = next(self._call)
        except StopIteration:
            raise datawire.PeerClosedError("the daemon ended the relay stream") from None
        finally:
            self._waiting_since = 0.0
        try:
            frame = relaywire.frame_of(message)
        except ValueError as exc:
            raise datawire.FrameError(str(exc)) from None
        size = datawire.LENGTH.unpack_from(frame)[0] if frame.nbytes >= datawire.LENGTH.size else -1
        if size != frame.nbytes - datawire.LENGTH.size or size > limit:
            raise datawire.FrameError(f"a relayed frame of {frame.nbytes} bytes does not match its length prefix "
                                      f"or exceeds {limit} bytes")
        return frame[datawire.LENGTH.size:]

    def _watch(self) -> None:
        while not self.closed:
            time.sleep(min(1.0, PROBE_INTERVAL))
            since = self._waiting_since
            if since and time.monotonic() - since > PROBE_INTERVAL and self._probe is not None:
                try:
                    self._probe()
                except Exception as exc:  # noqa: BLE001 - the stream reports the failure itself
                    log.debug("relay probe: %s", exc)

    def alive(self) -> bool:
        return not self.closed and not self._call.done()  # e.g. cut by the daemon's --idle-timeout

    def close(self) -> None:
        """End the stream gracefully: the daemon sees the end, the worker finishes what it has (replies still
        in flight are dropped here), and the stream no longer counts against this client's long-lived calls
        when close() returns. A stream that does not end within CLOSE_TIMEOUT is cancelled."""
        if self.closed:
            return
        self.closed = True
        self._outgoing.put(self._END)
        if self._call.done():
            return
        timer = threading.Timer(CLOSE_TIMEOUT, self._call.cancel)
        timer.daemon = True
        timer.start()
        try:
            for _ in self._call:
                pass
        except grpc.RpcError as exc:
            log.debug("relay stream ended: %s", exc)
        finally:
            timer.cancel()


Encoder = Callable[[Any, Optional[Sequence[Optional[str]]], Optional[Sequence[bool]], bool], Tuple[list, bool]]


class OrderedResults:
    """Results in submission order, up to `depth` in flight: the part of a pipeline every session kind
    shares (Pipeline over a carrier, rknnlink.client.local.InProcessPipeline). Subclasses provide submit(),
    _receive() (the oldest result still in flight) and _inflight."""

    depth: int
    closed: bool
    _ready: Deque[Any]  # results taken in ahead of their get(): output lists, or a request's RknnError

    @property
    def _inflight(self) -> int:
        raise NotImplementedError

    def submit(self, inputs: Any, formats: Optional[Sequence[Optional[str]]] = None,
               pass_through: Optional[Sequence[bool]] = None, want_float: bool = True) -> int:
        raise NotImplementedError

    def _receive(self) -> List[np.ndarray]:
        raise NotImplementedError

    def _make_room(self) -> None:
        """Before a submit: when `depth` are in flight, collect the oldest result into the buffer."""
        while self._inflight >= self.depth:
            self._collect()

    def _collect(self) -> None:
        """Take the oldest result in flight into the buffer; a runtime error of that request is kept there,
        to be raised by its own get() (not by the submit() of a later one)."""
        try:
            self._ready.append(self._receive())
        except RknnError as exc:
            self._ready.append(exc)

    def _pop_ready(self) -> List[np.ndarray]:
        result = self._ready.popleft()
        if isinstance(result, RknnError):
            raise result
        return result

    def run(self, inputs: Any, formats: Optional[Sequence[Optional[str]]] = None,
            pass_through: Optional[Sequence[bool]] = None, want_float: bool = True) -> List[np.ndarray]:
        """One inference, waiting for its result (Session.run)."""
        self.submit(inputs, formats, pass_through, want_float)
        return self.get()

    def get(self) -> List[np.ndarray]:
        """The oldest outstanding result (blocks until it arrives)."""
        if self._ready:
            return self._pop_ready()
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
                yield self._pop_ready()
            if self._inflight >= self.depth:
                yield self._receive()
        yield from self.results()

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> OrderedResults:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Pipeline(OrderedResults):
    """Inferences of one session over one carrier, up to `depth` in flight; results come back in order.

    submit() sends a request (when `depth` are in flight it first collects the oldest result into a
    buffer); get()/results() return results in submission order; map(inputs) does both. A runtime error
    is raised by the get() of its request and the pipeline goes on; a broken carrier closes it.
    """

    def __init__(self, carrier: Carrier, depth: int, encode: Encoder, next_id: Callable[[], int],
                 max_reply_bytes: int, on_lost: Callable[[BaseException], Exception], probe: Probe = None) -> None:
        if depth < 1:
            raise ValueError("depth must be >= 1")
        self.carrier, self.depth = carrier, depth
        self._encode, self._next_id, self._on_lost, self._probe = encode, next_id, on_lost, probe
        self._limit = datawire.frame_limit(max_reply_bytes)
        self._replies = datawire.ReplyParser(max_reply_bytes)
        self._ready: Deque[Any] = deque()
        self._expected: Deque[int] = deque()  # request ids sent and not answered yet, oldest first
        self._slot_of: Dict[int, int] = {}    # ring slot of a request in flight that has one, by request id
        self._ring: Optional[shmring.Ring] = None
        self._ring_tried = False
        self._free: Deque[int] = deque()      # ring slots no request in flight uses
        self._kept = -1  # slot of the last successful slotted run, not written until a later run succeeded
        self._queue: Optional[shmring.Queue] = None  # the ring's queue, where the worker took one
        self.closed = False

    @property
    def uses_ring(self) -> bool:
        """Whether inputs travel through the shared-memory ring (a local worker that took it)."""
        return self._ring is not None

    @property
    def carrier_kind(self) -> str:
        """"direct" or "relay"."""
        return self.carrier.kind

    def alive(self) -> bool:
        """False once closed here or known to be ended by the other side."""
        return not self.closed and self.carrier.alive()

    @property
    def _inflight(self) -> int:
        return len(self._expected)

    def submit(self, inputs: Any, formats: Optional[Sequence[Optional[str]]] = None,
               pass_through: Optional[Sequence[bool]] = None, want_float: bool = True) -> int:
        """Send one inference; returns its request id."""
        if self.closed:
            raise BoardError("the pipeline is closed; open a new one with session.pipeline()")
        tensors, raw = self._encode(inputs, formats, pass_through, want_float)
        self._make_room()
        request_id = self._next_id()
        try:
            slot = self._slot_for(tensors) if self.carrier.shm else None
            queue = self._queue
            if queue is None:
                self.carrier.send(datawire.encode_request(request_id, tensors, raw, slot),
                                  self._drain if self._expected else None)
            else:
                slot = self._post(queue, request_id, tensors, raw, slot)
        except (OSError, grpc.RpcError, datawire.FrameError) as exc:
            self._fail(exc)
        self._expected.append(request_id)
        if slot is not None:
            self._slot_of[request_id] = slot
        return request_id

    def _post(self, queue: shmring.Queue, request_id: int, tensors: Sequence[Tuple[Any, ...]], raw: bool,
              slot: Optional[int]) -> Optional[int]:
        """Post a request to the queue: its headers in an entry (its inputs are in `slot`), or, without a slot
        or with headers too large for an entry, an entry saying that the frame follows on the socket. The
        slot the request ends up with (None: its inputs went in the frame)."""
        if slot is not None:
            body = datawire.encode_request(request_id, tensors, raw, slot)[0]
            if len(body) - datawire.LENGTH.size <= shmring.MAX_ENTRY_BODY:
                queue.post(memoryview(body)[datawire.LENGTH.size:])
                return slot
            self._free.appendleft(slot)
        queue.post(None)
        self.carrier.send(datawire.encode_request(request_id, tensors, raw, None),
                          self._drain if self._expected else None)
        return None

    def _queued_reply(self, queue: shmring.Queue) -> memoryview:
        """The oldest request's reply through the queue: wait until the worker counted it done (sleeping on
        the counter; every shmring.QUEUE_POLL seconds a look whether the worker is gone, every PROBE_INTERVAL the
        probe), then its body from its slot's reply area, or the next frame on the socket."""
        wanted = queue.done + (2 if len(self._expected) >= 3 else 1)  # see shmring's queue: half the wake-ups
        waited = 0.0
        while not queue.wait_done(wanted, shmring.QUEUE_POLL):
            if queue.done_count() != queue.done:  # the oldest is done: take it, wait for the rest later
                break
            if self.carrier.peer_gone():
                raise datawire.PeerClosedError("the worker closed the data connection")
            waited += shmring.QUEUE_POLL
            if waited >= PROBE_INTERVAL and self._probe is not None:
                waited = 0.0
                self._probe()
        body = queue.reply(self._slot_of.get(self._expected[0], -1))
        return self.carrier.receive(self._limit, self._probe) if body is None else body

    def _slot_for(self, tensors: Sequence[Tuple[Any, ...]]) -> Optional[int]:
        """Copy the inputs into a free slot of the ring and return its index; None: they go in the frame (no
        ring, no free slot, or too large for the slots sized by the first request). The copy is what makes
        the caller's arrays free again at once, as a sent frame does."""
        ring = self._ring
        if ring is None:
            if self._ring_tried or self._expected:  # the setup is synchronous: only with nothing in flight
                return None
            self._ring_tried = True
            ring = self._open_ring(shmring.spans([memoryview(t[4]).nbytes for t in tensors])[1])
            if ring is None:
                return None
        if not self._free:
            return None
        datas = [memoryview(t[4]).cast("B") for t in tensors]
        spans, need = shmring.spans([d.nbytes for d in datas])
        if need > ring.input_bytes:
            return None
        slot = self._free.popleft()
        view = ring.slot(slot)
        for (start, end), data in zip(spans, datas):
            view[start:end] = data
        return slot

    def _open_ring(self, need: int) -> Optional[shmring.Ring]:
        """A ring of up to `depth` slots of `need` bytes, taken by the worker; None where it cannot be."""
        queued = self.carrier.shm_queue and self.depth + shmring.KEPT_BACK <= shmring.ENTRIES
        shape = shmring.geometry(need, self.depth, queued)
        if shape is None:
            return None
        try:
            ring = shmring.Ring.create(*shape)
        except (OSError, shmring.RingError) as exc:
            log.info("no shared-memory ring (%s); inputs go in the frames", exc)
            return None
        try:
            taken = self.carrier.attach_ring(ring, queued)
        except BaseException:
            ring.close()
            raise
        ring.close_fd()  # the worker has its own mapping now (or none): the descriptor is not needed
        if not taken:
            ring.close()
            return None
        if queued:
            self._queue = shmring.Queue(ring)
        self._ring = ring
        self._free.extend(range(ring.n_slots))
        return ring

    def _release_slot(self, slot: int, ran: bool) -> None:
        """A reply came: the worker is done with its request's slot (-1: the inputs were in the frame). The
        worker keeps the last successful run's inputs for a dump's replay, in place (shmring.geometry): so
        the slot of a successful run is kept back, and the one kept before is free again (the last run is
        now this one); a failed run changes nothing there and its slot is free at once."""
        if not ran:
            if slot >= 0:
                self._free.append(slot)
            return
        if self._kept >= 0:
            self._free.append(self._kept)
        self._kept = slot

    def _forget(self) -> None:
        """Nothing is in flight any more (the carrier is closed): drop the slots and the ring."""
        self._expected.clear()
        self._slot_of.clear()
        self._free.clear()
        self._kept = -1
        if self._queue is not None:
            self._queue.close()
            self._queue = None
        if self._ring is not None:
            self._ring.close()
            self._ring = None

    def _drain(self) -> bool:
        """Called while a send waits for room: take the oldest reply in, so a worker blocked writing it to us
        (its reader then stops reading, and our send waits for it) goes on. False: nothing is in flight."""
        if not self._expected:
            return False
        self._collect()
        return True

    def _fail(self, exc: BaseException) -> None:
        self.closed = True
        self.carrier.close()
        self._forget()
        raise self._on_lost(exc) from None

    def _receive(self) -> List[np.ndarray]:
        try:
            queue = self._queue
            body = self.carrier.receive(self._limit, self._probe) if queue is None else self._queued_reply(queue)
            rid, status, _run_us, payload = self._replies.parse(body)
        except (OSError, grpc.RpcError, datawire.FrameError) as exc:
            self._fail(exc)
        except BaseException:  # the probe found the session lost (or an interrupt): this carrier is done
            self.close()
            raise
        expected = self._expected.popleft()
        self._release_slot(self._slot_of.pop(expected, -1), status == 0)
        if status != 0 and rid == 0:  # the worker refused a frame itself and closes the carrier
            self.closed = True
            self.carrier.close()
            self._forget()
        elif rid != expected:
            self._fail(datawire.FrameError(f"the worker answered request {rid} where request {expected} was due: "
                                           f"the data connection is out of step"))
        if status != 0:
            name, message = payload
            raise RemoteRknnError(status, name, message, None, "rknn-error")
        return [np.frombuffer(data, numpy_dtype(dtype)).reshape(shape) if shape else
                np.frombuffer(data, numpy_dtype(dtype)) for dtype, shape, data in payload]

    def close(self) -> None:
        """Close the carrier; results still in flight are discarded (the worker notices the close)."""
        self.closed = True
        if self._queue is not None and not self.carrier.closed:
            self._queue.post_close()
        self.carrier.close()
        self._forget()
