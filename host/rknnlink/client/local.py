"""A local simulated board: a real `rknnlink serve` subprocess on 127.0.0.1 (the facade's device_id='sim',
tests, benches). The host starts the board as a process and talks to it like to any board: nothing of the
daemon package is imported here (its location is looked up, not loaded)."""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

log = logging.getLogger(__name__)


@dataclass
class LocalDaemon:
    """A daemon subprocess; `address` is HOST:PORT. stop() terminates it (also on garbage collection)."""

    address: str
    process: subprocess.Popen
    workdir: Optional[tempfile.TemporaryDirectory] = field(default=None, repr=False)

    @property
    def operator_token(self) -> str:
        """The daemon's operator token (GetStats of every client's sessions)."""
        return (Path(self.workdir.name) / "operator-token").read_text().strip() if self.workdir else ""

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.workdir is not None:
            self.workdir.cleanup()
            self.workdir = None

    def __enter__(self) -> LocalDaemon:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def child_env() -> dict:
    """This environment plus PYTHONPATH entries for the rknnlink and rknnlink_server packages (found, not
    imported), so a `python -m rknnlink.cli serve` child finds both from a source tree too."""
    roots = []
    for name in ("rknnlink", "rknnlink_server"):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin:
            roots.append(str(Path(spec.origin).resolve().parent.parent))
    env = dict(os.environ)
    old = env.get("PYTHONPATH")
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(roots + ([old] if old else [])))
    return env


def start_local_daemon(platform: str = "rk3588", backend: str = "sim", cache_dir: Optional[Path] = None,
                       extra_args: Sequence[str] = (), timeout: float = 30.0,
                       log_path: Optional[Path] = None,
                       preexec_fn: Optional[Callable[[], None]] = None) -> LocalDaemon:
    """Run `python -m rknnlink serve --listen 127.0.0.1:0` and wait until it reports its port."""
    workdir = tempfile.TemporaryDirectory(prefix="rknnlink-daemon-")
    port_file = Path(workdir.name) / "port"
    cache = cache_dir or Path(workdir.name) / "cache"
    cmd = [sys.executable, "-m", "rknnlink.cli", "serve", "--listen", "127.0.0.1:0", "--port-file", str(port_file),
           "--backend", backend, "--platform", platform, "--cache-dir", str(cache),
           "--operator-token-file", str(Path(workdir.name) / "operator-token"), *extra_args]
    log_file = open(log_path or Path(workdir.name) / "daemon.log", "ab")  # noqa: SIM115 - owned by the child
    process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log_file,
                               env=child_env(), preexec_fn=preexec_fn)
    log_file.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_file.exists():
            address = port_file.read_text().strip()
            if address:
                return LocalDaemon(address=address, process=process, workdir=workdir)
        if process.poll() is not None:
            break
        time.sleep(0.02)
    daemon_log = (Path(log_path) if log_path else Path(workdir.name) / "daemon.log").read_text(errors="replace")
    LocalDaemon("", process, workdir).stop()
    raise RuntimeError(f"the local rknnlink daemon did not start within {timeout:g} s "
                       f"(exit status {process.poll()}); its log:\n{daemon_log[-4000:]}")


__all__ = ["LocalDaemon", "child_env", "start_local_daemon"]
