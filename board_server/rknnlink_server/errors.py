"""DaemonError: a failure with its gRPC status, an actionable message and the RKNN code (if any), which the
servicer turns into a status with trailing metadata."""

from __future__ import annotations

from typing import Optional

import grpc

from rknnlink.runtime import RknnError
from rknnlink.v1.protocol import MAX_CLIENT_TEXT, MD_KIND, MD_RKNN_CODE, MD_RKNN_NAME

_STATUS_BY_RKNN = {
    -2: grpc.StatusCode.DEADLINE_EXCEEDED,
    -3: grpc.StatusCode.UNAVAILABLE,
    -4: grpc.StatusCode.RESOURCE_EXHAUSTED,
    -5: grpc.StatusCode.INVALID_ARGUMENT,
    -6: grpc.StatusCode.INVALID_ARGUMENT,
    -7: grpc.StatusCode.NOT_FOUND,
    -8: grpc.StatusCode.INVALID_ARGUMENT,
    -9: grpc.StatusCode.INVALID_ARGUMENT,
    -10: grpc.StatusCode.FAILED_PRECONDITION,
    -11: grpc.StatusCode.FAILED_PRECONDITION,
    -12: grpc.StatusCode.FAILED_PRECONDITION,
    -13: grpc.StatusCode.FAILED_PRECONDITION,
}


class DaemonError(Exception):
    def __init__(self, status: grpc.StatusCode, message: str, kind: str,
                 rknn_code: Optional[int] = None, rknn_name: Optional[str] = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind
        self.rknn_code, self.rknn_name = rknn_code, rknn_name

    @classmethod
    def from_rknn(cls, exc: RknnError, prefix: str = "") -> DaemonError:
        status = _STATUS_BY_RKNN.get(exc.code, grpc.StatusCode.INTERNAL)
        message = f"{prefix}{exc.name} ({exc.code}): {exc.message}"
        return cls(status, message, "rknn-error", exc.code, exc.name)

    def metadata(self) -> tuple:
        items = [(MD_KIND, self.kind)]
        if self.rknn_code is not None:
            items += [(MD_RKNN_CODE, str(self.rknn_code)), (MD_RKNN_NAME, self.rknn_name or "")]
        return tuple(items)


def loggable(text: object, limit: int = MAX_CLIENT_TEXT) -> str:
    """A client-supplied string made safe to log or keep: at most `limit` characters, and every
    non-printable character (newline, escape, ...) escaped, so a client can neither flood the log nor forge
    a line in it."""
    s = text if isinstance(text, str) else str(text)
    cut = len(s) > limit
    s = s[:limit]
    if not s.isprintable():
        s = "".join(c if c.isprintable() else repr(c)[1:-1] for c in s)
    return s + (f"...(+{len(text) - limit} chars)" if cut and isinstance(text, str) else "")
