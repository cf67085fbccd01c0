"""Host-side model building: ONNX -> rknnlink simulator models (fp32/fp16/int8) and their file format.

`rknnlink.model.format` needs numpy only (the board daemon imports it); the builder imports onnx and
onnxruntime lazily, inside the functions that need them.
"""
