"""fastwire encodes and decodes exactly what protobuf does for RunRequest/RunResponse."""

from __future__ import annotations

import numpy as np
import pytest

from rknnlink.v1 import fastwire
from rknnlink.v1 import rknnlink_pb2 as pb


def test_request_encoding_is_read_by_protobuf():
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    data = fastwire.encode_run_request("sess", 300, [fastwire.encode_tensor(0, a.shape, a, pb.FORMAT_NHWC),
                                                     fastwire.encode_tensor(3, [5], b"abcde", 0, True)], True)
    m = pb.RunRequest.FromString(data)
    assert (m.session_id, m.request_id, m.raw_outputs) == ("sess", 300, True)
    assert list(m.inputs[0].shape) == [2, 3, 4] and m.inputs[0].format == pb.FORMAT_NHWC
    np.testing.assert_array_equal(np.frombuffer(m.inputs[0].data, np.float32).reshape(2, 3, 4), a)
    assert (m.inputs[1].dtype, m.inputs[1].data, m.inputs[1].pass_through) == (3, b"abcde", True)


def test_protobuf_encoding_is_read_by_fastwire_including_unknown_fields():
    m = pb.RunRequest(session_id="s1", request_id=2**40, raw_outputs=False, inputs=[
        pb.Tensor(name="x", dtype=pb.DT_UINT8, shape=[1, 224, 224, 3], data=b"\x07" * 150528, pass_through=True)])
    extra = b"\xa8\x06\x05" + b"\xb2\x06\x03abc"  # unknown fields 101 (varint) and 102 (bytes)
    view = fastwire.decode_run_request(m.SerializeToString() + extra)
    assert (view.session_id, view.request_id, view.raw_outputs) == ("s1", 2**40, False)
    t = view.inputs[0]
    assert (t.name, t.dtype, t.shape, t.pass_through) == ("x", 3, [1, 224, 224, 3], True)
    assert isinstance(t.data, memoryview) and bytes(t.data) == b"\x07" * 150528


def test_unpacked_shape_and_negative_run_us():
    unpacked = b"\x10\x00" + b"\x18\x02\x18\x05"  # dtype 0, shape 2 then 5 as unpacked varints
    tensor = fastwire.decode_tensor(memoryview(unpacked))
    assert tensor.shape == [2, 5]
    resp = pb.RunResponse.FromString(fastwire.encode_run_response(1, [], -5))
    assert resp.run_us == -5 and fastwire.decode_run_response(resp.SerializeToString()).run_us == -5


@pytest.mark.parametrize("data", [b"\x0a\x05ab", b"\x10", b"\x0b"])
def test_malformed_bytes_are_reported(data):
    with pytest.raises(fastwire.WireError):
        fastwire.decode_run_response(data)
    request = fastwire.decode_run_request(data)  # the daemon answers INVALID_ARGUMENT with the reason
    assert request.error.startswith("malformed run request") and not request.inputs


def test_decoding_stops_at_the_protocol_limits():
    many = b"\x1a\x00" * 1000  # 1000 empty input tensors
    assert "more than 256 inputs" in fastwire.decode_run_request(many).error
    deep = b"\x1a\x13" + b"\x1a\x11" + b"\x01" * 17  # one tensor with 17 packed dimensions
    assert "more than 16 dimensions" in fastwire.decode_run_request(deep).error
