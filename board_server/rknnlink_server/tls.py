"""The daemon's side of a network listener: its self-signed certificate, its bearer token (both created
once in the state directory) and the interceptor that refuses calls without the token.

Hosts trust the certificate from a copied PEM (RKNNLINK_TLS_CA) or by pinning the fingerprint the daemon
advertises over mDNS (rknnlink.v1.trust.fingerprint).
"""

from __future__ import annotations

import datetime
import hmac
import ipaddress
import logging
import os
import secrets
import ssl
from pathlib import Path
from typing import Iterable, Sequence, Tuple

import grpc

from rknnlink.v1.trust import TOKEN_HEADER

log = logging.getLogger(__name__)

# Liveness stays answerable without a token so `rknnlink devices` can show a daemon's state.
UNAUTHENTICATED_METHODS = frozenset({"/grpc.health.v1.Health/Check"})
CERT_FILE, KEY_FILE, TOKEN_FILE = "cert.pem", "key.pem", "token"


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def generate_self_signed(common_name: str, ip_addresses: Iterable[str] = (),
                         days: int = 3650) -> Tuple[bytes, bytes]:
    """A new P-256 key and a self-signed certificate naming `common_name` (and the IPs) as SANs."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    alt_names: list = [x509.DNSName(common_name)]
    alt_names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def load_or_create_identity(state_dir: Path, common_name: str,
                            ip_addresses: Iterable[str] = ()) -> Tuple[bytes, bytes]:
    """The daemon's (cert PEM, key PEM) from state_dir, created on first use (key file mode 0600)."""
    state_dir = Path(state_dir)
    cert_path, key_path = state_dir / CERT_FILE, state_dir / KEY_FILE
    if cert_path.is_file() and key_path.is_file():
        return cert_path.read_bytes(), key_path.read_bytes()
    cert_pem, key_pem = generate_self_signed(common_name, ip_addresses)
    _write_private(key_path, key_pem)
    cert_path.write_bytes(cert_pem)
    log.info("created a self-signed TLS certificate for %s in %s", common_name, state_dir)
    return cert_pem, key_pem


def load_or_create_token(path: Path) -> str:
    """The daemon's bearer token from `path`, created (32 random bytes, mode 0600) on first use."""
    path = Path(path)
    if path.is_file():
        token = path.read_text().strip()
        if token:
            return token
    token = secrets.token_urlsafe(32)
    _write_private(path, token.encode() + b"\n")
    log.info("created a new access token in %s; give it to hosts as RKNNLINK_TOKEN", path)
    return token


def server_credentials(cert_pem: bytes, key_pem: bytes) -> grpc.ServerCredentials:
    """TLS credentials for `server.add_secure_port` (no client certificates: the token authenticates)."""
    return grpc.ssl_server_credentials([(key_pem, cert_pem)])


class DataPortContext(ssl.SSLContext):
    """The TLS data port's server context, which remembers where its certificate and key are: a session's
    worker ends TLS itself with the same identity (rknnlink_server.tlsdata), loaded from those files."""

    cert_path = key_path = ""


def data_port_context(cert_path: Path, key_path: Path) -> DataPortContext:
    """The TLS data port's server context: the gRPC listener's certificate, TLS 1.2 or newer. The token is
    not asked again there: a data connection's hello carries its session's secret, which only the session's
    owner received, from CreateSession, over the token-checked gRPC listener."""
    context = DataPortContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert_path), str(key_path))
    context.cert_path, context.key_path = str(Path(cert_path).resolve()), str(Path(key_path).resolve())
    return context


class _TokenInterceptor(grpc.ServerInterceptor):
    """Rejects calls without the daemon's bearer token with UNAUTHENTICATED and an actionable message."""

    def __init__(self, token: str, exempt: Sequence[str]) -> None:
        if not token:
            raise ValueError("token_interceptor needs a non-empty token")
        self._expected = f"Bearer {token}".encode()
        self._exempt = frozenset(exempt)

    def intercept_service(self, continuation, handler_call_details):
        if handler_call_details.method in self._exempt:
            return continuation(handler_call_details)
        metadata = dict(handler_call_details.invocation_metadata or ())
        presented = metadata.get(TOKEN_HEADER)
        if presented is not None and hmac.compare_digest(str(presented).encode(), self._expected):
            return continuation(handler_call_details)
        message = ("missing access token: set RKNNLINK_TOKEN to the token in the daemon's state directory"
                   if presented is None else
                   "wrong access token: RKNNLINK_TOKEN does not match the token the daemon was started with")
        return _reject(continuation(handler_call_details), message)


def _reject(handler, message: str):
    def abort(_request, context):
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    def abort_stream(_request_iterator, context):
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    if handler is None:
        return None
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(abort_stream)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(abort_stream)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(abort)
    return grpc.unary_unary_rpc_method_handler(abort)


def token_interceptor(token: str, exempt: Sequence[str] = tuple(UNAUTHENTICATED_METHODS)) -> grpc.ServerInterceptor:
    """A server interceptor enforcing `authorization: Bearer <token>` on every method except `exempt`."""
    return _TokenInterceptor(token, exempt)
