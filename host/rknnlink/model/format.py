"""Reader and writer of the rknnlink simulator model format (docs/model-format.md, version 1.0).

This module depends on numpy only: the board daemon imports it to recognise and validate models without
the host's onnx stack. The in-memory form (:class:`SimModel`) mirrors the file one to one, so
``read_model(write_model(m)) == m`` for every valid model ``m``.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Union

import numpy as np

MAGIC = b"RKLNKSIM"
VERSION_MAJOR = 1
VERSION_MINOR = 0
HEADER_SIZE = 64
NONE_INDEX = 0xFFFFFFFF
MAX_DIMS = 8
MAX_NORM_CHANNELS = 16
MAX_CUSTOM_STRING = 1023

# Section kinds.
SEC_META, SEC_STRINGS, SEC_TENSORS, SEC_OPS, SEC_ATTRS, SEC_INDICES, SEC_WEIGHTS, SEC_IO, SEC_ATTRDATA = (
    range(1, 10))
_REQUIRED_SECTIONS = (SEC_META, SEC_STRINGS, SEC_TENSORS, SEC_OPS, SEC_IO)
_RECORD_SIZES = {SEC_META: 64, SEC_TENSORS: 128, SEC_OPS: 64, SEC_ATTRS: 24, SEC_INDICES: 4, SEC_IO: 160}
_SECTION_NAMES = {SEC_META: "META", SEC_STRINGS: "STRINGS", SEC_TENSORS: "TENSORS", SEC_OPS: "OPS",
                  SEC_ATTRS: "ATTRS", SEC_INDICES: "INDICES", SEC_WEIGHTS: "WEIGHTS", SEC_IO: "IO",
                  SEC_ATTRDATA: "ATTRDATA"}

# rknn_tensor_type values and their numpy equivalents.
FLOAT32, FLOAT16, INT8, UINT8, INT16, INT32, INT64, BOOL = 0, 1, 2, 3, 4, 6, 8, 9
DTYPE_NAMES = {FLOAT32: "float32", FLOAT16: "float16", INT8: "int8", UINT8: "uint8", INT16: "int16",
               INT32: "int32", INT64: "int64", BOOL: "bool"}
DTYPE_BY_NAME = {v: k for k, v in DTYPE_NAMES.items()}
NUMPY_DTYPES = {FLOAT32: np.dtype("<f4"), FLOAT16: np.dtype("<f2"), INT8: np.dtype("i1"),
                UINT8: np.dtype("u1"), INT16: np.dtype("<i2"), INT32: np.dtype("<i4"),
                INT64: np.dtype("<i8"), BOOL: np.dtype("?")}
ACTIVATION_DTYPES = (FLOAT32, FLOAT16, INT8)

# Tensor kinds and quantisation types.
KIND_INTERMEDIATE, KIND_CONSTANT, KIND_INPUT, KIND_OUTPUT = 0, 1, 2, 3
QNT_NONE, QNT_AFFINE, QNT_CHANNEL = 0, 2, 3

BUILD_MODES = {"fp32": 0, "fp16": 1, "int8": 2}
LAYOUT_NCHW, LAYOUT_NHWC = 0, 1

OP_TYPES = {
    "Conv": 1, "ConvTranspose": 2, "Gemm": 3, "MatMul": 4, "Add": 5, "Sub": 6, "Mul": 7, "Div": 8,
    "Sum": 9, "Relu": 10, "Clip": 11, "LeakyRelu": 12, "PRelu": 13, "Sigmoid": 14, "HardSigmoid": 15,
    "HardSwish": 16, "SiLU": 17, "Tanh": 18, "Exp": 19, "Softmax": 20, "MaxPool": 21, "AveragePool": 22,
    "GlobalAveragePool": 23, "GlobalMaxPool": 24, "LRN": 25, "BatchNormalization": 26, "Concat": 27,
    "Split": 28, "Slice": 29, "Reshape": 30, "Transpose": 34, "Pad": 35, "Resize": 36, "ReduceMean": 37,
    "ReduceMax": 38, "LogSoftmax": 39, "Elu": 40, "Selu": 41, "Neg": 42, "Abs": 43, "Softplus": 44,
    "Sqrt": 45, "Max": 46, "Min": 47, "ReduceSum": 48, "Pow": 49, "Gather": 50, "LayerNormalization": 51,
    "GroupNormalization": 52, "Erf": 53, "Gelu": 54, "Mish": 55, "Reciprocal": 56, "Log": 57, "Sin": 58,
    "Cos": 59, "Not": 60, "Cast": 61, "Equal": 62, "Greater": 63, "GreaterOrEqual": 64, "Less": 65,
    "LessOrEqual": 66, "And": 67, "Or": 68, "Xor": 69, "Where": 70, "Expand": 71, "Tile": 72,
    "GatherElements": 73, "ArgMax": 74, "ArgMin": 75, "TopK": 76, "ReduceMin": 77, "ReduceProd": 78,
    "ReduceL2": 79, "LSTM": 80, "GRU": 81,
}
OP_NAMES = {v: k for k, v in OP_TYPES.items()}
# Ids 31-33 (Flatten, Squeeze, Unsqueeze in older writers) are Reshape as well.
OP_NAMES.update({31: "Reshape", 32: "Reshape", 33: "Reshape"})

ACTIVATIONS = {None: 0, "Relu": 1, "Clip": 2, "LeakyRelu": 3, "Sigmoid": 4, "HardSwish": 5, "SiLU": 6,
               "HardSigmoid": 7, "Tanh": 8}
ACTIVATION_NAMES = {v: k for k, v in ACTIVATIONS.items()}

ATTR_INT, ATTR_FLOAT, ATTR_INTS, ATTR_FLOATS, ATTR_STRING = 1, 2, 3, 4, 5

_HEADER = struct.Struct("<8sHHIQIIQI20s")
_SECTION = struct.Struct("<IIQQ")
_META = struct.Struct("<IIIIIIIIII24s")
_TENSOR = struct.Struct("<IIII8IIIfiiIQQQ32s")
_OP = struct.Struct("<IIIIIIIIIIIff12s")
_ATTR = struct.Struct("<IIIIQ")
_IO = struct.Struct("<IIII16f16fI12s")

AttrValue = Union[int, float, str, bytes, list]


class ModelFormatError(ValueError):
    """The bytes are not a valid rknnlink simulator model (the message says which field and why)."""


def _f32(x: float) -> float:
    """Round a Python float to binary32, the precision the file stores."""
    return float(np.float32(x))


@dataclass(eq=False)
class SimTensor:
    """One tensor record. ``data`` holds a constant's values (numpy dtype of ``dtype``), else None.

    Quantisation: ``qnt_type`` QNT_AFFINE uses ``scale``/``zero_point``; QNT_CHANNEL uses ``quant_axis``,
    ``quant_scales`` and ``quant_zero_points`` (one per element of ``shape[quant_axis]``).
    ``dtype`` may be given as an rknn_tensor_type int or a name ('float16'); it is stored as the int.
    """

    name: str
    dtype: Union[int, str]
    shape: Sequence[int]
    kind: int = KIND_INTERMEDIATE
    scale: float = 0.0
    zero_point: int = 0
    qnt_type: int = QNT_NONE
    quant_axis: int = -1
    quant_scales: Optional[np.ndarray] = None
    quant_zero_points: Optional[np.ndarray] = None
    data: Optional[np.ndarray] = None

    def __post_init__(self) -> None:
        if isinstance(self.dtype, str):
            if self.dtype not in DTYPE_BY_NAME:
                raise ValueError(f"tensor {self.name!r}: unknown dtype {self.dtype!r}; use one of "
                                 f"{sorted(DTYPE_BY_NAME)}")
            self.dtype = DTYPE_BY_NAME[self.dtype]
        self.shape = tuple(int(d) for d in self.shape)
        if self.quant_scales is not None:
            self.quant_scales = np.asarray(self.quant_scales, dtype=np.float32)
        if self.quant_zero_points is not None:
            self.quant_zero_points = np.asarray(self.quant_zero_points, dtype=np.int32)

    @property
    def numpy_dtype(self) -> np.dtype:
        return NUMPY_DTYPES[int(self.dtype)]

    @property
    def n_elems(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SimTensor):
            return NotImplemented
        plain = ("name", "dtype", "shape", "kind", "qnt_type", "quant_axis")
        if any(getattr(self, f) != getattr(other, f) for f in plain):
            return False
        if self.qnt_type == QNT_AFFINE and (_f32(self.scale) != _f32(other.scale)
                                            or self.zero_point != other.zero_point):
            return False
        for f in ("quant_scales", "quant_zero_points", "data"):
            a, b = getattr(self, f), getattr(other, f)
            if (a is None) != (b is None):
                return False
            if a is not None and (a.dtype != b.dtype
                                  or not np.array_equal(a, b, equal_nan=a.dtype.kind == "f")):
                return False
        return True


@dataclass
class SimOp:
    """One operator record. ``inputs`` hold tensor indices or None (absent optional input).

    ``attrs`` values: int -> INT, float -> FLOAT, list of ints -> INTS, list with a float -> FLOATS,
    str/bytes -> STRING. ``act`` names the fused activation (keys of ACTIVATIONS) with its two params.
    """

    op_type: str
    name: str
    inputs: list
    outputs: list
    attrs: dict = field(default_factory=dict)
    act: Optional[str] = None
    act_params: tuple = (0.0, 0.0)

    def __post_init__(self) -> None:
        self.act_params = (_f32(self.act_params[0]), _f32(self.act_params[1]))
        self.attrs = {k: _normalise_attr(v) for k, v in self.attrs.items()}
        self.inputs = [None if i is None else int(i) for i in self.inputs]
        self.outputs = [int(i) for i in self.outputs]


def _normalise_attr(value: Any) -> Any:
    """Give an attribute the exact Python form the reader returns (f32 floats, lists not tuples)."""
    if isinstance(value, (bool, int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return _f32(value)
    if isinstance(value, (list, tuple, np.ndarray)):
        vals = np.asarray(value).ravel().tolist() if isinstance(value, np.ndarray) else list(value)
        if any(isinstance(v, (float, np.floating)) for v in vals):
            return [_f32(v) for v in vals]
        return [int(v) for v in vals]
    return value


@dataclass
class IoSpec:
    """A graph input or output: tensor index plus the normalisation the runtime applies to inputs."""

    tensor: int
    mean: Optional[list] = None
    std: Optional[list] = None
    reverse_channels: bool = False
    layout: int = LAYOUT_NCHW

    def __post_init__(self) -> None:
        if self.mean is not None:
            self.mean = [_f32(v) for v in self.mean]
        if self.std is not None:
            self.std = [_f32(v) for v in self.std]
        self.reverse_channels = bool(self.reverse_channels)


@dataclass
class SimModel:
    """A whole simulator model; ``write_model`` turns it into bytes, ``read_model`` back."""

    target_platform: str = "rk3588"
    custom_string: str = ""
    producer: str = "rknnlink 0.1.0"
    name: str = ""
    build_mode: str = "fp32"
    batch_size: int = 1
    tensors: list = field(default_factory=list)
    ops: list = field(default_factory=list)
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)

    def tensor_index(self, name: str) -> int:
        """Index of the tensor called ``name`` (KeyError with the name if absent)."""
        for i, t in enumerate(self.tensors):
            if t.name == name:
                return i
        raise KeyError(f"no tensor named {name!r} in model {self.name!r}")


def is_vendor_rknn(data: bytes) -> bool:
    """True for a vendor-compiled .rknn (``RKNN`` magic at offset 0, or an encrypted ``CYPTRKNN`` one)."""
    head = bytes(data[:8])
    return head[:4] == b"RKNN" or head == b"CYPTRKNN"


def is_sim_model(data: bytes) -> bool:
    """True when the bytes start with this format's magic (they may still be invalid)."""
    return bytes(data[:8]) == MAGIC


# ---------------------------------------------------------------------------------------------- writer


class _Strings:
    def __init__(self) -> None:
        self.buf = bytearray()
        self.cache: dict = {}

    def ref(self, text: str) -> tuple:
        if not text:
            return (0, 0)
        raw = text.encode("utf-8")
        if raw not in self.cache:
            self.cache[raw] = (len(self.buf), len(raw))
            self.buf += raw + b"\0"
        return self.cache[raw]


def _pad_to(buf: bytearray, align: int) -> None:
    buf += b"\0" * (-len(buf) % align)


def _attr_kind(name: str, value: Any) -> tuple:
    """(type, count, payload bytes) for one attribute value."""
    if isinstance(value, (bool, int, np.integer)):
        return ATTR_INT, 1, struct.pack("<q", int(value))
    if isinstance(value, (float, np.floating)):
        return ATTR_FLOAT, 1, struct.pack("<f", float(value))
    if isinstance(value, str):
        value = value.encode("utf-8")
    if isinstance(value, bytes):
        return ATTR_STRING, len(value), value
    if isinstance(value, (list, tuple, np.ndarray)):
        vals = list(np.asarray(value).ravel().tolist()) if isinstance(value, np.ndarray) else list(value)
        if any(isinstance(v, (float, np.floating)) for v in vals):
            return ATTR_FLOATS, len(vals), np.asarray(vals, dtype="<f4").tobytes()
        return ATTR_INTS, len(vals), np.asarray(vals, dtype="<i8").tobytes()
    raise ModelFormatError(f"attribute {name!r}: unsupported value type {type(value).__name__}")


def _check_tensor_for_write(i: int, t: SimTensor) -> None:
    where = f"tensor {i} ({t.name!r})"
    if int(t.dtype) not in NUMPY_DTYPES:
        raise ModelFormatError(f"{where}: unknown dtype {t.dtype}")
    if len(t.shape) > MAX_DIMS or any(d < 1 for d in t.shape):
        raise ModelFormatError(f"{where}: shape {t.shape} must have <= 8 dims, each >= 1")
    if t.n_elems >= 2 ** 31:
        raise ModelFormatError(f"{where}: {t.n_elems} elements exceed 2^31")
    if t.kind == KIND_CONSTANT:
        if t.data is None:
            raise ModelFormatError(f"{where}: a constant needs data")
        if t.data.size != t.n_elems:
            raise ModelFormatError(f"{where}: data has {t.data.size} elements, "
                                   f"shape {t.shape} needs {t.n_elems}")
    elif t.data is not None:
        raise ModelFormatError(f"{where}: only constants carry data (kind {t.kind})")
    if t.qnt_type == QNT_CHANNEL:
        if not 0 <= t.quant_axis < len(t.shape) or t.quant_scales is None or t.quant_zero_points is None:
            raise ModelFormatError(f"{where}: per-channel quantisation needs a valid axis, "
                                   "scales and zero points")
        n = t.shape[t.quant_axis]
        if len(t.quant_scales) != n or len(t.quant_zero_points) != n:
            raise ModelFormatError(f"{where}: per-channel tables need {n} entries")


def write_model(model: SimModel) -> bytes:
    """Serialise ``model`` (docs/model-format.md v1.0) with the crc32 filled in.

    Raises ModelFormatError for records the format cannot hold (bad shapes, missing constant data, ...).
    """
    strings = _Strings()
    weights = bytearray()
    tensors = bytearray()
    for i, t in enumerate(model.tensors):
        _check_tensor_for_write(i, t)
        tensors += _pack_tensor(t, strings, weights)
    ops, attrs, attrdata, indices = bytearray(), bytearray(), bytearray(), []
    for op in model.ops:
        ops += _pack_op(op, strings, attrs, attrdata, indices)
    io = bytearray()
    for spec, is_out in [(s, 0) for s in model.inputs] + [(s, 1) for s in model.outputs]:
        io += _pack_io(spec, is_out)
    if model.build_mode not in BUILD_MODES:
        raise ModelFormatError(f"build_mode {model.build_mode!r} must be one of {sorted(BUILD_MODES)}")
    if len(model.custom_string.encode("utf-8")) > MAX_CUSTOM_STRING:
        raise ModelFormatError("custom_string is longer than 1023 bytes; shorten it")
    meta = _META.pack(*strings.ref(model.target_platform), *strings.ref(model.custom_string),
                      *strings.ref(model.producer), *strings.ref(model.name),
                      BUILD_MODES[model.build_mode], int(model.batch_size), b"")
    sections = [(SEC_META, bytes(meta), 8), (SEC_STRINGS, bytes(strings.buf), 8),
                (SEC_TENSORS, bytes(tensors), 8), (SEC_OPS, bytes(ops), 8)]
    if attrs:
        sections += [(SEC_ATTRS, bytes(attrs), 8), (SEC_ATTRDATA, bytes(attrdata), 8)]
    if indices:
        sections.append((SEC_INDICES, np.asarray(indices, dtype="<u4").tobytes(), 8))
    sections.append((SEC_IO, bytes(io), 8))
    if weights:
        sections.append((SEC_WEIGHTS, bytes(weights), 64))
    return _assemble(sections)


def _assemble(sections: list) -> bytes:
    table_off = HEADER_SIZE
    offset = table_off + _SECTION.size * len(sections)
    parts: list = []
    table = bytearray()
    for kind, payload, align in sections:
        pad = -offset % align
        parts.append(b"\0" * pad)
        offset += pad
        table += _SECTION.pack(kind, 0, offset, len(payload))
        parts.append(payload)
        offset += len(payload)
    parts.append(b"\0" * (-offset % 8))
    offset += -offset % 8
    crc = zlib.crc32(table)
    for part in parts:
        crc = zlib.crc32(part, crc)
    header = _HEADER.pack(MAGIC, VERSION_MAJOR, VERSION_MINOR, HEADER_SIZE, offset, len(sections), 0,
                          table_off, crc & 0xFFFFFFFF, b"")
    return b"".join([header, bytes(table)] + parts)


def _pack_tensor(t: SimTensor, strings: _Strings, weights: bytearray) -> bytes:
    dims = list(t.shape) + [0] * (MAX_DIMS - len(t.shape))
    quant_off = quant_count = 0
    axis = -1
    scale, zp = 0.0, 0
    if t.qnt_type == QNT_AFFINE:
        scale, zp = float(t.scale), int(t.zero_point)
    elif t.qnt_type == QNT_CHANNEL:
        axis, quant_count = t.quant_axis, len(t.quant_scales)
        _pad_to(weights, 8)
        quant_off = len(weights)
        weights += np.asarray(t.quant_scales, dtype="<f4").tobytes()
        weights += np.asarray(t.quant_zero_points, dtype="<i4").tobytes()
    data_off = data_size = 0
    if t.data is not None:
        raw = np.ascontiguousarray(t.data, dtype=t.numpy_dtype).tobytes()
        _pad_to(weights, 64)
        data_off, data_size = len(weights), len(raw)
        weights += raw
    return _TENSOR.pack(*strings.ref(t.name), int(t.dtype), len(t.shape), *dims, t.kind, t.qnt_type, scale,
                        zp, axis, quant_count, quant_off, data_off, data_size, b"")


def _pack_op(op: SimOp, strings: _Strings, attrs: bytearray, attrdata: bytearray, indices: list) -> bytes:
    if op.op_type not in OP_TYPES:
        raise ModelFormatError(f"operator {op.name!r}: type {op.op_type!r} is not in the format's table")
    if op.act not in ACTIVATIONS:
        raise ModelFormatError(f"operator {op.name!r}: unknown fused activation {op.act!r}")
    in_start = len(indices)
    indices += [NONE_INDEX if i is None else int(i) for i in op.inputs]
    out_start = len(indices)
    indices += [int(i) for i in op.outputs]
    attr_start = len(attrs) // _ATTR.size
    for name, value in op.attrs.items():
        kind, count, payload = _attr_kind(name, value)
        _pad_to(attrdata, 8)
        attrs += _ATTR.pack(*strings.ref(name), kind, count, len(attrdata))
        attrdata += payload
    p0, p1 = op.act_params
    return _OP.pack(OP_TYPES[op.op_type], 0, *strings.ref(op.name), in_start, len(op.inputs), out_start,
                    len(op.outputs), attr_start, len(op.attrs), ACTIVATIONS[op.act], p0, p1, b"")


def _pack_io(spec: IoSpec, is_output: int) -> bytes:
    mean = list(spec.mean or [])
    std = list(spec.std or [])
    if len(mean) != len(std) or len(mean) > MAX_NORM_CHANNELS:
        raise ModelFormatError(f"IO tensor {spec.tensor}: mean and std need the same length (<= 16)")
    n = len(mean)
    return _IO.pack(spec.tensor, is_output, int(spec.reverse_channels), n, *(mean + [0.0] * (16 - n)),
                    *(std + [0.0] * (16 - n)), spec.layout, b"")


# ---------------------------------------------------------------------------------------------- reader


class _Reader:
    """Validating reader: every offset, count and length is checked before use."""

    def __init__(self, data: bytes) -> None:
        self.data = memoryview(bytes(data))
        self.sections: dict = {}

    def fail(self, msg: str) -> None:
        raise ModelFormatError(f"invalid rknnlink model: {msg}")

    def read(self) -> SimModel:
        self.parse_header()
        strings = self.section(SEC_STRINGS)
        self.strings = bytes(strings)
        weights = self.section(SEC_WEIGHTS)
        self.weights = bytes(weights) if weights is not None else b""
        model = self.parse_meta()
        model.tensors = self.parse_tensors()
        model.ops = self.parse_ops(len(model.tensors))
        model.inputs, model.outputs = self.parse_io(model.tensors)
        _check_dataflow(model, self.fail)
        return model

    def parse_header(self) -> None:
        d = self.data
        if len(d) < HEADER_SIZE:
            if is_vendor_rknn(bytes(d)):
                self.fail("this is a vendor-compiled .rknn; it needs a real board, not the simulator")
            self.fail(f"{len(d)} bytes is shorter than the 64-byte header")
        (magic, major, _minor, hsize, fsize, count, flags, table_off, crc, _res) = _HEADER.unpack_from(d, 0)
        if magic != MAGIC:
            if is_vendor_rknn(bytes(d)):
                self.fail("this is a vendor-compiled .rknn; it needs a real board, not the simulator")
            self.fail(f"bad magic {bytes(magic)!r} (expected {MAGIC!r})")
        if major != VERSION_MAJOR:
            self.fail(f"format version {major}.x is not supported (this reader reads {VERSION_MAJOR}.x); "
                      "rebuild the model with this rknnlink version")
        if hsize != HEADER_SIZE or flags != 0:
            self.fail(f"header_size {hsize} / flags {flags} (expected 64 / 0)")
        if fsize != len(d):
            self.fail(f"file_size field {fsize} != buffer size {len(d)} (truncated or padded file)")
        if not 1 <= count <= 32:
            self.fail(f"section_count {count} not in 1..32")
        if table_off % 8 or table_off < HEADER_SIZE or table_off + count * _SECTION.size > len(d):
            self.fail(f"section table at {table_off} (x{count}) is misaligned or outside the file")
        if crc and zlib.crc32(d[HEADER_SIZE:]) & 0xFFFFFFFF != crc:
            self.fail("crc32 mismatch: the file is corrupted")
        spans = [(0, table_off + count * _SECTION.size, "header/section table")]
        for i in range(count):
            kind, _r, off, size = _SECTION.unpack_from(d, table_off + i * _SECTION.size)
            name = _SECTION_NAMES.get(kind, f"kind {kind}")
            if kind in self.sections:
                self.fail(f"section {name} appears twice")
            if off + size > len(d):
                self.fail(f"section {name} [{off}, {off + size}) is outside the file")
            if kind in _RECORD_SIZES and size % _RECORD_SIZES[kind]:
                self.fail(f"section {name} size {size} is not a multiple of {_RECORD_SIZES[kind]}")
            spans.append((off, off + size, name))
            if kind in _SECTION_NAMES:
                self.sections[kind] = (off, size)
        spans = sorted(s for s in spans if s[1] > s[0])
        for (_a0, a1, an), (b0, _b1, bn) in zip(spans, spans[1:]):
            if b0 < a1:
                self.fail(f"sections {an} and {bn} overlap")
        for kind in _REQUIRED_SECTIONS:
            if kind not in self.sections:
                self.fail(f"required section {_SECTION_NAMES[kind]} is missing")
        if SEC_META in self.sections and self.sections[SEC_META][1] != 64:
            self.fail("META section must hold exactly one 64-byte record")

    def section(self, kind: int) -> Optional[memoryview]:
        if kind not in self.sections:
            return None
        off, size = self.sections[kind]
        return self.data[off:off + size]

    def string(self, off: int, length: int, what: str) -> str:
        if off + length > len(self.strings):
            self.fail(f"{what}: string [{off}, {off + length}) outside STRINGS ({len(self.strings)} bytes)")
        try:
            return self.strings[off:off + length].decode("utf-8")
        except UnicodeDecodeError:
            self.fail(f"{what}: string is not valid UTF-8")
            raise  # unreachable

    def parse_meta(self) -> SimModel:
        f = _META.unpack_from(self.section(SEC_META), 0)
        modes = {v: k for k, v in BUILD_MODES.items()}
        if f[8] not in modes:
            self.fail(f"META build mode {f[8]} not in 0..2")
        if f[9] < 1:
            self.fail("META batch size must be >= 1")
        custom = self.string(f[2], f[3], "custom_string")
        if len(custom.encode("utf-8")) > MAX_CUSTOM_STRING:
            self.fail("custom_string longer than 1023 bytes")
        return SimModel(target_platform=self.string(f[0], f[1], "target_platform"), custom_string=custom,
                        producer=self.string(f[4], f[5], "producer"), name=self.string(f[6], f[7], "name"),
                        build_mode=modes[f[8]], batch_size=f[9])

    def weight_slice(self, off: int, size: int, align: int, what: str) -> bytes:
        if off % align:
            self.fail(f"{what}: offset {off} is not aligned to {align}")
        if off + size > len(self.weights):
            self.fail(f"{what}: [{off}, {off + size}) is outside WEIGHTS ({len(self.weights)} bytes)")
        return self.weights[off:off + size]

    def parse_tensors(self) -> list:
        sec = self.section(SEC_TENSORS)
        out = []
        for i in range(len(sec) // _TENSOR.size):
            out.append(self.parse_tensor(i, _TENSOR.unpack_from(sec, i * _TENSOR.size)))
        return out

    def parse_tensor(self, i: int, f: tuple) -> SimTensor:
        name = self.string(f[0], f[1], f"tensor {i} name")
        where = f"tensor {i} ({name!r})"
        dtype, n_dims = f[2], f[3]
        dims = f[4:12]
        kind, qnt, scale, zp, axis, qcount, qoff, doff, dsize = f[12:21]
        if dtype not in NUMPY_DTYPES:
            self.fail(f"{where}: unknown dtype {dtype}")
        if n_dims > MAX_DIMS:
            self.fail(f"{where}: n_dims {n_dims} > 8")
        shape = tuple(dims[:n_dims])
        if any(d < 1 for d in shape):
            self.fail(f"{where}: dims {shape} must all be >= 1")
        n = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if n >= 2 ** 31:
            self.fail(f"{where}: element count {n} does not fit in 2^31")
        if kind not in (KIND_INTERMEDIATE, KIND_CONSTANT, KIND_INPUT, KIND_OUTPUT):
            self.fail(f"{where}: kind {kind} not in 0..3")
        if kind != KIND_CONSTANT and dtype not in ACTIVATION_DTYPES:
            self.fail(f"{where}: activations must be FLOAT32, FLOAT16 or INT8 (dtype {dtype})")
        t = SimTensor(name=name, dtype=dtype, shape=shape, kind=kind, qnt_type=qnt)
        if qnt == QNT_AFFINE:
            self.check_affine(where, dtype, scale, zp)
            t.scale, t.zero_point = _f32(scale), zp
        elif qnt == QNT_CHANNEL:
            if not 0 <= axis < n_dims or qcount != shape[axis]:
                self.fail(f"{where}: per-channel axis {axis} / count {qcount} do not match dims {shape}")
            raw = self.weight_slice(qoff, qcount * 8, 4, f"{where} quant tables")
            t.quant_axis = axis
            t.quant_scales = np.frombuffer(raw[:qcount * 4], dtype="<f4").astype(np.float32)
            t.quant_zero_points = np.frombuffer(raw[qcount * 4:], dtype="<i4").astype(np.int32)
            for s, z in zip(t.quant_scales, t.quant_zero_points):
                self.check_affine(where, dtype, float(s), int(z))
        elif qnt != QNT_NONE:
            self.fail(f"{where}: qnt_type {qnt} not in (0, 2, 3)")
        if kind == KIND_CONSTANT:
            npdt = NUMPY_DTYPES[dtype]
            if dsize != n * npdt.itemsize:
                self.fail(f"{where}: data_size {dsize} != {n} elements x {npdt.itemsize} bytes")
            raw = self.weight_slice(doff, dsize, npdt.itemsize, f"{where} data")
            t.data = np.frombuffer(raw, dtype=npdt).reshape(shape).copy()
        elif dsize:
            self.fail(f"{where}: only constants may carry data")
        return t

    def check_affine(self, where: str, dtype: int, scale: float, zp: int) -> None:
        if not (math.isfinite(scale) and scale > 0):
            self.fail(f"{where}: quantisation scale {scale} must be finite and > 0")
        npdt = NUMPY_DTYPES[dtype]
        if npdt.kind in "iu":
            info = np.iinfo(npdt)
            if not info.min <= zp <= info.max:
                self.fail(f"{where}: zero point {zp} outside the {DTYPE_NAMES[dtype]} range")

    def parse_ops(self, n_tensors: int) -> list:
        sec = self.section(SEC_OPS)
        attrs_sec = self.section(SEC_ATTRS)
        self.attrdata = bytes(self.section(SEC_ATTRDATA) or b"")
        n_attrs = len(attrs_sec) // _ATTR.size if attrs_sec is not None else 0
        idx_sec = self.section(SEC_INDICES)
        indices = np.frombuffer(bytes(idx_sec), dtype="<u4") if idx_sec is not None else np.zeros(0, "<u4")
        ops = []
        for i in range(len(sec) // _OP.size):
            f = _OP.unpack_from(sec, i * _OP.size)
            name = self.string(f[2], f[3], f"op {i} name")
            where = f"op {i} ({name!r})"
            if f[0] not in OP_NAMES:
                self.fail(f"{where}: unknown op type {f[0]}")
            if f[10] not in ACTIVATION_NAMES:
                self.fail(f"{where}: unknown fused activation {f[10]}")
            ins = self.index_list(indices, f[4], f[5], n_tensors, True, where)
            outs = self.index_list(indices, f[6], f[7], n_tensors, False, where)
            if f[8] + f[9] > n_attrs:
                self.fail(f"{where}: attributes [{f[8]}, {f[8] + f[9]}) outside ATTRS ({n_attrs})")
            attrs = dict(self.parse_attr(attrs_sec, k, where) for k in range(f[8], f[8] + f[9]))
            ops.append(SimOp(op_type=OP_NAMES[f[0]], name=name, inputs=ins, outputs=outs, attrs=attrs,
                             act=ACTIVATION_NAMES[f[10]], act_params=(f[11], f[12])))
        return ops

    def index_list(self, indices: np.ndarray, start: int, count: int, n_tensors: int, allow_none: bool,
                   where: str) -> list:
        if start + count > len(indices):
            self.fail(f"{where}: index range [{start}, {start + count}) outside INDICES ({len(indices)})")
        out = []
        for v in indices[start:start + count].tolist():
            if v == NONE_INDEX and allow_none:
                out.append(None)
            elif v >= n_tensors:
                self.fail(f"{where}: tensor index {v} >= tensor count {n_tensors}")
            else:
                out.append(v)
        return out

    def parse_attr(self, sec: memoryview, k: int, where: str) -> tuple:
        s_off, s_len, kind, count, off = _ATTR.unpack_from(sec, k * _ATTR.size)
        name = self.string(s_off, s_len, f"{where} attribute {k}")
        size = {ATTR_INT: 8, ATTR_FLOAT: 4, ATTR_INTS: 8, ATTR_FLOATS: 4, ATTR_STRING: 1}.get(kind)
        if size is None:
            self.fail(f"{where}: attribute {name!r} has unknown type {kind}")
        if kind in (ATTR_INT, ATTR_FLOAT) and count != 1:
            self.fail(f"{where}: scalar attribute {name!r} has count {count}")
        if off % 8 or off + count * size > len(self.attrdata):
            self.fail(f"{where}: attribute {name!r} value [{off}, +{count * size}) is misaligned "
                      "or outside ATTRDATA")
        raw = self.attrdata[off:off + count * size]
        if kind == ATTR_INT:
            return name, struct.unpack("<q", raw)[0]
        if kind == ATTR_FLOAT:
            return name, struct.unpack("<f", raw)[0]
        if kind == ATTR_INTS:
            return name, np.frombuffer(raw, dtype="<i8").tolist()
        if kind == ATTR_FLOATS:
            return name, np.frombuffer(raw, dtype="<f4").tolist()
        try:
            return name, raw.decode("utf-8")
        except UnicodeDecodeError:
            return name, raw

    def parse_io(self, tensors: list) -> tuple:
        sec = self.section(SEC_IO)
        inputs, outputs = [], []
        for i in range(len(sec) // _IO.size):
            f = _IO.unpack_from(sec, i * _IO.size)
            idx, is_out, rev, n_norm = f[:4]
            mean, std, layout = list(f[4:20]), list(f[20:36]), f[36]
            where = f"IO record {i}"
            if idx >= len(tensors):
                self.fail(f"{where}: tensor index {idx} out of range")
            if is_out not in (0, 1) or rev not in (0, 1) or layout not in (0, 1):
                self.fail(f"{where}: is_output/reverse_channels/layout must be 0 or 1")
            if n_norm > MAX_NORM_CHANNELS:
                self.fail(f"{where}: n_norm {n_norm} > 16")
            if any(not (math.isfinite(s) and s > 0) for s in std[:n_norm]):
                self.fail(f"{where}: std values must be finite and > 0")
            if is_out and (rev or n_norm):
                self.fail(f"{where}: outputs carry no normalisation or channel reversal")
            if not is_out and outputs:
                self.fail(f"{where}: inputs must come before outputs")
            want_kind = KIND_OUTPUT if is_out else KIND_INPUT
            if tensors[idx].kind != want_kind:
                self.fail(f"{where}: tensor {tensors[idx].name!r} has kind {tensors[idx].kind}, expected "
                          f"{want_kind}")
            spec = IoSpec(tensor=idx, mean=mean[:n_norm] if n_norm else None,
                          std=std[:n_norm] if n_norm else None, reverse_channels=bool(rev), layout=layout)
            (outputs if is_out else inputs).append(spec)
        return inputs, outputs


def _check_dataflow(model: SimModel, fail: Any) -> None:
    """Every intermediate/output tensor is produced exactly once before it is read; inputs never."""
    produced = [t.kind in (KIND_CONSTANT, KIND_INPUT) for t in model.tensors]
    writers = [0] * len(model.tensors)
    for op in model.ops:
        for i in op.inputs:
            if i is not None and not produced[i]:
                fail(f"op {op.name!r} reads tensor {model.tensors[i].name!r} before any operator produces it")
        for o in op.outputs:
            t = model.tensors[o]
            if t.kind in (KIND_CONSTANT, KIND_INPUT):
                fail(f"op {op.name!r} writes {t.name!r}, which is a constant or graph input")
            writers[o] += 1
            if writers[o] > 1:
                fail(f"tensor {t.name!r} is produced by more than one operator")
            produced[o] = True
    for spec in model.outputs:
        if not produced[spec.tensor]:
            fail(f"graph output {model.tensors[spec.tensor].name!r} is never produced")
    io_inputs = {s.tensor for s in model.inputs}
    io_outputs = {s.tensor for s in model.outputs}
    for i, t in enumerate(model.tensors):
        if t.kind == KIND_INPUT and i not in io_inputs:
            fail(f"tensor {t.name!r} has kind graph input but no IO record")
        if t.kind == KIND_OUTPUT and i not in io_outputs:
            fail(f"tensor {t.name!r} has kind graph output but no IO record")


def read_model(data: bytes) -> SimModel:
    """Parse and validate a model; raises ModelFormatError naming the first invalid field."""
    try:
        return _Reader(data).read()
    except struct.error as exc:  # defensive: every unpack is range-checked first
        raise ModelFormatError(f"invalid rknnlink model: truncated record ({exc})") from exc
