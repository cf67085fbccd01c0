"""The daemon's mDNS advertisement of a network listener (`_rknnlink._tcp.local.`, TXT records described
in rknnlink.v1.trust), so hosts find it with `rknnlink devices` / device_id "mdns:SERIAL"."""

from __future__ import annotations

import logging
import socket
from typing import Dict, Optional, Sequence

from rknnlink.v1.trust import MDNS_SERVICE_TYPE as SERVICE_TYPE
from rknnlink.v1.trust import mdns_interfaces

log = logging.getLogger(__name__)


def _interfaces(interfaces: Optional[Sequence[str]]):
    from zeroconf import InterfaceChoice

    return mdns_interfaces(interfaces) or InterfaceChoice.All


class Advertisement:
    """A registered service; close() unregisters it (sends goodbye packets) and stops zeroconf."""

    def __init__(self, zeroconf, info) -> None:
        self._zeroconf = zeroconf
        self._info = info
        self._closed = False

    @property
    def name(self) -> str:
        return self._info.name

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._zeroconf.unregister_service(self._info)
        finally:
            self._zeroconf.close()

    def __enter__(self) -> Advertisement:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def advertise(port: int, *, serial: str, platform: str, daemon_version: str, protocol_version: int,
              addresses: Sequence[str], tls_fingerprint: Optional[str] = None,
              interfaces: Optional[Sequence[str]] = None) -> Advertisement:
    """Registers the daemon listening on `addresses`:`port`; call from `rknnlink serve` when not loopback-only."""
    from zeroconf import ServiceInfo, Zeroconf

    if not addresses:
        raise ValueError("advertise needs the daemon's IP addresses (the ones it listens on)")
    properties: Dict[str, str] = {"serial": serial, "platform": platform, "daemon": daemon_version,
                                  "proto": str(protocol_version), "tls": "1" if tls_fingerprint else "0"}
    if tls_fingerprint:
        properties["fp"] = tls_fingerprint
    label = _label(serial)
    info = ServiceInfo(SERVICE_TYPE, f"rknnlink-{label}.{SERVICE_TYPE}", port=port, properties=properties,
                       server=f"rknnlink-{label}.local.",
                       addresses=[socket.inet_aton(ip) for ip in addresses if _is_ipv4(ip)])
    zeroconf = Zeroconf(interfaces=_interfaces(interfaces))
    try:
        zeroconf.register_service(info, allow_name_change=True)
    except Exception:
        zeroconf.close()
        raise
    log.info("advertising %s on %s port %d over mDNS", info.name, ",".join(addresses), port)
    return Advertisement(zeroconf, info)


def _label(serial: str) -> str:
    cleaned = "".join(ch if ch.isalnum() or ch == "-" else "-" for ch in serial)
    return cleaned[:50] or "board"


def _is_ipv4(address: str) -> bool:
    try:
        socket.inet_aton(address)
        return address.count(".") == 3
    except OSError:
        return False
