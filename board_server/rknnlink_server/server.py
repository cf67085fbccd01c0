"""Assemble and run the daemon: resolve the runtime, build the gRPC server, bind, serve until signalled."""

from __future__ import annotations

import logging
import os
import signal
import ssl
import sys
import threading
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import grpc

from rknnlink.runtime import VENDOR_LIB_PATHS, RuntimeLibrary
from rknnlink.v1.messages import pb
from rknnlink_server import PROTOCOL_VERSION, __version__, device
from rknnlink_server.datachannel import DataListener
from rknnlink_server.service import Limits, RknnLinkService, RuntimeSetup, add_service

log = logging.getLogger("rknnlink_server")
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["RknnLink"].full_name


def default_cache_dir() -> Path:
    """/var/cache/rknnlink for root (the systemd unit), else the user's cache directory."""
    if os.geteuid() == 0:
        return Path("/var/cache/rknnlink")
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rknnlink" / "models"


@dataclass
class DaemonConfig:
    listen: str = "127.0.0.1:50051"
    backend: str = "auto"
    platform: Optional[str] = None
    library: Optional[str] = None
    cache_dir: Optional[Path] = None
    max_sessions: int = 16
    max_cache_mb: int = 2048
    max_message_mb: int = 64
    call_timeout: float = 60.0
    port_file: Optional[Path] = None
    state_dir: Optional[Path] = None     # TLS identity and token (network listeners only)
    insecure: bool = False               # network listener without TLS/token (logged loudly)
    data_port: Optional[int] = None      # direct data channel port; None: gRPC port + 1 (or free when 0)
    no_data_port: bool = False           # no direct carrier: every client relays its frames
    client_grace: float = 10.0           # seconds a client may stay without a Watch stream
    idle_timeout: float = 60.0           # seconds a long-lived call may wait for its peer
    operator_token_file: Optional[Path] = None  # token for GetStats of every client (created on first use)


def default_state_dir() -> Path:
    """/var/lib/rknnlink for root (systemd StateDirectory), else the user's state directory."""
    if os.geteuid() == 0:
        return Path("/var/lib/rknnlink")
    return Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state")) / "rknnlink"


def listen_setup(config: DaemonConfig, setup: RuntimeSetup) -> Any:
    """TLS, token and mDNS for a listener beyond loopback (rknnlink_server.listening); None when unavailable.

    Loopback listeners (the default, reached through adb forward or the USB bridge) get an inactive setup.
    """
    host = config.listen.rpartition(":")[0].strip("[]")
    loopback = host.startswith("127.") or host in ("localhost", "::1")
    try:
        from rknnlink_server import listening as serving
    except ImportError as exc:
        if loopback or config.insecure:
            return None
        # Fail closed: a listener beyond loopback never serves without TLS and a token by accident.
        raise OSError(f"listening on {config.listen} needs TLS and a token, but their module cannot be loaded "
                      f"({exc}); install the daemon completely (pip install 'rknnlink[host]'), listen on "
                      f"127.0.0.1, or pass --insecure") from exc
    try:
        return serving.prepare_listen(config.listen, serial=setup.serial, platform=setup.platform,
                                      state_dir=config.state_dir or default_state_dir(), insecure=config.insecure)
    except ImportError as exc:
        raise OSError(f"listening on {config.listen} needs TLS, which needs {exc.name or 'cryptography'} "
                      f"(pip install 'rknnlink[host]'); or listen on 127.0.0.1, or pass --insecure") from exc


def resolve_runtime(config: DaemonConfig) -> RuntimeSetup:
    """Pick the runtime library without loading it here (it only ever runs inside workers)."""
    if config.library:
        path = str(Path(config.library).resolve())
        if not Path(path).is_file():
            raise FileNotFoundError(f"--library {config.library} does not exist")
        backend = "sim" if config.backend == "sim" or b"rknnlink_sim_version" in Path(path).read_bytes() else "vendor"
    elif config.backend == "sim":
        path, backend = RuntimeLibrary.find_sim(), "sim"
    else:
        vendor = RuntimeLibrary.find_vendor()
        if vendor is None and config.backend == "vendor":
            raise FileNotFoundError("no vendor librknnrt found: set LIBRKNNRT_PATH or pass --library; looked in "
                                    + ", ".join(VENDOR_LIB_PATHS))
        path, backend = (vendor, "vendor") if vendor else (RuntimeLibrary.find_sim(), "sim")
        log.info("runtime backend %s: %s", backend, path)
    platform = config.platform
    if backend == "vendor":
        detected = device.detect_platform()
        if detected and platform and detected != platform:
            log.warning("--platform %s differs from the device tree's %s; using %s", platform, detected, detected)
        platform = detected or platform or "unknown"
    platform = platform or "rk3588"
    return RuntimeSetup(library=path, backend=backend, platform=platform,
                        serial=device.board_serial(backend, platform), runtime_version=device.library_version(path),
                        driver_version=device.driver_version() if backend == "vendor" else "")


def _add_optional_services(server: grpc.Server) -> None:
    """Standard health and reflection services when their packages are installed (host extras)."""
    try:
        from grpc_health.v1 import health, health_pb2, health_pb2_grpc

        servicer = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        health_name = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
    except ImportError:
        log.info("grpcio-health-checking is not installed: the standard health service is off")
        health_name = None
    try:
        from grpc_reflection.v1alpha import reflection

        names = [SERVICE_NAME, reflection.SERVICE_NAME] + ([health_name] if health_name else [])
        reflection.enable_server_reflection(names, server)
    except ImportError:
        log.info("grpcio-reflection is not installed: server reflection is off")


class Daemon:
    """A running daemon: `address` is the bound HOST:PORT; stop() shuts it down."""

    def __init__(self, config: DaemonConfig, server_credentials: Optional[grpc.ServerCredentials] = None,
                 interceptors: Sequence[Any] = (), setup: Optional[RuntimeSetup] = None,
                 data_tls: Optional[ssl.SSLContext] = None) -> None:
        """`data_tls`: the server context of the TLS data port (the gRPC listener's certificate); a TLS
        listener without one has no data port (its clients relay over gRPC)."""
        self.config = config
        self.setup = setup or resolve_runtime(config)
        limits = Limits(max_sessions=config.max_sessions, max_message_bytes=config.max_message_mb << 20,
                        call_timeout=config.call_timeout, client_grace=config.client_grace,
                        idle_timeout=config.idle_timeout)
        cache_dir = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
        self.service = RknnLinkService(self.setup, cache_dir, config.max_cache_mb << 20, limits)
        if config.operator_token_file:
            from rknnlink_server.tls import load_or_create_token

            self.service.operator_token = load_or_create_token(Path(config.operator_token_file))
        options = [
            ("grpc.max_receive_message_length", limits.max_message_bytes),
            ("grpc.max_send_message_length", limits.max_message_bytes),
            ("grpc.keepalive_time_ms", 20000),
            ("grpc.keepalive_timeout_ms", 10000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 5000),
            ("grpc.so_reuseport", 0),
        ]
        # Calls beyond the thread pool are refused at once (RESOURCE_EXHAUSTED) instead of queueing until
        # their deadline; the service's per-client stream limits keep threads free for short calls.
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=limits.rpc_threads, thread_name_prefix="rpc"),
                                  options=options, interceptors=list(interceptors),
                                  maximum_concurrent_rpcs=limits.rpc_threads)
        add_service(self.service, self.server)
        _add_optional_services(self.server)
        host, _, port = config.listen.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"--listen {config.listen!r} must be HOST:PORT (e.g. 127.0.0.1:50051; port 0 picks one)")
        if server_credentials is not None:
            bound = self.server.add_secure_port(config.listen, server_credentials)
        else:
            bound = self.server.add_insecure_port(config.listen)
        if bound == 0:
            raise OSError(f"cannot listen on {config.listen}: the port is in use or the address is not local")
        self.address = f"{host}:{bound}"
        self.data_listener = self._open_data_port(host, int(port), bound, server_credentials is not None, data_tls)
        self._stopped = threading.Event()

    def _open_data_port(self, host: str, port: int, bound: int, secure: bool,
                        tls: Optional[ssl.SSLContext]) -> Optional[DataListener]:
        """The data port: plain text next to a loopback plain-text listener (adb, local), TLS with the same
        certificate next to a TLS listener; none for a plain-text listener beyond loopback (--insecure) or a
        TLS listener without a TLS context (fail closed)."""
        bare = host.strip("[]")
        loopback = bare.startswith("127.") or bare in ("localhost", "::1")
        if self.config.no_data_port or (secure and tls is None) or (not secure and not loopback):
            return None
        wanted = self.config.data_port if self.config.data_port is not None else (bound + 1 if port else 0)
        try:
            listener = DataListener(bare, wanted, self.service.find_session, self.service.limits.max_message_bytes,
                                    self.service.lose_session, tls=tls if secure else None,
                                    idle_limit=self.config.idle_timeout + self.config.call_timeout)
        except OSError as exc:
            log.warning("no data port: cannot listen on %s:%d (%s); clients relay their frames", bare,
                        wanted, exc)
            return None
        self.service.data_port = listener.port
        return listener

    def start(self) -> Daemon:
        self.server.start()
        if self.data_listener is not None:
            self.data_listener.start()
            log.info("data channel on port %d", self.data_listener.port)
        log.info("rknnlink daemon on %s: %s backend (%s), platform %s, serial %s", self.address,
                 self.setup.backend, self.setup.library, self.setup.platform, self.setup.serial)
        if self.config.port_file:
            tmp = Path(f"{self.config.port_file}.tmp")
            tmp.write_text(f"{self.address}\n")
            os.replace(tmp, self.config.port_file)
        return self

    def stop(self, grace: float = 2.0) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self.data_listener is not None:
            self.data_listener.close()
        self.service.shutdown()
        self.server.stop(grace).wait(grace + 1)

    def wait(self) -> None:
        self._stopped.wait()


def run(config: DaemonConfig) -> int:
    """`rknnlink serve`: run until SIGTERM/SIGINT. Prints the bound address on stdout (for tools)."""
    setup = resolve_runtime(config)
    network = listen_setup(config, setup)
    credentials = getattr(network, "credentials", None)
    interceptors = getattr(network, "interceptors", None) or ()
    daemon = Daemon(config, server_credentials=credentials, interceptors=interceptors, setup=setup,
                    data_tls=getattr(network, "data_tls", None)).start()
    if network is not None:
        network.advertise(int(daemon.address.rpartition(":")[2]), daemon_version=__version__,
                          protocol_version=PROTOCOL_VERSION)
    sys.stdout.write(f"rknnlink daemon listening on {daemon.address}\n")
    sys.stdout.flush()

    def _stop(signum: int, _frame: Any) -> None:
        log.info("signal %d: stopping", signum)
        threading.Thread(target=daemon.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        while not daemon._stopped.wait(0.5):
            pass
        daemon.server.wait_for_termination(timeout=5)
    finally:
        if network is not None:
            network.close()
    return 0
