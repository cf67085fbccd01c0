"""Cost of the board link on loopback, against a raw TCP round trip of the same bytes measured in the same run.

Model: GlobalAveragePool over a 224x224x3 uint8 image (big input, tiny output, little compute), so the numbers
are dominated by the link. Reports:
  * per-inference overhead of the daemon path (through `rknnlink serve` minus in-process RuntimeContext.infer),
    unary and pipelined, as a ratio over the raw TCP round trip (must be <= 8; aim: <= 0.3 ms overhead);
  * pipelined throughput over in-process throughput (aim >= 95%).
The link's numbers are those of the direct data channel (client <-> session worker, rknnlink.v1.datawire),
which session.run()/pipeline() use on loopback daemons; the gRPC path (RunStream/Run through the daemon) is
measured too and printed as extra rows.
Three rounds (each measures its own raw TCP reference, so a round sees one machine load); medians are printed
with the must/aim verdict. Exit status 1 when a "must" fails.
"""

from __future__ import annotations

import os
import queue
import socket
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "runtime"))

import sim_models  # noqa: E402

from rknnlink.client import Board  # noqa: E402
from rknnlink.client.local import start_local_daemon  # noqa: E402
from rknnlink.runtime import RuntimeLibrary  # noqa: E402

N_LATENCY = 400
N_STREAM = 1500
MUST_RATIO = 8.0

_ECHO_SERVER = r"""
import socket, struct, sys
reply_size = int(sys.argv[1])
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
print(srv.getsockname()[1], flush=True)
conn, _ = srv.accept(); conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
buf = bytearray(1 << 20); reply = b"\0" * reply_size
def exact(n):
    view = memoryview(buf)[:n]; got = 0
    while got < n:
        k = conn.recv_into(view[got:], n - got)
        if not k: raise SystemExit(0)
        got += k
while True:
    exact(4); (n,) = struct.unpack("<I", bytes(buf[:4])); exact(n)
    conn.sendall(struct.pack("<I", reply_size) + reply)
"""


_GRPC_ECHO_SERVER = r"""
import sys
from concurrent import futures
import grpc
from rknnlink.v1 import fastwire
reply = fastwire.encode_run_response(1, [fastwire.encode_tensor(0, [1, 3], b"\0" * int(sys.argv[1]))], 1)
def run(request, context):
    return reply
def run_stream(requests, context):
    for _ in requests:
        yield reply
handlers = {"Run": grpc.unary_unary_rpc_method_handler(run, request_deserializer=fastwire.decode_run_request,
                                                       response_serializer=lambda b: b),
            "RunStream": grpc.stream_stream_rpc_method_handler(
                run_stream, request_deserializer=fastwire.decode_run_request, response_serializer=lambda b: b)}
server = grpc.server(futures.ThreadPoolExecutor(4))
server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("rknnlink.v1.RknnLink", handlers),))
print(server.add_insecure_port("127.0.0.1:0"), flush=True)
server.start()
server.wait_for_termination()
"""


def bare_grpc_round_trip(payload: bytes, reply_size: int) -> tuple:
    """Median round trips (us) to a do-nothing Python gRPC server, unary and one message at a time on a bidi
    stream (how session.run() talks): the floor any Python gRPC daemon pays before doing any work."""
    from rknnlink.client.local import child_env as _child_env
    from rknnlink.v1 import fastwire

    proc = subprocess.Popen([sys.executable, "-c", _GRPC_ECHO_SERVER, str(reply_size)], stdout=subprocess.PIPE,
                            text=True, env=_child_env())
    try:
        port = int(proc.stdout.readline())
        import grpc

        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary("/rknnlink.v1.RknnLink/Run", request_serializer=None,
                                       response_deserializer=fastwire.decode_run_response)
            request = fastwire.encode_run_request("s", 1, [fastwire.encode_tensor(3, [len(payload)], payload)], False)
            unary = _timed(lambda: call(request))
            requests: "queue.Queue[Any]" = queue.Queue()  # noqa: UP037
            replies = channel.stream_stream("/rknnlink.v1.RknnLink/RunStream", request_serializer=None,
                                            response_deserializer=fastwire.decode_run_response)(
                iter(requests.get, None))

            def one() -> None:
                requests.put(request)
                next(replies)

            stream = _timed(one)
            requests.put(None)
        return unary, stream
    finally:
        proc.kill()
        proc.wait()


def _timed(step: Callable[[], Any]) -> float:
    samples = []
    for i in range(N_LATENCY + 50):
        start = time.perf_counter()
        step()
        if i >= 50:
            samples.append(time.perf_counter() - start)
    return _median_us(samples)


def _median_us(samples) -> float:
    return statistics.median(samples) * 1e6


def raw_tcp_round_trip(payload: bytes, reply_size: int) -> float:
    """Median round trip (us) of a length-prefixed request/reply over loopback TCP to another process."""
    proc = subprocess.Popen([sys.executable, "-c", _ECHO_SERVER, str(reply_size)], stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline())
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            frame = struct.pack("<I", len(payload)) + payload
            reply = bytearray(reply_size + 4)
            samples = []
            for i in range(N_LATENCY + 50):
                start = time.perf_counter()
                sock.sendall(frame)
                view, got = memoryview(reply), 0
                while got < len(reply):
                    got += sock.recv_into(view[got:], len(reply) - got)
                if i >= 50:
                    samples.append(time.perf_counter() - start)
        return _median_us(samples)
    finally:
        proc.kill()
        proc.wait()


def in_process(model: bytes, image: np.ndarray) -> tuple:
    with RuntimeLibrary.load(backend="sim").init(model) as ctx:
        for _ in range(50):
            ctx.infer([image])
        samples = []
        for _ in range(N_LATENCY):
            start = time.perf_counter()
            ctx.infer([image])
            samples.append(time.perf_counter() - start)
        start = time.perf_counter()
        for _ in range(N_STREAM):
            ctx.infer([image])
        per_item = (time.perf_counter() - start) / N_STREAM
        return _median_us(samples), per_item * 1e6, ctx.infer([image])[0]


def through_daemon(address: str, model: bytes, image: np.ndarray, expected: np.ndarray, data: bool) -> tuple:
    with Board.connect(address, use_data_channel=data) as board, board.load_model(model) as session:
        np.testing.assert_array_equal(session.run([image])[0], expected)
        assert session.uses_data_channel == data, "the data channel is not in use as intended"
        for _ in range(50):
            session.run([image])
        samples, unary_samples = [], []
        for _ in range(N_LATENCY):
            start = time.perf_counter()
            session.run([image])
            samples.append(time.perf_counter() - start)
        for _ in range(N_LATENCY):
            start = time.perf_counter()
            session.run_unary([image])
            unary_samples.append(time.perf_counter() - start)
        with session.pipeline(depth=4) as pipe:
            for _ in pipe.map([image] for _ in range(100)):
                pass
            start = time.perf_counter()
            count = sum(1 for _ in pipe.map([image] for _ in range(N_STREAM)))
            per_item = (time.perf_counter() - start) / count
        return _median_us(samples), _median_us(unary_samples), per_item * 1e6


ROUNDS = 3


def one_round(model: bytes, image: np.ndarray) -> Dict[str, float]:
    """Every quantity once, the raw TCP reference included, so a round is measured under one machine load."""
    inproc_us, inproc_item_us, expected = in_process(model, image)
    reply_size = expected.nbytes
    daemon = start_local_daemon(platform="rk3588", backend="sim")
    try:
        run_us, unary_us, stream_item_us = through_daemon(daemon.address, model, image, expected, True)
        grpc_run_us, _, grpc_item_us = through_daemon(daemon.address, model, image, expected, False)
    finally:
        daemon.stop()
    tcp_us = raw_tcp_round_trip(image.tobytes(), reply_size)
    grpc_unary_us, grpc_stream_us = bare_grpc_round_trip(image.tobytes(), reply_size)
    return {"tcp": tcp_us, "grpc": grpc_unary_us, "grpc_stream": grpc_stream_us, "inproc": inproc_us,
            "run": run_us, "unary": unary_us, "inproc_item": inproc_item_us, "stream_item": stream_item_us,
            "run_overhead": run_us - inproc_us, "unary_overhead": unary_us - inproc_us,
            "stream_overhead": stream_item_us - inproc_item_us,
            "run_ratio": (run_us - inproc_us) / tcp_us, "unary_ratio": (unary_us - inproc_us) / tcp_us,
            "stream_ratio": (stream_item_us - inproc_item_us) / tcp_us,
            "throughput": inproc_item_us / stream_item_us,
            "grpc_run": grpc_run_us, "grpc_item": grpc_item_us, "grpc_run_overhead": grpc_run_us - inproc_us,
            "grpc_stream_overhead": grpc_item_us - inproc_item_us,
            "grpc_run_ratio": (grpc_run_us - inproc_us) / tcp_us,
            "grpc_stream_ratio": (grpc_item_us - inproc_item_us) / tcp_us,
            "grpc_throughput": inproc_item_us / grpc_item_us}


def main() -> int:
    model = sim_models.pool_model(224, 3)
    image = np.random.default_rng(0).integers(0, 256, size=(1, 224, 224, 3), dtype=np.uint8)
    rounds = [one_round(model, image) for _ in range(ROUNDS)]
    m = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    rows = [
        ("raw TCP round trip (150,528 B out)", m["tcp"], ""),
        ("bare Python gRPC unary echo (context)", m["grpc"], f"{m['grpc'] / m['tcp']:.2f} x TCP, no daemon work"),
        ("bare Python gRPC stream echo (context)", m["grpc_stream"],
         f"{m['grpc_stream'] / m['tcp']:.2f} x TCP, one message at a time, no daemon work"),
        ("in-process infer (median)", m["inproc"], ""),
        ("session.run, data channel (median)", m["run"], "one request at a time, direct to the worker"),
        ("run() link overhead", m["run_overhead"], f"{m['run_ratio']:.2f} x TCP (must <= {MUST_RATIO:g})"),
        ("daemon session.run_unary (median)", m["unary"], "unary Run RPC"),
        ("run_unary() link overhead", m["unary_overhead"], f"{m['unary_ratio']:.2f} x TCP"),
        ("in-process per item (loop)", m["inproc_item"], ""),
        ("data channel pipelined per item (depth 4)", m["stream_item"], ""),
        ("pipelined link overhead", m["stream_overhead"], f"{m['stream_ratio']:.2f} x TCP (must <= {MUST_RATIO:g})"),
        ("pipelined / in-process throughput", m["throughput"] * 100, "% (aim >= 95%)"),
        ("gRPC path: session.run (median)", m["grpc_run"], "kept RunStream through the daemon (extra)"),
        ("gRPC path: run() overhead", m["grpc_run_overhead"], f"{m['grpc_run_ratio']:.2f} x TCP"),
        ("gRPC path: pipelined per item", m["grpc_item"], ""),
        ("gRPC path: pipelined overhead", m["grpc_stream_overhead"], f"{m['grpc_stream_ratio']:.2f} x TCP"),
        ("gRPC path: pipelined / in-process", m["grpc_throughput"] * 100, "%"),
    ]
    print(f"bench_link: {os.cpu_count()} CPUs, {ROUNDS} rounds of {N_LATENCY} latency samples and {N_STREAM} "
          f"streamed inferences; medians over rounds (ratios: median of the per-round ratios against the raw TCP "
          f"round trip of the same round)")
    for name, value, note in rows:
        unit = "" if note.startswith("%") else " us"
        print(f"  {name:<40} {value:10.1f}{unit} {note}")
    print("  per round (run / pipelined ratio x TCP, TCP us): "
          + "; ".join(f"{r['run_ratio']:.2f} / {r['stream_ratio']:.2f} ({r['tcp']:.0f})" for r in rounds))
    ok = m["run_ratio"] <= MUST_RATIO and m["stream_ratio"] <= MUST_RATIO
    print(f"  must: overhead <= {MUST_RATIO:g} x TCP -> run() {'met' if m['run_ratio'] <= MUST_RATIO else 'FAILED'}, "
          f"pipelined {'met' if m['stream_ratio'] <= MUST_RATIO else 'FAILED'}")
    print(f"  aim: overhead <= 300 us -> run() {'met' if m['run_overhead'] <= 300 else 'missed'}, "
          f"pipelined {'met' if m['stream_overhead'] <= 300 else 'missed'}; throughput >= 95% "
          f"{'met' if m['throughput'] >= 0.95 else 'missed'}")
    print("bench_link:", "PASS" if ok else "FAIL (overhead ratio above 8)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
