"""What both ends of a network link agree on: the token's call metadata header, the certificate
fingerprint mDNS advertises for pinning, and which listen hosts count as loopback (no TLS needed)."""

from __future__ import annotations

import hashlib
import ipaddress
import ssl

TOKEN_HEADER = "authorization"
# mDNS service of network daemons; TXT records: serial, platform, daemon, proto, tls ("1"/"0"), fp.
MDNS_SERVICE_TYPE = "_rknnlink._tcp.local."
MDNS_INTERFACES_ENV = "RKNNLINK_MDNS_INTERFACES"  # comma-separated addresses, both sides


def fingerprint(cert_pem: bytes) -> str:
    """SHA-256 of the certificate's DER bytes, lower-case hex: what mDNS advertises for pinning."""
    der = ssl.PEM_cert_to_DER_cert(cert_pem.decode())
    return hashlib.sha256(der).hexdigest()


def is_loopback(host: str) -> bool:
    """True when a listen host only accepts local connections (then TLS and token are optional)."""
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def mdns_interfaces(explicit=None):
    """Interfaces for zeroconf: `explicit`, else $RKNNLINK_MDNS_INTERFACES, else None (all)."""
    import os

    if explicit:
        return list(explicit)
    configured = os.environ.get(MDNS_INTERFACES_ENV, "").strip()
    return [part.strip() for part in configured.split(",") if part.strip()] or None
