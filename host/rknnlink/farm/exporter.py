"""`rknnlink farm export`: publish this host's boards to labgrid's coordinator and keep that list true.

Each board `rknnlink devices` finds (adb, USB) plus each `--device ID` given is probed through its daemon;
the supervisor then

1. relays the daemon (and its data channel) from a loopback port to `--advertise HOST` (see relay.py),
2. writes a labgrid exporter configuration (one group per board: resources ``daemon`` and ``device``,
   see tags.py) and runs the real `labgrid-exporter` on it, restarting it when the set of boards changes,
3. creates one place per board on the coordinator (matching its group) and sets its tags,
4. rescans every `--interval` seconds: a board that stopped answering or left adb leaves the pool (its
   place loses the ``rknnlink=board`` tag and gets ``state=unplugged``; its resources go), and comes back
   when it answers again,
5. reaps expired leases on its own places (lease.py).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from .coordinator import Coordinator, CoordinatorCallError, coordinator_address
from .errors import FarmError
from .lease import reap
from .relay import TcpRelay
from .tags import (
    DAEMON_CLASS,
    DEVICE_CLASSES,
    POOL_TAG,
    POOL_VALUE,
    READY,
    STATE_TAG,
    UNPLUGGED,
    board_tags,
    group_name,
    place_name,
)

log = logging.getLogger(__name__)


@dataclass
class ExportedBoard:
    """One board as this host exports it."""

    device_id: str
    transport: str
    serial: str
    tags: Dict[str, str]
    endpoint: Any                       # rknnlink.transport.Endpoint (its adb forwards live while exported)
    relays: List[TcpRelay] = field(default_factory=list)
    group: str = ""

    @property
    def daemon_params(self) -> Dict[str, Any]:
        main = self.relays[0]
        params: Dict[str, Any] = {"address": main.host, "port": main.port, "serial": self.serial}
        if len(self.relays) > 1:
            params["data_port"] = self.relays[1].port
        return params

    def device_params(self) -> Dict[str, Any]:
        key = "address" if self.transport == "tcp" else "serial"
        return {"cls": DEVICE_CLASSES.get(self.transport, DEVICE_CLASSES["tcp"]),
                key: self.serial if key == "serial" else self.endpoint.address}

    def close(self) -> None:
        for relay in self.relays:
            relay.close()
        self.endpoint.close()


def _hostport(address: str):
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def probe_board(device_id: str, advertise: str, timeout: float = 10.0) -> ExportedBoard:
    """Reach one board (setting up its forward), read its DeviceInfo and open the relays. The probe asks
    GetDeviceInfo without a Hello, so the daemon never counts the exporter as a client of the board."""
    from rknnlink.transport import resolve
    from rknnlink.transport.probe import address_info

    endpoint = resolve(device_id, timeout=timeout)
    try:
        if endpoint.secure:
            raise ValueError(f"{device_id} is a TLS network daemon: export boards the host reaches over adb, USB "
                             f"or loopback (run `rknnlink farm export` on the host the board is attached to)")
        info = address_info(endpoint.address, timeout=timeout)
        if info is None or not info.platform:
            raise ValueError(f"the daemon of {device_id} at {endpoint.address} did not report its DeviceInfo")
        transport = endpoint.kind
        exported = ExportedBoard(device_id=device_id, transport=transport, serial=endpoint.serial or info.serial,
                                 tags=board_tags(info, transport), endpoint=endpoint)
        exported.relays.append(TcpRelay(advertise, _hostport(endpoint.address)))
        data = endpoint.data_address or _default_data_address(endpoint.address)
        if data:
            exported.relays.append(TcpRelay(advertise, _hostport(data)))
        return exported
    except BaseException:
        endpoint.close()
        raise


def _default_data_address(address: str) -> Optional[str]:
    """The daemon's data channel by its default place (gRPC port + 1) when something listens there; a client
    whose data connection is refused falls back to gRPC, so a wrong guess costs nothing but speed."""
    host, port = _hostport(address)
    try:
        socket.create_connection((host, port + 1), timeout=1.0).close()
    except OSError:
        return None
    return f"{host}:{port + 1}"


def discovered_ids() -> List[str]:
    """Boards attached to this host, as `rknnlink devices` finds them: adb devices that are ready and USB
    boards (network daemons are exported by the host they run on, not discovered over mDNS here)."""
    from rknnlink.transport import list_adb_serials, list_usb_serials

    return list_adb_serials() + [f"usb:{serial}" for serial in list_usb_serials()]


def exporter_config(name: str, boards: Sequence[ExportedBoard]) -> str:
    """The labgrid exporter YAML: one group per board with its daemon and device resources."""
    import yaml

    doc: Dict[str, Any] = {}
    for board in sorted(boards, key=lambda b: b.group):
        doc[board.group] = {"location": f"{name} ({board.transport} {board.serial})",
                            "daemon": {"cls": DAEMON_CLASS, **board.daemon_params},
                            "device": board.device_params()}
    header = "## Written by `rknnlink farm export`, regenerated when the boards change (labgrid: ## comments)\n"
    return header + (yaml.safe_dump(doc, sort_keys=True) if doc else "{}\n")


class ExportSupervisor:
    """Runs the exporter for this host's boards (see the module docstring)."""

    def __init__(self, name: str, advertise: str, devices: Sequence[str] = (), discover: bool = True,
                 coordinator: Optional[str] = None, config_path: Optional[Path] = None, interval: float = 2.0,
                 probe_timeout: float = 5.0) -> None:
        self.name, self.advertise, self.devices, self.discover = name, advertise, list(devices), discover
        self.coordinator_address = coordinator_address(coordinator)
        self.config_path = config_path or Path.home() / ".cache" / "rknnlink" / "farm" / f"exporter-{name}.yaml"
        self.interval, self.probe_timeout = interval, probe_timeout
        self.boards: Dict[str, ExportedBoard] = {}     # by device id
        self.known_places: Dict[str, str] = {}          # device id -> place, for boards seen once
        self.exporter: Optional[subprocess.Popen] = None
        self.coord: Optional[Coordinator] = None
        self._stop = threading.Event()
        self.tags_dirty = False
        self.log_path = self.config_path.with_suffix(".log")

    # -- scanning -----------------------------------------------------------------------------------------------
    def scan(self) -> bool:
        """Probe boards; True when the exported set changed."""
        from rknnlink.transport.probe import check_address

        wanted = list(dict.fromkeys(self.devices + (discovered_ids() if self.discover else [])))
        changed = False
        for device_id, board in list(self.boards.items()):
            if device_id not in wanted or not check_address(board.endpoint.address, timeout=2.0).ok:
                log.warning("board %s (%s) left: %s", device_id, board.group,
                            "no longer listed" if device_id not in wanted else "its daemon does not answer")
                self._withdraw(board)
                del self.boards[device_id]
                changed = True
            elif "librknnrt_version" not in board.tags:
                self._learn_runtime_version(board)
        for device_id in wanted:
            if device_id in self.boards:
                continue
            try:
                board = probe_board(device_id, self.advertise, self.probe_timeout)
            except Exception as exc:  # noqa: BLE001 - one bad board must not stop the host's export
                log.info("board %s not exported: %s", device_id, exc)
                continue
            board.group = group_name(device_id)
            self.boards[device_id] = board
            self.known_places[device_id] = place_name(self.name, board.group)
            log.warning("board %s exported as %s: %s", device_id, self.known_places[device_id],
                        " ".join(f"{k}={v}" for k, v in board.tags.items()))
            changed = True
        return changed

    def _learn_runtime_version(self, board: ExportedBoard) -> None:
        """A daemon knows its librknnrt version once a session ran on it: then tag the place with it."""
        from rknnlink.transport.probe import address_info

        info = address_info(board.endpoint.address, timeout=2.0)
        if info is not None and info.runtime_version:
            board.tags = board_tags(info, board.transport)
            self.tags_dirty = True

    def _withdraw(self, board: ExportedBoard) -> None:
        """Take the board out of the pool first (no new allocation), then stop relaying it."""
        place = place_name(self.name, board.group)
        try:
            self._coord().set_tags(place, {POOL_TAG: "", STATE_TAG: UNPLUGGED})
        except CoordinatorCallError as exc:
            log.warning("marking %s unplugged: %s", place, exc)
        board.close()

    # -- coordinator --------------------------------------------------------------------------------------------
    def _coord(self) -> Coordinator:
        if self.coord is None or self.coord.closed:
            self.coord = Coordinator(self.coordinator_address, name=f"{self.name}/rknnlink-farm-export")
        return self.coord

    def sync_places(self) -> None:
        coord = self._coord()
        for board in self.boards.values():
            place = place_name(self.name, board.group)
            if place not in coord.places:
                try:
                    coord.add_place(place)
                except CoordinatorCallError as exc:
                    log.debug("add place %s: %s", place, exc)
            pattern = f"{self.name}/{board.group}/*"
            current = coord.places.get(place)
            if current is None or not any(f"{m.exporter}/{m.group}/{m.cls}" == pattern for m in current.matches):
                try:
                    coord.add_match(place, pattern)
                except CoordinatorCallError as exc:
                    log.debug("add match %s: %s", pattern, exc)
            coord.set_tags(place, {**board.tags, "exporter": self.name, STATE_TAG: READY, POOL_TAG: POOL_VALUE})

    def owns(self, place: Any) -> bool:
        return place.tags.get("exporter") == self.name

    # -- the labgrid exporter -----------------------------------------------------------------------------------
    def write_config(self) -> Path:
        self.config_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(exporter_config(self.name, list(self.boards.values())))
        os.replace(tmp, self.config_path)
        return self.config_path

    def restart_exporter(self) -> None:
        self.stop_exporter()
        if not self.boards:
            return
        command = [sys.executable, "-m", "labgrid.remote.exporter", "-c", self.coordinator_address,
                   "-n", self.name, "--hostname", self.advertise, str(self.write_config())]
        with open(self.log_path, "ab") as out:
            self.exporter = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL)
        self._wait_resources()

    def _wait_resources(self, timeout: float = 10.0) -> None:
        """Until the coordinator lists every exported group's daemon (the exporter is connected)."""
        coord = self._coord()
        groups = {b.group for b in self.boards.values()}
        deadline = timeout
        generation = coord.generation
        while deadline > 0:
            with coord.changed:
                have = {r.group for r in coord.resources.values() if r.exporter == self.name and r.cls == DAEMON_CLASS}
            if groups <= have:
                return
            if self.exporter is not None and self.exporter.poll() is not None:
                break
            generation = coord.wait_change(generation, 0.5)
            deadline -= 0.5
        log.warning("the labgrid exporter did not publish %s (see %s)", sorted(groups), self.log_path)

    def stop_exporter(self) -> None:
        if self.exporter is not None and self.exporter.poll() is None:
            self.exporter.send_signal(signal.SIGTERM)
            try:
                self.exporter.wait(10)
            except subprocess.TimeoutExpired:
                self.exporter.kill()
                self.exporter.wait(5)
        self.exporter = None

    # -- loop ---------------------------------------------------------------------------------------------------
    def step(self) -> None:
        changed = self.scan()
        dead = self.exporter is not None and self.exporter.poll() is not None
        if dead:
            log.warning("the labgrid exporter exited (%s); restarting it", self.exporter.returncode)
        if changed or dead or (self.boards and self.exporter is None):
            self.restart_exporter()
        if changed or dead or self.tags_dirty:
            self.tags_dirty = False
            self.sync_places()
        released = reap(self._coord(), owned=self.owns)
        if released:
            log.warning("reaped expired leases: %s", ", ".join(released))

    def run(self, ready_file: Optional[Path] = None) -> None:
        log.warning("exporting to %s as %s (advertised at %s)", self.coordinator_address, self.name,
                    self.advertise)
        first = True
        try:
            while not self._stop.is_set():
                try:
                    self.step()
                except FarmError as exc:  # coordinator restarting or unreachable: keep trying
                    log.warning("coordinator: %s", exc)
                if first and ready_file is not None:
                    ready_file.write_text(" ".join(sorted(self.known_places.values())) + "\n")
                first = False
                self._stop.wait(self.interval)
        finally:
            self.close()

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        for board in list(self.boards.values()):
            self._withdraw(board)
        self.boards.clear()
        self.stop_exporter()
        if self.coord is not None:
            self.coord.close()
