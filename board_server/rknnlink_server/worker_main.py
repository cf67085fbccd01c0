"""The NPU runtime worker: a child process of the daemon that owns one rknn_context.

librknnrt runs here and nowhere else in the daemon, so a segfault or a hang inside it takes down only this
process (and the one session it serves). Two kinds of connection:
  * control (rknnlink_server.wire on the inherited Unix socket): init, queries, dumps, close, and `attach`,
    which hands over a data connection's descriptor (SCM_RIGHTS);
  * data (rknnlink.v1.datawire frames on every attached socket): inference, in one loop for every route -
    a client's TCP connection from the data port, or the daemon's end of a Relay stream.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import logging
import math
import os
import signal
import socket
import sys
import threading
import time
from collections import deque
from typing import Any, Deque, Dict, List, Optional, Sequence, Tuple

import numpy as np

from rknnlink.runtime import RknnError, RuntimeContext, RuntimeLibrary, numpy_dtype
from rknnlink.runtime.abi import RKNN_ERR_INPUT_INVALID, RKNN_ERR_PARAM_INVALID
from rknnlink.runtime.library import BoundRun, PreparedRun, output_type_of
from rknnlink.v1 import datawire, shmring
from rknnlink_server.wire import WorkerGoneError, recv_frame, send_frame

log = logging.getLogger("rknnlink_server.worker")
_FORMATS = {0: None, 1: "nchw", 2: "nhwc"}


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this worker when the daemon dies, so no orphan keeps the NPU busy."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def freeze_heap() -> None:
    """Take every object alive now (the imports, the runtime binding, the loaded model) out of the cyclic
    collector's reach. A data connection allocates a few containers per request, so a young collection comes
    every few requests and, every tenth of those, an older one that would walk this whole heap again: about
    2% of the worker's CPU while a client pipelines (perf, 2 cores). What is frozen lives as long as the
    worker anyway (no collection first: it would cost the session's start milliseconds for a few garbage
    objects); objects made later are collected as usual."""
    gc.freeze()


def _attr_dict(attr: Any) -> Dict[str, Any]:
    return {"index": attr.index, "name": attr.name, "dims": list(attr.dims), "fmt": attr.fmt,
            "dtype": attr.rknn_type, "qnt_type": attr.qnt_type, "zp": attr.zp, "scale": attr.scale,
            "n_elems": attr.n_elems, "size": attr.size, "fl": attr.fl, "w_stride": attr.w_stride,
            "size_with_stride": attr.size_with_stride, "h_stride": attr.h_stride}


class Worker:
    """Executes daemon requests on one runtime context."""

    def __init__(self, library: str, backend: str) -> None:
        self.lib = RuntimeLibrary.load(path=library, backend=backend)
        self.ctx: Optional[RuntimeContext] = None
        self.dump_enabled = False
        self.model_path: Optional[str] = None
        self.lock = threading.Lock()  # the control path and every data connection share one context
        self.data_inferences = 0      # runs through data connections (the daemon does not see them)
        self._last_run: Optional[Tuple[PreparedRun, Sequence[memoryview]]] = None

    def handle(self, header: Dict[str, Any], blobs: List[bytearray]) -> Tuple[Dict[str, Any], Sequence[Any]]:
        op = header.get("op")
        method = getattr(self, f"op_{op}", None)
        if method is None:
            raise RknnError(RKNN_ERR_PARAM_INVALID, None, f"unknown worker operation {op!r}")
        if op != "init" and self.ctx is None:
            raise RknnError(-7, None, "no model is loaded in this worker")
        return method(header, blobs)

    def op_init(self, header: Dict[str, Any], _blobs: List[bytearray]) -> Tuple[Dict[str, Any], Sequence[Any]]:
        self.model_path = header["model_path"]
        with open(self.model_path, "rb") as f:
            model = f.read()
        self.ctx = self.lib.init(model, flags=int(header.get("flags", 0)))
        freeze_heap()
        if header.get("core_mask"):
            self.ctx.set_core_mask(int(header["core_mask"]))
        if header.get("dump") and self.lib.is_simulator:
            self.ctx.set_dump(True)
            self.dump_enabled = True
        api, drv = self._sdk()
        reply = {"inputs": [_attr_dict(a) for a in self.ctx.input_attrs],
                 "outputs": [_attr_dict(a) for a in self.ctx.output_attrs],
                 "custom_string": self._custom_string(), "sdk": [api, drv],
                 "is_simulator": self.lib.is_simulator}
        return reply, ()

    def _sdk(self) -> Tuple[str, str]:
        try:
            return self.ctx.sdk_version()
        except RknnError:
            return "", ""

    def _custom_string(self) -> str:
        try:
            return self.ctx.custom_string()
        except RknnError:
            return ""

    def run(self, layout: datawire.Layout, datas: Sequence[memoryview],
             plans: Dict[datawire.Layout, PreparedRun]) -> Tuple[int, List[np.ndarray]]:
        """One inference of a data-plane request: (run_us, outputs). Callers hold `lock`. `plans`: the
        calling connection's prepared runs by layout (checked once per layout, see _plan)."""
        if self.ctx is None:
            raise RknnError(-7, None, "no model is loaded in this worker")
        plan = plans.get(layout)
        if plan is None or not plan.valid:
            plan = plans[layout] = self._plan(layout, datas, plans)
        start = time.perf_counter()
        outputs = plan(datas)
        run_us = int((time.perf_counter() - start) * 1e6)
        self._last_run = (plan, datas)  # views of the frame, which they keep alive
        self.data_inferences += 1
        return run_us, outputs

    def run_bound(self, bound: BoundRun) -> int:
        """One inference of a run bound to a ring slot and its reply area (see run): its run_us."""
        start = time.perf_counter()
        bound()
        run_us = int((time.perf_counter() - start) * 1e6)
        self._last_run = (bound.plan, bound.datas)  # views of the slot: KEPT_BACK keeps them for a replay
        self.data_inferences += 1
        return run_us

    def _plan(self, layout: datawire.Layout, datas: Sequence[memoryview],
              plans: Dict[datawire.Layout, PreparedRun]) -> PreparedRun:
        raw, metas = layout
        layouts = []
        for i, ((dtype_code, fmt, through, shape), data) in enumerate(zip(metas, datas)):
            dtype = numpy_dtype(dtype_code)
            expected = math.prod(shape) * dtype.itemsize if shape else data.nbytes
            if expected != data.nbytes or data.nbytes % dtype.itemsize:
                raise RknnError(RKNN_ERR_INPUT_INVALID, None,
                                f"input {i}: {data.nbytes} data bytes do not match shape {list(shape)} of {dtype} "
                                f"({expected} bytes); send C-contiguous data of the declared shape and dtype")
            layouts.append((dtype, shape or (data.nbytes // dtype.itemsize,), _FORMATS.get(fmt), through))
        if len(plans) >= MAX_PLANS:  # a client cycling through layouts: bounded, the oldest goes
            del plans[next(iter(plans))]
        return self.ctx.prepare(layouts, want_float=not raw)

    def _replay_last_run(self) -> None:
        """Run the last data-plane inference again (the model is deterministic): for dumps."""
        plan, datas = self._last_run
        if plan.valid:
            plan(datas)
        else:
            self.ctx.infer(*self._last_run_arrays())

    def _last_run_arrays(self) -> Tuple[List[np.ndarray], List[Optional[str]], List[bool]]:
        """The last data-plane run's inputs as set_inputs takes them (for vendor_dumps' replay)."""
        plan, datas = self._last_run
        arrays = [np.frombuffer(d, dtype).reshape(shape) for d, dtype, shape in zip(datas, plan.dtypes, plan.shapes)]
        return arrays, list(plan.formats), list(plan.passes)

    def op_perf(self, _h: Dict[str, Any], _b: List[bytearray]) -> Tuple[Dict[str, Any], Sequence[Any]]:
        return {"text": self.ctx.perf_detail()}, ()

    def op_perf_run(self, _h: Dict[str, Any], _b: List[bytearray]) -> Tuple[Dict[str, Any], Sequence[Any]]:
        return {"run_us": self.ctx.perf_run_us()}, ()

    def op_mem(self, _h: Dict[str, Any], _b: List[bytearray]) -> Tuple[Dict[str, Any], Sequence[Any]]:
        return {"mem": self.ctx.mem_size()}, ()

    def op_sdk(self, _h: Dict[str, Any], _b: List[bytearray]) -> Tuple[Dict[str, Any], Sequence[Any]]:
        api, drv = self.ctx.sdk_version()
        return {"api": api, "drv": drv}, ()

    def op_dumps(self, header: Dict[str, Any], _b: List[bytearray]) -> Tuple[Dict[str, Any], Sequence[Any]]:
        if not self.lib.is_simulator:  # the vendor runtime's own dump files (RKNN_LOG_LEVEL / RKNN_DUMP_DIR)
            from rknnlink_server import vendor_dumps

            last = None if self._last_run is None else self._last_run_arrays()
            return vendor_dumps.collect(self.lib, self.model_path, last,
                                        self.ctx.input_attrs + self.ctx.output_attrs, bool(header.get("raw")))
        if not self.dump_enabled:
            # Dumps were off for the last run: turn them on and repeat that run (the model is deterministic).
            if self._last_run is None:
                raise RknnError(RKNN_ERR_PARAM_INVALID, None,
                                "no run happened yet in this session: run the model once, then ask for dumps")
            self.ctx.set_dump(True)
            self.dump_enabled = True
            self._replay_last_run()
        include_raw = bool(header.get("raw", False))
        infos, blobs = [], []
        for info, f32, raw in self.ctx.dumps():
            infos.append({"layer_index": -1 if info.layer_index is None else info.layer_index,
                          "output_slot": info.output_slot, "name": info.name, "dtype": info.dtype,
                          "qnt_type": info.qnt_type, "scale": info.scale, "zp": info.zp, "dims": list(info.dims)})
            blobs.append(f32)
            if include_raw:
                blobs.append(raw)
        return {"dumps": infos, "raw": include_raw}, blobs

    def op_close(self, _h: Dict[str, Any], _b: List[bytearray]) -> Tuple[Dict[str, Any], Sequence[Any]]:
        if self.ctx is not None:
            self.ctx.close()
        return {"closed": True}, ()


QUEUED = 4      # requests a data connection reads ahead of the one running (then TCP pushes back)
MAX_PLANS = 8   # prepared input layouts a data connection keeps
INLINE_REPLY_BYTES = 1 << 16  # larger replies of an inline run are sent by the runner: the reader goes on
HELD_REPLIES = 2  # replies of slotted requests sent together at most (see _DataConnection._run_slotted)


class _Reply:
    """A reply computed inline, queued for the runner thread to send."""

    def __init__(self, parts: List[Any]) -> None:
        self.parts = parts

# The reader's buffer: a small request comes whole in one recv, and of a large one only this much is copied
# out of it (the rest goes straight into the frame's own buffer).
READ_AHEAD_BYTES = 8192


def serve_data(worker: Worker, conn: socket.socket, max_bytes: int, greet: bool,
               timeout: Optional[float] = None) -> None:
    """One data connection handed over by the daemon: request frames in, reply frames out, in order.

    `greet`: answer the direct carrier's hello (a relay's socket has none). A runtime error is an error
    reply and the connection goes on; a corrupt frame gets an error reply and ends this connection only
    (the session keeps serving). `timeout`: an idle limit (a TLS connection, rknnlink_server.tlsdata)."""
    try:
        if conn.family != socket.AF_UNIX:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.settimeout(timeout)
        offer = greet and _local_peer(conn)
        if greet:
            words = ["attached"] + ([shmring.CAPABILITY] if offer else []) \
                + ([shmring.QUEUE_CAPABILITY] if offer and shmring.queue_enabled() else [])
            datawire.send_parts(conn, [datawire.encode_hello_reply(0, " ".join(words))])
        _DataConnection(worker, conn, datawire.frame_limit(max_bytes), offer).serve()
    except (OSError, datawire.PeerClosedError) as exc:
        log.debug("data connection ended: %s", exc)
    finally:
        conn.close()


def _local_peer(conn: socket.socket) -> bool:
    """Whether a shared-memory ring may be offered on `conn`: a plain socket (not TLS) whose peer is on this
    host, and the ring not turned off."""
    return shmring.enabled() and type(conn) is socket.socket and shmring.peer_on_this_host(conn)


class _Setup:
    """A ring setup frame (rknnlink.v1.shmring), answered in order like a request."""

    def __init__(self, body: memoryview) -> None:
        self.body = bytes(body)


class _DataConnection:
    """The one loop of the data plane: this thread reads and parses frames; requests run in the order they
    came, each answered on the connection before the next runs.

    A request that finds nothing running, nothing queued and no next frame waiting (run() of a client, one
    request in flight) runs right here: no hand-over between threads on the way to the reply; only a reply
    that could keep this thread from reading (a large one, or the next frame came meanwhile) is handed to
    the runner thread to send. Otherwise (a pipelining client) the request is queued for the runner thread,
    and this thread goes on reading and parsing the next frames while the runtime runs (it releases the
    GIL), up to QUEUED ahead; then it stops reading and TCP flow control holds the client back, so a client
    that sends without reading costs bounded memory.

    A request whose inputs are in the shared-memory ring (a local client that set one up, `offer`) runs
    here whenever nothing is queued or running, and its small reply is sent here too, even with next frames
    waiting: those are a few hundred bytes of headers each, so there is nothing to read ahead while the
    runtime runs, and one thread doing it all saves two thread hand-overs per request."""

    def __init__(self, worker: Worker, conn: socket.socket, limit: int, offer: bool = False) -> None:
        self.worker, self.conn, self.limit, self.offer = worker, conn, limit, offer
        self.ring: Optional[shmring.Ring] = None
        self.queue_ring: Optional[shmring.Queue] = None  # the ring's queue, when the client asked for one
        # runs bound to a slot and its reply area, by the queue entry's bytes after the request id (header and
        # slot index, checked by a full parse once): (run, reply output headers, reply size, area, slot)
        self.bound: Dict[bytes, Tuple[BoundRun, bytes, int, int, int]] = {}
        self.reader = datawire.FrameReader(conn, READ_AHEAD_BYTES)
        self.parser = datawire.RequestParser()
        self.plans: Dict[datawire.Layout, PreparedRun] = {}
        self.replies = datawire.ReplyEncoder(output_type_of)
        self.queue: Deque[Any] = deque()
        self.cv = threading.Condition(threading.Lock())
        self.busy = False     # the runner thread holds a request it has not answered yet
        self.done = False     # no more requests run (the peer closed, a corrupt frame, a failed send)
        self.runner: Optional[threading.Thread] = None
        self.held: List[Any] = []  # parts of answered slotted requests' replies not sent yet (see _run_slotted)
        self.n_held = 0

    def serve(self) -> None:
        try:
            while True:
                request = self._next()
                if self.runner is None and type(request) is tuple and self.parser.slotted:
                    if not self._run_slotted(request):  # no other thread to keep in step with
                        break
                    continue
                if self.held and not self._flush():
                    break
                if request is None:
                    break
                slotted = self.parser.slotted and type(request) is tuple
                with self.cv:
                    while (len(self.queue) >= QUEUED or (self.busy or self.queue) and isinstance(request, _Setup)) \
                            and not self.done:
                        self.cv.wait()
                    if self.done:
                        break
                    inline = isinstance(request, _Setup) or (not self.queue and not self.busy
                                                             and (slotted or not self.reader.pending()))
                    if not inline:
                        self.queue.append(request)
                        self._start_runner()
                        self.cv.notify_all()
                if isinstance(request, datawire.FrameError):  # the stream is out of step: read no further
                    if inline:
                        self._answer(request)
                    break
                if isinstance(request, _Setup):  # nothing queued or running: answered here, in order
                    if not self._send([self._set_up_ring(request.body)]):
                        break
                    if self.queue_ring is not None:  # from now on every request comes through the queue
                        self._serve_queue()
                        break
                    continue
                if inline and not self._run_inline(request, slotted):
                    break
        finally:
            if self.runner is not None:  # it answers what is queued, then stops
                with self.cv:
                    self.queue.append(None)
                    self.cv.notify_all()
                self.runner.join()
            self._release_ring()

    def _run_slotted(self, request: Any) -> bool:
        """Run a request whose inputs are in the ring, here. Its reply waits while a whole next request is
        already buffered (up to HELD_REPLIES): that one runs at once, and both replies go in one sendmsg -
        one system call and one wake-up of the client for two inferences, where a loopback send costs about
        as much CPU as the rest of the worker's per-request work (perf). A reply never waits for bytes that
        have not arrived, so no peer waits for it while it could have been sent."""
        reply = self._run(*request)
        size = datawire.LENGTH.unpack_from(reply[0])[0] + datawire.LENGTH.size
        if size > INLINE_REPLY_BYTES:
            return (not self.held or self._flush()) and self._run_inline_reply(reply)
        self.held.extend(reply)
        self.n_held += 1
        if self.n_held < HELD_REPLIES and self.reader.has_frame():
            return True
        return self._flush()

    def _flush(self) -> bool:
        held, self.held, self.n_held = self.held, [], 0
        return self._send(held)

    def _set_up_ring(self, body: bytes) -> bytes:
        """Map the client's ring (shmring.Ring.attach checks every claim of the frame); the ack frame. A
        refusal leaves the connection as it was: the client keeps the byte frames."""
        if not self.offer or self.ring is not None:
            return shmring.encode_ack(1, "no shared-memory ring is offered on this connection" if not self.offer
                                      else "this connection has its ring already")
        try:
            pid, fd, n_slots, slot_bytes, token = shmring.parse_setup(memoryview(body))
            if not shmring.peer_is(self.conn, pid):
                raise shmring.RingError(f"process {pid} does not hold the other end of this connection")
            if slot_bytes > self.limit:  # a slot carries no more than a frame may (rknnlink serve --max-message-mb)
                raise shmring.RingError(f"slots of {slot_bytes} bytes exceed this connection's frame limit")
            ring = shmring.Ring.attach(pid, fd, n_slots, slot_bytes, token)
            if shmring.wants_queue(memoryview(body)):
                try:
                    self.queue_ring = shmring.Queue(ring) if shmring.queue_enabled() else None
                    if self.queue_ring is None:
                        raise shmring.RingError("this worker offers no queue")
                except shmring.RingError:
                    ring.close()
                    raise
            self.ring = ring
        except shmring.RingError as exc:
            log.debug("shared-memory ring refused: %s", exc)
            return shmring.encode_ack(1, str(exc))
        self.parser.ring = self.ring
        return shmring.encode_ack(0, "attached")

    def _serve_queue(self) -> None:
        """The loop of a connection whose requests come through the ring's queue (shmring.Queue): each posted
        request runs here and its reply goes into its slot's reply area (or, too large, a frame on the
        socket), until the client closes the queue or the connection ends. While nothing is posted it
        sleeps on the posted counter, looking at the socket every shmring.QUEUE_POLL seconds (a client that died)."""
        queue, conn = self.queue_ring, self.conn
        posted_at, posted_address, wait, step = shmring.POSTED_AT, queue.posted_address, queue.wait, self._queue_step
        _no_wakeup_preemption()
        while True:
            seen = queue.posted & 0xFFFFFFFF
            if wait(posted_at, posted_address, seen, shmring.QUEUE_POLL) == seen:
                if datawire.peer_closed(conn):
                    return
            elif not step(queue):
                return

    def _queue_step(self, queue: shmring.Queue) -> bool:
        """Run the next posted request and answer it; False: the connection ends (a corrupt entry, after its
        error reply; the peer gone)."""
        try:
            body = queue.entry()
            keyed = None if body is None else datawire.request_id_and_rest(body)
            if keyed is not None:  # a request like one bound before: no parse (the same bytes parse the same)
                bound = self.bound.get(keyed[1])
                if bound is not None and bound[0].valid:
                    return self._run_bound(queue, keyed[0], bound)
            if body is None:  # the next frame on the socket carries this request
                frame = self.reader.read(self.limit)
                if frame is None:
                    return False
                request, slot = self.parser.parse(frame), -1
            else:
                parser = self.parser
                request = parser.parse(memoryview(body))
                if not parser.slotted:
                    raise datawire.FrameError("a queue entry without its slot")
                slot = parser.slot
        except (datawire.FrameError, shmring.RingError) as exc:
            error = datawire.encode_error(0, RKNN_ERR_PARAM_INVALID, "RKNN_ERR_PARAM_INVALID",
                                          f"corrupt data-plane frame: {exc}")
            queue.answer(-1, error)
            if self._send(error):
                try:
                    _linger(self.conn)
                except OSError as linger_exc:
                    log.debug("data connection ended: %s", linger_exc)
            return False
        except (OSError, datawire.PeerClosedError) as exc:
            log.debug("data connection ended: %s", exc)
            return False
        except shmring.QueueClosedError:
            return False
        reply = self._run(*request)
        if slot >= 0 and keyed is not None:
            self._bind(queue, keyed[1], request[1], slot, request[2])
        return queue.answer(slot, reply) or self._send(reply)

    def _bind(self, queue: shmring.Queue, key: bytes, layout: datawire.Layout, slot: int,
              datas: Sequence[memoryview]) -> None:
        """After a layout's first run in `slot`: a run bound to the slot's inputs and its reply area, where the
        runtime then writes the outputs right behind the reply's headers (no arrays, no encoding, no copy:
        _run_bound), when that reply fits the area."""
        plan = self.plans.get(layout)
        if plan is None or not plan.valid or not plan.direct:
            return
        outputs = [(output_type_of(dtype), shape, nbytes) for dtype, shape, nbytes in plan.output_layout]
        heads = datawire.output_heads(outputs)
        size = datawire.REPLY.size + len(heads) + sum(nbytes for _d, _s, nbytes in outputs)
        if size > shmring.REPLY_AREA:
            return
        area = queue.reply_area(slot)
        at, outs = area + datawire.REPLY.size + len(heads), []
        for _dtype, _shape, nbytes in outputs:
            outs.append(self.ring.view[at:at + nbytes])
            at += nbytes
        if len(self.bound) >= MAX_PLANS * shmring.MAX_SLOTS:  # bounded like the plans: the oldest goes
            del self.bound[next(iter(self.bound))]
        self.bound[key] = (BoundRun(plan, datas, outs), heads, size, area, slot)

    def _run_bound(self, queue: shmring.Queue, request_id: int, bound: Tuple[BoundRun, bytes, int, int, int]) -> bool:
        """Run a request through its slot's bound run and answer it in place: the reply's headers go in front
        of the outputs the runtime wrote into the reply area."""
        run, heads, size, area, slot = bound
        try:
            with self.worker.lock:
                run_us = self.worker.run_bound(run)
        except Exception as exc:  # noqa: BLE001 - every failure goes back to the client as a reply
            err = _error_reply(exc)
            reply = datawire.encode_error(request_id, int(err["code"]), err.get("name"), str(err["message"]))
            return queue.answer(slot, reply) or self._send(reply)
        mm = queue.mm
        datawire.REPLY.pack_into(mm, area, datawire.MAGIC_REPLY, request_id, 0, run_us, len(run.outs))
        mm[area + datawire.REPLY.size:area + datawire.REPLY.size + len(heads)] = heads
        queue.answered_here(size)
        return True

    def _release_ring(self) -> None:
        """Unmap the ring at the connection's end. The last data-plane run (kept for a dump's replay) may be
        views of it: it gets copies of those bytes first, so a replay never reads the ring after this."""
        ring, self.ring = self.ring, None
        if ring is None:
            return
        self.parser.ring = None
        self.parser = datawire.RequestParser()  # its cached spans name the ring's slots
        self.bound.clear()  # views of the ring
        if self.queue_ring is not None:
            self.queue_ring.close()
            self.queue_ring = None
        with self.worker.lock:
            last = self.worker._last_run
            if last is not None and any(ring.owns(d) for d in last[1]):
                self.worker._last_run = last = (last[0], [memoryview(bytearray(d)) for d in last[1]])
            ctx = self.worker.ctx  # it keeps the inputs of its last run alive too (PreparedRun)
            if ctx is not None and any(isinstance(d, memoryview) and ring.owns(d) for d in ctx.kept_inputs):
                ctx.keep_inputs(last[1] if last is not None else ())
            del last
        ring.close()  # unmapped now, or (a view still somewhere) with the last view

    def _next(self) -> Any:
        """The next request (request_id, layout, datas), a FrameError for a corrupt frame, None at the end."""
        try:
            body = self.reader.read(self.limit)
            if body is None:
                return None
            if shmring.is_setup(body):
                return _Setup(body)
            return self.parser.parse(body)
        except datawire.FrameError as exc:
            return exc
        except (OSError, datawire.PeerClosedError) as exc:
            log.debug("data connection ended: %s", exc)
            return None

    def _run_inline(self, request: Any, slotted: bool = False) -> bool:
        reply = self._run(*request)
        # every reply's first part starts with the frame's length prefix: its size without a pass over the parts
        size = datawire.LENGTH.unpack_from(reply[0])[0] + datawire.LENGTH.size
        if size <= INLINE_REPLY_BYTES and (slotted or not self.reader.pending()):
            return self._send(reply)
        return self._run_inline_reply(reply)

    def _run_inline_reply(self, reply: List[Any]) -> bool:
        """Hand a reply computed here to the runner thread to send (nothing is queued or running)."""
        with self.cv:  # nothing is queued or running (the condition to run inline): the order holds
            self.queue.append(_Reply(reply))
            self._start_runner()
            self.cv.notify_all()
        return True

    def _start_runner(self) -> None:
        if self.runner is None:
            self.runner = threading.Thread(target=self._run_queued, name="data-run", daemon=True)
            self.runner.start()

    def _run_queued(self) -> None:
        ok = True
        while ok:
            with self.cv:  # one hand-over per request: the answered one is done, the next one is taken
                self.busy = False
                if not self.queue:  # idle: a ring setup the reader holds back until now may go
                    self.cv.notify_all()
                while not self.queue:
                    self.cv.wait()
                request = self.queue.popleft()
                self.busy = request is not None and not self.done
                self.cv.notify_all()  # room in the queue
            if not self.busy:
                return
            ok = self._answer(request)
        with self.cv:
            self.busy = False
            self.cv.notify_all()

    def _answer(self, request: Any) -> bool:
        """Run one request and send its reply, send a reply run inline, or answer a corrupt frame and end
        the connection; False: stop."""
        if isinstance(request, _Reply):
            return self._send(request.parts)
        if not isinstance(request, datawire.FrameError):
            return self._send(self._run(*request))
        if self._send(datawire.encode_error(0, RKNN_ERR_PARAM_INVALID, "RKNN_ERR_PARAM_INVALID",
                                            f"corrupt data-plane frame: {request}")):
            self._stop()
            try:
                _linger(self.conn)
            except OSError as exc:
                log.debug("data connection ended: %s", exc)
        return False

    def _run(self, request_id: int, layout: datawire.Layout, datas: List[memoryview]) -> List[Any]:
        """The reply frame's parts for one request (an error reply for any failure of the run)."""
        try:
            with self.worker.lock:
                run_us, outs = self.worker.run(layout, datas, self.plans)
        except Exception as exc:  # noqa: BLE001 - every failure goes back to the client as a reply
            err = _error_reply(exc)
            return datawire.encode_error(request_id, int(err["code"]), err.get("name"), str(err["message"]))
        return self.replies.encode(request_id, run_us, outs)

    def _send(self, parts: List[Any]) -> bool:
        try:
            datawire.send_parts(self.conn, parts)
            return True
        except OSError as exc:
            log.debug("data connection ended: %s", exc)
            self._stop()
            try:
                self.conn.shutdown(socket.SHUT_RDWR)  # wake the reader, if it waits
            except OSError:
                pass
            return False

    def _stop(self) -> None:
        with self.cv:
            self.done = True
            self.cv.notify_all()


def _no_wakeup_preemption() -> None:
    """Put this thread (a queue's loop) under SCHED_BATCH: woken by the client's post, it no longer preempts
    the client on the CPU it is woken on. Without it, the scheduler often wakes it on the client's CPU and
    switches to it at once, so the two take turns on one core: the client's FUTEX_WAKE then took 40-44 us of
    its wall time instead of 2 us, and a pipelined item 113-120 us instead of 92-106 (load 6, 2 cores).
    No privilege is needed to leave SCHED_OTHER for it; where it is missing, nothing changes."""
    try:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except (AttributeError, OSError) as exc:
        log.debug("SCHED_BATCH unavailable: %s", exc)


def _linger(conn: socket.socket) -> None:
    """Close gracefully: unread bytes at close() would reset the connection and discard the error reply."""
    conn.shutdown(socket.SHUT_WR)
    conn.settimeout(2.0)
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline and conn.recv(1 << 16):
        pass


def _attach(worker: Optional[Worker], sock: socket.socket, header: Dict[str, Any]) -> Dict[str, Any]:
    """Receive a data connection's descriptor (SCM_RIGHTS, right after the attach frame) and serve it."""
    _msg, fds, _flags, _addr = socket.recv_fds(sock, 1, 1)
    if not fds:
        raise RknnError(RKNN_ERR_PARAM_INVALID, None, "attach without a file descriptor")
    conn = socket.socket(fileno=fds[0])
    for extra in fds[1:]:
        socket.socket(fileno=extra).close()
    if worker is None or worker.ctx is None:
        conn.close()
        raise RknnError(-7, None, "no model is loaded in this worker")
    if header.get("tls"):  # the daemon's TLS data port: the handshake is this worker's (rknnlink_server.tlsdata)
        from rknnlink_server import tlsdata

        threading.Thread(target=tlsdata.serve, args=(worker, conn, header, serve_data), name="data-tls",
                         daemon=True).start()
        return {"attached": True}
    threading.Thread(target=serve_data, args=(worker, conn, int(header.get("max_bytes", 64 << 20)),
                                              bool(header.get("greet", True))), name="data", daemon=True).start()
    return {"attached": True}


def _error_reply(exc: BaseException) -> Dict[str, Any]:
    if isinstance(exc, RknnError):
        return {"ok": False, "code": exc.code, "name": exc.name, "message": exc.message}
    if isinstance(exc, (OSError, ValueError, TypeError)):
        return {"ok": False, "code": RKNN_ERR_PARAM_INVALID, "name": "RKNN_ERR_PARAM_INVALID",
                "message": f"{type(exc).__name__}: {exc}"}
    return {"ok": False, "code": -1, "name": "RKNN_ERR_FAIL", "message": f"worker error {type(exc).__name__}: {exc}"}


def serve(sock: socket.socket, library: str, backend: str) -> int:
    try:
        worker: Optional[Worker] = Worker(library, backend)
        load_error = None
        freeze_heap()
    except (OSError, RknnError) as exc:
        worker, load_error = None, exc
    while True:
        try:
            header, blobs = recv_frame(sock)
        except WorkerGoneError:
            return 0
        try:
            if header.get("op") == "attach":
                reply, out = _attach(worker, sock, header), ()
            elif header.get("op") == "data_count":  # without the context lock: never waits for a run
                reply, out = {"inferences": worker.data_inferences if worker else 0}, ()
            elif worker is None:
                raise RknnError(-3, None, f"cannot load the NPU runtime {library}: {load_error}")
            else:
                with worker.lock:
                    reply, out = worker.handle(header, blobs)
            reply["ok"] = True
        except Exception as exc:  # noqa: BLE001 - every failure goes back to the daemon as a reply
            reply, out = _error_reply(exc), ()
        send_frame(sock, reply, [np.ascontiguousarray(o) if isinstance(o, np.ndarray) else o for o in out])
        if header.get("op") == "close":
            return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="rknnlink-worker")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--library", required=True)
    parser.add_argument("--backend", default="auto")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname).1s worker: %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the daemon decides when workers stop
    _die_with_parent()
    sock = socket.socket(fileno=args.fd)
    try:
        return serve(sock, args.library, args.backend)
    finally:
        sock.close()


if __name__ == "__main__":
    sys.exit(main())
