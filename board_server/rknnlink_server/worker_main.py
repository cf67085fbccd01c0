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
import logging
import math
import signal
import socket
import sys
import threading
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from rknnlink.runtime import RknnError, RuntimeContext, RuntimeLibrary, numpy_dtype
from rknnlink.runtime.abi import RKNN_ERR_INPUT_INVALID, RKNN_ERR_PARAM_INVALID
from rknnlink.runtime.library import output_type_of
from rknnlink.v1 import datawire
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
        self._last_run: Optional[Tuple[List[np.ndarray], List[Optional[str]], List[bool]]] = None

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

    def run(self, metas: List[Dict[str, Any]], blobs: Sequence[Any], raw: bool) -> Tuple[int, List[np.ndarray]]:
        """One inference of a data-plane request: (run_us, outputs). Callers hold `lock`."""
        if self.ctx is None:
            raise RknnError(-7, None, "no model is loaded in this worker")
        arrays = [self._array(i, meta, blob) for i, (meta, blob) in enumerate(zip(metas, blobs))]
        formats = [_FORMATS.get(int(m.get("fmt", 0))) for m in metas]
        passes = [bool(m.get("pt", False)) for m in metas]
        start = time.perf_counter()
        outputs = self.ctx.infer(arrays, formats, passes, want_float=not raw)
        run_us = int((time.perf_counter() - start) * 1e6)
        self._last_run = (arrays, formats, passes)  # views of the frame, which they keep alive
        self.data_inferences += 1
        return run_us, outputs

    @staticmethod
    def _array(i: int, meta: Dict[str, Any], blob: Any) -> np.ndarray:
        dtype = numpy_dtype(int(meta.get("dtype", 0)))
        shape = [int(d) for d in meta.get("shape", [])]
        size = memoryview(blob).nbytes
        expected = math.prod(shape) * dtype.itemsize if shape else size
        if expected != size or size % dtype.itemsize:
            raise RknnError(RKNN_ERR_INPUT_INVALID, None,
                            f"input {i}: {size} data bytes do not match shape {shape} of {dtype} "
                            f"({expected} bytes); send C-contiguous data of the declared shape and dtype")
        arr = np.frombuffer(blob, dtype=dtype)
        return arr.reshape(shape) if shape else arr

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

            return vendor_dumps.collect(self.lib, self.model_path, self._last_run,
                                        self.ctx.input_attrs + self.ctx.output_attrs, bool(header.get("raw")))
        if not self.dump_enabled:
            # Dumps were off for the last run: turn them on and repeat that run (the model is deterministic).
            if self._last_run is None:
                raise RknnError(RKNN_ERR_PARAM_INVALID, None,
                                "no run happened yet in this session: run the model once, then ask for dumps")
            self.ctx.set_dump(True)
            self.dump_enabled = True
            self.ctx.infer(*self._last_run)
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


READERS = 2  # threads per data connection: one reads the next frame while the other runs (leader/follower)


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
        if greet:
            datawire.send_parts(conn, [datawire.encode_hello_reply(0, "attached")])
        _DataConnection(worker, conn, datawire.frame_limit(max_bytes)).serve()
    except (OSError, datawire.PeerClosedError) as exc:
        log.debug("data connection ended: %s", exc)
    finally:
        conn.close()


class _DataConnection:
    """The one loop of the data plane, run by READERS threads in turn (leader/follower): the thread holding
    the read token reads and parses the next frame and takes its turn to run; when the next frame is already
    waiting (a pipelining client) it passes the token on first, so that frame is read (the runtime releases
    the GIL) while this one runs. Frames run and are answered in the order they came."""

    def __init__(self, worker: Worker, conn: socket.socket, limit: int) -> None:
        self.worker, self.conn, self.limit = worker, conn, limit
        self.reader = datawire.FrameReader(conn)
        self.read_token = threading.Lock()
        self.turn = threading.Lock()
        self.done = False

    def serve(self) -> None:
        helpers = [threading.Thread(target=self._loop, name="data", daemon=True) for _ in range(READERS - 1)]
        for helper in helpers:
            helper.start()
        try:
            self._loop()
        finally:
            for helper in helpers:
                helper.join()

    def _loop(self) -> None:
        while True:
            self.read_token.acquire()
            token = True
            try:
                if self.done:
                    return
                request: Any
                try:
                    body = self.reader.read(self.limit)
                    request = None if body is None else datawire.parse_request(body)
                except datawire.FrameError as exc:
                    request = exc
                except (OSError, datawire.PeerClosedError) as exc:
                    log.debug("data connection ended: %s", exc)
                    request = None
                self.done = not isinstance(request, tuple)
                with self.turn:  # taken before the token goes on: frames run in the order they were read
                    if self.done or self.reader.pending():
                        # The next frame is there already: another thread reads it while this one runs.
                        # Otherwise (one request in flight) this thread keeps the token: no hand-over on
                        # the way to the reply, and it reads the next frame itself.
                        self.read_token.release()
                        token = False
                    if not self._answer(request):
                        return
            finally:
                if token:
                    self.read_token.release()

    def _answer(self, request: Any) -> bool:
        """Run one request and send its reply (or the error reply of a corrupt frame); False: stop."""
        try:
            if request is None:
                return False
            if isinstance(request, datawire.FrameError):
                datawire.send_parts(self.conn, datawire.encode_error(
                    0, RKNN_ERR_PARAM_INVALID, "RKNN_ERR_PARAM_INVALID", f"corrupt data-plane frame: {request}"))
                _linger(self.conn)
                return False
            datawire.send_parts(self.conn, _data_run(self.worker, *request))
            return True
        except OSError as exc:
            log.debug("data connection ended: %s", exc)
            self.done = True
            try:
                self.conn.shutdown(socket.SHUT_RDWR)  # wake the reader, if it waits
            except OSError:
                pass
            return False


def _linger(conn: socket.socket) -> None:
    """Close gracefully: unread bytes at close() would reset the connection and discard the error reply."""
    conn.shutdown(socket.SHUT_WR)
    conn.settimeout(2.0)
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline and conn.recv(1 << 16):
        pass


def _data_run(worker: Worker, request_id: int, raw: bool, metas: List[Dict[str, Any]],
              blobs: List[memoryview]) -> List[Any]:
    try:
        with worker.lock:
            run_us, outs = worker.run(metas, blobs, raw)
    except Exception as exc:  # noqa: BLE001 - every failure goes back to the client as a reply
        err = _error_reply(exc)
        return datawire.encode_error(request_id, int(err["code"]), err.get("name"), str(err["message"]))
    outputs = [(output_type_of(o.dtype), o.shape, np.ascontiguousarray(o)) for o in outs]
    return datawire.encode_reply(request_id, run_us, outputs)


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
