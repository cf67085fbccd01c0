"""`rknnlink deploy SERIAL`: install (or update) the daemon on a board over adb and start it.

What lands on the board, under PREFIX (default /opt/rknnlink):
    lib/        the rknnlink and rknnlink_server packages (sources of this installation, or a wheel)
    deps/       grpcio/protobuf/numpy when the board's python3 lacks them and pip can fetch them
    bin/rknnlink  a launcher: python3 -m rknnlink.cli with lib/ (and deps/) on PYTHONPATH
    bin/rknnlink-usb-gadget  board_server/usb_gadget/setup_gadget.sh, when deploying from a source tree
    serve.args  the arguments of `rknnlink serve` (read by the nohup start; the systemd unit has its own)
The simulator library (_native/*.so) is pushed only when the board's CPU matches this host's, since a
board uses the vendor librknnrt.so. With systemd the unit comes from `rknnlink install-service`;
without it the daemon is started with nohup.
"""

from __future__ import annotations

import importlib.util
import io
import logging
import platform as host_platform
import re
import shlex
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from rknnlink.v1.address import parse_host_port

from . import adb
from .errors import TransportError
from .probe import address_info, check_address, wait_until_serving

log = logging.getLogger(__name__)

DAEMON_DEPS = ("grpcio>=1.60", "protobuf>=5.26", "numpy>=1.21")


@dataclass
class DeployResult:
    serial: str
    prefix: str
    version: str
    started: str            # 'systemd', 'nohup' or 'no'
    platform: Optional[str] = None

    def summary(self) -> str:
        where = f"rknnlink {self.version} installed on {self.serial} in {self.prefix}"
        if self.started == "no":
            return where + " (not started)"
        return where + f"; daemon started with {self.started}, platform {self.platform or 'unknown'}"


def _package_dirs():
    import rknnlink

    dirs = [Path(rknnlink.__file__).resolve().parent]
    spec = importlib.util.find_spec("rknnlink_server")  # located, not imported: the host never loads it
    if spec is None or not spec.origin:
        raise TransportError("rknnlink_server (the daemon package) is not installed here, so there is nothing "
                             "to deploy; reinstall rknnlink (`pip install rknnlink`) or pass --wheel.")
    dirs.append(Path(spec.origin).resolve().parent)
    return dirs


def build_source_archive(include_native: bool) -> bytes:
    """tar.gz of the rknnlink and rknnlink_server packages, without caches (and native code on request)."""
    buffer = io.BytesIO()

    def keep(info: tarfile.TarInfo) -> Optional[tarfile.TarInfo]:
        parts = Path(info.name).parts
        if "__pycache__" in parts or info.name.endswith((".pyc", ".pyo")):
            return None
        if not include_native and "_native" in parts and info.name.endswith(".so"):
            return None
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info

    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for directory in _package_dirs():
            archive.add(str(directory), arcname=directory.name, filter=keep)
    return buffer.getvalue()


_SERVE_WORD = re.compile(r"^[A-Za-z0-9_./:=,@+\[\]-]+$")


def check_prefix(prefix: str) -> str:
    """The install prefix, refused unless it is an absolute path a shell and PYTHONPATH take literally."""
    if not prefix.startswith("/") or any(not c.isprintable() or c == ":" for c in prefix):
        raise TransportError(f"--prefix {prefix!r} must be an absolute path without ':' or control characters")
    return prefix


def check_serve_args(serve_args: str) -> str:
    """`rknnlink serve` arguments for serve.args, which the board's shell splits into words: each word may
    hold only characters that no shell expands ($, `, *, quotes, ... are refused), and --listen must be an
    address."""
    try:
        words = shlex.split(serve_args)
    except ValueError as exc:
        raise TransportError(f"--serve-args {serve_args!r}: {exc}") from None
    for word in words:
        if not _SERVE_WORD.match(word):
            raise TransportError(f"--serve-args: {word!r} has characters the board's shell would expand; use only "
                                 f"letters, digits and _ . / : = , @ + - [ ]")
    try:
        parse_host_port(_listen_of(serve_args))
    except ValueError as exc:
        raise TransportError(f"--serve-args: {exc}") from None
    return " ".join(words)


def _launcher(prefix: str) -> str:
    q = shlex.quote(check_prefix(prefix))
    return ("#!/bin/sh\n"
            "# rknnlink launcher written by `rknnlink deploy`\n"
            f'PYTHONPATH={q}/lib:{q}/deps"${{PYTHONPATH:+:$PYTHONPATH}}"\n'
            "export PYTHONPATH\n"
            'exec python3 -m rknnlink.cli "$@"\n')


def _check(board: adb.AdbBoard, command: str, what: str, timeout: float = 120.0) -> str:
    code, out = board.shell(command, timeout=timeout)
    if code != 0:
        raise TransportError(f"{what} failed on {board.serial} (exit {code}): {out.strip()[-500:]}")
    return out


def _ensure_python(board: adb.AdbBoard, prefix: str) -> None:
    code, out = board.shell("python3 -c 'import sys; print(sys.version_info[:2] >= (3, 9))'", timeout=30)
    if code != 0 or "True" not in out:
        raise TransportError(f"the board {board.serial} needs python3 >= 3.9 for the daemon "
                             f"({out.strip() or 'python3 not found'}); install it (e.g. `apt install python3`).")
    probe = f"PYTHONPATH={shlex.quote(prefix)}/deps python3 -c 'import grpc, google.protobuf, numpy'"
    if board.shell(probe, timeout=60)[0] == 0:
        return
    log.info("installing the daemon's Python dependencies on %s with pip", board.serial)
    deps = " ".join(shlex.quote(dep) for dep in DAEMON_DEPS)
    code, out = board.shell(f"python3 -m pip install -q --target {shlex.quote(prefix)}/deps {deps} 2>&1",
                            timeout=900)
    if code != 0:
        raise TransportError(
            f"the board {board.serial} lacks grpcio/protobuf/numpy and pip could not install them: "
            f"{out.strip()[-300:]}. Install them on the board (`apt install python3-grpcio python3-protobuf "
            "python3-numpy` or `pip install grpcio protobuf numpy`) and deploy again.")


def _push(board: adb.AdbBoard, data: bytes, remote: str) -> None:
    import adbutils

    with tempfile.NamedTemporaryFile(suffix=Path(remote).suffix) as tmp:
        tmp.write(data)
        tmp.flush()
        try:
            board.device.sync.push(tmp.name, remote)
        except (adbutils.AdbError, OSError) as exc:
            raise TransportError(f"pushing {remote} to {board.serial} failed: {exc}") from exc


def _install_files(board: adb.AdbBoard, prefix: str, wheel: Optional[str]) -> None:
    q = shlex.quote(prefix)
    _check(board, f"mkdir -p {q}/bin {q}/lib && rm -rf {q}/lib/rknnlink {q}/lib/rknnlink_server", "creating " + prefix)
    if wheel:
        remote = f"{prefix}/{Path(wheel).name}"
        _push(board, Path(wheel).read_bytes(), remote)
        _check(board, f"python3 -m pip install -q --no-deps --upgrade --target {q}/lib {shlex.quote(remote)} 2>&1",
               "installing the wheel", timeout=600)
    else:
        board_arch = _check(board, "uname -m", "uname").strip()
        include_native = board_arch == host_platform.machine()
        _push(board, build_source_archive(include_native), f"{prefix}/rknnlink-src.tar.gz")
        _check(board, f"tar -xzf {q}/rknnlink-src.tar.gz -C {q}/lib && rm -f {q}/rknnlink-src.tar.gz",
               "unpacking the sources")
    _push(board, _launcher(prefix).encode(), f"{prefix}/bin/rknnlink")
    _check(board, f"chmod 755 {q}/bin/rknnlink", "chmod")
    gadget_script = _gadget_script()
    if gadget_script is not None:  # present in a source tree; a wheel does not carry it
        _push(board, gadget_script.read_bytes(), f"{prefix}/bin/rknnlink-usb-gadget")
        _check(board, f"chmod 755 {q}/bin/rknnlink-usb-gadget", "chmod")


def _gadget_script() -> Optional[Path]:
    import rknnlink

    candidate = Path(rknnlink.__file__).resolve().parents[2] / "board_server" / "usb_gadget" / "setup_gadget.sh"
    return candidate if candidate.is_file() else None


def _install_unit(board: adb.AdbBoard, prefix: str, listen: str) -> bool:
    """Installs and enables the systemd unit when the board runs systemd; False otherwise."""
    if board.shell("[ -d /run/systemd/system ] && command -v systemctl", timeout=30)[0] != 0:
        return False
    q = shlex.quote(prefix)
    _check(board, f"{q}/bin/rknnlink install-service --exec {q}/bin/rknnlink --listen {shlex.quote(listen)} && "
                  f"systemctl daemon-reload && systemctl enable {adb.SERVICE_NAME}.service", "installing the unit")
    return True


def _listen_of(serve_args: str) -> str:
    words = shlex.split(serve_args)
    for index, word in enumerate(words):
        if word == "--listen" and index + 1 < len(words):
            return words[index + 1]
        if word.startswith("--listen="):
            return word.split("=", 1)[1]
    return f"127.0.0.1:{adb.board_port()}"


DEPLOY_STEPS = 6  # calls of deploy()'s progress hook: python, stop, files, settings, unit, start


def deploy(serial: Optional[str], *, wheel: Optional[str] = None, prefix: Optional[str] = None,
           serve_args: Optional[str] = None, start: bool = True, timeout: float = 60.0,
           progress: Optional[Callable[[str], None]] = None) -> DeployResult:
    """Installs this rknnlink on the board over adb, with its unit, and (re)starts the daemon.

    `progress(step)` is called as each of the DEPLOY_STEPS steps starts (a progress bar hook)."""
    step = progress or (lambda _name: None)
    client = adb.client(timeout=timeout)
    serial = adb.pick_serial(client, serial, timeout)
    board = adb.AdbBoard(client, serial, prefix)
    prefix = check_prefix(board.prefix)
    serve_args = check_serve_args(serve_args or f"--listen 127.0.0.1:{adb.board_port()}")
    if wheel and not Path(wheel).is_file():
        raise TransportError(f"--wheel {wheel} does not exist; build one with `pip wheel --no-deps .`")
    step("checking Python on the board")
    _ensure_python(board, prefix)
    step("stopping the daemon")
    board.stop_daemon()
    step("copying rknnlink")
    _install_files(board, prefix, wheel)
    step("writing the daemon settings")
    _push(board, (serve_args + "\n").encode(), f"{prefix}/serve.args")
    version = board.daemon_version()
    if version is None:
        raise TransportError(f"the deployed launcher {board.launcher} does not run on {serial}: "
                             f"{board.shell(board.launcher + ' --version 2>&1', timeout=60)[1].strip()[-300:]}")
    step("installing the service")
    has_unit = _install_unit(board, prefix, _listen_of(serve_args))
    step("starting the daemon")
    if not start:
        return DeployResult(serial, prefix, version, "no")
    return DeployResult(serial, prefix, version, *_start_and_verify(board, has_unit, timeout))


def _start_and_verify(board: adb.AdbBoard, has_unit: bool, timeout: float):
    local_port = board.forward(adb.board_port())
    address = f"127.0.0.1:{local_port}"
    try:
        deadline = time.monotonic() + 10.0
        while check_address(address, timeout=1.0).ok and time.monotonic() < deadline:
            time.sleep(0.2)  # the old daemon is still shutting down
        method = board.start_daemon()
        if has_unit and method != "systemd":
            log.warning("the systemd unit is installed but could not be started; started with %s", method)
        result = wait_until_serving(address, timeout)
        if not result.ok:
            raise TransportError(f"the daemon on {board.serial} did not answer within {timeout:.0f} s "
                                 f"({result.status}). Its log ends with:\n{board.daemon_log_tail()}")
        info = address_info(address, timeout=5.0)
        return method, (info.platform if info is not None else None)
    finally:
        board.remove_forward(local_port)
