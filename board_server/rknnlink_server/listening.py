"""What `rknnlink serve` needs to listen beyond loopback: TLS, the token check and the mDNS advertisement.

    setup = prepare_listen(config.listen, serial=..., platform=..., state_dir=..., insecure=args.insecure)
    daemon = Daemon(config, server_credentials=setup.credentials, interceptors=setup.interceptors).start()
    setup.advertise(bound_port, daemon_version=__version__, protocol_version=PROTOCOL_VERSION)
    ...
    setup.close()   # unregisters the mDNS service

A loopback listen address (the default, reached over adb forward or the USB bridge) needs none of it and
gets an inactive setup. Beyond loopback TLS and the token are on unless `insecure`, which logs a warning.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

log = logging.getLogger(__name__)


def local_ipv4_addresses() -> List[str]:
    """Non-loopback IPv4 addresses of this machine (what a 0.0.0.0 listener is reachable on)."""
    import ifaddr

    addresses = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str) and not ip.ip.startswith("127."):
                addresses.append(ip.ip)
    return sorted(set(addresses))


@dataclass
class ListenSetup:
    """TLS credentials and interceptors for the gRPC server, and the mDNS advertisement once it listens."""

    host: str
    serial: str
    platform: str
    network: bool                       # listening beyond loopback
    credentials: object = None          # grpc.ServerCredentials or None (plain text)
    data_tls: object = None             # ssl.SSLContext of the TLS data port (same certificate), or None
    interceptors: list = field(default_factory=list)
    fingerprint: Optional[str] = None
    token_path: Optional[Path] = None
    cert_path: Optional[Path] = None
    _advertisement: object = None

    def advertise(self, port: int, *, daemon_version: str, protocol_version: int,
                  interfaces: Optional[Sequence[str]] = None) -> None:
        """Registers `_rknnlink._tcp.local.` for a network listener; a no-op for loopback."""
        if not self.network:
            return
        from rknnlink_server import advertise

        addresses = [self.host] if self.host not in ("0.0.0.0", "", "::", "[::]") else local_ipv4_addresses()
        if not addresses:
            log.warning("no network address to advertise over mDNS; hosts must use tcp:HOST:%d", port)
            return
        try:
            self._advertisement = advertise.advertise(
                port, serial=self.serial, platform=self.platform, daemon_version=daemon_version,
                protocol_version=protocol_version, addresses=addresses, tls_fingerprint=self.fingerprint,
                interfaces=interfaces)
        except OSError as exc:
            log.warning("mDNS advertisement failed (%s); hosts must use tcp:HOST:%d", exc, port)

    def close(self) -> None:
        advertisement, self._advertisement = self._advertisement, None
        if advertisement is not None:
            advertisement.close()


def prepare_listen(listen: str, *, serial: str, platform: str, state_dir: Path,
                   insecure: bool = False) -> ListenSetup:
    """Decides TLS/token for `listen` (HOST:PORT) and creates the certificate and token on first use."""
    from rknnlink.v1.trust import fingerprint, is_loopback
    from rknnlink_server import tls

    host = listen.rpartition(":")[0].strip("[]")
    setup = ListenSetup(host=host, serial=serial, platform=platform, network=not is_loopback(host))
    if not setup.network:
        return setup
    if insecure:
        log.warning("listening on %s WITHOUT TLS or a token (--insecure): anyone on the network can run models "
                    "and read their outputs", listen)
        return setup
    state_dir = Path(state_dir)
    ips = [host] if host not in ("0.0.0.0", "", "::") else local_ipv4_addresses()
    cert, key = tls.load_or_create_identity(state_dir, f"rknnlink-{serial}", [ip for ip in ips if ip])
    token_path = state_dir / tls.TOKEN_FILE
    token = tls.load_or_create_token(token_path)
    setup.credentials = tls.server_credentials(cert, key)
    setup.data_tls = tls.data_port_context(state_dir / tls.CERT_FILE, state_dir / tls.KEY_FILE)
    setup.interceptors = [tls.token_interceptor(token)]
    setup.fingerprint = fingerprint(cert)
    setup.token_path, setup.cert_path = token_path, state_dir / tls.CERT_FILE
    log.info("TLS on (certificate sha256 %s); hosts need RKNNLINK_TOKEN from %s", setup.fingerprint[:16],
             token_path)
    return setup
