"""Reaching a board through the user's adb server (adbutils speaks its socket protocol directly).

rknnlink never runs `adb kill-server` and never launches an `adb` binary that could replace a running
server of another version: it only talks to whatever server listens on ANDROID_ADB_SERVER_PORT (5037 by
default). When none runs, adbutils starts one, the way `adb` itself does.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import time
from dataclasses import dataclass
from typing import List, Optional, Tuple

from .errors import AdbServerError, DaemonNotInstalledError, DeviceNotFoundError, TransportError
from .probe import address_info, check_address, wait_until_serving

log = logging.getLogger(__name__)

DEFAULT_BOARD_PORT = 50051
DEFAULT_BOARD_PREFIX = "/opt/rknnlink"
SERVICE_NAME = "rknnlink-server"  # the unit `rknnlink install-service` writes
# Oldest adb server protocol (1.0.39) whose host-serial forward/killforward services we rely on.
MIN_SERVER_VERSION = 39
_TCP_SERIAL = re.compile(r"^[A-Za-z0-9.\-\[\]:]+:\d+$")


def board_prefix() -> str:
    """Install prefix of the daemon on boards; RKNNLINK_BOARD_PREFIX overrides /opt/rknnlink."""
    return os.environ.get("RKNNLINK_BOARD_PREFIX", DEFAULT_BOARD_PREFIX)


def board_port() -> int:
    """TCP port the daemon listens on, on the board's loopback."""
    return int(os.environ.get("RKNNLINK_BOARD_PORT", str(DEFAULT_BOARD_PORT)))


@dataclass
class AdbDevice:
    """One line of `adb devices -l`."""

    serial: str
    state: str
    model: str = ""


def client(timeout: float = 10.0):
    """An adbutils client for the user's adb server, checked for a usable protocol version."""
    try:
        import adbutils
    except ImportError as exc:
        raise TransportError("adb support needs adbutils: pip install 'rknnlink[host]'") from exc

    adb = adbutils.AdbClient(socket_timeout=timeout)
    try:
        version = adb.server_version()
    except (adbutils.AdbError, OSError) as exc:
        raise AdbServerError(
            f"cannot talk to the adb server on {adb.host}:{adb.port}: {exc}. Start it with `adb start-server` "
            "(or set ANDROID_ADB_SERVER_PORT to the port your server uses).") from exc
    if version < MIN_SERVER_VERSION:
        raise AdbServerError(
            f"the running adb server speaks protocol 1.0.{version}, older than the 1.0.{MIN_SERVER_VERSION} "
            "rknnlink needs. rknnlink does not restart your server: update Android platform-tools, then run "
            "`adb kill-server && adb start-server` yourself.")
    log.debug("adb server %s:%d protocol 1.0.%d", adb.host, adb.port, version)
    return adb


def list_devices(adb) -> List[AdbDevice]:
    """Every device the adb server knows, in any state (device, offline, unauthorized, ...)."""
    import adbutils

    try:
        infos = adb.list(extended=True)
    except adbutils.AdbError as exc:
        raise AdbServerError(f"the adb server refused to list devices: {exc}") from exc
    return [AdbDevice(info.serial, info.state, (info.tags or {}).get("model", "")) for info in infos]


def pick_serial(adb, serial: Optional[str], timeout: float) -> str:
    """Returns a serial in state 'device': the given one (connecting IP:PORT serials) or the only one."""
    devices = list_devices(adb)
    ready = [d.serial for d in devices if d.state == "device"]
    if serial is None:
        if len(ready) == 1:
            return ready[0]
        if not ready:
            others = ", ".join(f"{d.serial} ({d.state})" for d in devices)
            hint = f" Devices not ready: {others}." if others else ""
            raise DeviceNotFoundError(
                "no adb device is connected." + hint + " Connect a board by USB or run `adb connect IP:5555`, "
                "or pass device_id explicitly ('tcp:HOST:PORT', 'usb:SERIAL').")
        raise DeviceNotFoundError(
            f"{len(ready)} adb devices are connected ({', '.join(ready)}); pass device_id to choose one.")
    if serial in ready:
        return serial
    known = {d.serial: d.state for d in devices}
    if serial in known:
        raise DeviceNotFoundError(
            f"adb device {serial} is {known[serial]}, not ready. For 'unauthorized' accept the prompt on the "
            "board; for 'offline' reconnect the cable or run `adb reconnect`.")
    if _TCP_SERIAL.match(serial):
        return _connect_tcp(adb, serial, timeout)
    raise DeviceNotFoundError(
        f"device '{serial}' not found; connected: {', '.join(ready) or 'none'}. Check `rknnlink devices`.")


def _connect_tcp(adb, serial: str, timeout: float) -> str:
    """`adb connect HOST:PORT` for adb-over-TCP serials, then waits until the device is ready."""
    import adbutils

    try:
        message = adb.connect(serial, timeout=timeout)
    except adbutils.AdbError as exc:
        raise DeviceNotFoundError(f"`adb connect {serial}` failed: {exc}") from exc
    log.info("adb connect %s: %s", serial, message.strip())
    if any(word in message.lower() for word in ("failed", "unable", "cannot", "refused")):
        raise DeviceNotFoundError(
            f"`adb connect {serial}` failed: {message.strip()}. Check the address and that adbd listens on "
            "that port (`setprop service.adb.tcp.port 5555` or `adb tcpip 5555` over USB first).")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for device in list_devices(adb):
            if device.serial == serial and device.state == "device":
                return serial
        time.sleep(0.1)
    raise DeviceNotFoundError(
        f"adb connected to {serial} but it did not become ready within {timeout:.0f} s ({message.strip()}). "
        "Check that adbd listens there (`setprop service.adb.tcp.port 5555` on the board).")


class AdbBoard:
    """Daemon management and port forwarding for one adb serial."""

    def __init__(self, adb, serial: str, prefix: Optional[str] = None) -> None:
        self.adb = adb
        self.serial = serial
        self.prefix = prefix or board_prefix()
        self.device = adb.device(serial)

    # ---------------------------------------------------------------- shell
    def shell(self, command: str, timeout: float = 30.0) -> Tuple[int, str]:
        """Runs a shell command on the board; returns (exit code, stdout+stderr)."""
        import adbutils

        try:
            result = self.device.shell2(command, timeout=timeout, v2=True)
        except adbutils.AdbError as exc:
            raise TransportError(f"adb shell on {self.serial} failed: {exc}") from exc
        return result.returncode, result.output

    @property
    def launcher(self) -> str:
        return f"{self.prefix}/bin/rknnlink"

    def daemon_version(self) -> Optional[str]:
        """Version of the installed daemon (`rknnlink --version` on the board), None when absent."""
        code, out = self.shell(f"{shlex.quote(self.launcher)} --version 2>&1", timeout=30)
        match = re.search(r"rknnlink (\S+)", out)
        return match.group(1) if code == 0 and match else None

    def platform(self) -> Optional[str]:
        """The board's SoC (rk3588, ...) from the device tree or Android properties."""
        code, out = self.shell("cat /proc/device-tree/compatible 2>/dev/null | tr '\\0' ' '; "
                               "getprop ro.board.platform 2>/dev/null", timeout=10)
        match = re.search(r"\b(rk\d{4}b?|rv\d{4}b?)\b", out.lower())
        return match.group(1) if match else None

    def start_daemon(self) -> str:
        """Starts the installed daemon through its systemd unit when the board runs systemd, else nohup."""
        systemd = (f"[ -d /run/systemd/system ] && systemctl cat {SERVICE_NAME}.service >/dev/null 2>&1 "
                   f"&& systemctl start {SERVICE_NAME}.service")
        code, _ = self.shell(systemd, timeout=30)
        if code == 0:
            log.info("started the rknnlink daemon on %s through systemd (%s.service)", self.serial, SERVICE_NAME)
            return "systemd"
        prefix = shlex.quote(self.prefix)
        command = (f"cd {prefix} && nohup {prefix}/bin/rknnlink serve $(cat {prefix}/serve.args 2>/dev/null) "
                   f"> {prefix}/serve.log 2>&1 < /dev/null & echo $! > {prefix}/serve.pid")
        code, out = self.shell(command, timeout=30)
        if code != 0:
            raise TransportError(f"could not start the daemon on {self.serial} with nohup: {out.strip()}")
        log.info("started the rknnlink daemon on %s with nohup (no systemd unit); log: %s/serve.log",
                 self.serial, self.prefix)
        return "nohup"

    def stop_daemon(self) -> None:
        """Stops a daemon this module started with nohup (its pid file), or the systemd unit."""
        prefix = shlex.quote(self.prefix)
        self.shell(f"[ -d /run/systemd/system ] && systemctl stop {SERVICE_NAME}.service 2>/dev/null; "
                   f"if [ -f {prefix}/serve.pid ]; then kill $(cat {prefix}/serve.pid) 2>/dev/null; "
                   f"rm -f {prefix}/serve.pid; fi; true", timeout=30)

    def daemon_log_tail(self, lines: int = 20) -> str:
        _, out = self.shell(f"tail -n {lines} {shlex.quote(self.prefix)}/serve.log 2>&1", timeout=10)
        return out.strip()

    # ---------------------------------------------------------------- forwards
    def forward(self, remote_port: int) -> int:
        """Forwards a kernel-chosen local port to tcp:remote_port on the board; returns the local port."""
        import adbutils

        try:
            with self.adb.make_connection() as conn:
                conn.send_command(f"host-serial:{self.serial}:forward:tcp:0;tcp:{remote_port}")
                conn.check_okay()  # the host service accepted the request
                conn.check_okay()  # the listener exists
                return int(conn.read_string_block())
        except (adbutils.AdbError, ValueError) as exc:
            raise TransportError(f"adb forward to {self.serial} tcp:{remote_port} failed: {exc}") from exc

    def remove_forward(self, local_port: int) -> None:
        import adbutils

        try:
            with self.adb.make_connection() as conn:
                conn.send_command(f"host-serial:{self.serial}:killforward:tcp:{local_port}")
                conn.check_okay()
                conn.check_okay()
        except (adbutils.AdbError, OSError) as exc:
            log.debug("removing forward tcp:%d of %s: %s", local_port, self.serial, exc)

    def forwarded_ports(self) -> List[int]:
        """Local ports currently forwarded to this board."""
        return [int(item.local[4:]) for item in self.adb.forward_list()
                if item.serial == self.serial and item.local.startswith("tcp:")]


def ensure_daemon(board: AdbBoard, local_port: int, timeout: float) -> None:
    """Makes the daemon behind `local_port` answer, starting it over adb shell when installed but stopped."""
    from rknnlink import PROTOCOL_VERSION, __version__

    address = f"127.0.0.1:{local_port}"
    if check_address(address, timeout=min(2.0, timeout)).ok:
        info = address_info(address, timeout=min(5.0, timeout))
        if info is not None and info.protocol_version and info.protocol_version < PROTOCOL_VERSION:
            raise DaemonNotInstalledError(
                f"the rknnlink daemon on {board.serial} ({info.daemon_version}) speaks protocol "
                f"{info.protocol_version}, older than this host's {PROTOCOL_VERSION}. Run "
                f"`rknnlink deploy {board.serial}` to update it.")
        return

    version = board.daemon_version()
    if version is None:
        raise DaemonNotInstalledError(
            f"no rknnlink daemon is installed on {board.serial} (looked for {board.launcher}). "
            f"Run `rknnlink deploy {board.serial}` to install and start it.")
    if _version_tuple(version) < _version_tuple(__version__)[:2]:
        raise DaemonNotInstalledError(
            f"the rknnlink daemon on {board.serial} is version {version}, older than this host's "
            f"{__version__}. Run `rknnlink deploy {board.serial}` to update it.")
    log.info("rknnlink daemon %s on %s is not answering; starting it", version, board.serial)
    board.start_daemon()
    result = wait_until_serving(address, timeout)
    if not result.ok:
        raise TransportError(
            f"the rknnlink daemon on {board.serial} did not answer within {timeout:.0f} s after starting "
            f"({result.status}: {result.detail}). Its log ends with:\n{board.daemon_log_tail()}")


def _version_tuple(text: str) -> Tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])
