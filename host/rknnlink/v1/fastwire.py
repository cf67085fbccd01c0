"""Hand-written protobuf wire encoding of the hot messages (RunRequest, RunResponse and their Tensors).

Why: upb copies a tensor's bytes several times on the way (into the message, again into a repeated field,
again when serialising), which costs more than the network on loopback. These functions produce and read
the exact proto3 wire format of rknnlink.proto, so any protobuf peer interoperates, while tensor bytes are
joined once when encoding and handed out as memoryview slices (zero copy) when decoding. Unknown fields are
skipped, packed and unpacked repeated scalars are both accepted, as the protobuf rules require.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Sequence, Tuple

from rknnlink.v1.protocol import MAX_DIMS, MAX_TENSORS

_U64 = (1 << 64) - 1
# Field numbers (rknnlink.proto).
_REQ_SESSION, _REQ_ID, _REQ_INPUTS, _REQ_RAW = 1, 2, 3, 4
_RESP_ID, _RESP_OUTPUTS, _RESP_RUN_US = 1, 2, 3
_T_NAME, _T_DTYPE, _T_SHAPE, _T_DATA, _T_FORMAT, _T_PASS = 1, 2, 3, 4, 5, 6


class WireError(ValueError):
    """Malformed protobuf bytes."""


def varint(value: int) -> bytes:
    value &= _U64
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _key(number: int, wire_type: int) -> bytes:
    return varint((number << 3) | wire_type)


def _read_varint(buf: memoryview, pos: int) -> Tuple[int, int]:
    result = shift = 0
    end = len(buf)
    while True:
        if pos >= end or shift > 63:
            raise WireError("truncated or overlong varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _fields(buf: memoryview):
    """Yield (number, wire_type, value) with value an int (varint/fixed) or a memoryview (length-delimited)."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _read_varint(buf, pos)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, pos = _read_varint(buf, pos)
        elif wire_type == 2:
            length, pos = _read_varint(buf, pos)
            if pos + length > end:
                raise WireError(f"field {number}: {length} bytes announced, {end - pos} left")
            value, pos = buf[pos:pos + length], pos + length
        elif wire_type == 1:
            value, pos = int.from_bytes(buf[pos:pos + 8], "little"), pos + 8
        elif wire_type == 5:
            value, pos = int.from_bytes(buf[pos:pos + 4], "little"), pos + 4
        else:
            raise WireError(f"field {number}: unsupported wire type {wire_type}")
        if pos > end:
            raise WireError("truncated message")
        yield number, wire_type, value


@dataclass
class TensorView:
    """A decoded Tensor; `data` is a memoryview into the received message (no copy)."""

    name: str = ""
    dtype: int = 0
    shape: List[int] = field(default_factory=list)
    data: Any = b""
    format: int = 0
    pass_through: bool = False


@dataclass
class RunRequestView:
    session_id: str = ""
    request_id: int = 0
    inputs: List[TensorView] = field(default_factory=list)
    raw_outputs: bool = False
    error: str = ""   # why decoding stopped (a protocol limit); the daemon answers INVALID_ARGUMENT with it


@dataclass
class RunResponseView:
    request_id: int = 0
    outputs: List[TensorView] = field(default_factory=list)
    run_us: int = 0


def encode_tensor(dtype: int, shape: Sequence[int], data: Any, fmt: int = 0, pass_through: bool = False) -> list:
    """The parts of one Tensor message body (bytes objects and one buffer for the data)."""
    parts: list = []
    if dtype:
        parts += [_key(_T_DTYPE, 0), varint(int(dtype))]
    if len(shape):
        packed = b"".join(varint(int(d)) for d in shape)
        parts += [_key(_T_SHAPE, 2), varint(len(packed)), packed]
    view = memoryview(data).cast("B")
    if view.nbytes:
        parts += [_key(_T_DATA, 2), varint(view.nbytes), view]
    if fmt:
        parts += [_key(_T_FORMAT, 0), varint(int(fmt))]
    if pass_through:
        parts += [_key(_T_PASS, 0), b"\x01"]
    return parts


def _embed(number: int, parts: list) -> list:
    size = sum(memoryview(p).nbytes for p in parts)
    return [_key(number, 2), varint(size), *parts]


def encode_run_request(session_id: str, request_id: int, tensors: Sequence[list], raw_outputs: bool) -> bytes:
    """A serialised RunRequest; `tensors` are encode_tensor() results. One copy of the tensor bytes."""
    parts: list = []
    if session_id:
        sid = session_id.encode()
        parts += [_key(_REQ_SESSION, 2), varint(len(sid)), sid]
    if request_id:
        parts += [_key(_REQ_ID, 0), varint(request_id)]
    for tensor in tensors:
        parts += _embed(_REQ_INPUTS, tensor)
    if raw_outputs:
        parts += [_key(_REQ_RAW, 0), b"\x01"]
    return b"".join(parts)


def encode_run_response(request_id: int, tensors: Sequence[list], run_us: int) -> bytes:
    parts: list = []
    if request_id:
        parts += [_key(_RESP_ID, 0), varint(request_id)]
    for tensor in tensors:
        parts += _embed(_RESP_OUTPUTS, tensor)
    if run_us:
        parts += [_key(_RESP_RUN_US, 0), varint(run_us)]
    return b"".join(parts)


def decode_tensor(buf: memoryview) -> TensorView:
    t = TensorView()
    for number, wire_type, value in _fields(buf):
        if number == _T_NAME and wire_type == 2:
            t.name = bytes(value).decode("utf-8", "replace")
        elif number == _T_DTYPE and wire_type == 0:
            t.dtype = value
        elif number == _T_SHAPE and wire_type == 2:
            pos = 0
            while pos < len(value):
                dim, pos = _read_varint(value, pos)
                t.shape.append(_signed(dim))
                _check_dims(t.shape)
        elif number == _T_SHAPE and wire_type == 0:
            t.shape.append(_signed(value))
            _check_dims(t.shape)
        elif number == _T_DATA and wire_type == 2:
            t.data = value
        elif number == _T_FORMAT and wire_type == 0:
            t.format = value
        elif number == _T_PASS and wire_type == 0:
            t.pass_through = bool(value)
    return t


class LimitError(WireError):
    """A message beyond the protocol's limits (rknnlink.v1.protocol): decoding stops before allocating more."""


def _check_dims(shape: List[int]) -> None:
    if len(shape) > MAX_DIMS:
        raise LimitError(f"a tensor with more than {MAX_DIMS} dimensions")


def decode_run_request(data: bytes) -> RunRequestView:
    """A RunRequest; beyond MAX_TENSORS inputs or MAX_DIMS dimensions (or malformed) it stops decoding and
    returns the view with `error` set, so a hostile message never costs more than its own bytes."""
    req = RunRequestView()
    try:
        for number, wire_type, value in _fields(memoryview(data)):
            if number == _REQ_SESSION and wire_type == 2:
                req.session_id = bytes(value[:256]).decode("utf-8", "replace")
            elif number == _REQ_ID and wire_type == 0:
                req.request_id = value
            elif number == _REQ_INPUTS and wire_type == 2:
                if len(req.inputs) >= MAX_TENSORS:
                    raise LimitError(f"a run request with more than {MAX_TENSORS} inputs (at most {MAX_TENSORS}); "
                                     f"models have at most that many")
                req.inputs.append(decode_tensor(value))
            elif number == _REQ_RAW and wire_type == 0:
                req.raw_outputs = bool(value)
    except WireError as exc:
        req.inputs = []
        req.error = f"malformed run request: {exc}"
    return req


def decode_run_response(data: bytes) -> RunResponseView:
    resp = RunResponseView()
    for number, wire_type, value in _fields(memoryview(data)):
        if number == _RESP_ID and wire_type == 0:
            resp.request_id = value
        elif number == _RESP_OUTPUTS and wire_type == 2:
            resp.outputs.append(decode_tensor(value))
        elif number == _RESP_RUN_US and wire_type == 0:
            resp.run_us = _signed(value)
    return resp
