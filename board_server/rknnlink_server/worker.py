"""Daemon side of a runtime worker: start the child process, send it requests, notice crashes and hangs."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from rknnlink.runtime import RknnError
from rknnlink_server.wire import WorkerGoneError, recv_frame, send_frame

log = logging.getLogger(__name__)


class WorkerError(RuntimeError):
    """The worker process failed as a whole (not a runtime error code)."""


class WorkerCrashedError(WorkerError):
    """The worker died; `returncode` is negative for a signal (as in subprocess)."""

    def __init__(self, returncode: Optional[int]) -> None:
        self.returncode = returncode
        super().__init__(describe_exit(returncode))


class WorkerTimeoutError(WorkerError):
    """The worker did not answer within the per-call timeout and was killed."""


def describe_exit(returncode: Optional[int]) -> str:
    if returncode is None:
        return "closed its connection"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "unknown"
        return f"was killed by signal {-returncode} ({name})"
    return f"exited with status {returncode}"


def _child_env() -> Dict[str, str]:
    """The daemon's environment plus the directories holding rknnlink and rknnlink_server."""
    import rknnlink
    import rknnlink_server

    env = dict(os.environ)
    roots = [str(Path(m.__file__).resolve().parent.parent) for m in (rknnlink, rknnlink_server)]
    old = env.get("PYTHONPATH")
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(roots + ([old] if old else [])))
    return env


class WorkerHandle:
    """One worker process serving one session. Calls are serialised by `lock` (held by callers)."""

    def __init__(self, library: str, backend: str, call_timeout: float) -> None:
        self.call_timeout = call_timeout
        self.lock = threading.Lock()
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "rknnlink_server.worker_main", "--fd", str(child.fileno()),
                 "--library", library, "--backend", backend],
                pass_fds=[child.fileno()], stdin=subprocess.DEVNULL, env=_child_env(), close_fds=True)
        except OSError:
            parent.close()
            raise
        finally:
            child.close()
        self.sock = parent
        self.sock.settimeout(call_timeout)
        self.dead: Optional[WorkerError] = None
        self._fail_lock = threading.Lock()  # several threads may notice the failure together

    @property
    def pid(self) -> int:
        return self.process.pid

    def send(self, header: Dict[str, Any], blobs: Sequence[Any] = ()) -> None:
        self._check_alive()
        try:
            send_frame(self.sock, header, blobs)
        except socket.timeout as exc:
            raise self._timed_out() from exc
        except OSError as exc:  # EPIPE/ECONNRESET, or EBADF when the other thread already closed it
            raise self._crashed() from exc

    def recv(self, timeout: Optional[float] = None) -> Tuple[Dict[str, Any], List[bytearray]]:
        """Next reply; RknnError for a failed runtime call, WorkerError when the process failed."""
        self._check_alive()
        self.sock.settimeout(timeout or self.call_timeout)
        try:
            header, blobs = recv_frame(self.sock)
        except socket.timeout as exc:
            raise self._timed_out() from exc
        except (WorkerGoneError, OSError) as exc:
            raise self._crashed() from exc
        if not header.get("ok", False):
            raise RknnError(int(header.get("code", -1)), header.get("name"), str(header.get("message", "")))
        return header, blobs

    def call(self, header: Dict[str, Any], blobs: Sequence[Any] = (),
             timeout: Optional[float] = None) -> Tuple[Dict[str, Any], List[bytearray]]:
        self.send(header, blobs)
        return self.recv(timeout)

    def attach(self, conn: socket.socket, max_bytes: int, greet: bool, tls: Optional[Dict[str, Any]] = None) -> None:
        """Hand a data-plane socket to the worker (SCM_RIGHTS), which serves its frames from then on; the
        caller holds `lock` and closes its copy of `conn`. `greet`: the worker answers the direct carrier's
        hello (a relay's socket carries frames only). `tls`: the worker ends TLS on `conn` first
        (rknnlink_server.tlsdata says what the dict holds). RknnError when the worker refuses it."""
        self.send({"op": "attach", "max_bytes": max_bytes, "greet": greet, **({"tls": tls} if tls else {})})
        try:
            socket.send_fds(self.sock, [b"F"], [conn.fileno()])
        except socket.timeout as exc:
            raise self._timed_out() from exc
        except OSError as exc:
            raise self._crashed() from exc
        self.recv()

    def exited(self, wait: float) -> bool:
        """True when the worker process ended (waiting up to `wait` seconds for it to do so)."""
        try:
            self.process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            return False
        return True

    def _check_alive(self) -> None:
        if self.dead is not None:
            raise self.dead

    def _crashed(self) -> WorkerError:
        with self._fail_lock:
            if self.dead is None:
                try:
                    code = self.process.wait(timeout=2.0)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    code = self.process.wait()
                self.dead = WorkerCrashedError(code)
                self.sock.close()
            return self.dead

    def _timed_out(self) -> WorkerError:
        with self._fail_lock:
            if self.dead is None:  # known before the kill, so whoever sees the worker go knows why
                self.dead = WorkerTimeoutError(f"did not answer within {self.call_timeout:g} s and was killed")
                self.kill()
            return self.dead

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        try:
            self.process.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            log.error("worker %d does not die", self.pid)
        self.sock.close()

    def close(self) -> None:
        """Ask the worker to destroy its context and exit; kill it if it does not."""
        if self.dead is None and self.process.poll() is None:
            try:
                if self.lock.acquire(timeout=2.0):
                    try:
                        self.call({"op": "close"}, timeout=5.0)
                    finally:
                        self.lock.release()
                self.process.wait(timeout=5.0)
            except (WorkerError, RknnError, subprocess.TimeoutExpired, OSError) as exc:
                log.warning("worker %d did not close cleanly (%s); killing it", self.pid, exc)
        self.kill()
