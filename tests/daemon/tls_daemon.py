"""A daemon set up as `rknnlink serve` sets up a network listener (TLS gRPC, the TLS data port with the same
certificate, the bearer token), but listening on loopback: the network route for the daemon tests' 'tls'
carrier and for bench/bench_link.py, in a process of its own.

    python tls_daemon.py STATE_DIR [LIBRARY]

prints "HOST:PORT" once serving and stops when its stdin closes. start() runs it and gives what a host
needs to reach it (the certificate to trust, the token); stop() ends it and removes STATE_DIR's contents.
"""

from __future__ import annotations

import select
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional


@dataclass
class TlsDaemon:
    address: str
    cert: bytes
    token: str
    process: subprocess.Popen
    state: Path
    _tmp: Optional[tempfile.TemporaryDirectory] = field(default=None, repr=False)

    @property
    def operator_token(self) -> str:
        return (self.state / "operator-token").read_text().strip()

    def connect_kwargs(self) -> dict:
        """Board.connect's keyword arguments, as the transport's Endpoint gives them for this daemon."""
        return connect_kwargs(self.address, self.state)

    def stop(self, timeout: float = 30.0) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
        else:
            shutil.rmtree(self.state / "cache", ignore_errors=True)


def connect_kwargs(address: str, state: Path) -> dict:
    """Board.connect's keyword arguments for the daemon whose state is in `state` (its certificate and
    token), as the transport's Endpoint gives them: also for a client in another process."""
    from rknnlink.transport import Endpoint

    cert, token = (state / "cert.pem").read_bytes(), (state / "token").read_text().strip()
    return Endpoint(address=address, kind="tcp", tls_root_cert=cert, token=token).connect_kwargs()


def start(state: Optional[Path] = None, library: Optional[str] = None, timeout: float = 60.0) -> TlsDaemon:
    """The daemon in a subprocess; its state (certificate, key, tokens, model cache) in `state`, or in a
    temporary directory that stop() removes."""
    tmp = None
    if state is None:
        tmp = tempfile.TemporaryDirectory(prefix="rknnlink-tls-daemon-")
        state = Path(tmp.name)
    args = [sys.executable, str(Path(__file__).resolve()), str(state), *([library] if library else [])]
    proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    daemon = TlsDaemon("", b"", "", proc, Path(state), tmp)
    try:
        if not select.select([proc.stdout], [], [], timeout)[0]:
            raise RuntimeError(f"the TLS test daemon did not start within {timeout:g} s")
        line = proc.stdout.readline().strip()  # the child prints its address once serving (or dies)
        if not line:
            raise RuntimeError(f"the TLS test daemon did not start (exit status {proc.wait(timeout)})")
        daemon.address = line
        daemon.cert = (daemon.state / "cert.pem").read_bytes()
        daemon.token = (daemon.state / "token").read_text().strip()
    except BaseException:
        daemon.stop()
        raise
    return daemon


def _serve(state: Path, library: Optional[str]) -> None:
    from rknnlink_server import tls
    from rknnlink_server.server import Daemon, DaemonConfig

    cert, key = tls.generate_self_signed("rknnlink-test-tls", ["127.0.0.1"])
    (state / "cert.pem").write_bytes(cert)
    (state / "key.pem").write_bytes(key)
    token = tls.load_or_create_token(state / "token")
    config = DaemonConfig(listen="127.0.0.1:0", backend="sim", platform="rk3588", library=library,
                          cache_dir=state / "cache", operator_token_file=state / "operator-token")
    daemon = Daemon(config, server_credentials=tls.server_credentials(cert, key),
                    interceptors=[tls.token_interceptor(token)],
                    data_tls=tls.data_port_context(state / "cert.pem", state / "key.pem")).start()
    print(daemon.address, flush=True)
    sys.stdin.read()
    daemon.stop()


if __name__ == "__main__":
    _serve(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else None)
