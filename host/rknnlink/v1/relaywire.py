"""The `Relay` stream's messages written and read without protobuf objects: one copy of a frame on the way
out, none on the way in.

`RelayFrame` (rknnlink.proto) has one field, `bytes frame = 1`; its wire form is the tag byte 0x0A, the
length as a varint, then the bytes. A client that builds the message object joins the frame's parts into
one bytes object and protobuf copies it again to serialize; here the header is packed and the parts are
joined once behind it, and a reply's frame is a view of the received message. The daemon's side stays the
generated protobuf code: the bytes are the same (tests/transport/test_relaywire.py proves it both ways).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

RELAY_METHOD = "/rknnlink.v1.RknnLink/Relay"
_FRAME_TAG = 0x0A  # field 1, wire type 2 (length-delimited)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode(parts: Sequence[Any]) -> bytes:
    """A serialized RelayFrame whose `frame` is the concatenation of `parts` (bytes-like)."""
    size = sum(memoryview(part).nbytes for part in parts)
    return b"".join([bytes([_FRAME_TAG]) + _varint(size), *parts])


def frame_of(message: bytes) -> memoryview:
    """The `frame` field of a serialized RelayFrame, as a view of `message` (ValueError when malformed).

    An empty message is an empty frame (protobuf leaves a default field out)."""
    view = memoryview(message)
    if not view.nbytes:
        return view
    if view[0] != _FRAME_TAG:
        raise ValueError("a Relay message that is not one RelayFrame.frame field")
    size, shift, pos = 0, 0, 1
    while True:
        if pos >= view.nbytes or shift > 63:
            raise ValueError("a Relay message with a truncated length")
        byte = view[pos]
        pos += 1
        size |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    if pos + size != view.nbytes:
        raise ValueError("a Relay message whose frame length does not match the message")
    return view[pos:]


def relay_call(channel: Any) -> Callable[..., Any]:
    """The Relay method on `channel` with these encoders: requests are `encode(...)` bytes, replies bytes."""
    return channel.stream_stream(RELAY_METHOD, request_serializer=None, response_deserializer=None)
