"""The daemon and client end to end on loopback: handshake, cache, inference, queries, concurrency, errors."""

from __future__ import annotations

import hashlib
import threading

import grpc
import numpy as np
import pytest
import sim_models

from rknnlink import PROTOCOL_VERSION
from rknnlink.client import Board, BoardError, RemoteRknnError, SessionLostError
from rknnlink.runtime import RknnError, RuntimeLibrary
from rknnlink.v1 import rknnlink_pb2 as pb
from rknnlink.v1 import rknnlink_pb2_grpc as pb_grpc


def _stub(address: str):
    channel = grpc.insecure_channel(address)
    return channel, pb_grpc.RknnLinkStub(channel)


def _x(seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, 3, 8, 8)).astype(np.float32)


def test_handshake_and_device_info(board):
    info = board.info
    assert info.platform == "rk3588" and info.backend == "sim" and info.npu_cores == 3
    assert info.protocol_version == PROTOCOL_VERSION and info.daemon_version
    assert info.serial.startswith("sim-rk3588") and info.library_path.endswith(".so")
    assert board.client_id and board.max_message_bytes == 64 << 20


@pytest.mark.parametrize("request_kwargs, advice", [
    ({"protocol_version": 0, "client_version": "0.0.1"}, "pip install -U rknnlink"),
    ({"protocol_version": PROTOCOL_VERSION, "min_daemon_protocol": 99, "client_version": "9.0"},
     "rknnlink deploy sim-rk3588"),
])
def test_incompatible_versions_say_which_side_to_update(daemon, request_kwargs, advice):
    channel, stub = _stub(daemon.address)
    with channel:
        with pytest.raises(grpc.RpcError) as info:
            stub.Hello(pb.HelloRequest(**request_kwargs), timeout=10)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert advice in info.value.details()
    assert ("rknnlink-error-kind", "incompatible-version") in tuple(info.value.trailing_metadata())


def test_health_and_reflection_services(daemon):
    health_pb2 = pytest.importorskip("grpc_health.v1.health_pb2")
    health_pb2_grpc = pytest.importorskip("grpc_health.v1.health_pb2_grpc")
    reflection_pb2 = pytest.importorskip("grpc_reflection.v1alpha.reflection_pb2")
    reflection_pb2_grpc = pytest.importorskip("grpc_reflection.v1alpha.reflection_pb2_grpc")
    with grpc.insecure_channel(daemon.address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="rknnlink.v1.RknnLink"), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        answers = list(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                                 timeout=10))
        names = {s.name for s in answers[0].list_services_response.service}
        assert "rknnlink.v1.RknnLink" in names


def test_run_and_pipeline_equal_in_process(board, conv_model, sim_library):
    model, _, _ = conv_model
    inputs = [_x(seed) for seed in range(6)]
    with RuntimeLibrary.load(backend="sim").init(model) as ctx:
        expected = [ctx.infer([x], formats=["nchw"])[0] for x in inputs]
    with board.load_model(model) as session:
        assert session.input_attrs[0].name == "x" and session.output_attrs[0].dims == (1, 4, 8, 8)
        for x, want in zip(inputs, expected):
            np.testing.assert_array_equal(session.run([x], formats=["nchw"])[0], want)
        with session.pipeline(depth=3) as pipe:
            streamed = list(pipe.map([[x] for x in inputs], formats=["nchw"]))
        for got, want in zip(streamed, expected):
            np.testing.assert_array_equal(got[0], want)
        assert len(streamed) == len(inputs)
        raw = session.run([inputs[0].transpose(0, 2, 3, 1)], want_float=False)
        np.testing.assert_array_equal(raw[0], expected[0])


def test_pipeline_submit_and_get_in_order(board):
    with board.load_model(sim_models.two_input_model()) as session, session.pipeline(depth=2) as pipe:
        ids = [pipe.submit([np.full((1, 16), i, np.float32), np.ones((1, 16), np.float32)]) for i in range(7)]
        assert ids == sorted(ids)
        results = [pipe.get()[0][0, 0] for _ in range(3)] + [r[0][0, 0] for r in pipe.results()]
        assert results == [i + 1.0 for i in range(7)]


def test_queries_perf_memory_sdk_dumps(board, conv_model):
    model, weight, bias = conv_model
    with board.load_model(model, perf=True, eval_mem=True) as session:
        x = _x(3)
        session.run([x], formats=["nchw"])
        perf = session.perf()
        assert "Network Layer Information Table" in perf.text
        assert [r["full_name"] for r in perf.rows] == ["InputOperator:x", "Conv:conv0", "OutputOperator:y"]
        assert perf.total_us == sum(int(r["time_us"]) for r in perf.rows)
        assert session.perf_run_us() >= 0
        mem = session.memory()
        assert mem["total_weight_size"] >= weight.nbytes + bias.nbytes
        api, drv = session.sdk_version()
        assert api and drv
        dumps = session.dumps()  # dumps were off: the daemon repeats the last run with dumps on
        np.testing.assert_allclose(dumps["y"], sim_models.conv_relu_reference(x, weight, bias), atol=1e-4)
        tensors = session.dump_tensors(include_raw=True)
        assert {t[0]["name"] for t in tensors} == {"x", "y"} and all(t[2] is not None for t in tensors)
    assert board.device_info().runtime_version


def test_model_cache_sends_each_model_once(board, daemon):
    model, weight, bias = sim_models.gemm_model(seed=7 + (board.carrier == "direct"))  # 3 MiB: 4 chunks; per carrier
    before = board.stats()["model_bytes_received"]
    first = board.load_model(model)
    assert board.model_bytes_sent == len(model)
    assert board.stats()["model_bytes_received"] - before == len(model)
    second = board.load_model(model)
    assert board.model_bytes_sent == len(model)  # the second load sent no model bytes
    assert board.stats()["model_bytes_received"] - before == len(model)
    x = np.random.default_rng(0).standard_normal((1, 1024)).astype(np.float32)
    np.testing.assert_allclose(second.run([x])[0], x @ weight + bias, rtol=1e-4, atol=1e-4)
    first.close()
    second.close()
    with Board.connect(daemon.address) as other:  # another client also finds it cached
        other.load_model(model).close()
        assert other.model_bytes_sent == 0


def test_upload_with_a_wrong_hash_is_refused_and_not_kept(daemon, board):
    model = sim_models.conv_relu_model(seed=11)[0]
    wrong = hashlib.sha256(b"other bytes").hexdigest()
    channel, stub = _stub(daemon.address)
    with channel, pytest.raises(grpc.RpcError) as info:
        stub.UploadModel(iter([pb.ModelChunk(sha256=wrong, total_size=len(model), data=model)]), timeout=10,
                         metadata=board._metadata)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "hash to" in info.value.details()
    assert not board.has_model(wrong)
    cache = daemon_cache_dir(daemon)
    assert not list(cache.glob(".upload-*")) and not (cache / f"{wrong}.rknn").exists()


def daemon_cache_dir(daemon):
    from pathlib import Path

    return Path(daemon.workdir.name) / "cache"


def test_eight_clients_at_once(daemon, conv_model):
    model, weight, bias = conv_model
    errors, results = [], {}

    def client(n: int) -> None:
        try:
            with Board.connect(daemon.address) as b, b.load_model(model) as s:
                outs = [s.run([_x(n * 100 + i)], formats=["nchw"])[0] for i in range(15)]
                results[n] = all(np.allclose(o, sim_models.conv_relu_reference(_x(n * 100 + i), weight, bias),
                                             atol=1e-4) for i, o in enumerate(outs))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and results == {n: True for n in range(8)}


@pytest.mark.parametrize("model, words", [
    (b"\x00garbage" * 64, "RKNN_ERR_MODEL_INVALID"),
    ("truncated", "RKNN_ERR_MODEL_INVALID"),
    (b"RKNN\0\0\0\0" + b"\x06" + b"\0" * 300, "vendor-compiled"),
])
def test_bad_models_give_clear_errors(board, conv_model, model, words):
    data = conv_model[0][: len(conv_model[0]) // 2] if model == "truncated" else model
    with pytest.raises(RemoteRknnError) as info:
        board.load_model(data)
    assert info.value.code == -6 and words in str(info.value)
    assert info.value.status == grpc.StatusCode.INVALID_ARGUMENT
    with board.load_model(conv_model[0]) as session:  # the daemon still serves
        session.run([_x()], formats=["nchw"])


def test_bad_inputs_give_clear_errors_and_the_session_keeps_working(board, conv_model):
    with board.load_model(conv_model[0]) as session:
        cases = [([_x(), _x()], "1 input(s)"), ([_x()[:, :2]], "expects 192 elements")]
        for inputs, words in cases:
            with pytest.raises(RemoteRknnError) as info:
                session.run(inputs, formats=["nchw"])
            assert info.value.code == -8 and words in str(info.value)
        with pytest.raises(TypeError, match="not supported"):
            session.run([_x().astype(np.complex64)])
        with pytest.raises(ValueError, match="unknown"):
            session.run([_x()], formats=["nc1hwc2"])
        with _raw_pipeline(session) as raw:  # what a raw client may send: a data/shape mismatch, a bad dtype
            with pytest.raises(RemoteRknnError, match="do not match shape"):
                raw.run([(0, 0, False, (1, 3, 8, 8), b"\0" * 100)])
            with pytest.raises(RemoteRknnError) as info:
                raw.run([(pb.DT_BFLOAT16, 0, False, (1, 3, 8, 8), b"\0" * 384)])
            assert info.value.code == -8
        with session.pipeline() as pipe:  # a bad request inside a pipeline fails alone, on both carriers
            pipe.submit([_x()], formats=["nchw"])
            pipe.submit([_x()[:, :1]], formats=["nchw"])
            pipe.submit([_x()], formats=["nchw"])
            assert pipe.get()[0].shape == (1, 4, 8, 8)
            with pytest.raises(RemoteRknnError, match="expects 192 elements"):
                pipe.get()
            assert pipe.get()[0].shape == (1, 4, 8, 8)
        assert session.run([_x()], formats=["nchw"])[0].shape == (1, 4, 8, 8)


def test_calls_interleaved_with_run_on_one_session(board, conv_model):
    with board.load_model(conv_model[0], perf=True) as session:
        for _ in range(3):
            session.run([_x()], formats=["nchw"])
            assert "Conv:conv0" in session.perf().text
            session.run([_x()], formats=["nchw"])
            assert session.memory()["total_weight_size"] > 0
            with session.pipeline(2) as pipe:
                assert len(list(pipe.map([[_x()]] * 3, formats=["nchw"]))) == 3


def test_closed_session_and_unknown_session(board, conv_model):
    session = board.load_model(conv_model[0])
    sid = session.id
    session.close()
    session.close()  # idempotent
    with pytest.raises(SessionLostError, match="does not exist"):
        board._call("GetPerfRun", pb.SessionRequest(session_id=sid))
    with pytest.raises(SessionLostError, match="does not exist"):
        session.run([_x()], formats=["nchw"])
    with pytest.raises(SessionLostError):
        board._call("GetPerf", pb.SessionRequest(session_id="nope"))


def test_unreachable_address_is_a_clear_connection_error():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: nothing answers
        with pytest.raises(ConnectionError, match=f"127.0.0.1:{port}.*rknnlink serve"):
            Board.connect(f"127.0.0.1:{port}", timeout=1.0)


def test_oversized_messages(board, daemon, conv_model):
    big = np.zeros((1, 3, 3000, 3000), np.float32)  # 108 MB > the daemon's 64 MiB
    with board.load_model(conv_model[0]) as session:
        with pytest.raises(BoardError, match="--max-message-mb"):
            session.run([big])
        with _raw_pipeline(session) as raw:  # a raw client's oversized frame
            if board.carrier == "relay":  # the daemon's gRPC message limit
                with pytest.raises(BoardError) as info:
                    raw.run([(0, 0, False, big.shape, big)])
                assert info.value.status == grpc.StatusCode.RESOURCE_EXHAUSTED
            else:  # the worker checks the frame's length before it reads it
                with pytest.raises(RemoteRknnError, match="--max-message-mb"):
                    raw.run([(0, 0, False, big.shape, big)])
        assert session.run([_x()], formats=["nchw"])[0].shape == (1, 4, 8, 8)


def _raw_pipeline(session):
    """A pipeline on the session's carrier whose inputs are datawire tuples as they are, unchecked."""
    from rknnlink.client.data import Pipeline

    return Pipeline(session._open_carrier(), 1, lambda inputs, *_: (inputs, False), session._request_id, 1 << 24,
                    session._data_lost)


def test_vendor_only_calls_are_reported(board, conv_model):
    with board.load_model(conv_model[0]) as session:
        with pytest.raises(RemoteRknnError, match="no run happened yet"):
            session.dumps()


def test_int8_raw_outputs_and_attrs_cross_the_link(board, sim_library):
    model = sim_models.int8_relu_model(scale=0.1, zero_point=3)
    x = np.linspace(-1, 1, 16, dtype=np.float32).reshape(1, 16)
    with RuntimeLibrary.load(backend="sim").init(model) as ctx:
        want_raw, want_float = ctx.infer([x], want_float=False)[0], ctx.infer([x])[0]
    with board.load_model(model) as session:
        attr = session.output_attrs[0]
        assert (attr.dtype, attr.qnt_type, attr.zp) == (np.dtype(np.int8), 2, 3)
        raw = session.run([x], want_float=False)[0]
        assert raw.dtype == np.int8 and raw.shape == (1, 16)
        np.testing.assert_array_equal(raw, want_raw)
        np.testing.assert_array_equal(session.run([x])[0], want_float)
        q = (np.round(x / 0.1) + 3).astype(np.int8)
        np.testing.assert_array_equal(session.run([q], pass_through=[True], want_float=False)[0], want_raw)


def test_core_mask_is_applied_at_load(board, conv_model):
    with board.load_model(conv_model[0], core_mask=3) as session:
        assert session.run([_x()], formats=["nchw"])[0].shape == (1, 4, 8, 8)
    with pytest.raises(RemoteRknnError, match="core mask") as info:
        board.load_model(conv_model[0], core_mask=8)
    assert info.value.code in (-1, -5) and "8" in info.value.message
    assert not str(info.value).startswith(f"{info.value.name} ({info.value.code}): {info.value.name}")


def test_integer_index_inputs_run_on_the_board_as_in_process(board):
    """An embedding lookup (int64 indices, Gather): the client carries integers as exact float32, as the
    in-process binding does, so the board gives the same rows."""
    import onnx
    from onnx import TensorProto, helper

    from rknnlink.model.builder import BuildConfig, build

    table = np.random.default_rng(3).standard_normal((50, 8)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["rows"], axis=0)], "embedding",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 6])],
        [helper.make_tensor_value_info("rows", TensorProto.FLOAT, [1, 6, 8])],
        [onnx.numpy_helper.from_array(table, "table")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    data = build(model, BuildConfig(target_platform="rk3588"), do_quantization=False).data
    ids = np.array([[0, 7, 49, 3, 3, 12]], dtype=np.int64)
    with board.load_model(data) as session:
        rows = session.run([ids])[0]
    np.testing.assert_allclose(rows.reshape(1, 6, 8), table[ids[0]][None], rtol=1e-3, atol=1e-3)


def _exercise(session) -> dict:
    """What any session kind must do alike: run, pipeline (a runtime error fails alone), queries, dumps."""
    xs = [_x(seed) for seed in range(4)]
    out = {"run": [session.run([x], formats=["nchw"])[0] for x in xs]}
    with session.pipeline(depth=2) as pipe:
        out["piped"] = [o[0] for o in pipe.map([[x] for x in xs], formats=["nchw"])]
        pipe.submit([_x()[:, :1]], formats=["nchw"])
        with pytest.raises(RknnError, match="expects 192 elements"):
            pipe.get()
        assert pipe.run([xs[0]], formats=["nchw"])[0].shape == (1, 4, 8, 8)
    out["perf_rows"] = [r["full_name"] for r in session.perf().rows]
    out["weights"] = session.memory()["total_weight_size"]
    out["sdk"] = bool(session.sdk_version()[0])
    out["dumps"] = sorted(session.dumps())
    out["attrs"] = [(a.name, a.dims) for a in session.input_attrs + session.output_attrs]
    return out


def test_an_in_process_session_has_the_board_sessions_interface(board, conv_model, sim_library):
    from rknnlink.client.local import InProcessSession

    with InProcessSession(conv_model[0], perf=True, library=sim_library) as local:
        assert local.carrier == "in-process"
        want = _exercise(local)
    with board.load_model(conv_model[0], perf=True) as session:
        assert session.carrier == board.carrier
        got = _exercise(session)
    for key in ("run", "piped"):
        assert all(g.tobytes() == w.tobytes() for g, w in zip(got[key], want[key])), key
    assert {k: v for k, v in got.items() if k not in ("run", "piped")} == \
        {k: v for k, v in want.items() if k not in ("run", "piped")}
