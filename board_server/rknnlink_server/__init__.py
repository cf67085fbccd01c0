"""rknnlink_server: the board daemon (`rknnlink serve`). It runs the NPU runtime in worker processes and
serves the rknnlink.v1 gRPC protocol to hosts."""

from rknnlink import __version__
from rknnlink.v1.protocol import MIN_CLIENT_PROTOCOL, PROTOCOL_VERSION

__all__ = ["PROTOCOL_VERSION", "MIN_CLIENT_PROTOCOL", "__version__"]
