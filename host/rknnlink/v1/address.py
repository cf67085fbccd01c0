"""HOST:PORT listen and dial addresses, validated once for every place that writes one into a command line,
a shell script or a systemd unit (`rknnlink serve`, install-service, deploy)."""

from __future__ import annotations

import ipaddress
import re
from typing import Tuple

_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")


def parse_host_port(text: str, allow_port_zero: bool = True) -> Tuple[str, int]:
    """(host, port) of "HOST:PORT" ("[v6]:PORT" for IPv6); ValueError saying what is wrong otherwise.

    HOST is an IP address or a DNS name (letters, digits, '-' and '.'), so the value is safe to put
    unquoted into a command line or a unit file."""
    host, sep, port = str(text).rpartition(":")
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not port.isdigit() or not bare:
        raise ValueError(f"address {text!r} must be HOST:PORT (e.g. 127.0.0.1:50051)")
    number = int(port)
    if not (0 if allow_port_zero else 1) <= number <= 65535:
        raise ValueError(f"address {text!r}: port {number} is out of range")
    try:
        ip = ipaddress.ip_address(bare)
    except ValueError:
        if bare != host or not _HOSTNAME.match(bare):
            raise ValueError(f"address {text!r}: {bare!r} is neither an IP address nor a host name") from None
        return bare, number
    if ip.version == 6 and bare == host:
        raise ValueError(f"address {text!r}: write an IPv6 host in brackets, e.g. [{bare}]:{number}")
    return bare, number
