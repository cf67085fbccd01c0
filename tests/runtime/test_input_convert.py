"""rknn_inputs_set's conversion (io.c): the caller's buffer -> the model's NCHW tensor, normalised, rounded to
binary16 or quantised. The AVX2 path promises the portable path's bits, so every (buffer type, format, model
dtype) combination runs both (RKNNLINK_SIM_ISA=generic keeps the portable path, read per call) and checks
them against each other and against a numpy reference of the same float32 operations. Sizes include a single
pixel, widths that are no multiple of the 8- and 16-pixel vector steps, images larger than the 512-pixel block
the conversion works in and images big enough for the byte tables (byte buffers into int8 models). The model is
a Reshape of the input, so its output is the converted tensor."""

from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np
import pytest

from rknnlink.model.format import (
    KIND_INPUT,
    KIND_OUTPUT,
    LAYOUT_NCHW,
    QNT_AFFINE,
    IoSpec,
    SimModel,
    SimOp,
    SimTensor,
    write_model,
)
from rknnlink.runtime import RknnError, abi

SCALE, ZERO_POINT = 0.0186, -14
MEANS = [123.675, 116.28, 103.53, 7.5]
STDS = [58.395, 57.12, 57.375, 0.37]
SOURCES = ("uint8", "int8", "float16", "float32")
MODEL_DTYPES = ("float32", "float16", "int8")
# (h, w): 1 pixel, odd widths, a multiple of 16, more than one block, enough pixels for the byte tables
SHAPES = ((1, 1), (5, 7), (3, 16), (29, 31), (45, 47))


def identity_model(shape: Sequence[int], dtype: str, mean: Optional[list], std: Optional[list],
                   reverse: bool = False) -> bytes:
    """Reshape of an input of `shape` (NCHW for 4-D) into a flat output of the same dtype."""
    quant = {"qnt_type": QNT_AFFINE, "scale": SCALE, "zero_point": ZERO_POINT} if dtype == "int8" else {}
    n = int(np.prod(shape))
    tensors = [SimTensor("x", dtype, tuple(shape), kind=KIND_INPUT, **quant),
               SimTensor("flat", dtype, (1, n), kind=KIND_OUTPUT, **quant)]
    mode = {"float32": "fp32", "float16": "fp16", "int8": "int8"}[dtype]
    model = SimModel(target_platform="rk3588", name="identity", build_mode=mode, tensors=tensors,
                     ops=[SimOp("Reshape", "flat", [0], [1])],
                     inputs=[IoSpec(0, layout=LAYOUT_NCHW, mean=mean, std=std, reverse_channels=reverse)],
                     outputs=[IoSpec(1)])
    return write_model(model)


def random_input(rng: np.random.Generator, src: str, shape: Sequence[int]) -> np.ndarray:
    """Values of the buffer type over its range (floats: pixel-like, negative, fractional)."""
    if src == "uint8":
        return rng.integers(0, 256, size=shape, dtype=np.uint8)
    if src == "int8":
        return rng.integers(-128, 128, size=shape, dtype=np.int8)
    return (rng.standard_normal(shape) * 90.0 + 100.0).astype(src)


def reference(x_nchw: np.ndarray, dtype: str, mean: Optional[list], std: Optional[list], reverse: bool) -> np.ndarray:
    """What the conversion computes, in numpy float32: (v - mean) / std per channel, then round or quantise."""
    v = x_nchw.astype(np.float32)
    if reverse and v.ndim >= 2:
        v = v[:, ::-1]
    if mean is not None:
        channels = v.shape[1] if v.ndim >= 2 else 1
        shape = (1, channels) + (1,) * (v.ndim - 2) if v.ndim >= 2 else (1,)
        m = np.broadcast_to(np.asarray(mean, np.float32), (channels,)).reshape(shape)
        s = np.broadcast_to(np.asarray(std, np.float32), (channels,)).reshape(shape)
        v = (v - m) / s
    if dtype == "float16":
        return v.astype(np.float16).astype(np.float32).ravel()
    if dtype == "int8":
        q = (v / np.float32(SCALE)).astype(np.float64)
        q = np.trunc(q + np.copysign(0.5, q))  # round half away from zero (exact in float64)
        return np.clip(q + ZERO_POINT, -128, 127).astype(np.int8).ravel()
    return v.ravel()


def convert(lib, model: bytes, x: np.ndarray, fmt: Optional[str], portable: bool) -> np.ndarray:
    """The converted tensor (raw int8 for int8 models), through the portable or the default path."""
    if portable:
        os.environ["RKNNLINK_SIM_ISA"] = "generic"
    try:
        with lib.init(model) as ctx:
            ctx.set_inputs([x], [fmt] if fmt else None)
            ctx.run()
            return ctx.get_outputs(want_float=ctx.output_attrs[0].dtype != np.int8)[0].ravel()
    finally:
        if portable:
            os.environ.pop("RKNNLINK_SIM_ISA", None)


def assert_same_bits(got: np.ndarray, want: np.ndarray, what: str) -> None:
    assert got.dtype == want.dtype and got.shape == want.shape, what
    if got.dtype == np.float32:
        got, want = got.view(np.uint32), want.view(np.uint32)
    bad = np.flatnonzero(got != want)
    assert bad.size == 0, f"{what}: {bad.size} of {got.size} differ, first at {bad[0]}: {got[bad[0]]} != {want[bad[0]]}"


def norms(channels: int):
    """No normalisation, one mean/std for every channel, and one per channel."""
    yield None, None
    yield [MEANS[0]], [STDS[0]]
    if channels > 1:
        yield MEANS[:channels], STDS[:channels]


@pytest.mark.parametrize("dtype", MODEL_DTYPES)
@pytest.mark.parametrize("fmt", ("nhwc", "nchw"))
@pytest.mark.parametrize("src", SOURCES)
def test_4d_conversion_matches_portable_and_numpy(lib, src: str, fmt: str, dtype: str) -> None:
    rng = np.random.default_rng(hash((src, fmt, dtype)) % 2**32)
    for channels in (1, 3, 4):
        for h, w in SHAPES:
            for mean, std in norms(channels):
                for reverse in (False, True):
                    nchw = random_input(rng, src, (1, channels, h, w))
                    x = np.ascontiguousarray(nchw.transpose(0, 2, 3, 1)) if fmt == "nhwc" else nchw
                    model = identity_model((1, channels, h, w), dtype, mean, std, reverse)
                    what = f"{src} {fmt} -> {dtype}, C={channels} {h}x{w}, mean={mean}, reverse={reverse}"
                    fast = convert(lib, model, x, fmt, portable=False)
                    portable = convert(lib, model, x, fmt, portable=True)
                    assert_same_bits(fast, portable, what + " (vector vs portable)")
                    assert_same_bits(fast, reference(nchw, dtype, mean, std, reverse), what + " (vs numpy)")


@pytest.mark.parametrize("dtype", MODEL_DTYPES)
@pytest.mark.parametrize("src", SOURCES)
def test_other_ranks_match_portable_and_numpy(lib, src: str, dtype: str) -> None:
    """1-D (no channels), 2-D with a mean/std per column and 3-D with one per channel, never NHWC."""
    rng = np.random.default_rng(7)
    for shape, mean, std in (((37,), None, None), ((1000,), [3.0], [0.5]), ((4099,), [3.0], [0.5]),
                             ((1, 16), MEANS[:1] * 16, STDS[:1] * 16), ((2, 3, 41), MEANS[:3], STDS[:3])):
        x = random_input(rng, src, shape)
        model = identity_model(shape, dtype, mean, std)
        what = f"{src} {shape} -> {dtype}, mean={mean}"
        fast = convert(lib, model, x, None, portable=False)
        assert_same_bits(fast, convert(lib, model, x, None, portable=True), what + " (vector vs portable)")
        assert_same_bits(fast, reference(x, dtype, mean, std, False), what + " (vs numpy)")


def test_bench_link_image(lib) -> None:
    """The 224x224x3 uint8 NHWC image of bench_link, into fp16 with per-channel mean/std and into int8."""
    rng = np.random.default_rng(3)
    nchw = random_input(rng, "uint8", (1, 3, 224, 224))
    x = np.ascontiguousarray(nchw.transpose(0, 2, 3, 1))
    for dtype in MODEL_DTYPES:
        model = identity_model((1, 3, 224, 224), dtype, MEANS[:3], STDS[:3], reverse=True)
        fast = convert(lib, model, x, "nhwc", portable=False)
        assert_same_bits(fast, convert(lib, model, x, "nhwc", portable=True), f"{dtype} (vector vs portable)")
        assert_same_bits(fast, reference(nchw, dtype, MEANS[:3], STDS[:3], True), f"{dtype} (vs numpy)")


@pytest.mark.parametrize("portable", (False, True))
@pytest.mark.parametrize("src", SOURCES)
def test_short_buffer_is_refused(lib, src: str, portable: bool) -> None:
    """A buffer one byte short of the model input fails cleanly (error code and message) on both paths."""
    model = identity_model((1, 3, 5, 7), "float16", MEANS[:3], STDS[:3])
    x = random_input(np.random.default_rng(1), src, (1, 5, 7, 3))
    with lib.init(model) as ctx:
        inputs, keep = ctx._input_structs([x], ["nhwc"], None)
        inputs[0].size = x.nbytes - 1
        if portable:
            os.environ["RKNNLINK_SIM_ISA"] = "generic"
        try:
            ret = ctx.lib.fn("rknn_inputs_set")(ctx.handle, 1, inputs)
        finally:
            os.environ.pop("RKNNLINK_SIM_ISA", None)
        assert ret == abi.RKNN_ERR_PARAM_INVALID
        assert "< model input size" in ctx.last_error_text()
        with pytest.raises(RknnError):  # nothing was set, so the run is refused too
            ctx.run()
        del keep


def test_unsupported_buffer_type_is_refused(lib) -> None:
    model = identity_model((1, 3, 5, 7), "float32", None, None)
    x = np.zeros((1, 5, 7, 3), np.uint8)
    with lib.init(model) as ctx:
        inputs, keep = ctx._input_structs([x], ["nhwc"], None)
        inputs[0].type = 9  # no such rknn_tensor_type for a buffer
        ret = ctx.lib.fn("rknn_inputs_set")(ctx.handle, 1, inputs)
        assert ret == abi.RKNN_ERR_PARAM_INVALID
        assert "unsupported buffer type" in ctx.last_error_text()
        del keep
