"""RKNN-Toolkit2-compatible API: change `from rknn.api import RKNN` to `from rknnlink.api import RKNN`."""

from rknnlink.api.rknn import RKNN

__all__ = ["RKNN"]
