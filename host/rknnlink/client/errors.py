"""Exceptions of rknnlink.client, built from gRPC statuses and the daemon's trailing metadata."""

from __future__ import annotations

from typing import Optional

import grpc

from rknnlink.runtime import RknnError
from rknnlink.v1.protocol import MD_KIND, MD_RKNN_CODE, MD_RKNN_NAME


class BoardError(RuntimeError):
    """A daemon call failed. `status` is the gRPC status code, `kind` the daemon's failure class."""

    def __init__(self, message: str, status: Optional[grpc.StatusCode] = None, kind: str = "") -> None:
        super().__init__(message)
        self.message, self.status, self.kind = message, status, kind


class IncompatibleVersionError(BoardError):
    """Host and board speak incompatible protocol versions; the message says which side to update."""


class SessionLostError(BoardError):
    """The session is gone (its runtime worker crashed or hung, or it was closed); load the model again."""


class RemoteRknnError(RknnError):
    """The board's NPU runtime returned an RKNN error code (e.g. RKNN_ERR_INPUT_INVALID)."""

    def __init__(self, code: int, name: Optional[str], message: str,
                 status: Optional[grpc.StatusCode] = None, kind: str = "rknn-error") -> None:
        super().__init__(code, name, message)
        self.status, self.kind = status, kind

    def __reduce__(self):
        return (type(self), (self.code, self.name, self.message, None, self.kind))


def _metadata(exc: grpc.RpcError) -> dict:
    try:
        return {k: v for k, v in (exc.trailing_metadata() or ())}
    except Exception:  # noqa: BLE001 - some RpcErrors (e.g. from the channel) carry no metadata
        return {}


def translate(exc: grpc.RpcError, address: str) -> Exception:
    """The exception a user should see for a failed call to the daemon at `address`."""
    status = exc.code() if hasattr(exc, "code") else None
    details = (exc.details() if hasattr(exc, "details") else str(exc)) or ""
    md = _metadata(exc)
    kind = md.get(MD_KIND, "")
    if MD_RKNN_CODE in md:
        code, name = int(md[MD_RKNN_CODE]), md.get(MD_RKNN_NAME) or None
        prefix = f"{name} ({code}): "
        if name and details.startswith(prefix):  # RknnError's str() adds it again
            details = details[len(prefix):]
        return RemoteRknnError(code, name, details, status, kind)
    if kind == "incompatible-version":
        return IncompatibleVersionError(details, status, kind)
    if kind in ("worker-crashed", "worker-timeout", "session-not-found"):
        return SessionLostError(details, status, kind)
    if kind:
        return BoardError(details, status, kind)
    if status == grpc.StatusCode.RESOURCE_EXHAUSTED and "message larger than max" in details:
        return BoardError(f"{details}: the message exceeds the daemon's size limit; send smaller tensors or "
                          f"restart the daemon with a larger --max-message-mb", status, "message-too-large")
    if status == grpc.StatusCode.RESOURCE_EXHAUSTED and "concurrent rpc limit" in details.lower():
        return BoardError(f"the daemon at {address} is busy: it already serves as many calls at once as it allows "
                          f"({details}); retry later, or close idle boards and pipelines of other programs",
                          status, "daemon-busy")
    if status == grpc.StatusCode.DEADLINE_EXCEEDED:
        return ConnectionError(f"the rknnlink daemon at {address} did not answer in time ({details}): it may be "
                               f"overloaded by other clients, or the link is down; retry, and check "
                               f"`rknnlink devices`")
    if status == grpc.StatusCode.UNAVAILABLE:
        return ConnectionError(f"lost the rknnlink daemon at {address} ({status.name}: {details}); check that it "
                               f"still runs (systemctl status rknnlink-server on the board) and the link is up")
    if status == grpc.StatusCode.CANCELLED:
        return BoardError(f"the call was cancelled: {details}", status, "cancelled")
    return BoardError(f"the daemon at {address} failed: {status.name if status else ''} {details}", status, "")
