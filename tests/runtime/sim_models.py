"""Small real models in the simulator format for runtime and daemon tests (written with write_model)."""

from __future__ import annotations

import numpy as np

from rknnlink.model.format import (
    KIND_CONSTANT,
    KIND_INPUT,
    KIND_OUTPUT,
    LAYOUT_NCHW,
    IoSpec,
    SimModel,
    SimOp,
    SimTensor,
    write_model,
)


def conv_relu_model(channels_in: int = 3, channels_out: int = 4, size: int = 8, seed: int = 0,
                    custom_string: str = "rknnlink-test") -> tuple:
    """Conv3x3(pad 1) + fused Relu, fp32; returns (model bytes, weight, bias) for a numpy reference."""
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((channels_out, channels_in, 3, 3)).astype(np.float32) * 0.5
    bias = rng.standard_normal(channels_out).astype(np.float32) * 0.1
    tensors = [
        SimTensor("x", "float32", (1, channels_in, size, size), kind=KIND_INPUT),
        SimTensor("w", "float32", weight.shape, kind=KIND_CONSTANT, data=weight),
        SimTensor("b", "float32", bias.shape, kind=KIND_CONSTANT, data=bias),
        SimTensor("y", "float32", (1, channels_out, size, size), kind=KIND_OUTPUT),
    ]
    ops = [SimOp("Conv", "conv0", [0, 1, 2], [3],
                 attrs={"kernel_shape": [3, 3], "strides": [1, 1], "pads": [1, 1, 1, 1], "dilations": [1, 1],
                        "group": 1}, act="Relu")]
    model = SimModel(target_platform="rk3588", custom_string=custom_string, name="conv_relu", tensors=tensors,
                     ops=ops, inputs=[IoSpec(0, layout=LAYOUT_NCHW)], outputs=[IoSpec(3)])
    return write_model(model), weight, bias


def conv_relu_reference(x_nchw: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """numpy Conv3x3 pad 1 stride 1 + Relu in float64."""
    x = np.pad(x_nchw.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    n, c, h, w = x_nchw.shape
    out = np.zeros((n, weight.shape[0], h, w))
    for ky in range(3):
        for kx in range(3):
            patch = x[:, :, ky:ky + h, kx:kx + w]
            out += np.einsum("nchw,oc->nohw", patch, weight[:, :, ky, kx].astype(np.float64))
    out += bias.reshape(1, -1, 1, 1)
    return np.maximum(out, 0.0)


def pool_model(size: int = 224, channels: int = 3) -> bytes:
    """GlobalAveragePool over a (1, C, size, size) input: a big input, a tiny output, little compute."""
    tensors = [
        SimTensor("image", "float32", (1, channels, size, size), kind=KIND_INPUT),
        SimTensor("mean", "float32", (1, channels, 1, 1), kind=KIND_OUTPUT),
    ]
    ops = [SimOp("GlobalAveragePool", "gap", [0], [1])]
    model = SimModel(target_platform="rk3588", name="pool", tensors=tensors, ops=ops,
                     inputs=[IoSpec(0, layout=LAYOUT_NCHW)], outputs=[IoSpec(1)])
    return write_model(model)


def two_input_model(n: int = 16) -> bytes:
    """out = a + b over (1, n): checks input ordering."""
    tensors = [
        SimTensor("a", "float32", (1, n), kind=KIND_INPUT),
        SimTensor("b", "float32", (1, n), kind=KIND_INPUT),
        SimTensor("sum", "float32", (1, n), kind=KIND_OUTPUT),
    ]
    model = SimModel(name="add", tensors=tensors, ops=[SimOp("Add", "add0", [0, 1], [2])],
                     inputs=[IoSpec(0), IoSpec(1)], outputs=[IoSpec(2)])
    return write_model(model)


def gemm_model(k: int = 1024, n: int = 768, seed: int = 0) -> tuple:
    """y = x @ W + b with a k x n float32 weight (3 MiB by default: a multi-chunk upload)."""
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((k, n)).astype(np.float32) / np.sqrt(k)
    bias = rng.standard_normal(n).astype(np.float32)
    tensors = [
        SimTensor("x", "float32", (1, k), kind=KIND_INPUT),
        SimTensor("w", "float32", (k, n), kind=KIND_CONSTANT, data=weight),
        SimTensor("b", "float32", (n,), kind=KIND_CONSTANT, data=bias),
        SimTensor("y", "float32", (1, n), kind=KIND_OUTPUT),
    ]
    ops = [SimOp("Gemm", "fc", [0, 1, 2], [3], attrs={"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 0})]
    model = SimModel(name="gemm", tensors=tensors, ops=ops, inputs=[IoSpec(0)], outputs=[IoSpec(3)])
    return write_model(model), weight, bias


def int8_relu_model(n: int = 16, scale: float = 0.1, zero_point: int = 3) -> bytes:
    """Relu on an INT8 (affine) tensor: checks quantisation attributes and raw int8 outputs."""
    from rknnlink.model.format import QNT_AFFINE

    tensors = [
        SimTensor("q_in", "int8", (1, n), kind=KIND_INPUT, qnt_type=QNT_AFFINE, scale=scale, zero_point=zero_point),
        SimTensor("q_out", "int8", (1, n), kind=KIND_OUTPUT, qnt_type=QNT_AFFINE, scale=scale, zero_point=zero_point),
    ]
    model = SimModel(name="relu_i8", build_mode="int8", tensors=tensors, ops=[SimOp("Relu", "relu", [0], [1])],
                     inputs=[IoSpec(0)], outputs=[IoSpec(1)])
    return write_model(model)
