"""`tcp:HOST:PORT` and `mdns:SERIAL` device ids: daemons reached directly over the network.

A daemon listening beyond loopback speaks TLS with a self-signed certificate and wants a bearer token
(unless started with --insecure). The certificate is trusted when it equals RKNNLINK_TLS_CA (a PEM copied
from the board) or when its fingerprint matches the one the daemon advertises over mDNS. The token comes
from RKNNLINK_TOKEN.
"""

from __future__ import annotations

import logging
import os
import ssl
from pathlib import Path
from typing import Optional, Tuple

from . import Endpoint
from .errors import DeviceNotFoundError, TransportError
from .probe import check_address

log = logging.getLogger(__name__)


def split_host_port(text: str) -> Tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise TransportError(f"'{text}' is not HOST:PORT; use e.g. 'tcp:192.168.1.20:50051'.")
    return host.strip("[]"), int(port)


def resolve_tcp(host_port: str, *, timeout: float = 10.0, token: Optional[str] = None,
                expected_fingerprint: Optional[str] = None, warn_without_token: bool = True) -> Endpoint:
    """An endpoint for a daemon at HOST:PORT: plain when it answers plain text, else pinned TLS."""
    host, port = split_host_port(host_port)
    token = token or os.environ.get("RKNNLINK_TOKEN") or None
    address = f"{host}:{port}"
    if check_address(address, timeout=min(timeout, 2.0)).ok:
        log.info("daemon at %s answers without TLS", address)
        return Endpoint(address=address, kind="tcp", token=token)
    try:
        presented = _fetch_certificate(host, port, timeout)
    except (OSError, ssl.SSLError) as exc:
        raise TransportError(
            f"no rknnlink daemon answers at {address} ({exc}). Check the address, that `rknnlink serve` "
            "runs there and that no firewall blocks the port.") from exc
    root = _trusted_root(address, presented, expected_fingerprint, timeout)
    from .security import certificate_names

    names = certificate_names(root)
    if not token and warn_without_token:
        log.warning("daemon at %s uses TLS but RKNNLINK_TOKEN is not set; calls will be refused", address)
    return Endpoint(address=address, kind="tcp", tls_root_cert=root, tls_server_name=names[0] if names else None,
                    token=token)


def _fetch_certificate(host: str, port: int, timeout: float) -> bytes:
    from .security import fetch_server_certificate

    return fetch_server_certificate(host, port, timeout=min(timeout, 5.0))


def _trusted_root(address: str, presented: bytes, expected_fingerprint: Optional[str], timeout: float) -> bytes:
    """The certificate to trust: RKNNLINK_TLS_CA, or the presented one when its fingerprint is pinned."""
    from .security import fingerprint

    ca_path = os.environ.get("RKNNLINK_TLS_CA")
    if ca_path:
        return Path(ca_path).read_bytes()
    actual = fingerprint(presented)
    if expected_fingerprint is None:
        expected_fingerprint = _advertised_fingerprint(address, timeout)
    if expected_fingerprint is None:
        raise TransportError(
            f"the daemon at {address} uses TLS with a self-signed certificate that this host cannot verify: it "
            "is not advertised over mDNS. Copy the board's cert.pem (in the daemon's state directory) and set "
            "RKNNLINK_TLS_CA to its path.")
    if actual != expected_fingerprint.lower():
        raise TransportError(
            f"the certificate of {address} (sha256 {actual[:16]}...) does not match the advertised fingerprint "
            f"({expected_fingerprint[:16]}...); refusing to connect. If the board was re-installed, set "
            "RKNNLINK_TLS_CA to its new cert.pem.")
    return presented


def _advertised_fingerprint(address: str, timeout: float) -> Optional[str]:
    from . import mdns

    for service in mdns.discover(timeout=min(timeout, 5.0)):
        if service.address == address and service.fingerprint:
            return service.fingerprint
    return None


def resolve_mdns(serial: str, *, timeout: float = 10.0) -> Endpoint:
    """An endpoint for the daemon advertising `serial` over mDNS."""
    from . import mdns

    for service in mdns.discover(timeout=timeout, serial=serial):
        if service.serial == serial:
            endpoint = resolve_tcp(service.address, timeout=timeout, expected_fingerprint=service.fingerprint)
            endpoint.serial = serial
            return endpoint
    raise DeviceNotFoundError(
        f"no daemon advertises serial '{serial}' over mDNS within {timeout:.0f} s. Check that the board runs "
        "`rknnlink serve --listen 0.0.0.0:50051` on this network, or use 'tcp:HOST:PORT'.")
