"""Vendor-format .rknn files made by the tests (the container of rknn-c-abi.md section 6, no Rockchip bytes).

The payload is an opaque stand-in for the compiled NPU graph; the trailing JSON describes the inputs and
outputs as RKNN-Toolkit2 writes it (norm_tensor entries with url, size and dtype), which is what the vendor
double reads.
"""

from __future__ import annotations

import json
import struct
from typing import Sequence, Tuple

Tensor = Tuple[str, Sequence[int], str]   # (name, shape in the model's order, vx_type)


def vendor_rknn(inputs: Sequence[Tensor], outputs: Sequence[Tensor], platform: str = "rk3588",
                payload: bytes = b"\x38\0\0\0RKNN" + bytes(52), version: int = 6) -> bytes:
    tensors = [{"tensor_id": i, "url": name, "size": list(shape), "dim_num": len(shape),
                "dtype": {"vx_type": dtype, "qnt_type": dtype, "qnt_method": "layer"}}
               for i, (name, shape, dtype) in enumerate([*inputs, *outputs])]
    description = {"input_num": len(inputs), "output_num": len(outputs), "name": "rknn model",
                   "norm_tensor": tensors, "norm_tensor_num": len(tensors), "target_platform": [platform],
                   "network_platform": "ONNX", "node_num": 1, "version": "2.5.0",
                   "nodes": [{"op": "RKNN_OP_NNBG", "lid": "npu_network_bin_graph", "name": "nnbg"}]}
    text = json.dumps(description, separators=(",", ":")).encode()
    header = b"RKNN" + bytes(4) + struct.pack("<QQ", version, len(payload)) + bytes(40)
    return header + payload + struct.pack("<Q", len(text)) + text


def double_output(inputs_nchw, j: int):
    """The double's documented arithmetic for output j (same shape as input 0 here)."""
    total = sum(x.astype("float32").ravel() for x in inputs_nchw)
    return 0.5 * total + 0.25 * j
