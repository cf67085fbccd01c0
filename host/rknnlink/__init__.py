"""rknnlink: an open connected-board stack for Rockchip NPUs.

`from rknnlink.api import RKNN` mirrors RKNN-Toolkit2's RKNN class; `rknnlink.client` is the modern API
beneath it; `rknnlink.runtime` binds librknnrt (vendor or our simulated NPU) through ctypes.
"""

__version__ = "0.1.0"
from rknnlink.v1.protocol import PROTOCOL_VERSION as PROTOCOL_VERSION  # noqa: E402 - one fact, one place
