"""The rknnlink.v1 gRPC service, the daemon's control plane: handshake, model cache, sessions (one runtime
worker process each), profiling, dumps and counters - and the Relay stream, which carries the data plane's
frames, unread, for clients that cannot reach the worker's socket (rknnlink_server.relay)."""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import os
import secrets
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import grpc

from rknnlink.runtime import RknnError
from rknnlink.runtime.perf import parse_perf_detail
from rknnlink.v1 import datawire
from rknnlink.v1.messages import pb
from rknnlink.v1.protocol import MD_CLIENT_ID, MD_OPERATOR_TOKEN, MD_RELAY_DEPTH, MD_SESSION_ID
from rknnlink_server import MIN_CLIENT_PROTOCOL, PROTOCOL_VERSION, __version__
from rknnlink_server.cache import FULL, INVALID, CacheError, ModelCache, check_sha
from rknnlink_server.errors import DaemonError, loggable
from rknnlink_server.relay import RelayPump
from rknnlink_server.worker import WorkerCrashedError, WorkerError, WorkerHandle, WorkerTimeoutError

log = logging.getLogger("rknnlink_server")
CHUNK = 1 << 20
_FLAG_ASYNC, _FLAG_PERF = 0x4, 0x8
_CACHE_STATUS = {INVALID: grpc.StatusCode.INVALID_ARGUMENT, FULL: grpc.StatusCode.RESOURCE_EXHAUSTED}


@dataclass
class RuntimeSetup:
    """Which runtime the workers load and what board this is."""

    library: str
    backend: str            # "vendor" or "sim"
    platform: str
    serial: str
    runtime_version: str = ""
    driver_version: str = ""


@dataclass
class Limits:
    max_sessions: int = 16
    max_message_bytes: int = 64 << 20
    call_timeout: float = 60.0
    client_grace: float = 10.0      # seconds a client may stay connected without a Watch stream
    idle_timeout: float = 60.0      # seconds an upload, relay stream or dump download may be silent
    streams_per_client: int = 3     # uploads, relay streams and dump downloads open at once, per client

    @property
    def max_clients(self) -> int:
        return 2 * self.max_sessions + 16

    @property
    def rpc_threads(self) -> int:
        """Every long-lived call is counted against a client (one Watch plus streams_per_client), so even
        when all clients hold all their streams open, `UNARY_THREADS` threads are left for short calls."""
        return self.max_clients * (1 + self.streams_per_client) + UNARY_THREADS


UNARY_THREADS = 32
WORKER_START_SECONDS = 30.0  # a worker's first reply (interpreter start-up plus rknn_init) on a loaded board


@dataclass
class Session:
    id: str
    client_id: str
    sha: str
    worker: WorkerHandle
    is_simulator: bool
    inferences: int = 0
    secret: bytes = b""     # the direct carrier's per-session secret (rknnlink_server.datachannel)
    data_counted: int = 0   # the worker's inferences (every run is the worker's) already added to `inferences`


@dataclass
class Counters:
    model_bytes_received: int = 0
    uploads_completed: int = 0
    uploads_aborted: int = 0
    workers_crashed: int = 0
    inferences: int = 0


@dataclass
class Client:
    id: str
    name: str
    peer: str
    watching: int = 0
    sessions: set = field(default_factory=set)
    models: set = field(default_factory=set)   # model hashes this client may run (uploaded or proven)
    streams: int = 0                           # long-lived calls open (uploads, relays, dumps)
    since: float = field(default_factory=time.monotonic)  # when it connected (expires without a Watch)


def metadata_value(context: grpc.ServicerContext, key: str) -> str:
    for k, v in context.invocation_metadata() or ():
        if k == key:
            return v if isinstance(v, str) else v.decode("utf-8", "replace")
    return ""


class _IdleGuard:
    """A long-lived call that the watchdog cancels once its peer has been silent for `limit` seconds."""

    def __init__(self, context: grpc.ServicerContext, limit: float, what: str) -> None:
        self.context, self.limit, self.what = context, limit, what
        self.deadline = time.monotonic() + limit
        self.expired = False

    def touch(self) -> None:
        self.deadline = time.monotonic() + self.limit


def rpc(method: Callable) -> Callable:
    """Turn DaemonError/RknnError/CacheError into a gRPC status with metadata (unary handlers)."""

    @functools.wraps(method)
    def wrapper(self: RknnLinkService, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except (DaemonError, RknnError, CacheError) as exc:
            err = self.to_daemon_error(exc)
        except grpc.RpcError:
            if context.is_active():
                raise
            return None  # the call was cancelled (by the peer or the idle watchdog): nobody to answer
        self.abort(context, err)

    return wrapper


def stream_rpc(method: Callable) -> Callable:
    """rpc() for handlers that yield responses."""

    @functools.wraps(method)
    def wrapper(self: RknnLinkService, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            yield from method(self, request, context)
            return
        except (DaemonError, RknnError, CacheError) as exc:
            err = self.to_daemon_error(exc)
        except grpc.RpcError:
            if context.is_active():
                raise
            return  # cancelled (by the peer or the idle watchdog)
        self.abort(context, err)

    return wrapper


class RknnLinkService:
    """The RknnLink servicer. Sessions live in worker processes; this object only routes, counts and limits,
    so nothing the NPU runtime does can corrupt it."""

    def __init__(self, setup: RuntimeSetup, cache_dir: Path, max_cache_bytes: int, limits: Limits) -> None:
        self.setup = setup
        self.limits = limits
        self.counters = Counters()
        self._lock = threading.Lock()
        self._sessions: Dict[str, Session] = {}
        self._clients: Dict[str, Client] = {}
        self._stopping = threading.Event()
        self.cache = ModelCache(cache_dir, max_cache_bytes, in_use=self._models_in_use)
        self._spare: Optional[WorkerHandle] = None  # a started worker, so CreateSession skips Python start-up
        self._spare_lock = threading.Lock()
        self._spare_wanted = threading.Event()
        self.data_port = 0  # set by the Daemon when it opens the data channel's listener
        self.operator_token = ""  # GetStats with this token (MD_OPERATOR_TOKEN) lists every client's sessions
        self._reserved_sessions = 0  # CreateSession calls between the limit check and the session's insertion
        self._guards: set = set()
        threading.Thread(target=self._watchdog_loop, name="watchdog", daemon=True).start()
        # One long-lived thread starts spares: Linux sends PR_SET_PDEATHSIG when the *thread* that started a
        # worker exits, so workers must not be started from short-lived threads.
        threading.Thread(target=self._spare_loop, name="spare-worker", daemon=True).start()
        self._refill_spare()

    # -- helpers ------------------------------------------------------------------------------------------------
    @staticmethod
    def abort(context: grpc.ServicerContext, err: DaemonError) -> None:
        context.set_trailing_metadata(err.metadata())
        context.abort(err.status, err.message)

    def to_daemon_error(self, exc: Exception) -> DaemonError:
        if isinstance(exc, DaemonError):
            return exc
        if isinstance(exc, CacheError):
            status = _CACHE_STATUS.get(exc.reason, grpc.StatusCode.FAILED_PRECONDITION)
            return DaemonError(status, str(exc), "model-cache")
        return DaemonError.from_rknn(exc)

    def _models_in_use(self) -> List[str]:
        with self._lock:
            return [s.sha for s in self._sessions.values()]

    def find_session(self, session_id: str) -> Optional[Session]:
        with self._lock:
            return self._sessions.get(session_id)

    def _session(self, session_id: str, context: grpc.ServicerContext) -> Session:
        """The caller's session. Another client's session answers exactly like one that does not exist."""
        caller = metadata_value(context, MD_CLIENT_ID)
        with self._lock:
            session = self._sessions.get(session_id)
        if session is None or not caller or not hmac.compare_digest(session.client_id.encode(), caller.encode()):
            raise DaemonError(grpc.StatusCode.NOT_FOUND,
                              f"session {loggable(session_id, 64)!r} does not exist on this daemon (closed, lost "
                              f"after a worker crash, or freed when its client disconnected); load the model "
                              f"again", "session-not-found")
        return session

    def _client(self, context: grpc.ServicerContext, client_id: str = "") -> Client:
        """The calling client (its id from the call's metadata); FAILED_PRECONDITION without a valid Hello."""
        caller = metadata_value(context, MD_CLIENT_ID)
        if client_id and caller and client_id != caller:
            raise DaemonError(grpc.StatusCode.INVALID_ARGUMENT,
                              "the request's client_id differs from the call's rknnlink-client-id metadata",
                              "bad-request")
        with self._lock:
            client = self._clients.get(caller or client_id)
        if client is None:
            raise DaemonError(grpc.StatusCode.FAILED_PRECONDITION,
                              "unknown client: call Hello first and send its client_id as the rknnlink-client-id "
                              "metadata of every call (Board.connect does); if you did, the daemon restarted or "
                              "forgot this client after it stopped watching - reconnect", "client-unknown")
        return client

    def _open_stream(self, client: Client, what: str) -> None:
        with self._lock:
            if client.streams >= self.limits.streams_per_client:
                raise DaemonError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                  f"this client already has {client.streams} long-lived calls open (uploads, "
                                  f"relay streams, dump downloads; at most {self.limits.streams_per_client}); finish "
                                  f"one before starting {what}", "stream-limit")
            client.streams += 1

    def _close_stream(self, client: Client) -> None:
        with self._lock:
            client.streams -= 1

    def _guard(self, context: grpc.ServicerContext, what: str) -> _IdleGuard:
        guard = _IdleGuard(context, self.limits.idle_timeout, what)
        with self._lock:
            self._guards.add(guard)
        return guard

    def _unguard(self, guard: _IdleGuard) -> None:
        with self._lock:
            self._guards.discard(guard)

    def _watchdog_loop(self) -> None:
        """Cancel long-lived calls whose peer went silent, and forget clients that never started a Watch."""
        while not self._stopping.wait(0.25):
            now = time.monotonic()
            with self._lock:
                expired = [g for g in self._guards if g.deadline < now and not g.expired]
                stale = [c.id for c in self._clients.values()
                         if c.watching == 0 and now - c.since > self.limits.client_grace]
            for guard in expired:
                guard.expired = True
                log.warning("cancelling %s: idle for %g s (--idle-timeout)", guard.what, guard.limit)
                guard.context.cancel()
            for client_id in stale:
                log.info("client %s never watched within %g s: forgetting it", client_id[:8],
                         self.limits.client_grace)
                self._forget_client(client_id, watched=False)

    def _device_info(self) -> pb.DeviceInfo:
        from rknnlink_server.device import host_description, npu_cores

        s = self.setup
        return pb.DeviceInfo(serial=s.serial, platform=s.platform, npu_cores=npu_cores(s.platform), backend=s.backend,
                             daemon_version=__version__, protocol_version=PROTOCOL_VERSION,
                             runtime_version=s.runtime_version, driver_version=s.driver_version,
                             library_path=s.library, **host_description())

    def _lose_session(self, session: Session, exc: WorkerError) -> DaemonError:
        """Forget a session whose worker crashed or hung, and say so in the client's terms (counted once,
        however many of its calls and streams notice)."""
        if self._drop(session.id) is not None:
            with self._lock:
                self.counters.workers_crashed += 1
        if isinstance(exc, WorkerTimeoutError):
            log.error("worker %d of session %s hung: %s", session.worker.pid, session.id, exc)
            return DaemonError(grpc.StatusCode.DEADLINE_EXCEEDED,
                               f"the NPU runtime worker of session {session.id} {exc} (per-call timeout, "
                               f"rknnlink serve --call-timeout); the session is lost, create it again",
                               "worker-timeout")
        code = exc.returncode if isinstance(exc, WorkerCrashedError) else None
        what = f"crashed (signal {-code})" if code is not None and code < 0 else f"stopped ({exc})"
        log.error("worker %d of session %s %s", session.worker.pid, session.id, what)
        return DaemonError(grpc.StatusCode.UNAVAILABLE,
                           f"the NPU runtime worker {what} while running session {session.id}; the session is "
                           f"lost, create it again (load the model again); other sessions are not affected",
                           "worker-crashed")

    def lose_session(self, session: Session, exc: WorkerError) -> str:
        """The data port noticed a failed worker: forget the session like a failed call does.

        Returns "kind\0STATUS\0message" (the hello reply's text for a lost session)."""
        err = self._lose_session(session, exc)
        return f"{err.kind}\0{err.status.name}\0{err.message}"

    def _call(self, session: Session, header: Dict[str, Any], blobs: Any = ()) -> Any:
        if not session.worker.lock.acquire(timeout=self.limits.call_timeout):
            raise DaemonError(grpc.StatusCode.UNAVAILABLE,
                              f"session {session.id} stayed busy for {self.limits.call_timeout:g} s (another call "
                              f"or stream of this client holds it); retry when it ends", "session-busy")
        try:
            return session.worker.call(header, blobs)
        except WorkerError as exc:
            raise self._lose_session(session, exc) from exc
        finally:
            session.worker.lock.release()

    def _drop(self, session_id: str) -> Optional[Session]:
        with self._lock:
            session = self._sessions.pop(session_id, None)
            if session is not None and session.client_id in self._clients:
                self._clients[session.client_id].sessions.discard(session_id)
        if session is not None:
            threading.Thread(target=session.worker.close, name=f"close-{session_id}", daemon=True).start()
        return session

    def _new_worker(self) -> WorkerHandle:
        return WorkerHandle(self.setup.library, self.setup.backend, self.limits.call_timeout)

    def _refill_spare(self) -> None:
        self._spare_wanted.set()

    def _spare_loop(self) -> None:
        while not self._stopping.is_set():
            if not self._spare_wanted.wait(0.5):
                continue
            self._spare_wanted.clear()
            try:
                worker: Optional[WorkerHandle] = self._new_worker()
            except OSError as exc:
                log.warning("cannot start a spare runtime worker: %s", exc)
                continue
            with self._spare_lock:
                if self._spare is None and not self._stopping.is_set():
                    self._spare, worker = worker, None
            if worker is not None:
                worker.kill()

    def _take_worker(self) -> WorkerHandle:
        with self._spare_lock:
            worker, self._spare = self._spare, None
        self._refill_spare()
        if worker is not None and worker.process.poll() is None:
            return worker
        if worker is not None:
            worker.kill()
        return self._new_worker()

    def shutdown(self) -> None:
        self._stopping.set()
        with self._spare_lock:
            spare, self._spare = self._spare, None
        if spare is not None:
            spare.kill()
        with self._lock:
            sessions = list(self._sessions.values())
            self._sessions.clear()
        for session in sessions:
            session.worker.kill()

    # -- handshake ------------------------------------------------------------------------------------------------
    @rpc
    def Hello(self, request: pb.HelloRequest, context: grpc.ServicerContext) -> pb.HelloResponse:  # noqa: N802
        if request.protocol_version < MIN_CLIENT_PROTOCOL:
            client_version = loggable(request.client_version, 64) or "(unknown version)"
            raise DaemonError(grpc.StatusCode.FAILED_PRECONDITION,
                              f"the host's rknnlink {client_version} speaks protocol "
                              f"{request.protocol_version}, but this board's daemon (rknnlink {__version__}) needs "
                              f"protocol {MIN_CLIENT_PROTOCOL} or newer: update the host with "
                              f"`pip install -U rknnlink`", "incompatible-version")
        if request.min_daemon_protocol > PROTOCOL_VERSION:
            raise DaemonError(grpc.StatusCode.FAILED_PRECONDITION,
                              f"this board's daemon (rknnlink {__version__}) speaks protocol {PROTOCOL_VERSION}, "
                              f"but the host's rknnlink {loggable(request.client_version, 64)} needs protocol "
                              f"{request.min_daemon_protocol} or newer: update the board with "
                              f"`rknnlink deploy {self.setup.serial}`", "incompatible-version")
        client = Client(id=secrets.token_hex(16), name=loggable(request.client_name), peer=loggable(context.peer()))
        with self._lock:
            if len(self._clients) >= self.limits.max_clients:
                raise DaemonError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                  f"the daemon already serves {len(self._clients)} connected clients (limit "
                                  f"{self.limits.max_clients}, from --max-sessions); close idle connections "
                                  f"(Board.close()) or raise --max-sessions", "client-limit")
            self._clients[client.id] = client
        log.info("client %s (%s, rknnlink %s) connected from %s", client.id[:8], client.name,
                 loggable(request.client_version, 64), client.peer)
        return pb.HelloResponse(protocol_version=PROTOCOL_VERSION, daemon_version=__version__,
                                min_client_protocol=MIN_CLIENT_PROTOCOL, client_id=client.id,
                                device=self._device_info(), max_message_bytes=self.limits.max_message_bytes,
                                upload_chunk_bytes=CHUNK, data_port=self.data_port)

    @rpc
    def GetDeviceInfo(self, request: pb.DeviceInfoRequest, context: grpc.ServicerContext) -> pb.DeviceInfo:  # noqa: N802
        return self._device_info()

    def Watch(self, request: pb.WatchRequest, context: grpc.ServicerContext) -> Iterator[pb.WatchEvent]:  # noqa: N802
        """Hold the stream open until the client goes away, then free its sessions."""
        with self._lock:
            client = self._clients.get(request.client_id)
            busy = client is not None and client.watching > 0
            if client is not None and not busy:
                client.watching += 1
        if client is None:
            context.abort(grpc.StatusCode.NOT_FOUND, "unknown client id: call Hello first (or the client expired: "
                                                     "Watch within a few seconds of Hello)")
        if busy:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "this client is already watched by another stream")
        done = threading.Event()
        context.add_callback(done.set)
        yield pb.WatchEvent(message=f"watching client {client.id}")
        while not done.wait(1.0) and not self._stopping.is_set():
            pass
        self._forget_client(client.id)

    def _forget_client(self, client_id: str, watched: bool = True) -> None:
        with self._lock:
            client = self._clients.get(client_id)
            if client is None:
                return
            if watched:
                client.watching -= 1
            if client.watching > 0:
                return
            del self._clients[client_id]
            orphans = list(client.sessions)
        for session_id in orphans:
            self._drop(session_id)
        log.info("client %s went away; freed %d session(s)", client_id[:8], len(orphans))

    # -- model cache ------------------------------------------------------------------------------------------------
    @rpc
    def HasModel(self, request: pb.HasModelRequest, context: grpc.ServicerContext) -> pb.HasModelResponse:  # noqa: N802
        size = self.cache.has(request.sha256)
        return pb.HasModelResponse(present=size is not None, size=size or 0)

    @rpc
    def UploadModel(self, request_iterator: Iterator[pb.ModelChunk],  # noqa: N802
                    context: grpc.ServicerContext) -> pb.UploadModelResponse:
        client = self._client(context)
        self._open_stream(client, "an upload")
        guard = self._guard(context, f"an upload of client {client.id[:8]}")
        try:
            return self._upload(client, guard, request_iterator)
        finally:
            self._unguard(guard)
            self._close_stream(client)

    def _upload(self, client: Client, guard: _IdleGuard, request_iterator: Iterator[pb.ModelChunk]) -> Any:
        first = next(request_iterator, None)
        if first is None:
            raise DaemonError(grpc.StatusCode.INVALID_ARGUMENT, "empty upload: send at least one chunk", "upload")
        sha = check_sha(first.sha256)
        size = self.cache.has(sha)
        if size is not None:
            # Present already (maybe another client's): the bytes were not sent, so the client must still
            # prove it holds them (CreateSession.model_proof) before it can run the model.
            return pb.UploadModelResponse(sha256=sha, size=size, already_present=True)
        upload = self.cache.begin(sha, first.total_size)
        try:
            self._receive(upload, guard, first, request_iterator)
            upload.commit()
        except BaseException:
            upload.abort()
            with self._lock:
                self.counters.uploads_aborted += 1
            raise
        with self._lock:
            self.counters.uploads_completed += 1
            client.models.add(sha)
        log.info("stored model %s (%d bytes) from client %s", sha[:12], upload.total_size, client.id[:8])
        return pb.UploadModelResponse(sha256=sha, size=upload.total_size, already_present=False)

    def _receive(self, upload: Any, guard: _IdleGuard, first: pb.ModelChunk, rest: Iterator[pb.ModelChunk]) -> None:
        chunk: Optional[pb.ModelChunk] = first
        while chunk is not None:
            guard.touch()
            data = chunk.data
            upload.write(data)
            with self._lock:
                self.counters.model_bytes_received += len(data)
            chunk = next(rest, None)

    def _may_run(self, client: Client, sha: str, proof: bytes) -> bool:
        """True when `client` uploaded the model or proves it holds its bytes (HMAC keyed by its client id)."""
        with self._lock:
            if sha in client.models:
                return True
        if not proof:
            return False
        mac = hmac.new(client.id.encode(), digestmod=hashlib.sha256)
        try:
            with open(self.cache.path(sha), "rb") as f:
                for block in iter(functools.partial(f.read, 1 << 20), b""):
                    mac.update(block)
        except OSError:
            return False
        if not hmac.compare_digest(mac.digest(), bytes(proof)):
            return False
        with self._lock:
            client.models.add(sha)
        return True

    def _reserve_session(self) -> None:
        """Count a session against --max-sessions before its worker starts (so concurrent calls cannot
        all pass the check); _unreserve_session() when it is inserted or failed."""
        with self._lock:
            running = len(self._sessions) + self._reserved_sessions
            if running >= self.limits.max_sessions:
                raise DaemonError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                  f"the daemon already runs {running} sessions (--max-sessions "
                                  f"{self.limits.max_sessions}); close sessions you no longer need or restart "
                                  f"the daemon with a higher --max-sessions", "session-limit")
            self._reserved_sessions += 1

    def _unreserve_session(self) -> None:
        with self._lock:
            self._reserved_sessions -= 1

    # -- sessions -----------------------------------------------------------------------------------------------------
    @rpc
    def CreateSession(self, request: pb.CreateSessionRequest,  # noqa: N802
                      context: grpc.ServicerContext) -> pb.CreateSessionResponse:
        sha = check_sha(request.model_sha256)
        client = self._client(context, request.client_id)  # every session has an owner
        if self.cache.has(sha) is None or not self._may_run(client, sha, request.model_proof):
            raise DaemonError(grpc.StatusCode.FAILED_PRECONDITION,
                              f"model {sha[:12]}... is not in the board's cache for this client; upload it first "
                              f"(HasModel, UploadModel), or prove you hold it (CreateSession.model_proof = "
                              f"HMAC-SHA256(client_id, model)) - Board.load_model does this for you",
                              "model-missing")
        self._reserve_session()
        try:
            return self._create_session(client, sha, request)
        finally:
            self._unreserve_session()

    def _create_session(self, client: Client, sha: str, request: pb.CreateSessionRequest) -> Any:
        worker = self._take_worker()
        session = Session(id=uuid.uuid4().hex[:16], client_id=client.id, sha=sha, worker=worker,
                          is_simulator=self.setup.backend == "sim", secret=secrets.token_bytes(32))
        flags = (_FLAG_PERF if request.collect_perf else 0) | (_FLAG_ASYNC if request.async_mode else 0)
        header = {"op": "init", "model_path": str(self.cache.path(sha)), "flags": flags,
                  "core_mask": request.core_mask, "dump": request.dump_layers}
        try:
            with worker.lock:  # a fresh worker may still be starting Python: allow for that beyond --call-timeout
                reply, _ = worker.call(header, timeout=max(self.limits.call_timeout, WORKER_START_SECONDS))
        except RknnError as exc:
            worker.close()
            raise DaemonError.from_rknn(exc, self._model_hint(sha)) from exc
        except WorkerError as exc:
            worker.kill()
            with self._lock:
                self.counters.workers_crashed += 1
            raise DaemonError(grpc.StatusCode.UNAVAILABLE,
                              f"the NPU runtime worker {exc} while loading the model; the model may crash this "
                              f"runtime - check it on the host simulator first", "worker-crashed") from exc
        self._remember_versions(reply)
        session.is_simulator = bool(reply.get("is_simulator"))
        with self._lock:
            gone = self._clients.get(client.id) is not client
            if not gone:
                self._sessions[session.id] = session
                client.sessions.add(session.id)
        if gone:  # the client disconnected while its model was loading
            worker.close()
            raise DaemonError(grpc.StatusCode.CANCELLED, "the client disconnected while the model was loading",
                              "client-gone")
        log.info("session %s of client %s: model %s in worker %d", session.id, client.id[:8], sha[:12], worker.pid)
        return pb.CreateSessionResponse(
            session_id=session.id, inputs=[_attr_pb(a) for a in reply["inputs"]],
            outputs=[_attr_pb(a) for a in reply["outputs"]], custom_string=reply.get("custom_string", ""),
            sdk_version=pb.SdkVersion(api_version=reply["sdk"][0], drv_version=reply["sdk"][1]),
            is_simulator=session.is_simulator, data_secret=session.secret if self.data_port else b"")

    def _model_hint(self, sha: str) -> str:
        try:
            with open(self.cache.path(sha), "rb") as f:
                magic = f.read(8)
        except OSError:
            return ""
        if magic.startswith(b"RKNN") and self.setup.backend == "sim":
            return ("this is a vendor-compiled .rknn (magic RKNN) and this daemon runs the simulated NPU, which "
                    "executes only rknnlink-built models; run it on a board with the vendor runtime, or rebuild "
                    "the model with rknnlink. ")
        return ""

    def _remember_versions(self, reply: Dict[str, Any]) -> None:
        api, drv = reply.get("sdk", ["", ""])
        if api and not self.setup.runtime_version:
            self.setup.runtime_version = api
        if drv and not self.setup.driver_version:
            self.setup.driver_version = drv

    @rpc
    def CloseSession(self, request: pb.SessionRequest, context: grpc.ServicerContext) -> pb.CloseSessionResponse:  # noqa: N802
        session = self._session(request.session_id, context)  # NOT_FOUND unless the caller's own
        if self._drop(session.id) is None:
            self._session(request.session_id, context)  # closed meanwhile: NOT_FOUND with the explanation
        return pb.CloseSessionResponse()

    # -- the relayed carrier of the data plane -------------------------------------------------------------------
    def _count(self, session: Session, n: int) -> None:
        with self._lock:
            session.inferences += n
            self.counters.inferences += n

    @stream_rpc
    def Relay(self, request_iterator: Iterator[pb.RelayFrame],  # noqa: N802
              context: grpc.ServicerContext) -> Iterator[pb.RelayFrame]:
        """Pump one session's data-plane frames between this stream and its worker (rknnlink_server.relay)."""
        session = self._session(metadata_value(context, MD_SESSION_ID), context)  # NOT_FOUND unless the caller's
        client = self._client(context)
        self._open_stream(client, "a relay stream")
        guard = self._guard(context, f"a relay stream of client {client.id[:8]}")

        def touch(busy: bool) -> None:  # silence while a run is in the worker may last up to --call-timeout
            guard.limit = self.limits.idle_timeout + (self.limits.call_timeout if busy else 0.0)
            guard.touch()

        try:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                self._attach(session, theirs)
            except BaseException:
                ours.close()
                raise
            finally:
                theirs.close()  # the worker holds its own copy now
            pump = RelayPump(ours, datawire.frame_limit(4 * self.limits.max_message_bytes), touch)
            context.add_callback(pump.stop)
            if metadata_value(context, MD_RELAY_DEPTH) == "1":
                frames = pump.one_at_a_time(request_iterator)
            else:
                threading.Thread(target=pump.upstream, args=(request_iterator,), name=f"relay-{session.id}",
                                 daemon=True).start()
                frames = pump.downstream()
            try:
                for frame in frames:
                    yield pb.RelayFrame(frame=frame)
            finally:
                pump.close()
            if pump.error:
                raise DaemonError(grpc.StatusCode.INVALID_ARGUMENT, pump.error, "bad-request")
            if not pump.client_done.is_set() and session.worker.exited(1.0):
                # Killed by a probe's per-call timeout (worker.dead says so), or crashed on its own.
                lost = session.worker.dead or WorkerCrashedError(session.worker.process.returncode)
                raise self._lose_session(session, lost)
        finally:
            self._unguard(guard)
            self._close_stream(client)

    def _attach(self, session: Session, conn: socket.socket) -> None:
        """Hand `conn` to the session's worker, which serves data-plane frames on it from then on."""
        if not session.worker.lock.acquire(timeout=self.limits.call_timeout):
            raise DaemonError(grpc.StatusCode.UNAVAILABLE,
                              f"session {session.id} stayed busy for {self.limits.call_timeout:g} s (another call "
                              f"holds it); retry when it ends", "session-busy")
        try:
            session.worker.attach(conn, self.limits.max_message_bytes, greet=False)
        except WorkerError as exc:
            raise self._lose_session(session, exc) from exc
        finally:
            session.worker.lock.release()

    # -- queries ------------------------------------------------------------------------------------------------------
    @rpc
    def GetPerf(self, request: pb.SessionRequest, context: grpc.ServicerContext) -> pb.PerfReport:  # noqa: N802
        reply, _ = self._call(self._session(request.session_id, context), {"op": "perf"})
        text = reply["text"]
        rows, total = parse_perf_detail(text)
        return pb.PerfReport(text=text, total_us=total, rows=[_perf_row(r) for r in rows])

    @rpc
    def GetPerfRun(self, request: pb.SessionRequest, context: grpc.ServicerContext) -> pb.PerfRunResponse:  # noqa: N802
        reply, _ = self._call(self._session(request.session_id, context), {"op": "perf_run"})
        return pb.PerfRunResponse(run_us=int(reply["run_us"]))

    @rpc
    def GetMemory(self, request: pb.SessionRequest, context: grpc.ServicerContext) -> pb.MemoryReport:  # noqa: N802
        reply, _ = self._call(self._session(request.session_id, context), {"op": "mem"})
        return pb.MemoryReport(**{k: int(v) for k, v in reply["mem"].items()})

    @rpc
    def GetSdkVersion(self, request: pb.SessionRequest, context: grpc.ServicerContext) -> pb.SdkVersion:  # noqa: N802
        reply, _ = self._call(self._session(request.session_id, context), {"op": "sdk"})
        return pb.SdkVersion(api_version=reply["api"], drv_version=reply["drv"])

    @stream_rpc
    def GetDumps(self, request: pb.DumpsRequest, context: grpc.ServicerContext) -> Iterator[pb.DumpChunk]:  # noqa: N802
        session = self._session(request.session_id, context)
        client = self._client(context)
        self._open_stream(client, "a dump download")
        guard = self._guard(context, f"a dump download of client {client.id[:8]}")
        try:
            reply, blobs = self._call(session, {"op": "dumps", "raw": request.include_raw})
            per_tensor = 2 if reply.get("raw") else 1
            for index, info in enumerate(reply["dumps"]):
                dump = pb.DumpInfo(index=index, layer_index=info["layer_index"], output_slot=info["output_slot"],
                                   name=info["name"], dtype=info["dtype"], qnt_type=info["qnt_type"],
                                   scale=info["scale"], zp=info["zp"], dims=info["dims"])
                for part in range(per_tensor):
                    for chunk in _chunks(index, dump, part, blobs[index * per_tensor + part]):
                        guard.touch()
                        yield chunk
        finally:
            self._unguard(guard)
            self._close_stream(client)

    def _collect_data_counts(self, sessions: List[Session]) -> None:
        """Fold each worker's inference count (every run is the worker's) into the session and daemon counters."""
        for session in sessions:
            if not session.worker.lock.acquire(timeout=0.2):
                continue  # busy with another control call: its runs are folded in next time
            try:
                reply, _ = session.worker.call({"op": "data_count"}, timeout=5.0)
            except (WorkerError, RknnError):
                continue
            finally:
                session.worker.lock.release()
            total = int(reply.get("inferences", 0))
            with self._lock:
                new = total - session.data_counted
                session.data_counted = total
            if new > 0:
                self._count(session, new)

    @rpc
    def GetStats(self, request: pb.StatsRequest, context: grpc.ServicerContext) -> pb.Stats:  # noqa: N802
        token = metadata_value(context, MD_OPERATOR_TOKEN)
        operator = bool(token and self.operator_token and hmac.compare_digest(token.encode(),
                                                                               self.operator_token.encode()))
        if token and not operator:
            raise DaemonError(grpc.StatusCode.PERMISSION_DENIED,
                              "wrong operator token: use the one in the daemon's --operator-token-file",
                              "operator-token")
        caller = metadata_value(context, MD_CLIENT_ID)
        with self._lock:
            mine = [s for s in self._sessions.values() if operator or (caller and s.client_id == caller)]
        self._collect_data_counts(mine)
        with self._lock:
            c = self.counters
            sessions = [pb.SessionStat(session_id=s.id, client_id=s.client_id, model_sha256=s.sha,
                                       worker_pid=s.worker.pid, inferences=s.inferences) for s in mine]
            stats = pb.Stats(model_bytes_received=c.model_bytes_received, uploads_completed=c.uploads_completed,
                             uploads_aborted=c.uploads_aborted, workers_crashed=c.workers_crashed,
                             inferences=c.inferences, sessions_open=len(self._sessions), clients=len(self._clients),
                             sessions=sessions, daemon_pid=os.getpid())
        stats.models_cached = len(self.cache.models())
        stats.cache_bytes = self.cache.total_bytes()
        return stats


# -- message conversion -----------------------------------------------------------------------------------------------
def add_service(service: RknnLinkService, server: grpc.Server) -> None:
    """Register the service like the generated add_RknnLinkServicer_to_server (which needs a grpcio as new as
    the generator's; this works with any the board may have)."""
    handlers = {}
    for method in pb.DESCRIPTOR.services_by_name["RknnLink"].methods:
        request_cls = _message_class(method.input_type.name)
        response_cls = _message_class(method.output_type.name)
        deserialize, serialize = request_cls.FromString, response_cls.SerializeToString
        factory = {(False, False): grpc.unary_unary_rpc_method_handler,
                   (False, True): grpc.unary_stream_rpc_method_handler,
                   (True, False): grpc.stream_unary_rpc_method_handler,
                   (True, True): grpc.stream_stream_rpc_method_handler}[
            (method.client_streaming, method.server_streaming)]
        handlers[method.name] = factory(getattr(service, method.name), request_deserializer=deserialize,
                                        response_serializer=serialize)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_FULL_NAME, handlers),))


SERVICE_FULL_NAME = pb.DESCRIPTOR.services_by_name["RknnLink"].full_name


def _message_class(name: str) -> Any:
    return getattr(pb, name)


def _attr_pb(a: Dict[str, Any]) -> pb.TensorAttr:
    return pb.TensorAttr(index=a["index"], name=a["name"], dims=a["dims"], fmt=a["fmt"], dtype=a["dtype"],
                         qnt_type=a["qnt_type"], zp=a["zp"], scale=a["scale"], n_elems=a["n_elems"],
                         size=a["size"], fl=a["fl"], w_stride=a["w_stride"],
                         size_with_stride=a["size_with_stride"], h_stride=a["h_stride"])


def _perf_row(row: Dict[str, Any]) -> pb.PerfRow:
    known = {k: v for k, v in row.items() if k in pb.PerfRow.DESCRIPTOR.fields_by_name}
    return pb.PerfRow(**known)


def _chunks(index: int, info: pb.DumpInfo, part: int, blob: bytearray) -> Iterator[pb.DumpChunk]:
    view = memoryview(blob)
    size = len(view)
    offset = 0
    while True:
        piece = bytes(view[offset:offset + CHUNK])
        yield pb.DumpChunk(index=index, info=info if offset == 0 and part == 0 else None, part=part,
                           offset=offset, part_size=size, data=piece)
        offset += len(piece)
        if offset >= size:
            return

