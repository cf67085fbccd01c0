"""Asks a daemon address whether an rknnlink daemon answers, through the standard gRPC health service.

The health service is the one RPC every daemon version carries, so it tells "something listens" apart
from "the daemon is ready" without depending on the rknnlink protocol version.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import grpc

log = logging.getLogger(__name__)

_HEALTH_METHOD = "/grpc.health.v1.Health/Check"


@dataclass
class ProbeResult:
    """Outcome of one probe: ok when a gRPC server answered (SERVING, or no health service at all)."""

    ok: bool
    status: str
    detail: str = ""


def _encode_health_request(service: str) -> bytes:
    # HealthCheckRequest{string service = 1}; encoded by hand so a board needs no grpc_health package.
    data = service.encode()
    if not data:
        return b""
    if len(data) > 127:
        raise ValueError("health service name too long")
    return b"\x0a" + bytes([len(data)]) + data


def _decode_health_status(data: bytes) -> int:
    # HealthCheckResponse{ServingStatus status = 1}: field 1, varint.
    if len(data) >= 2 and data[0] == 0x08:
        return data[1]
    return 0


_STATUS_NAMES = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}


def check_channel(channel: grpc.Channel, timeout: float,
                  metadata: Optional[Sequence[Tuple[str, str]]] = None) -> ProbeResult:
    """Runs one health check on an open channel."""
    call = channel.unary_unary(_HEALTH_METHOD, request_serializer=None, response_deserializer=None)
    try:
        reply = call(_encode_health_request(""), timeout=timeout, metadata=metadata, wait_for_ready=False)
    except grpc.RpcError as exc:
        code = exc.code() if hasattr(exc, "code") else None
        details = exc.details() if hasattr(exc, "details") else str(exc)
        if code == grpc.StatusCode.UNIMPLEMENTED:
            return ProbeResult(True, "SERVING", "no health service; the server answered")
        name = code.name if code is not None else "ERROR"
        return ProbeResult(False, name, details or "")
    status = _STATUS_NAMES.get(_decode_health_status(reply), "UNKNOWN")
    return ProbeResult(status == "SERVING", status)


def check_address(address: str, timeout: float = 2.0) -> ProbeResult:
    """Health-checks a plain-text address (a loopback forward or bridge) once."""
    with grpc.insecure_channel(address) as channel:
        return check_channel(channel, timeout)


def wait_until_serving(address: str, timeout: float, interval: float = 0.2) -> ProbeResult:
    """Polls `address` until the daemon serves or `timeout` passes; returns the last result."""
    deadline = time.monotonic() + timeout
    result = ProbeResult(False, "UNAVAILABLE", "not probed")
    while True:
        remaining = deadline - time.monotonic()
        result = check_address(address, timeout=max(0.2, min(2.0, remaining)))
        if result.ok or time.monotonic() + interval >= deadline:
            return result
        time.sleep(interval)


def device_info(channel: grpc.Channel, timeout: float,
                metadata: Optional[Sequence[Tuple[str, str]]] = None):
    """The daemon's DeviceInfo (platform, versions, serial) or None when it cannot be asked."""
    try:
        # messages.py works with the grpcio/protobuf of older boards, unlike the generated modules
        from rknnlink.v1.messages import make_stub, pb
    except ImportError as exc:  # protocol classes unavailable: only health is available
        log.debug("rknnlink protocol stubs unavailable: %s", exc)
        return None
    try:
        return make_stub(channel).GetDeviceInfo(pb.DeviceInfoRequest(), timeout=timeout, metadata=metadata)
    except grpc.RpcError as exc:
        log.debug("GetDeviceInfo failed: %s", exc)
        return None


def address_info(address: str, timeout: float = 2.0):
    """device_info() over a plain-text channel to `address`."""
    with grpc.insecure_channel(address) as channel:
        return device_info(channel, timeout)
