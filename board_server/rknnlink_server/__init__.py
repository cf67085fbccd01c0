"""rknnlink_server: the board daemon (`rknnlink serve`). It runs the NPU runtime in worker processes and
serves the rknnlink.v1 gRPC protocol to hosts."""

from rknnlink import PROTOCOL_VERSION, __version__

# Oldest client protocol this daemon serves (raise when dropping compatibility).
MIN_CLIENT_PROTOCOL = 1

__all__ = ["PROTOCOL_VERSION", "MIN_CLIENT_PROTOCOL", "__version__"]
