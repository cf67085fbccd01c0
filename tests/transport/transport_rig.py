"""What the transport tests share: network namespaces, the real adb server and the emulated adbd.

Every test that starts adb or mDNS runs its processes with `ip netns exec` inside a namespace the module
creates, so adb's own discovery and multicast stay off the real network. Code under test that must run
inside the namespace (resolve(), the CLI) runs in a child Python started there; it prints one JSON line.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parents[2]
try:
    import rknnlink  # noqa: F401 - installed (pip install -e .)?
except ImportError:  # a plain checkout: import the working tree
    sys.path[:0] = [str(ROOT / "host"), str(ROOT / "board_server")]
HERE = Path(__file__).resolve().parent
PYTHON = sys.executable
ADBD_PORT = 6001          # above 5585, so the adb server does not take it for an emulator console
ADB_SERVER_PORT = 7037
BOARD_PORT = 50051


def bundled_adb() -> str:
    import adbutils

    return str(Path(adbutils.__file__).parent / "binaries" / "adb")


def python_path() -> str:
    """Makes the working tree importable in children even before `pip install -e .` ran."""
    parts = [str(ROOT / "host"), str(ROOT / "board_server"), str(HERE)]
    if os.environ.get("PYTHONPATH"):
        parts.append(os.environ["PYTHONPATH"])
    return os.pathsep.join(parts)


def base_env(**extra: str) -> Dict[str, str]:
    env = dict(os.environ)
    env.update({"ANDROID_ADB_SERVER_PORT": str(ADB_SERVER_PORT), "ADB_MDNS": "0", "ADB_USB": "0",
                "ADBUTILS_ADB_PATH": bundled_adb(), "PYTHONPATH": python_path(), "PYTHONUNBUFFERED": "1"})
    env.pop("ADB_SERVER_SOCKET", None)
    env.update(extra)
    return {key: value for key, value in env.items() if value != ""}


def netns_available() -> Optional[str]:
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2 is not installed (apt-get install iproute2)"
    return None


_SIM_LIBRARY: List[str] = []


def find_sim_library() -> Optional[str]:
    """The simulated librknnrt a sim daemon needs: built, packaged or compiled once for this session."""
    if _SIM_LIBRARY:
        return _SIM_LIBRARY[0]
    import tempfile

    sys.path.insert(0, str(ROOT / "tests" / "runtime"))
    from simlib import sim_library_path

    class _Factory:
        @staticmethod
        def mktemp(name: str) -> Path:
            return Path(tempfile.mkdtemp(prefix=f"rknnlink-{name}-"))

    _SIM_LIBRARY.append(sim_library_path(_Factory()))
    return _SIM_LIBRARY[0]


class NetNs:
    """A network namespace with loopback up; processes started here are killed on close()."""

    def __init__(self) -> None:
        self.name = f"rknnlink-t-{uuid.uuid4().hex[:8]}"
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        subprocess.run(["ip", "-n", self.name, "link", "set", "lo", "up"], check=True)
        self.procs: List[subprocess.Popen] = []

    def cmd(self, args: List[str]) -> List[str]:
        return ["ip", "netns", "exec", self.name] + args

    def spawn(self, args: List[str], env: Optional[Dict[str, str]] = None, log: Optional[Path] = None,
              ready: Optional[str] = None, timeout: float = 90.0) -> subprocess.Popen:
        """Starts a background process; waits for `ready` on its stdout when given."""
        out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - the child owns it
        proc = subprocess.Popen(self.cmd(args), env=env or base_env(), stdout=subprocess.PIPE if ready else out,
                                stderr=out if log else subprocess.DEVNULL, start_new_session=True)
        self.procs.append(proc)
        if ready:
            deadline = time.monotonic() + timeout
            line = b""
            while time.monotonic() < deadline:
                line = proc.stdout.readline()
                if ready.encode() in line or not line:
                    break
            if ready.encode() not in line:
                raise RuntimeError(f"{args[:3]} did not print {ready!r}: {line!r}")
        return proc

    def run(self, args: List[str], env: Optional[Dict[str, str]] = None, timeout: float = 60.0,
            check: bool = False) -> subprocess.CompletedProcess:
        return subprocess.run(self.cmd(args), env=env or base_env(), capture_output=True, text=True,
                              timeout=timeout, check=check)

    def python(self, code: str, env: Optional[Dict[str, str]] = None, timeout: float = 90.0) -> dict:
        """Runs a Python snippet in the namespace; returns the JSON object on its last stdout line."""
        result = self.run([PYTHON, "-c", code], env=env, timeout=timeout)
        lines = [line for line in result.stdout.splitlines() if line.strip()]
        if not lines:
            raise AssertionError(f"snippet printed nothing (rc {result.returncode}):\n{result.stderr[-3000:]}")
        try:
            payload = json.loads(lines[-1])
        except json.JSONDecodeError as exc:
            raise AssertionError(f"snippet output is not JSON: {lines[-1]!r}\n{result.stderr[-3000:]}") from exc
        payload["_stderr"] = result.stderr
        return payload

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for proc in self.procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        # Processes our shells detached (a nohup'ed daemon) are still ours: end them by pid, then the netns.
        pids = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True, text=True).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        subprocess.run(["ip", "netns", "del", self.name], check=False)


class AdbRig:
    """The real adb server plus one emulated adbd, inside a namespace."""

    def __init__(self, ns: NetNs, workdir: Path) -> None:
        self.ns = ns
        self.workdir = workdir
        self.serial = f"127.0.0.1:{ADBD_PORT}"
        self.board_home = workdir / "board"
        self.board_home.mkdir(parents=True, exist_ok=True)
        venv_bin = str(Path(PYTHON).parent)
        self.adbd = ns.spawn([PYTHON, str(HERE / "fake_adbd.py"), "--port", str(ADBD_PORT), "--home",
                              str(self.board_home), "--path-prepend", venv_bin],
                             env=base_env(PYTHONPATH=""), ready="READY", log=workdir / "adbd.log")
        ns.run([bundled_adb(), "start-server"], check=True)

    def adb(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
        return self.ns.run([bundled_adb(), *args], timeout=timeout)

    def connect(self) -> None:
        result = self.adb("connect", self.serial)
        assert "connected" in result.stdout, result.stdout + result.stderr
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if f"{self.serial}\tdevice" in self.adb("devices").stdout:
                return
            time.sleep(0.1)
        raise AssertionError(f"{self.serial} never became ready: {self.adb('devices').stdout}")

    def forwards(self) -> str:
        return self.adb("forward", "--list").stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
