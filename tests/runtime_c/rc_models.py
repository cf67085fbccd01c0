"""Small models for the runtime_c tests, written with the project's model writer (rknnlink.model.format).

conv_net: Conv(+Relu) -> MaxPool -> GlobalAveragePool -> Reshape -> Gemm -> Softmax, with a numpy reference,
so an end-to-end run checks the executor's plumbing (layouts, normalisation, buffers) with the real kernels.
"""

import numpy as np

from rknnlink.model import format as fmt


def conv_net(dtype: str = "float32", seed: int = 0, target: str = "rk3588") -> tuple:
    """Returns (model bytes, params dict for reference())."""
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 0.5, (4, 3, 3, 3)).astype(np.float32)
    b = rng.normal(0, 0.1, (4,)).astype(np.float32)
    gw = rng.normal(0, 0.5, (3, 4)).astype(np.float32)
    gb = rng.normal(0, 0.1, (3,)).astype(np.float32)
    np_dtype = np.float16 if dtype == "float16" else np.float32
    mean, std = [1.0, 2.0, 3.0], [2.0, 2.0, 4.0]
    t = [
        fmt.SimTensor("image", dtype, (1, 3, 8, 8), fmt.KIND_INPUT),
        fmt.SimTensor("w", dtype, w.shape, fmt.KIND_CONSTANT, data=w.astype(np_dtype)),
        fmt.SimTensor("b", dtype, b.shape, fmt.KIND_CONSTANT, data=b.astype(np_dtype)),
        fmt.SimTensor("conv", dtype, (1, 4, 8, 8)),
        fmt.SimTensor("pool", dtype, (1, 4, 4, 4)),
        fmt.SimTensor("gap", dtype, (1, 4, 1, 1)),
        fmt.SimTensor("flat", dtype, (1, 4)),
        fmt.SimTensor("gw", dtype, gw.shape, fmt.KIND_CONSTANT, data=gw.astype(np_dtype)),
        fmt.SimTensor("gb", dtype, gb.shape, fmt.KIND_CONSTANT, data=gb.astype(np_dtype)),
        fmt.SimTensor("logits", dtype, (1, 3)),
        fmt.SimTensor("prob", dtype, (1, 3), fmt.KIND_OUTPUT),
    ]
    ops = [
        fmt.SimOp("Conv", "conv0", [0, 1, 2], [3], {"kernel_shape": [3, 3], "strides": [1, 1], "pads": [1, 1, 1, 1],
                                                   "dilations": [1, 1], "group": 1}, act="Relu"),
        fmt.SimOp("MaxPool", "pool0", [3], [4], {"kernel_shape": [2, 2], "strides": [2, 2], "pads": [0, 0, 0, 0],
                                                 "dilations": [1, 1], "ceil_mode": 0}),
        fmt.SimOp("GlobalAveragePool", "gap0", [4], [5]),
        fmt.SimOp("Reshape", "flatten0", [5], [6]),
        fmt.SimOp("Gemm", "fc0", [6, 7, 8], [9], {"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 1}),
        fmt.SimOp("Softmax", "softmax0", [9], [10], {"axis": 1}),
    ]
    model = fmt.SimModel(target_platform=target, custom_string="rc-test", name="conv_net",
                         build_mode="fp16" if dtype == "float16" else "fp32", tensors=t, ops=ops,
                         inputs=[fmt.IoSpec(0, mean=mean, std=std, reverse_channels=True, layout=fmt.LAYOUT_NHWC)],
                         outputs=[fmt.IoSpec(10)])
    params = {"w": w, "b": b, "gw": gw, "gb": gb, "mean": np.array(mean, np.float32),
              "std": np.array(std, np.float32)}
    return fmt.write_model(model), params


def reference(x_nhwc: np.ndarray, p: dict) -> np.ndarray:
    """numpy float64 forward pass of conv_net for a (1, 8, 8, 3) input as the API receives it."""
    x = x_nhwc.astype(np.float64)[..., ::-1]                    # RGB -> BGR (reverse_channels)
    x = (x - p["mean"]) / p["std"]
    x = x.transpose(0, 3, 1, 2)                                  # NHWC -> NCHW
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    y = np.zeros((1, 4, 8, 8))
    for i in range(8):
        for j in range(8):
            y[0, :, i, j] = np.tensordot(p["w"], xp[0, :, i:i + 3, j:j + 3], axes=([1, 2, 3], [0, 1, 2]))
    y = np.maximum(y + p["b"][None, :, None, None], 0)
    y = y.reshape(1, 4, 4, 2, 4, 2).max(axis=(3, 5))
    g = y.mean(axis=(2, 3))
    z = g @ p["gw"].T + p["gb"]
    e = np.exp(z - z.max())
    return e / e.sum()
