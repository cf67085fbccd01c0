"""Reaching real boards: adb forwards, a USB bulk bridge and the network (mDNS-advertised daemons).

Every transport ends in the same thing, an :class:`Endpoint` whose `address` is a `HOST:PORT` the gRPC
client dials, so the client never needs to know how the bytes travel. Device id forms:

* None - the only adb device; `SERIAL` or `IP:5555` - an adb serial (adb-over-TCP serials are connected);
* `tcp:HOST:PORT` - a daemon reachable over the network (TLS/token details from mDNS or the environment);
* `mdns:SERIAL` - the daemon advertising that serial over mDNS;
* `usb:SERIAL` - a board whose USB gadget exposes the rknnlink bulk interface;
* `farm`, `farm:PLACE` - a board reserved from the labgrid farm (rknnlink.farm; released by close()).
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Callable, List, Optional

from .errors import (
    AdbServerError,
    DaemonNotInstalledError,
    DeviceNotFoundError,
    TransportError,
)

log = logging.getLogger(__name__)

__all__ = [
    "AdbServerError", "DaemonNotInstalledError", "DeviceNotFoundError", "DeviceRecord", "Endpoint",
    "TransportError", "list_adb_serials", "list_devices", "list_usb_serials", "resolve",
]


@dataclass
class Endpoint:
    """A dialable daemon address. close() tears down what resolve() set up (adb forward, USB bridge)."""

    address: str
    kind: str                      # 'adb' | 'usb' | 'tcp'
    serial: Optional[str] = None
    tls_root_cert: Optional[bytes] = None   # PEM to trust for a TLS daemon (network transport)
    tls_server_name: Optional[str] = None   # name in that certificate
    token: Optional[str] = None             # bearer token the daemon requires
    data_address: Optional[str] = None      # HOST:PORT reaching the daemon's data channel (adb: a 2nd forward)
    _closer: Optional[Callable[[], None]] = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def secure(self) -> bool:
        return self.tls_root_cert is not None

    def open_channel(self, options: Optional[list] = None):
        """A grpc.Channel to the daemon with TLS and token applied when the endpoint needs them."""
        from .security import open_channel

        return open_channel(self.address, root_cert=self.tls_root_cert, server_name=self.tls_server_name,
                            token=self.token, options=options)

    def connect_kwargs(self) -> dict:
        """Keyword arguments for rknnlink.client.Board.connect(endpoint.address, **kwargs): TLS credentials,
        the token as call metadata and the certificate's name, or nothing for a plain-text endpoint."""
        import grpc

        kwargs: dict = {}
        if self.data_address:
            kwargs["data_address"] = self.data_address
        elif self.kind in ("adb", "usb"):
            # No forward reaches the board's data port: the daemon's advertised port would be dialled on
            # this host's own loopback, where something else may listen. The daemon relays the frames then.
            kwargs["use_data_channel"] = False
        if self.token:
            kwargs["metadata"] = (("authorization", f"Bearer {self.token}"),)
        if self.tls_root_cert is not None:
            kwargs["credentials"] = grpc.ssl_channel_credentials(root_certificates=self.tls_root_cert)
            kwargs["data_tls"] = self.data_tls_context()
            if self.tls_server_name:
                kwargs["options"] = (("grpc.ssl_target_name_override", self.tls_server_name),)
        return kwargs

    def data_tls_context(self):
        """The ssl client context for the daemon's TLS data port: trusts the same certificate as the channel."""
        import ssl

        context = ssl.create_default_context(cadata=(self.tls_root_cert or b"").decode())
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context

    def close(self) -> None:
        """Removes the adb forward / stops the USB bridge; safe to call more than once."""
        with self._lock:
            closer, self._closer = self._closer, None
        if closer is not None:
            closer()

    def __enter__(self) -> Endpoint:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


@dataclass
class DeviceRecord:
    """One row of `rknnlink devices`."""

    id: str
    transport: str                 # 'adb' | 'usb' | 'tcp'
    state: str                     # 'device' (daemon serving), 'no-daemon', 'offline', 'unauthorized', ...
    platform: Optional[str] = None
    daemon_version: Optional[str] = None
    address: Optional[str] = None

    def to_dict(self) -> dict:
        return {"id": self.id, "transport": self.transport, "state": self.state, "platform": self.platform,
                "daemon_version": self.daemon_version, "address": self.address}


def resolve(device_id: Optional[str], *, timeout: float = 10.0, platform: Optional[str] = None) -> Endpoint:
    """Turns a device id into a reachable daemon endpoint, setting up forwards/bridges as needed.
    `platform` (the target) selects the board for farm ids."""
    if device_id is not None and (device_id == "farm" or device_id.startswith(("farm:", "farm?"))):
        from rknnlink.farm import resolve_farm

        return resolve_farm(device_id, platform=platform, timeout=timeout)
    if device_id is not None and device_id.startswith("tcp:"):
        from .network import resolve_tcp

        return resolve_tcp(device_id[4:], timeout=timeout)
    if device_id is not None and device_id.startswith("mdns:"):
        from .network import resolve_mdns

        return resolve_mdns(device_id[5:], timeout=timeout)
    if device_id is not None and device_id.startswith("usb:"):
        from .usb import resolve_usb

        return resolve_usb(device_id[4:], timeout=timeout)
    if device_id is not None and device_id.startswith("adb:"):
        device_id = device_id[4:]
    return _resolve_adb(device_id, timeout)


def _resolve_adb(serial: Optional[str], timeout: float) -> Endpoint:
    from . import adb

    client = adb.client(timeout=timeout)
    serial = adb.pick_serial(client, serial, timeout)
    board = adb.AdbBoard(client, serial)
    local_port = board.forward(adb.board_port())
    try:
        adb.ensure_daemon(board, local_port, timeout)
    except BaseException:
        board.remove_forward(local_port)
        raise
    log.info("adb %s: daemon reachable at 127.0.0.1:%d", serial, local_port)
    data_port: Optional[int] = None
    if os.environ.get("RKNNLINK_ADB_DATA_CHANNEL", "1") != "0":
        try:  # the data channel's default port on the board (gRPC port + 1); the client falls back without it
            data_port = board.forward(adb.board_port() + 1)
        except TransportError as exc:
            log.info("adb %s: no forward for the data channel (%s); inference uses gRPC", serial, exc)

    def close() -> None:
        board.remove_forward(local_port)
        if data_port is not None:
            board.remove_forward(data_port)

    return Endpoint(address=f"127.0.0.1:{local_port}", kind="adb", serial=serial,
                    data_address=f"127.0.0.1:{data_port}" if data_port is not None else None, _closer=close)


def list_adb_serials() -> List[str]:
    """Serials of adb devices in state 'device' ([] when no adb server can be reached)."""
    from . import adb

    try:
        client = adb.client(timeout=5.0)
        return [d.serial for d in adb.list_devices(client) if d.state == "device"]
    except TransportError as exc:
        log.debug("adb unavailable: %s", exc)
        return []
    except ImportError as exc:
        log.warning("adb support needs adbutils (pip install 'rknnlink[host]'): %s", exc)
        return []


def list_usb_serials() -> List[str]:
    """Serials of attached Rockchip boards exposing the rknnlink USB interface."""
    from .usb import find_serials

    try:
        return find_serials()
    except TransportError as exc:
        log.debug("USB unavailable: %s", exc)
        return []
    except ImportError as exc:
        log.warning("USB support needs pyusb (pip install 'rknnlink[host]'): %s", exc)
        return []


def list_devices(timeout: float = 2.0) -> List[DeviceRecord]:
    """Every board on every transport, probing each daemon for its state, platform and version."""
    from .discovery import discover_all

    return discover_all(timeout)
