"""Network discovery: daemons advertise `_rknnlink._tcp.local.` over mDNS (zeroconf), hosts browse for it.

TXT records: serial, platform, daemon (version), proto (protocol version), tls ("1"/"0") and, for TLS
daemons, fp (SHA-256 of the certificate) so a host can pin the certificate without copying files.
RKNNLINK_MDNS_INTERFACES (comma-separated addresses) restricts the interfaces used on both sides;
RKNNLINK_MDNS=0 turns browsing off (no multicast traffic from the host at all).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

log = logging.getLogger(__name__)

SERVICE_TYPE = "_rknnlink._tcp.local."


@dataclass
class Service:
    """One advertised daemon."""

    name: str
    serial: str
    host: str
    port: int
    platform: Optional[str] = None
    daemon_version: Optional[str] = None
    protocol_version: Optional[int] = None
    tls: bool = False
    fingerprint: Optional[str] = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def _interfaces(interfaces: Optional[Sequence[str]]):
    from zeroconf import InterfaceChoice

    if interfaces:
        return list(interfaces)
    configured = os.environ.get("RKNNLINK_MDNS_INTERFACES", "").strip()
    if configured:
        return [part.strip() for part in configured.split(",") if part.strip()]
    return InterfaceChoice.All


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


def discover(timeout: float = 2.0, interfaces: Optional[Sequence[str]] = None,
             serial: Optional[str] = None) -> List[Service]:
    """Browses for `timeout` seconds (or until `serial` shows up) and returns the resolved services."""
    from zeroconf import ServiceBrowser, ServiceStateChange, Zeroconf

    if os.environ.get("RKNNLINK_MDNS", "1") == "0":
        log.debug("mDNS browsing is off (RKNNLINK_MDNS=0)")
        return []
    zeroconf = Zeroconf(interfaces=_interfaces(interfaces))
    names: List[str] = []
    found = threading.Event()
    lock = threading.Lock()

    def on_change(zeroconf, service_type, name, state_change) -> None:
        if state_change is ServiceStateChange.Added:
            with lock:
                names.append(name)
            found.set()

    browser = ServiceBrowser(zeroconf, SERVICE_TYPE, handlers=[on_change])
    services: Dict[str, Service] = {}
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found.wait(max(0.0, min(0.1, deadline - time.monotonic())))
            found.clear()
            with lock:
                pending = [name for name in names if name not in services]
            for name in pending:
                service = _resolve(zeroconf, name, max(0.5, deadline - time.monotonic()))
                if service is not None:
                    services[name] = service
            if serial is not None and any(s.serial == serial for s in services.values()):
                break
    finally:
        browser.cancel()
        zeroconf.close()
    return sorted(services.values(), key=lambda s: s.name)


def _resolve(zeroconf, name: str, timeout: float) -> Optional[Service]:
    info = zeroconf.get_service_info(SERVICE_TYPE, name, timeout=int(timeout * 1000))
    if info is None:
        return None
    props = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
             for k, v in (info.properties or {}).items()}
    addresses = info.parsed_addresses()
    if not addresses:
        return None
    proto = props.get("proto")
    return Service(name=name, serial=props.get("serial") or name.split(".")[0], host=addresses[0],
                   port=int(info.port), platform=props.get("platform"), daemon_version=props.get("daemon"),
                   protocol_version=int(proto) if proto and proto.isdigit() else None,
                   tls=props.get("tls") == "1", fingerprint=props.get("fp"))
