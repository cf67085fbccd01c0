"""Network discovery: daemons advertise `_rknnlink._tcp.local.` over mDNS (zeroconf; rknnlink_server.advertise),
hosts browse for it here.

TXT records: serial, platform, daemon (version), proto (protocol version), tls ("1"/"0") and, for TLS
daemons, fp (SHA-256 of the certificate) so a host can pin the certificate without copying files.
RKNNLINK_MDNS_INTERFACES (comma-separated addresses) restricts the interfaces used on both sides;
RKNNLINK_MDNS=0 turns browsing off (no multicast traffic from the host at all).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

from rknnlink.v1.trust import MDNS_SERVICE_TYPE, mdns_interfaces

log = logging.getLogger(__name__)

SERVICE_TYPE = MDNS_SERVICE_TYPE


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

    return mdns_interfaces(interfaces) or InterfaceChoice.All


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
