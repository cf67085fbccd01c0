"""The host's side of a TLS daemon: channels with the certificate and bearer token, and the certificate's
names. The daemon's side (its certificate, token and token check) is rknnlink_server.tls; the fingerprint a
host pins, and the token header, are rknnlink.v1.trust.
"""

from __future__ import annotations

import logging
import socket
import ssl
from typing import Optional

import grpc

from rknnlink.v1.trust import TOKEN_HEADER, fingerprint, is_loopback

log = logging.getLogger(__name__)
__all__ = ["TOKEN_HEADER", "certificate_names", "fetch_server_certificate", "fingerprint", "is_loopback",
           "open_channel"]


def certificate_names(cert_pem: bytes) -> list:
    """DNS names in the certificate's SAN (first one is what clients use as the TLS target name)."""
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return san.get_values_for_type(x509.DNSName)


class _MetadataInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                           grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds the token to every call of a plain-text channel (call credentials need TLS)."""

    def __init__(self, token: str) -> None:
        self._pair = (TOKEN_HEADER, f"Bearer {token}")

    def _details(self, details):
        metadata = list(details.metadata or ()) + [self._pair]
        return details._replace(metadata=metadata) if hasattr(details, "_replace") else _Details(details, metadata)

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation, details, request_iterator):
        return continuation(self._details(details), request_iterator)

    def intercept_stream_stream(self, continuation, details, request_iterator):
        return continuation(self._details(details), request_iterator)


class _Details(grpc.ClientCallDetails):
    def __init__(self, base, metadata) -> None:
        self.method = base.method
        self.timeout = base.timeout
        self.metadata = metadata
        self.credentials = base.credentials
        self.wait_for_ready = getattr(base, "wait_for_ready", None)
        self.compression = getattr(base, "compression", None)


def open_channel(address: str, *, root_cert: Optional[bytes] = None, server_name: Optional[str] = None,
                 token: Optional[str] = None, options: Optional[list] = None) -> grpc.Channel:
    """A channel to `address`: TLS trusting `root_cert` when given, plus the bearer token when given."""
    options = list(options or [])
    if root_cert is not None:
        credentials = grpc.ssl_channel_credentials(root_certificates=root_cert)
        if token:
            credentials = grpc.composite_channel_credentials(
                credentials, grpc.access_token_call_credentials(token))
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
        return grpc.secure_channel(address, credentials, options=options)
    channel = grpc.insecure_channel(address, options=options)
    if token:
        channel = grpc.intercept_channel(channel, _MetadataInterceptor(token))
    return channel


def fetch_server_certificate(host: str, port: int, timeout: float = 5.0) -> bytes:
    """The certificate a TLS daemon presents (unverified: the caller pins it by fingerprint)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    with socket.create_connection((host, port), timeout=timeout) as raw:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with context.wrap_socket(raw, server_hostname=None) as tls:
            der = tls.getpeercert(binary_form=True)
    if not der:
        raise ssl.SSLError(f"{host}:{port} presented no certificate")
    return ssl.DER_cert_to_PEM_cert(der).encode()
