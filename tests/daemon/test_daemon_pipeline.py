"""Pipelining on the data plane: the worker reads ahead while it runs, results stay those of in process
whatever the mix of input layouts, and large inputs and outputs with a client that reads late never
deadlock. No test here measures a duration: the deadlock checks wait (generously) for something that
either happens or never does."""

from __future__ import annotations

import socket
import threading

import numpy as np
import pytest
import sim_models
from test_daemon_tls_data import _board as _tls_board
from test_daemon_tls_data import tls_daemon  # noqa: F401 - the TLS daemon fixture, for the TLS carrier

from rknnlink.client import RemoteRknnError
from rknnlink.client.data import DirectCarrier, Pipeline
from rknnlink.model.format import KIND_INPUT, KIND_OUTPUT, IoSpec, SimModel, SimOp, SimTensor, write_model
from rknnlink.runtime import RuntimeLibrary
from rknnlink.v1 import datawire

DEADLOCK_TIMEOUT = 120.0  # seconds: far beyond what these transfers take on any machine


def _neg_model(n: int) -> bytes:
    """y = -x over (1, n) float32: input and output of the same (large) size, every value checkable."""
    tensors = [SimTensor("x", "float32", (1, n), kind=KIND_INPUT), SimTensor("y", "float32", (1, n), kind=KIND_OUTPUT)]
    return write_model(SimModel(name="neg", tensors=tensors, ops=[SimOp("Neg", "neg0", [0], [1])],
                                inputs=[IoSpec(0)], outputs=[IoSpec(1)]))


def _finishes(target, timeout: float = DEADLOCK_TIMEOUT):
    """Run target() in a thread; its result, or pytest.fail when it is still blocked after `timeout`."""
    box: dict = {}

    def run() -> None:
        try:
            box["result"] = target()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        pytest.fail(f"still blocked after {timeout:.0f} s: the two ends wait for each other")
    if "error" in box:
        raise box["error"]
    return box["result"]


def test_mixed_layouts_in_one_pipeline_equal_in_process(board, conv_model):
    """Every layout the worker prepares (dtype, format, raw outputs, a bad request between good ones) gives
    what RuntimeContext.infer gives, in order, on both carriers."""
    model, _, _ = conv_model
    rng = np.random.default_rng(3)
    nchw = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    cases = [
        (dict(inputs=[nchw], formats=["nchw"]), {}),
        (dict(inputs=[nchw.transpose(0, 2, 3, 1).copy()]), {}),                                   # nhwc
        (dict(inputs=[(nchw * 10).clip(0, 255).astype(np.uint8)], formats=["nchw"]), {}),       # uint8
        (dict(inputs=[nchw.astype(np.float16)], formats=["nchw"]), {}),                         # float16
        (dict(inputs=[nchw], formats=["nchw"]), dict(want_float=False)),                        # raw outputs
        (dict(inputs=[np.zeros((1, 5), np.float32)]), {}),                                      # refused
        (dict(inputs=[nchw[:, :, ::-1]], formats=["nchw"]), {}),                                # not contiguous
        (dict(inputs=[nchw], formats=["nchw"]), {}),                                            # first layout again
    ]
    with RuntimeLibrary.load(backend="sim").init(model) as ctx:
        expected = []
        for args, kwargs in cases:
            try:
                expected.append(ctx.infer(args["inputs"], args.get("formats"), None, **kwargs)[0])
            except Exception:  # noqa: BLE001 - the same request fails on the board too
                expected.append(None)
    assert expected[5] is None and all(e is not None for i, e in enumerate(expected) if i != 5)
    with board.load_model(model) as session, session.pipeline(depth=4) as pipe:
        assert session.carrier == board.carrier
        for _round in range(3):  # layouts come back to prepared ones
            for args, kwargs in cases:
                pipe.submit(args["inputs"], args.get("formats"), **kwargs)
            for want in expected:
                if want is None:
                    with pytest.raises(RemoteRknnError, match="expects 192 elements"):
                        pipe.get()
                else:
                    np.testing.assert_array_equal(pipe.get()[0], want)
        for args, kwargs in cases[:2]:  # run() after the pipeline: its own carrier, same results
            np.testing.assert_array_equal(session.run(args["inputs"], args.get("formats"), **kwargs)[0], expected[0])


def test_a_runtime_error_is_raised_by_its_own_get(board):
    """A failed request collected while making room for later ones is raised by its get(), not by the
    submit() that made room."""
    with board.load_model(sim_models.two_input_model()) as session, session.pipeline(depth=1) as pipe:
        good = [np.ones((1, 16), np.float32)] * 2
        pipe.submit([np.ones((1, 3), np.float32)] * 2)   # refused by the worker
        pipe.submit(good)                                # collects the refusal, must not raise it
        pipe.submit(good)
        with pytest.raises(RemoteRknnError):
            pipe.get()
        assert [float(r[0][0, 0]) for r in pipe.results()] == [2.0, 2.0]


def _late_reader_stream(board, depth: int) -> str:
    """4 MiB in and 4 MiB out per request, `depth` in flight: with 16, more than the socket buffers and the
    worker's read-ahead hold, so the client's send blocks while the worker waits to write a reply nobody
    reads yet; the client must take replies in while it sends. Results stay exact and in order."""
    n = 1 << 20
    values = [np.full((1, n), v, np.float32) for v in (0.5, 1.5, 2.5)]
    count = depth + 6
    with board.load_model(_neg_model(n)) as session:
        def stream():
            with session.pipeline(depth=depth) as pipe:
                return [float(out[0][0, -1]) for out in pipe.map([values[i % 3]] for i in range(count))]

        assert _finishes(stream) == [-(i % 3 + 0.5) for i in range(count)]
        np.testing.assert_array_equal(session.run([values[1]])[0], -values[1])
        return session.carrier


@pytest.mark.parametrize("depth", [2, 16])
def test_large_inputs_and_outputs_with_a_late_reader_do_not_deadlock(board, depth):
    assert _late_reader_stream(board, depth) == board.carrier


def test_large_frames_with_a_late_reader_over_the_tls_data_port_do_not_deadlock(tls_daemon):  # noqa: F811
    with _tls_board(tls_daemon) as board:
        assert _late_reader_stream(board, 16) == "tls"


def test_the_worker_reads_requests_ahead_of_the_one_it_answers(daemon, board):
    """Several requests in flight in the worker: while it cannot send the first reply (the client reads
    nothing yet), it still takes in the next requests, which are larger together than any socket buffer.
    A worker that read only when it had answered would leave the last send blocked forever."""
    if board.carrier != "direct":
        pytest.skip("the relay's daemon end reads on its own; this is the worker's direct socket")
    n = 2 << 20
    count = 1 + 3  # the one running and three read ahead (the worker reads up to QUEUED ahead)
    with board.load_model(_neg_model(n)) as session:
        carrier = session._open_carrier()
        assert isinstance(carrier, DirectCarrier)
        for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):  # keep little in our own buffers
            carrier.sock.setsockopt(socket.SOL_SOCKET, option, 1 << 16)
        frames = [datawire.encode_request(i + 1, [(0, 0, False, (1, n), np.full((1, n), i, np.float32))], False)
                  for i in range(count)]

        def send_all() -> bool:
            for parts in frames:
                datawire.send_parts(carrier.sock, parts)  # blocking, and reads nothing meanwhile
            return True

        assert _finishes(send_all)
        pipe = Pipeline(carrier, count, lambda *a: ([], False), session._request_id, 1 << 26, session._data_lost)
        pipe._expected.extend(range(1, count + 1))
        try:
            for i in range(count):
                np.testing.assert_array_equal(pipe.get()[0], np.full((1, n), -float(i), np.float32))
        finally:
            pipe.close()


def test_repeated_layouts_reuse_the_parse_and_different_ones_do_not():
    """RequestParser / ReplyParser: a header that differs only in its request id reuses the last parse; a
    frame of the same size with other dims, dtype or flags is parsed again (never a stale layout)."""
    def body(parts):
        return memoryview(bytearray(b"".join(bytes(memoryview(p).cast("B")) for p in parts)[datawire.LENGTH.size:]))

    data = np.arange(8, dtype=np.float32)
    parser = datawire.RequestParser()
    frames = [(1, (0, 0, False, (1, 8), data), False), (2, (0, 0, False, (1, 8), data), False),
              (3, (0, 0, False, (8, 1), data), False), (4, (0, 2, False, (8, 1), data), False),
              (5, (0, 2, True, (8, 1), data), False), (6, (0, 2, True, (8, 1), data), True),
              (7, (3, 2, True, (32,), data), True)]
    for request_id, tensor, raw in frames:
        got_id, layout, datas = parser.parse(body(datawire.encode_request(request_id, [tensor], raw)))
        want = datawire.parse_request(body(datawire.encode_request(request_id, [tensor], raw)))
        assert got_id == request_id == want[0] and layout[0] == raw == want[1]
        assert layout[1] == tuple((m["dtype"], m["fmt"], m["pt"], tuple(m["shape"])) for m in want[2])
        assert [bytes(d) for d in datas] == [data.tobytes()]
    replies = datawire.ReplyParser(1 << 20)
    for request_id, shape, dtype in [(1, (1, 8), 0), (2, (1, 8), 0), (3, (8, 1), 0), (4, (8, 1), 3), (5, (2, 4), 3)]:
        reply = body(datawire.encode_reply(request_id, 10 + request_id, [(dtype, shape, data)]))
        assert replies.parse(reply) == datawire.parse_reply(reply, 1 << 20)
        error = body(datawire.encode_error(request_id, -5, "RKNN_ERR_X", "no"))
        assert replies.parse(error) == (request_id, -5, 0, ("RKNN_ERR_X", "no"))


def test_the_reply_encoder_writes_the_bytes_of_encode_reply_whatever_the_layout_does():
    """ReplyEncoder (the worker's replies): the same bytes as encode_reply for a repeated layout, a changed
    shape, dtype or output count, scalars, small replies joined into one part and large ones referenced."""
    from rknnlink.runtime.library import output_type_of

    encoder = datawire.ReplyEncoder(output_type_of)
    small, big = np.arange(3, dtype=np.float32), np.arange(datawire.ReplyEncoder.SMALL_REPLY, dtype=np.float32)
    layouts = [[small.reshape(1, 3, 1, 1)], [small.reshape(1, 3, 1, 1)], [small.reshape(3, 1)],
               [small.astype(np.int8).reshape(3, 1)],
               [np.float32(2.5).reshape(())], [], [big, np.arange(4, dtype=np.int32)], [big]]
    for request_id, outputs in enumerate(layouts, 1):
        parts = encoder.encode(request_id, 7 * request_id, outputs)
        want = datawire.encode_reply(request_id, 7 * request_id,
                                     [(output_type_of(a.dtype), a.shape, a) for a in outputs])
        joined = b"".join(bytes(memoryview(p).cast("B")) for p in parts)
        assert joined == b"".join(bytes(memoryview(p).cast("B")) for p in want)
        small_reply = sum(a.nbytes for a in outputs) <= datawire.ReplyEncoder.SMALL_REPLY
        assert len(parts) == (1 if small_reply else 1 + len(outputs))
        rid, status, run_us, payload = datawire.parse_reply(memoryview(joined)[datawire.LENGTH.size:], 1 << 24)
        assert (rid, status, run_us) == (request_id, 0, 7 * request_id)
        assert [bytes(data) for _dtype, _shape, data in payload] == [a.tobytes() for a in outputs]


def test_a_large_frame_is_read_whole_into_its_own_buffer():
    """FrameReader: a frame larger than its read-ahead buffer arrives in pieces into a buffer of its own
    (not zeroed first); the bytes and the frame after it are intact."""
    left, right = socket.socketpair()
    with left, right:
        payload = np.random.default_rng(1).integers(0, 256, 200_000, dtype=np.uint8).tobytes()
        frames = [payload, b"small", payload[::-1]]
        sender = threading.Thread(target=lambda: [datawire.send_parts(left, [datawire.LENGTH.pack(len(f)), f])
                                                  for f in frames])
        sender.start()
        reader = datawire.FrameReader(right, 8192)
        assert [bytes(reader.read(1 << 20)) for _ in frames] == frames
        sender.join(30)
        left.close()
        assert reader.read(1 << 20) is None


def test_worker_freezes_its_heap_out_of_the_collector():
    """The worker takes what is alive after its start and the model's load out of the cyclic collector
    (worker_main.freeze_heap): a pipelining client's requests then trigger only young collections, not walks
    of the whole heap. The objects stay alive and usable; unfreeze() gives them back."""
    import gc

    from rknnlink_server.worker_main import freeze_heap

    kept = [[i] for i in range(100)]  # lists: always tracked by the collector
    kept_ids = {id(o) for o in kept}

    def in_collected_generations() -> int:
        return sum(id(o) in kept_ids for generation in range(3) for o in gc.get_objects(generation))

    assert in_collected_generations() == len(kept)
    try:
        freeze_heap()
        # By identity, not by gc.get_freeze_count(): in a process with other threads, frozen objects that die
        # by reference count leave the permanent generation and lower that count (seen in a full suite run).
        assert in_collected_generations() == 0, "the live objects were not frozen"
        assert all(gc.is_tracked(o) for o in kept) and kept[-1] == [99]
        gc.collect()
        assert in_collected_generations() == 0, "a collection thawed the frozen objects"
    finally:
        gc.unfreeze()
    assert in_collected_generations() == len(kept), "unfreeze() did not give the objects back"
    assert gc.get_freeze_count() == 0
