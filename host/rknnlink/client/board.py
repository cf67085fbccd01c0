"""The modern client API: Board (a connected daemon) and Session (a model loaded on it)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import ssl
import threading
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import grpc
import numpy as np

from rknnlink import PROTOCOL_VERSION, __version__
from rknnlink.client.data import Carrier, DataRefusedError, DirectCarrier, Pipeline, RelayCarrier
from rknnlink.client.errors import BoardError, IncompatibleVersionError, SessionLostError, translate
from rknnlink.runtime import TensorAttr, numpy_dtype
from rknnlink.runtime.library import as_input_array, output_type_of
from rknnlink.v1 import datawire, relaywire
from rknnlink.v1.messages import make_stub, pb
from rknnlink.v1.protocol import (
    MAX_TENSORS,
    MD_CLIENT_ID,
    MD_OPERATOR_TOKEN,
    MD_RELAY_DEPTH,
    MD_SESSION_ID,
    MIN_DAEMON_PROTOCOL,
)

log = logging.getLogger(__name__)
CHUNK = 1 << 20
_FORMATS = {None: pb.FORMAT_DEFAULT, "nchw": pb.FORMAT_NCHW, "nhwc": pb.FORMAT_NHWC}
_INPUT_TYPES = {np.dtype(np.float32): 0, np.dtype(np.float16): 1, np.dtype(np.int8): 2, np.dtype(np.uint8): 3}


@dataclass(frozen=True)
class DeviceInfo:
    serial: str
    platform: str
    npu_cores: int
    backend: str
    daemon_version: str
    protocol_version: int
    runtime_version: str
    driver_version: str
    library_path: str
    hostname: str
    os: str
    arch: str

    @classmethod
    def from_pb(cls, m: pb.DeviceInfo) -> DeviceInfo:
        return cls(**{name: getattr(m, name) for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class PerfReport:
    """RKNN_QUERY_PERF_DETAIL text, its rows parsed, and the per-frame total in microseconds."""

    text: str
    rows: List[Dict[str, Any]]
    total_us: int


def _attr(m: pb.TensorAttr) -> TensorAttr:
    return TensorAttr(index=m.index, name=m.name, dims=tuple(m.dims), fmt=m.fmt, dtype=numpy_dtype(m.dtype),
                      rknn_type=int(m.dtype), qnt_type=m.qnt_type, zp=m.zp, scale=m.scale, n_elems=m.n_elems,
                      size=m.size, fl=m.fl, w_stride=m.w_stride, size_with_stride=m.size_with_stride,
                      h_stride=m.h_stride)


def _input_parts(value: Any, fmt: Optional[str], through: bool) -> tuple:
    """(dtype, shape, bytes view, format code, pass_through) of one input, checked and made contiguous."""
    arr = np.asarray(value) if through else as_input_array(value)
    if through:
        dtype = output_type_of(arr.dtype)
    elif arr.dtype in _INPUT_TYPES:
        dtype = _INPUT_TYPES[arr.dtype]
    else:
        raise TypeError(f"input dtype {arr.dtype} is not supported; convert it to uint8, int8, float16, float32 "
                        "or an integer type")
    key = fmt.lower() if isinstance(fmt, str) else fmt
    if key not in _FORMATS:
        raise ValueError(f"input format {fmt!r} is unknown; use 'nhwc' or 'nchw'")
    arr = np.ascontiguousarray(arr)
    return dtype, arr.shape, arr.reshape(-1).view(np.uint8), _FORMATS[key], through


def _data_inputs(inputs: Any, formats: Optional[Sequence[Optional[str]]], pass_through: Optional[Sequence[bool]],
                 want_float: bool) -> Tuple[list, bool]:
    """Inputs as data-channel tuples (dtype, fmt, pass_through, shape, bytes) and the raw-outputs flag."""
    if isinstance(inputs, np.ndarray):
        inputs = [inputs]
    _check_count(inputs)
    out = []
    for i, x in enumerate(inputs):
        dtype, shape, data, fmt, through = _input_parts(
            x, formats[i] if formats and i < len(formats) else None,
            bool(pass_through[i]) if pass_through and i < len(pass_through) else False)
        out.append((dtype, int(fmt), through, tuple(int(d) for d in shape), data))
    return out, not want_float


def _check_count(inputs: Sequence[Any]) -> None:
    if len(inputs) > MAX_TENSORS:
        raise ValueError(f"{len(inputs)} inputs: one run carries at most {MAX_TENSORS} (models have no more)")


class Board:
    """A connected rknnlink daemon. Use Board.connect(address)."""

    def __init__(self, address: str, channel: grpc.Channel, metadata: Sequence[Tuple[str, str]] = (),
                 timeout: float = 10.0, data_address: Optional[str] = None, use_data_channel: bool = True,
                 data_tls: Optional[Tuple[ssl.SSLContext, str]] = None) -> None:
        self.address = address
        self.data_address = data_address
        self.data_tls = data_tls
        self.use_data_channel = use_data_channel
        self.data_port = 0
        self._channel = channel
        self._stub = make_stub(channel)
        self._metadata = tuple(metadata)
        self._timeout = timeout
        self._watch: Any = None
        self._sessions: "Dict[str, Session]" = {}  # noqa: UP037
        self.model_bytes_sent = 0
        self.client_id = ""
        self.max_message_bytes = 0
        self.info: DeviceInfo

    @classmethod
    def connect(cls, address: str, timeout: float = 10.0, credentials: Optional[grpc.ChannelCredentials] = None,
                metadata: Sequence[Tuple[str, str]] = (), options: Sequence[Tuple[str, Any]] = (),
                data_address: Optional[str] = None, use_data_channel: Optional[bool] = None,
                data_tls: Optional[ssl.SSLContext] = None) -> Board:
        """Connect and handshake. ConnectionError if nothing answers at `address` within `timeout` seconds.

        Inference frames take the direct carrier (a TCP connection to the session's worker) where a route to
        the daemon's data port exists: `data_address` (HOST:PORT, e.g. a second adb forward, which the
        transport's Endpoint passes), or the data port a plain-text daemon advertises in Hello at the gRPC
        host. Otherwise (TLS, use_data_channel=False as the USB bridge's and forward-less adb endpoints say,
        or RKNNLINK_DATA_CHANNEL=0) they take the relayed carrier: the daemon's Relay stream. With TLS
        `credentials`, `data_tls` (an ssl client context trusting the same certificate, as the transport's
        Endpoint passes) lets them take the daemon's TLS data port instead (the certificate name is the
        grpc.ssl_target_name_override option, else the host)."""
        if use_data_channel is None:
            use_data_channel = os.environ.get("RKNNLINK_DATA_CHANNEL", "1") != "0"
        opts = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1),
                ("grpc.keepalive_time_ms", 30000), ("grpc.keepalive_timeout_ms", 10000),
                ("grpc.enable_retries", 0), *options]
        channel = (grpc.secure_channel(address, credentials, opts) if credentials is not None
                   else grpc.insecure_channel(address, opts))
        try:
            grpc.channel_ready_future(channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            channel.close()
            raise ConnectionError(
                f"cannot reach an rknnlink daemon at {address} within {timeout:g} s: check that `rknnlink serve` "
                f"runs on the board (systemctl status rknnlink-server), that HOST:PORT is right and that the "
                f"network path or adb forward to it is up") from None
        tls = None
        if credentials is not None and data_tls is not None:
            name = dict(options).get("grpc.ssl_target_name_override") or address.rpartition(":")[0].strip("[]")
            tls = (data_tls, str(name))
        board = cls(address, channel, metadata, timeout, data_address,
                    use_data_channel and (credentials is None or tls is not None), tls)
        try:
            board._hello()
        except BaseException:
            board.close()
            raise
        return board

    # -- plumbing -----------------------------------------------------------------------------------------------
    def _call(self, method: Any, request: Any, timeout: Optional[float] = -1.0) -> Any:
        """Call a stub method (by name) or a callable; translate gRPC errors into rknnlink exceptions."""
        func = getattr(self._stub, method) if isinstance(method, str) else method
        try:
            return func(request, metadata=self._metadata, timeout=self._timeout * 6 if timeout == -1.0 else timeout)
        except grpc.RpcError as exc:
            raise translate(exc, self.address) from None

    def _hello(self) -> None:
        reply = self._call("Hello", pb.HelloRequest(protocol_version=PROTOCOL_VERSION, client_version=__version__,
                                                    min_daemon_protocol=MIN_DAEMON_PROTOCOL,
                                                    client_name=f"rknnlink.client pid {os.getpid()}"),
                           timeout=self._timeout)
        if reply.min_client_protocol > PROTOCOL_VERSION:
            raise IncompatibleVersionError(
                f"the board's daemon (rknnlink {reply.daemon_version}) needs protocol {reply.min_client_protocol} "
                f"but this host's rknnlink {__version__} speaks {PROTOCOL_VERSION}: update the host with "
                f"`pip install -U rknnlink`", grpc.StatusCode.FAILED_PRECONDITION, "incompatible-version")
        if reply.protocol_version < MIN_DAEMON_PROTOCOL:
            raise IncompatibleVersionError(
                f"the board's daemon (rknnlink {reply.daemon_version}) speaks protocol {reply.protocol_version} "
                f"but this host needs {MIN_DAEMON_PROTOCOL}: update the board with "
                f"`rknnlink deploy {reply.device.serial}`", grpc.StatusCode.FAILED_PRECONDITION,
                "incompatible-version")
        self.client_id = reply.client_id
        self._metadata += ((MD_CLIENT_ID, self.client_id),)  # every later call: the daemon scopes sessions by it
        self.info = DeviceInfo.from_pb(reply.device)
        self.max_message_bytes = int(reply.max_message_bytes)
        self.data_port = int(getattr(reply, "data_port", 0) or 0)
        self._watch = self._stub.Watch(pb.WatchRequest(client_id=self.client_id), metadata=self._metadata)
        try:
            next(self._watch)
        except grpc.RpcError as exc:
            raise translate(exc, self.address) from None

    def data_target(self) -> Optional[Tuple[str, int]]:
        """(host, port) of the direct carrier, or None when there is no route to the daemon's data port
        (sessions then relay their frames through the daemon)."""
        if not self.use_data_channel or not self.data_port:
            return None
        address = self.data_address or f"{self.address.rpartition(':')[0]}:{self.data_port}"
        host, _, port = address.rpartition(":")
        host = host.strip("[]")
        if host.startswith("ipv4:"):
            host = host[5:]
        return (host, int(port)) if host and port.isdigit() else None

    def check_size(self, request: Any) -> None:
        """Refuse locally a message the daemon would reject, with the fix in the message."""
        size = request if isinstance(request, int) else len(request)
        if self.max_message_bytes and size > self.max_message_bytes:
            raise BoardError(f"the request is {size / 2**20:.1f} MiB but the daemon at {self.address} accepts "
                             f"messages up to {self.max_message_bytes / 2**20:.0f} MiB; restart it with a larger "
                             f"--max-message-mb", grpc.StatusCode.RESOURCE_EXHAUSTED, "message-too-large")

    # -- models and sessions ----------------------------------------------------------------------------------------
    def has_model(self, sha256: str) -> bool:
        return bool(self._call("HasModel", pb.HasModelRequest(sha256=sha256)).present)

    def upload_model(self, model: bytes, progress: Optional[Callable[[int, int], None]] = None) -> str:
        """Send the model unless the board already has it; returns its SHA-256.

        `progress(sent_bytes, total_bytes)` is called after each chunk (a progress bar hook)."""
        sha = hashlib.sha256(model).hexdigest()
        if self.has_model(sha):
            return sha
        view = memoryview(model)
        sent = [0]

        def chunks() -> Iterator[pb.ModelChunk]:
            for offset in range(0, len(view), CHUNK):
                piece = bytes(view[offset:offset + CHUNK])
                sent[0] += len(piece)
                if progress is not None:
                    progress(offset + len(piece), len(view))
                yield pb.ModelChunk(sha256=sha if offset == 0 else "", total_size=len(view) if offset == 0 else 0,
                                    data=piece)

        try:
            self._call("UploadModel", chunks(), timeout=None)
        finally:
            self.model_bytes_sent += sent[0]
        return sha

    def load_model(self, model: bytes, core_mask: int = 0, perf: bool = False, eval_mem: bool = False,
                   async_mode: bool = False, dump_layers: bool = False,
                   progress: Optional[Callable[[int, int], None]] = None) -> Session:
        """Upload (only if the board lacks this model) and create a session; see Session."""
        model = bytes(model)
        if not model:
            raise ValueError("the model is empty; pass the bytes of a .rknn file")
        sha = self.upload_model(model, progress=progress)
        # Proof that this client holds the model's bytes (the board may have it cached from another client).
        proof = hmac.new(self.client_id.encode(), model, hashlib.sha256).digest()
        reply = self._call("CreateSession", pb.CreateSessionRequest(
            client_id=self.client_id, model_sha256=sha, core_mask=core_mask, collect_perf=perf, eval_mem=eval_mem,
            async_mode=async_mode, dump_layers=dump_layers, model_proof=proof))
        session = Session(self, reply)
        self._sessions[session.id] = session
        return session

    def stats(self, operator_token: Optional[str] = None) -> Dict[str, Any]:
        """Daemon counters (GetStats) as a dict; `sessions` lists this client's sessions (a dict each), or
        every client's with the daemon's operator token (rknnlink serve --operator-token-file)."""
        extra = ((MD_OPERATOR_TOKEN, operator_token),) if operator_token else ()
        try:
            m = self._stub.GetStats(pb.StatsRequest(), metadata=self._metadata + extra, timeout=self._timeout * 6)
        except grpc.RpcError as exc:
            raise translate(exc, self.address) from None
        out: Dict[str, Any] = {f.name: getattr(m, f.name) for f in m.DESCRIPTOR.fields if f.name != "sessions"}
        out["sessions"] = [{f.name: getattr(s, f.name) for f in s.DESCRIPTOR.fields} for s in m.sessions]
        return out

    def device_info(self) -> DeviceInfo:
        """Fresh DeviceInfo (runtime versions are filled in once the board ran a session)."""
        self.info = DeviceInfo.from_pb(self._call("GetDeviceInfo", pb.DeviceInfoRequest()))
        return self.info

    def close(self) -> None:
        """Close this client's sessions and the connection (the daemon frees anything left over)."""
        for session in list(self._sessions.values()):
            try:
                session.close()
            except (BoardError, ConnectionError) as exc:
                log.debug("closing session %s: %s", session.id, exc)
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        self._channel.close()

    def __enter__(self) -> Board:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Session:
    """A model loaded on the board (one runtime context in its own worker process)."""

    def __init__(self, board: Board, reply: pb.CreateSessionResponse) -> None:
        self.board = board
        self.id = reply.session_id
        self.input_attrs = [_attr(a) for a in reply.inputs]
        self.output_attrs = [_attr(a) for a in reply.outputs]
        self.custom_string = reply.custom_string
        self.is_simulator = reply.is_simulator
        self._sdk = (reply.sdk_version.api_version, reply.sdk_version.drv_version)
        self._next_id = 0
        self._lock = threading.Lock()
        self._secret = bytes(getattr(reply, "data_secret", b"") or b"")
        self._direct = bool(self._secret) and board.data_target() is not None
        self._link: Optional[Pipeline] = None  # run()'s kept carrier (a pipeline of depth 1)
        self.closed = False

    def _request_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _req(self) -> pb.SessionRequest:
        return pb.SessionRequest(session_id=self.id)

    def run(self, inputs: Any, formats: Optional[Sequence[Optional[str]]] = None,
            pass_through: Optional[Sequence[bool]] = None, want_float: bool = True) -> List[np.ndarray]:
        """One inference; outputs shaped by the output attributes (float32 unless want_float=False).

        Goes over a carrier kept open between calls (a pipeline of depth 1): direct to the worker where the
        endpoint has a data route, else relayed by the daemon (see `carrier`).
        """
        with self._lock:
            link = self._link
            if link is not None and link.alive():
                try:
                    return link.run(inputs, formats, pass_through, want_float)
                except BoardError as exc:
                    # A kept relay the daemon cut for idleness just now: the request never reached the
                    # worker (it would have kept the stream alive); send it again on a fresh stream.
                    if exc.status != grpc.StatusCode.CANCELLED or link.carrier.kind != "relay":
                        raise
                    log.debug("kept relay of session %s was cut (%s); reopening", self.id, exc)
            if link is not None:
                link.close()
            link = self._link = self._pipeline(1)
            return link.run(inputs, formats, pass_through, want_float)

    @property
    def carrier(self) -> str:
        """"direct" (frames straight to the worker), "tls" (the daemon's TLS data port; the worker ends
        TLS) or "relay" (frames pumped by the daemon's Relay stream)."""
        if not self._direct:
            return "relay"
        return "tls" if self.board.data_tls is not None else "direct"

    @property
    def uses_data_channel(self) -> bool:
        """True while run() and pipeline() use the direct carrier."""
        return self._direct

    def pipeline(self, depth: int = 4) -> Pipeline:
        """A new carrier keeping up to `depth` requests in flight; results come back in order."""
        return self._pipeline(depth)

    def _pipeline(self, depth: int) -> Pipeline:
        return Pipeline(self._open_carrier(depth), depth, self._encode, self._request_id, self._max_reply_bytes(),
                        self._data_lost, self._probe)

    def _open_carrier(self, depth: int = 0) -> Carrier:
        """The direct carrier where the endpoint has a data route, else the relay; a direct route that does not
        answer like the daemon's data port is given up (with a warning) for the relay, which always exists."""
        target = self.board.data_target() if self._direct else None
        if target is not None:
            try:
                return DirectCarrier(target, self.id, self._secret, self.board.data_tls)
            except (OSError, DataRefusedError, datawire.FrameError) as exc:  # ssl.SSLError is an OSError
                log.warning("data channel at %s:%d unavailable (%s); relaying session %s through the daemon",
                            *target, exc, self.id)
                self._direct = False
        metadata = self.board._metadata + ((MD_SESSION_ID, self.id),) + (((MD_RELAY_DEPTH, "1"),) if depth == 1 else ())
        return RelayCarrier(relaywire.relay_call(self.board._channel), metadata)

    def _max_reply_bytes(self) -> int:
        """The most output bytes a reply may carry: float32 of every output, at least the message limit."""
        outputs = 4 * sum(int(a.n_elems) for a in self.output_attrs)
        return max(outputs + (1 << 16), self.board.max_message_bytes or (64 << 20))

    def _encode(self, inputs: Any, formats: Optional[Sequence[Optional[str]]],
                pass_through: Optional[Sequence[bool]], want_float: bool) -> Tuple[list, bool]:
        tensors, raw = _data_inputs(inputs, formats, pass_through, want_float)
        self.board.check_size(sum(t[4].nbytes for t in tensors) + 64)
        return tensors, raw

    def _probe(self) -> None:
        """A reply is overdue: a call on the session returns once the worker is free again, or raises
        SessionLostError after the daemon's per-call timeout killed a hung worker."""
        self.board._call("GetPerfRun", pb.SessionRequest(session_id=self.id), timeout=None)

    def _data_lost(self, exc: BaseException) -> Exception:
        """The carrier broke: say why in the control plane's terms (a crashed worker: SessionLostError)."""
        if isinstance(exc, grpc.RpcError):
            return translate(exc, self.board.address)
        try:
            self.board._call("GetPerfRun", pb.SessionRequest(session_id=self.id))
        except (SessionLostError, BoardError, ConnectionError) as lost:
            return lost
        return BoardError(f"the {self.carrier} data carrier of session {self.id} to {self.board.address} broke "
                          f"({exc}); the session is still open: retry the call", None, "data-lost")

    def perf(self) -> PerfReport:
        m = self.board._call("GetPerf", self._req())
        rows = [{f.name: getattr(r, f.name) for f in r.DESCRIPTOR.fields} for r in m.rows]
        return PerfReport(text=m.text, rows=rows, total_us=int(m.total_us))

    def perf_run_us(self) -> int:
        return int(self.board._call("GetPerfRun", self._req()).run_us)

    def memory(self) -> Dict[str, int]:
        m = self.board._call("GetMemory", self._req())
        return {f.name: int(getattr(m, f.name)) for f in m.DESCRIPTOR.fields}

    def sdk_version(self) -> Tuple[str, str]:
        m = self.board._call("GetSdkVersion", self._req())
        return m.api_version, m.drv_version

    def dump_tensors(self, include_raw: bool = False) -> List[Tuple[Dict[str, Any], np.ndarray, Optional[np.ndarray]]]:
        """Per-layer outputs of the last run: (info, float32 array, raw array or None); on a vendor
        runtime they come from its own dump files (docs/vendor.md)."""
        tensors: Dict[int, Dict[str, Any]] = {}
        try:
            for chunk in self.board._stub.GetDumps(pb.DumpsRequest(session_id=self.id, include_raw=include_raw),
                                                   metadata=self.board._metadata):
                entry = tensors.setdefault(chunk.index, {"parts": {}})
                if chunk.HasField("info"):
                    i = chunk.info
                    entry["info"] = {"name": i.name, "layer_index": i.layer_index, "output_slot": i.output_slot,
                                     "dtype": i.dtype, "qnt_type": i.qnt_type, "scale": i.scale, "zp": i.zp,
                                     "dims": tuple(i.dims)}
                buf = entry["parts"].setdefault(chunk.part, bytearray(chunk.part_size))
                buf[chunk.offset:chunk.offset + len(chunk.data)] = chunk.data
        except grpc.RpcError as exc:
            raise translate(exc, self.board.address) from None
        return [self._dump_arrays(tensors[k]) for k in sorted(tensors)]

    @staticmethod
    def _dump_arrays(entry: Dict[str, Any]) -> Tuple[Dict[str, Any], np.ndarray, Optional[np.ndarray]]:
        info = entry["info"]
        dims = info["dims"]
        f32 = np.frombuffer(entry["parts"][pb.DUMP_FLOAT32], dtype=np.float32)
        raw_buf = entry["parts"].get(pb.DUMP_RAW)
        raw = np.frombuffer(raw_buf, dtype=numpy_dtype(info["dtype"])) if raw_buf is not None else None
        if dims and int(np.prod(dims)) == f32.size:
            f32 = f32.reshape(dims)
            raw = raw.reshape(dims) if raw is not None and raw.size == f32.size else raw
        return info, f32, raw

    def dumps(self) -> Dict[str, np.ndarray]:
        """Per-layer float32 outputs of the last run by tensor name."""
        return {info["name"]: f32 for info, f32, _raw in self.dump_tensors()}

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.board._sessions.pop(self.id, None)
        if self._link is not None:
            self._link.close()
            self._link = None
        self.board._call("CloseSession", self._req())

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
