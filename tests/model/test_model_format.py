"""Writer/reader of docs/model-format.md: round trips, exact layout facts and every validation error."""

import struct
import zlib

import numpy as np
import pytest

from rknnlink.model import format as fmt
from rknnlink.model.format import (
    KIND_CONSTANT,
    KIND_INPUT,
    KIND_INTERMEDIATE,
    KIND_OUTPUT,
    IoSpec,
    ModelFormatError,
    SimModel,
    SimOp,
    SimTensor,
    is_vendor_rknn,
    read_model,
    write_model,
)


def small_model() -> SimModel:
    """Conv(int8 per-channel) -> Reshape -> Gemm, with every attribute type and an absent input."""
    rng = np.random.default_rng(0)
    tensors = [
        SimTensor("in", "int8", (1, 3, 4, 4), KIND_INPUT, scale=0.05, zero_point=-7, qnt_type=fmt.QNT_AFFINE),
        SimTensor("w", "int8", (2, 3, 3, 3), KIND_CONSTANT, qnt_type=fmt.QNT_CHANNEL, quant_axis=0,
                  quant_scales=[0.01, 0.02], quant_zero_points=[0, 0],
                  data=rng.integers(-127, 128, (2, 3, 3, 3)).astype(np.int8)),
        SimTensor("b", "int32", (2,), KIND_CONSTANT, qnt_type=fmt.QNT_CHANNEL, quant_axis=0,
                  quant_scales=[0.0005, 0.001], quant_zero_points=[0, 0], data=np.array([5, -9], np.int32)),
        SimTensor("conv_out", "int8", (1, 2, 4, 4), KIND_INTERMEDIATE, scale=0.1, zero_point=3,
                  qnt_type=fmt.QNT_AFFINE),
        SimTensor("flat", "int8", (1, 32), KIND_INTERMEDIATE, scale=0.1, zero_point=3,
                  qnt_type=fmt.QNT_AFFINE),
        SimTensor("fc_w", "float16", (32, 5), KIND_CONSTANT,
                  data=rng.standard_normal((32, 5)).astype(np.float16)),
        SimTensor("logits", "float32", (1, 5), KIND_OUTPUT),
    ]
    ops = [
        SimOp("Conv", "conv0", [0, 1, 2], [3], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "group": 1},
              act="Clip", act_params=(0.0, 6.0)),
        SimOp("Reshape", "flatten", [3], [4]),
        SimOp("Gemm", "fc", [4, 5, None], [6],
              {"alpha": 1.0, "beta": 0.5, "scales": [0.5, 2.0], "mode": "x"}),
    ]
    return SimModel(target_platform="rk3566", custom_string="hello", name="small", build_mode="int8",
                    batch_size=1, tensors=tensors, ops=ops,
                    inputs=[IoSpec(0, mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
                                   reverse_channels=True, layout=fmt.LAYOUT_NHWC)],
                    outputs=[IoSpec(6)])


def test_round_trip_is_identity():
    model = small_model()
    data = write_model(model)
    back = read_model(data)
    assert back == model
    assert back.tensors[1].data.dtype == np.int8
    assert back.ops[2].inputs == [4, 5, None]
    assert write_model(back) == data  # deterministic bytes


def test_header_fields_follow_the_spec():
    data = write_model(small_model())
    magic, major, minor, hsize, fsize, count, flags, table, crc = struct.unpack_from("<8sHHIQIIQI", data)
    assert (magic, major, minor, hsize, fsize, flags) == (b"RKLNKSIM", 1, 0, 64, len(data), 0)
    assert table % 8 == 0 and table >= 64 and 1 <= count <= 32
    assert crc == zlib.crc32(data[64:])
    kinds = {}
    for i in range(count):
        kind, _r, off, size = struct.unpack_from("<IIQQ", data, table + 24 * i)
        kinds[kind] = (off, size)
    assert {1, 2, 3, 4, 8}.issubset(kinds)
    assert kinds[fmt.SEC_WEIGHTS][0] % 64 == 0
    assert kinds[fmt.SEC_TENSORS][1] == 128 * 7 and kinds[fmt.SEC_OPS][1] == 64 * 3
    assert kinds[fmt.SEC_IO][1] == 160 * 2


def test_constant_data_offsets_are_64_aligned():
    data = write_model(small_model())
    table = struct.unpack_from("<Q", data, 32)[0]
    secs = {}
    for i in range(struct.unpack_from("<I", data, 24)[0]):
        kind, _r, off, size = struct.unpack_from("<IIQQ", data, table + 24 * i)
        secs[kind] = off
    for i in range(7):
        rec = secs[fmt.SEC_TENSORS] + 128 * i
        kind = struct.unpack_from("<I", data, rec + 48)[0]
        if kind == KIND_CONSTANT:
            assert struct.unpack_from("<Q", data, rec + 80)[0] % 64 == 0


def test_vendor_magic_detection():
    assert is_vendor_rknn(b"RKNN\0\0\0\0rest")
    assert is_vendor_rknn(b"CYPTRKNNxxxx")
    assert not is_vendor_rknn(write_model(small_model()))
    with pytest.raises(ModelFormatError, match="vendor-compiled"):
        read_model(b"RKNN" + b"\0" * 200)


def test_dtype_names_are_accepted():
    t = SimTensor("a", "float16", [2, 3])
    assert t.dtype == fmt.FLOAT16 and t.shape == (2, 3)
    with pytest.raises(ValueError, match="unknown dtype"):
        SimTensor("a", "complex64", [1])


def _refresh_crc(buf: bytearray) -> bytes:
    struct.pack_into("<I", buf, 40, zlib.crc32(bytes(buf[64:])))
    return bytes(buf)


def _section_offset(data: bytes, kind: int) -> int:
    table = struct.unpack_from("<Q", data, 32)[0]
    for i in range(struct.unpack_from("<I", data, 24)[0]):
        k, _r, off, _size = struct.unpack_from("<IIQQ", data, table + 24 * i)
        if k == kind:
            return off
    raise AssertionError(kind)


def _patch(offset_fn, fmt_char, value) -> bytes:
    buf = bytearray(write_model(small_model()))
    struct.pack_into(fmt_char, buf, offset_fn(bytes(buf)), value)
    return _refresh_crc(buf)


@pytest.mark.parametrize("mutate, message", [
    (lambda b: b[:40], "shorter than"),
    (lambda b: b"XXXXXXXX" + b[8:], "bad magic"),
    (lambda b: b + b"\0" * 8, "file_size"),
    (lambda b: b[:-8], "file_size"),
])
def test_structural_errors(mutate, message):
    with pytest.raises(ModelFormatError, match=message):
        read_model(mutate(write_model(small_model())))


def test_crc_mismatch_is_reported():
    buf = bytearray(write_model(small_model()))
    buf[-70] ^= 0xFF
    with pytest.raises(ModelFormatError, match="crc32"):
        read_model(bytes(buf))


def test_crc_zero_is_not_checked():
    buf = bytearray(write_model(small_model()))
    struct.pack_into("<I", buf, 40, 0)
    assert read_model(bytes(buf)) == small_model()


@pytest.mark.parametrize("offset_fn, fmt_char, value, message", [
    (lambda d: 8, "<H", 2, "version 2"),
    (lambda d: 24, "<I", 0, "section_count"),
    (lambda d: 32, "<Q", 4, "misaligned"),
    (lambda d: _section_offset(d, fmt.SEC_META) + 32, "<I", 7, "build mode"),
    (lambda d: _section_offset(d, fmt.SEC_META) + 36, "<I", 0, "batch size"),
    (lambda d: _section_offset(d, fmt.SEC_META) + 0, "<I", 10 ** 6, "outside STRINGS"),
    (lambda d: _section_offset(d, fmt.SEC_TENSORS) + 8, "<I", 5, "unknown dtype"),
    (lambda d: _section_offset(d, fmt.SEC_TENSORS) + 12, "<I", 9, "n_dims"),
    (lambda d: _section_offset(d, fmt.SEC_TENSORS) + 16, "<I", 0, ">= 1"),
    (lambda d: _section_offset(d, fmt.SEC_TENSORS) + 48, "<I", 7, "kind"),
    (lambda d: _section_offset(d, fmt.SEC_TENSORS) + 56, "<f", -1.0, "scale"),
    (lambda d: _section_offset(d, fmt.SEC_TENSORS) + 60, "<i", 300, "zero point"),
    (lambda d: _section_offset(d, fmt.SEC_TENSORS) + 52, "<I", 1, "qnt_type"),
    (lambda d: _section_offset(d, fmt.SEC_TENSORS) + 128 + 68, "<I", 3, "per-channel"),
    (lambda d: _section_offset(d, fmt.SEC_TENSORS) + 128 + 88, "<Q", 7, "data_size"),
    (lambda d: _section_offset(d, fmt.SEC_TENSORS) + 128 + 80, "<Q", 10 ** 9, "outside WEIGHTS"),
    (lambda d: _section_offset(d, fmt.SEC_OPS), "<I", 127, "unknown op type"),
    (lambda d: _section_offset(d, fmt.SEC_OPS) + 40, "<I", 99, "fused activation"),
    (lambda d: _section_offset(d, fmt.SEC_OPS) + 20, "<I", 10 ** 6, "outside INDICES"),
    (lambda d: _section_offset(d, fmt.SEC_OPS) + 36, "<I", 10 ** 6, "outside ATTRS"),
    (lambda d: _section_offset(d, fmt.SEC_INDICES), "<I", 77, "tensor index"),
    (lambda d: _section_offset(d, fmt.SEC_ATTRS) + 8, "<I", 9, "unknown type"),
    (lambda d: _section_offset(d, fmt.SEC_ATTRS) + 16, "<Q", 10 ** 6, "outside ATTRDATA"),
    (lambda d: _section_offset(d, fmt.SEC_IO), "<I", 99, "out of range"),
    (lambda d: _section_offset(d, fmt.SEC_IO), "<I", 6, "kind"),
    (lambda d: _section_offset(d, fmt.SEC_IO) + 80, "<f", 0.0, "std"),
    (lambda d: _section_offset(d, fmt.SEC_IO) + 12, "<I", 17, "n_norm"),
    (lambda d: _section_offset(d, fmt.SEC_IO) + 144, "<I", 2, "layout"),
])
def test_field_validation(offset_fn, fmt_char, value, message):
    with pytest.raises(ModelFormatError, match=message):
        read_model(_patch(offset_fn, fmt_char, value))


def test_overlapping_sections_are_rejected():
    buf = bytearray(write_model(small_model()))
    table = struct.unpack_from("<Q", buf, 32)[0]
    meta_off = struct.unpack_from("<Q", buf, table + 8)[0]
    struct.pack_into("<Q", buf, table + 24 + 8, meta_off)  # STRINGS starts where META does
    with pytest.raises(ModelFormatError, match="overlap"):
        read_model(_refresh_crc(buf))


def test_dataflow_errors():
    model = small_model()
    model.ops[0], model.ops[1] = model.ops[1], model.ops[0]
    with pytest.raises(ModelFormatError, match="before any operator produces"):
        read_model(write_model(model))
    model = small_model()
    model.ops.append(SimOp("Relu", "again", [4], [3]))
    with pytest.raises(ModelFormatError, match="more than one operator"):
        read_model(write_model(model))


def test_writer_rejects_what_the_format_cannot_hold():
    model = small_model()
    model.tensors[1].data = None
    with pytest.raises(ModelFormatError, match="needs data"):
        write_model(model)
    model = small_model()
    model.ops[0].op_type = "Einsum"
    with pytest.raises(ModelFormatError, match="Einsum"):
        write_model(model)
    model = small_model()
    model.custom_string = "x" * 1024
    with pytest.raises(ModelFormatError, match="1023"):
        write_model(model)


def test_reshape_aliases_read_as_reshape():
    buf = bytearray(write_model(small_model()))
    struct.pack_into("<I", buf, _section_offset(bytes(buf), fmt.SEC_OPS) + 64, 31)
    assert read_model(_refresh_crc(buf)).ops[1].op_type == "Reshape"


def test_format_and_builder_import_without_onnx():
    """The board daemon has no onnx: importing the format (and even the builder module) must not need it."""
    import subprocess
    import sys
    code = ("import sys; sys.modules['onnx'] = None; sys.modules['onnxruntime'] = None\n"
            "import rknnlink.model.format as f, rknnlink.model.builder as b, rknnlink.model as m\n"
            "assert m.read_model is f.read_model and m.BuildConfig is b.BuildConfig\n"
            "print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**__import__("os").environ, "PYTHONPATH": ":".join(sys.path)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
