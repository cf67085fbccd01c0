"""rknnlink.v1.messages: classes built from the descriptor (older protobuf/grpcio on boards) interoperate."""

from __future__ import annotations

import pytest

from rknnlink.client import Board
from rknnlink.v1 import messages
from rknnlink.v1 import rknnlink_pb2 as generated
from rknnlink.v1.protocol import PROTOCOL_VERSION


def test_descriptor_built_classes_match_the_generated_ones():
    built = messages._build_module()
    request = generated.CreateSessionRequest(client_id="c", model_sha256="ab" * 32, core_mask=3, dump_layers=True,
                                             model_proof=b"\x00\xff" * 16)
    data = request.SerializeToString()
    again = built.CreateSessionRequest.FromString(data)
    assert again.SerializeToString() == data
    assert (built.DT_INT8, built.FORMAT_NCHW, built.DUMP_RAW) == (2, 1, 1)
    assert set(built.DESCRIPTOR.message_types_by_name) == set(generated.DESCRIPTOR.message_types_by_name)


def test_stub_from_descriptor_talks_to_the_daemon(daemon):
    import grpc

    with grpc.insecure_channel(daemon.address) as channel:
        stub = messages.make_stub(channel)
        reply = stub.Hello(messages.pb.HelloRequest(protocol_version=PROTOCOL_VERSION, client_version="test"),
                           timeout=10)
        assert reply.device.platform == "rk3588" and reply.client_id
        assert stub.GetStats(messages.pb.StatsRequest(), timeout=10).daemon_pid > 0
    with Board.connect(daemon.address) as board:
        assert board.device_info().backend == "sim"


def test_an_old_client_is_told_to_update(daemon):
    """Protocol 3 has one data plane (no Run/RunStream); protocol 1 and 2 clients get the handshake's message."""
    import grpc

    with grpc.insecure_channel(daemon.address) as channel:
        stub = messages.make_stub(channel)
        for old in (1, 2):
            with pytest.raises(grpc.RpcError) as info:
                stub.Hello(messages.pb.HelloRequest(protocol_version=old, client_version="0.0.9"), timeout=10)
            assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            details = info.value.details()
            assert f"speaks protocol {old}" in details and "needs protocol 3" in details
            assert "pip install -U rknnlink" in details
