"""Model utilities the toolkit ships as `rknn.utils`: `from rknnlink.utils import onnx_edit`."""

from rknnlink.utils.onnx_edit import onnx_edit

__all__ = ["onnx_edit"]
