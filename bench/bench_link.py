"""Cost of the board link on loopback, against a raw TCP round trip of the same bytes measured in the same run.

Model: GlobalAveragePool over a 224x224x3 uint8 image (big input, tiny output, little compute), so the numbers
are dominated by the link. Every inference travels as data-plane frames (rknnlink.v1.datawire) on one of two
carriers; both are measured:
  * direct: client <-> session worker over the daemon's data port (loopback daemons, adb with a data forward);
    goal: run() overhead (over in-process RuntimeContext.infer) <= 0.3 ms and <= 4x the raw TCP round trip;
  * the issue's "relayed route" (goal: run() overhead <= 8x TCP): the network route, TLS endpoints, the one
    route that cannot reach the worker's socket in plain text. It needs no relay now: the client names its
    session in a plaintext preamble, the daemon hands the raw connection to the worker, the worker ends TLS
    (the TLS data port). Its floor, a raw TLS echo of the same bytes, is printed beside it;
  * USB: the direct carrier over the USB mux's DATA channel (emulated bus: tests/transport/fake_usb.py and
    the real board bridge program), beside its floor, a raw echo through the same emulated bus, which alone
    costs more than 8x TCP: the figure is the emulation's and the mux's software cost, not USB wire time, so
    it has no ratio goal here;
  * the gRPC Relay stream, the fallback where no byte stream to the data port exists (adb without a data
    forward, --no-data-port, an old USB board bridge), plain and over TLS: printed with its ratio beside a
    bare Python gRPC echo, which alone costs about 7-8x TCP here (no Python gRPC relay can reach 8x);
  * pipelined throughput (depth 4) over in-process throughput; goal >= 95%. Both sides are measured alike:
    a loop of CHUNK inferences of the same image, timed from its first result to its last (the steady
    state: a pipeline's first result pays its fill, a whole round trip, once per chunk), per chunk pair.
    Beside it, the CPU per pipelined item of every thread (client, daemon, worker) against an in-process
    infer's, and the throughput bound that puts on an idle host (pipeline_cpu): it moves less with the load.
The in-process reference runs in the same client process, interleaved with what it is compared with (run()
and infer() alternate per sample, pipelined and in-process loops per chunk of CHUNK), so a machine load that
changes during a round hits both sides alike. The medians (of samples, of chunk pairs, of rounds) keep the
odd time slice a busy host takes away (10-50 ms, on about 1% of the inferences at load 10 on 2 cores) out
of the ratios; a mean would be mostly those slices.
Beside the direct run() overhead, the same comparison in CPU: the CPU of every thread of client and daemon per
run() less an in-process infer's, over the CPU of both ends of a raw TCP round trip. On this VM a wall-clock
round trip is mostly the wake-up of halted cores (raw TCP 91-145 us idle, 16-17 us at load 5-9), so the x TCP
wall ratio swings with the load; the CPU ratio hardly moves and is the link's own cost.
A bare Python gRPC bidi echo of the same bytes is printed as context (the floor of any relay through gRPC).
Three rounds (each measures its own raw TCP reference, so a round sees one machine load); medians are printed
with the verdicts and the load average. Exit status 1 when a ratio goal (4x direct, 8x the TLS data port) is missed.
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
from typing import Any, Callable, Dict, Iterable, Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "runtime"))
sys.path.insert(0, str(ROOT / "tests" / "daemon"))

import sim_models  # noqa: E402
import tls_daemon  # noqa: E402 - the network route: a TLS daemon on loopback, in a process of its own

from rknnlink.client import Board  # noqa: E402
from rknnlink.client.local import start_local_daemon  # noqa: E402
from rknnlink.runtime import RuntimeLibrary  # noqa: E402
from rknnlink.transport import Endpoint  # noqa: E402

N_LATENCY = 400
N_STREAM = 1500
MUST_RATIO = 8.0

_ECHO_SERVER = r"""
import socket, ssl, struct, sys
reply_size = int(sys.argv[1])
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
print(srv.getsockname()[1], flush=True)
conn, _ = srv.accept(); conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
if len(sys.argv) > 3:  # cert and key: the raw TLS reference
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); context.load_cert_chain(sys.argv[2], sys.argv[3])
    conn = context.wrap_socket(conn, server_side=True)
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
reply = b"\0" * int(sys.argv[1])
def stream(requests, context):
    for _ in requests:
        yield reply
handlers = {"Stream": grpc.stream_stream_rpc_method_handler(stream, request_deserializer=None,
                                                             response_serializer=None)}
server = grpc.server(futures.ThreadPoolExecutor(4))
server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Echo", handlers),))
print(server.add_insecure_port("127.0.0.1:0"), flush=True)
server.start()
server.wait_for_termination()
"""


def bare_grpc_round_trip(payload: bytes, reply_size: int) -> float:
    """Median round trip (us) of one message at a time on a bidi stream to a do-nothing Python gRPC server
    (how a relayed session.run() talks): the floor any Python gRPC relay pays before doing any work."""
    import grpc

    proc = subprocess.Popen([sys.executable, "-c", _GRPC_ECHO_SERVER, str(reply_size)], stdout=subprocess.PIPE,
                            text=True)
    try:
        port = int(proc.stdout.readline())
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            requests: "queue.Queue[Any]" = queue.Queue()  # noqa: UP037
            replies = channel.stream_stream("/bench.Echo/Stream", request_serializer=None,
                                            response_deserializer=None)(iter(requests.get, None))

            def one() -> None:
                requests.put(payload)
                next(replies)

            stream = _timed(one)
            requests.put(None)
        return stream
    finally:
        proc.kill()
        proc.wait()


def raw_tls_round_trip(payload: bytes, reply_size: int) -> float:
    """Median round trip (us) of the raw TCP echo with TLS on both ends: what TLS alone costs here."""
    import ssl
    import tempfile

    from rknnlink_server import tls

    with tempfile.TemporaryDirectory() as tmp:
        cert, key = tls.generate_self_signed("bench-echo", ["127.0.0.1"])
        (Path(tmp) / "c.pem").write_bytes(cert)
        (Path(tmp) / "k.pem").write_bytes(key)
        proc = subprocess.Popen([sys.executable, "-c", _ECHO_SERVER, str(reply_size), f"{tmp}/c.pem",
                                 f"{tmp}/k.pem"], stdout=subprocess.PIPE, text=True)
        try:
            port = int(proc.stdout.readline())
            context = ssl.create_default_context(cadata=cert.decode())
            with context.wrap_socket(socket.create_connection(("127.0.0.1", port)),
                                     server_hostname="127.0.0.1") as sock:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                return _timed(_echo_step(sock, payload, reply_size))
        finally:
            proc.kill()
            proc.wait()


def _echo_step(sock: socket.socket, payload: bytes, reply_size: int) -> Callable[[], None]:
    """One length-prefixed request/reply with an echo server (_ECHO_SERVER, plain or TLS)."""
    frame = struct.pack("<I", len(payload)) + payload
    reply = bytearray(reply_size + 4)

    def one() -> None:
        sock.sendall(frame)
        view, got = memoryview(reply), 0
        while got < len(reply):
            got += sock.recv_into(view[got:], len(reply) - got)

    return one


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


def raw_tcp_round_trip(payload: bytes, reply_size: int) -> tuple:
    """Median round trip (us) of a length-prefixed request/reply over loopback TCP to another process, and
    the CPU (us, both processes, every thread) one round trip takes: the reference of the CPU ratio."""
    proc = subprocess.Popen([sys.executable, "-c", _ECHO_SERVER, str(reply_size)], stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline())
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            step = _echo_step(sock, payload, reply_size)
            wall = _timed(step)
            return wall, _cpu_per_call([os.getpid(), proc.pid], step)
    finally:
        proc.kill()
        proc.wait()


def _cpu_per_call(pids: list, step: Callable[[], Any], n: int = N_LATENCY) -> float:
    """CPU (us) of every thread of these processes per call of step, over n calls (nan without /proc).
    Unlike a wall-clock round trip, which on an idle VM is mostly the wake-up of halted cores (the raw TCP
    echo takes 91-145 us idle and 16-17 us at load 5-9 on the same machine), CPU per call hardly moves with
    the load: the ratio of two such figures is the link's own cost against TCP's."""
    if not Path(f"/proc/{os.getpid()}/task").is_dir():
        return float("nan")
    before = _thread_cpu_ns(pids)
    for _ in range(n):
        step()
    after = _thread_cpu_ns(pids)
    return sum(t - before.get(k, 0) for k, t in after.items()) / n / 1e3


def raw_usb_round_trip(payload: bytes, reply_size: int) -> float:
    """Median round trip (us) of the raw TCP echo through the emulated USB bus (the host bridge, the bus,
    the board's bridge program): what the emulation alone costs, the floor of the USB route here."""
    import tempfile

    from bench_transports import usb_bridge_address

    proc = subprocess.Popen([sys.executable, "-c", _ECHO_SERVER, str(reply_size)], stdout=subprocess.PIPE, text=True)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-link-usb-") as tmp:
            address, cleanup = usb_bridge_address(Path(tmp), int(proc.stdout.readline()))
            try:
                host, port = address.rsplit(":", 1)
                with socket.create_connection((host, int(port))) as sock:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    return _timed(_echo_step(sock, payload, reply_size))
            finally:
                cleanup()
    finally:
        proc.kill()
        proc.wait()


def through_daemon(address: str, model: bytes, image: np.ndarray, carrier: str,
                   kwargs: Optional[Dict[str, Any]] = None) -> Dict[str, float]:
    """run() and pipelined cost on one carrier, each interleaved with the in-process reference in this
    process, so a load that changes during the round hits both alike: run() and ctx.infer() alternate
    sample by sample; pipelined and in-process loops alternate in chunks of CHUNK items."""
    if kwargs is not None:  # an endpoint's own (the USB bridge's, the TLS daemon's)
        kwargs = dict(kwargs)
    else:
        kwargs = {"use_data_channel": carrier == "direct"}
    with RuntimeLibrary.load(backend="sim").init(model) as ctx, \
            Board.connect(address, **kwargs) as board, board.load_model(model) as session:
        expected = ctx.infer([image])[0]
        np.testing.assert_array_equal(session.run([image])[0], expected)
        assert session.carrier == carrier, f"the {carrier} carrier is not in use as intended"
        for _ in range(50):
            session.run([image])
            ctx.infer([image])
        local, remote = [], []
        for _ in range(N_LATENCY):
            start = time.perf_counter()
            ctx.infer([image])
            middle = time.perf_counter()
            session.run([image])
            local.append(middle - start)
            remote.append(time.perf_counter() - middle)
        local_items, piped_items = [], []
        with session.pipeline(depth=DEPTH) as pipe:
            for _ in pipe.map([image] for _ in range(100)):
                pass
            for _ in range(N_STREAM // CHUNK):
                local_items.append(_steady_item(ctx.infer([image]) for _ in range(CHUNK)))
                piped_items.append(_steady_item(pipe.map([image] for _ in range(CHUNK))))
        return {"inproc": _median_us(local), "run": _median_us(remote), "inproc_item": _median_us(local_items),
                "item": _median_us(piped_items),
                "throughput": statistics.median(a / b for a, b in zip(local_items, piped_items)),
                "reply_bytes": expected.nbytes}


def _steady_item(results: Iterable[Any]) -> float:
    """Seconds per item of a loop in its steady state: from the first result to the last, over the items
    in between. The same measure for both sides of the throughput ratio: a pipeline's first result pays
    the pipeline's fill (a whole round trip) once per chunk, which is not its throughput."""
    stamps = [time.perf_counter() for _ in results]
    return (stamps[-1] - stamps[0]) / (len(stamps) - 1)


def _thread_cpu_ns(pids: Iterable[int]) -> Dict[tuple, int]:
    """CPU time (ns) of every thread of these processes so far, by (pid, tid) (Linux /proc schedstat)."""
    times = {}
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                times[(pid, task.name)] = int((task / "schedstat").read_text().split()[0])
            except (OSError, ValueError, IndexError):  # a thread that ended meanwhile
                pass
    return times


def _process_tree(pid: int) -> list:
    """pid and every process below it (the daemon, its session workers)."""
    children: Dict[int, list] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        tree.append(todo.pop())
        todo.extend(children.get(tree[-1], []))
    return tree


def _settle(daemon_pid: int, timeout: float = 10.0) -> None:
    """Wait (at most `timeout` s) until the daemon's processes are idle: the spare worker the daemon starts
    for the next session imports numpy and the runtime (tens of ms of CPU), which inside the 1500 items of
    pipeline_cpu counted 20-30 us per item (seen: a run with it 98.6 us per item in all, one without 66.4)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = _process_tree(daemon_pid)
        before = sum(_thread_cpu_ns(pids).values())
        time.sleep(0.1)
        if sum(_thread_cpu_ns(pids).values()) - before < 5_000_000:  # under 5% of a core
            return


def pipeline_cpu(daemon: Any, model: bytes, image: np.ndarray) -> Dict[str, float]:
    """Where a pipelined inference's CPU goes (direct carrier, depth DEPTH): the threads' CPU per item of this
    client process and of the daemon's processes (its session workers), beside an in-process infer's. CPU,
    unlike wall time, moves little with the load, and it bounds what an idle host can do: on os.cpu_count()
    cores a pipelined item takes at least max(its busiest thread, whole / cores), where the in-process loop
    takes its own CPU on one core (its pool threads count too). Empty on a host without /proc."""
    if not Path(f"/proc/{os.getpid()}/task").is_dir():
        return {}
    with RuntimeLibrary.load(backend="sim").init(model) as ctx, \
            Board.connect(daemon.address, use_data_channel=True) as board, board.load_model(model) as session:
        for _ in range(100):
            ctx.infer([image])
        before = _thread_cpu_ns([os.getpid()])
        for _ in range(N_STREAM):
            ctx.infer([image])
        after = _thread_cpu_ns([os.getpid()])
        inproc = sum(t - before.get(k, 0) for k, t in after.items()) / N_STREAM / 1e3
        with session.pipeline(depth=DEPTH) as pipe:
            for _ in pipe.map([image] for _ in range(100)):
                pass
            _settle(daemon.process.pid)
            pids = [os.getpid()] + _process_tree(daemon.process.pid)
            before = _thread_cpu_ns(pids)
            for _ in pipe.map([image] for _ in range(N_STREAM)):
                pass
            after = _thread_cpu_ns(pids)
    per_thread = {k: (t - before.get(k, 0)) / N_STREAM / 1e3 for k, t in after.items()}
    whole = sum(per_thread.values())
    client = sum(v for (pid, _tid), v in per_thread.items() if pid == os.getpid())
    busiest = max(per_thread.values())
    floor = max(busiest, whole / (os.cpu_count() or 1))
    return {"cpu_inproc": inproc, "cpu_piped": whole, "cpu_client": client, "cpu_board": whole - client,
            "cpu_busiest": busiest, "idle_bound": inproc / floor}


def run_cpu(daemon: Any, model: bytes, image: np.ndarray) -> Dict[str, float]:
    """CPU (us, every thread of this client and of the daemon's processes) of one direct session.run(), and
    of one in-process infer of the same image: their difference is what the link costs in CPU per call, the
    load-independent twin of the run() overhead (see _cpu_per_call). Empty on a host without /proc."""
    if not Path(f"/proc/{os.getpid()}/task").is_dir():
        return {}
    with RuntimeLibrary.load(backend="sim").init(model) as ctx, \
            Board.connect(daemon.address, use_data_channel=True) as board, board.load_model(model) as session:
        for _ in range(50):
            session.run([image])
            ctx.infer([image])
        pids = [os.getpid()] + _process_tree(daemon.process.pid)
        inproc = _cpu_per_call([os.getpid()], lambda: ctx.infer([image]))
        run = _cpu_per_call(pids, lambda: session.run([image]))
    return {"cpu_run": run, "cpu_run_inproc": inproc, "cpu_run_overhead": run - inproc}


def through_usb(address: str, model: bytes, image: np.ndarray) -> tuple:
    """The direct carrier over the USB mux, and the gRPC Relay over the same mux (what a board bridge without
    data channels gives): a host bridge on the emulated bus, the board's bridge program relaying to this
    daemon's gRPC and data ports."""
    import tempfile

    from bench_transports import usb_bridge_address

    with Board.connect(address) as probe:
        data_port = probe.data_port
    with tempfile.TemporaryDirectory(prefix="bench-link-usb-") as tmp:
        (grpc_address, data_address), cleanup = usb_bridge_address(Path(tmp), int(address.rsplit(":", 1)[1]),
                                                                   data_port)
        try:
            endpoint = Endpoint(address=grpc_address, kind="usb", data_address=data_address)
            return (through_daemon(grpc_address, model, image, "direct", kwargs=endpoint.connect_kwargs()),
                    through_daemon(grpc_address, model, image, "relay", kwargs={"use_data_channel": False}))
        finally:
            cleanup()


def _ring_in_use(address: str, model: bytes, image: np.ndarray) -> tuple:
    """Whether the direct carrier's pipelines here move their inputs through the shared-memory ring
    (rknnlink.v1.shmring: client and worker on one host) rather than in the frames, and whether their
    requests and replies go through its queue too."""
    with Board.connect(address, use_data_channel=True) as board, board.load_model(model) as session, \
            session.pipeline(depth=DEPTH) as pipe:
        pipe.run([image])
        return bool(getattr(pipe, "uses_ring", False)), getattr(pipe, "_queue", None) is not None


def _without_ring(measure: Callable[[], Any]) -> Any:
    """measure() with the client's ring turned off (RKNNLINK_DATA_SHM=0): the direct carrier's byte frames,
    what a client on another host (adb, a farm relay of the data port) gets."""
    old = os.environ.get("RKNNLINK_DATA_SHM")
    os.environ["RKNNLINK_DATA_SHM"] = "0"
    try:
        return measure()
    finally:
        if old is None:
            os.environ.pop("RKNNLINK_DATA_SHM", None)
        else:
            os.environ["RKNNLINK_DATA_SHM"] = old


ROUNDS = 3
DEPTH = 4
CHUNK = 50  # short chunks, many of them: the median ratio is then robust against the odd time slice lost
GOAL_US, GOAL_DIRECT, GOAL_RELAY, GOAL_THROUGHPUT = 300.0, 4.0, 8.0, 0.95


def one_round(model: bytes, image: np.ndarray) -> Dict[str, float]:
    """Every quantity once, the raw TCP reference included, so a round is measured under one machine load."""
    daemon = start_local_daemon(platform="rk3588", backend="sim")
    try:
        direct = through_daemon(daemon.address, model, image, "direct")
        ring, queued = _ring_in_use(daemon.address, model, image)
        direct_bytes = _without_ring(lambda: through_daemon(daemon.address, model, image, "direct"))
        cpu = pipeline_cpu(daemon, model, image)
        cpu.update(run_cpu(daemon, model, image))
        relay = through_daemon(daemon.address, model, image, "relay")
        # a real USB board never shares the host's memory; the emulated bus does: no ring there
        usb, usb_relay = _without_ring(lambda: through_usb(daemon.address, model, image))
    finally:
        daemon.stop()
    network = tls_daemon.start()  # its certificate, key and cache in a temporary directory stop() removes
    try:
        tls_kwargs = network.connect_kwargs()
        tls_data = through_daemon(network.address, model, image, "tls", tls_kwargs)
        tls_kwargs.pop("data_tls")  # no TLS context for the data port: the gRPC Relay stream
        tls_relay = through_daemon(network.address, model, image, "relay", tls_kwargs)
    finally:
        network.stop()
    reply_size = int(direct["reply_bytes"])
    tcp_us, tcp_cpu = raw_tcp_round_trip(image.tobytes(), reply_size)
    grpc_us = bare_grpc_round_trip(image.tobytes(), reply_size)
    tls_us = raw_tls_round_trip(image.tobytes(), reply_size)
    bus_us = raw_usb_round_trip(image.tobytes(), reply_size)
    run_overhead = direct["run"] - direct["inproc"]
    relay_overhead = relay["run"] - relay["inproc"]
    if "cpu_run_overhead" in cpu:
        cpu["cpu_tcp"] = tcp_cpu
        cpu["cpu_run_ratio"] = cpu["cpu_run_overhead"] / tcp_cpu
    return {"tcp": tcp_us, "grpc": grpc_us, "inproc": direct["inproc"], "inproc_item": direct["inproc_item"],
            "run": direct["run"], "run_overhead": run_overhead, "run_ratio": run_overhead / tcp_us,
            "item": direct["item"], "throughput": direct["throughput"], "ring": float(ring),
            "queue": float(queued),
            "bytes_run_overhead": direct_bytes["run"] - direct_bytes["inproc"], "bytes_item": direct_bytes["item"],
            "bytes_throughput": direct_bytes["throughput"],
            "relay": relay["run"], "relay_overhead": relay_overhead, "relay_ratio": relay_overhead / tcp_us,
            "relay_item": relay["item"], "relay_throughput": relay["throughput"],
            "bus": bus_us, "tls": tls_us,
            "tls_run": tls_data["run"], "tls_overhead": tls_data["run"] - tls_data["inproc"],
            "tls_ratio": (tls_data["run"] - tls_data["inproc"]) / tcp_us, "tls_item": tls_data["item"],
            "tls_throughput": tls_data["throughput"],
            "usb_overhead": usb["run"] - usb["inproc"], "usb_ratio": (usb["run"] - usb["inproc"]) / tcp_us,
            "usb_relay_ratio": (usb_relay["run"] - usb_relay["inproc"]) / tcp_us,
            "tls_relay_overhead": tls_relay["run"] - tls_relay["inproc"],
            "tls_relay_ratio": (tls_relay["run"] - tls_relay["inproc"]) / tcp_us, **cpu}


def _run_cpu_rows(m: Dict[str, float]) -> list:
    """The rows of run_cpu's figures (none where it measured nothing)."""
    if "cpu_run_ratio" not in m:
        return []
    return [("  CPU per raw TCP round trip (both ends)", m["cpu_tcp"], "every thread of client and echo server"),
            ("  CPU per direct run() (client + daemon)", m["cpu_run"],
             f"in-process infer {m['cpu_run_inproc']:.0f} us"),
            ("  direct: run() link overhead in CPU", m["cpu_run_overhead"],
             f"{m['cpu_run_ratio']:.2f} x TCP's CPU (the same comparison in CPU, which the load moves little)")]


def _cpu_rows(m: Dict[str, float]) -> list:
    """The rows of pipeline_cpu's figures (none where it measured nothing)."""
    if "cpu_piped" not in m:
        return []
    return [("  CPU per in-process infer (all threads)", m["cpu_inproc"], ""),
            ("  CPU per pipelined item (all threads)", m["cpu_piped"],
             f"client {m['cpu_client']:.0f} us, daemon and worker {m['cpu_board']:.0f} us, busiest thread "
             f"{m['cpu_busiest']:.0f} us"),
            ("  bound on an idle host of this many cores", m["idle_bound"] * 100,
             f"% = in-process CPU / max(busiest thread, whole / {os.cpu_count()} cores)")]


def main() -> int:
    model = sim_models.pool_model(224, 3)
    image = np.random.default_rng(0).integers(0, 256, size=(1, 224, 224, 3), dtype=np.uint8)
    load_before = os.getloadavg()
    rounds = [one_round(model, image) for _ in range(ROUNDS)]
    load_after = os.getloadavg()
    m = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    rows = [
        ("raw TCP round trip (150,528 B out)", m["tcp"], ""),
        ("bare Python gRPC stream echo (context)", m["grpc"], f"{m['grpc'] / m['tcp']:.2f} x TCP, no daemon work"),
        ("in-process infer (median, interleaved)", m["inproc"], ""),
        ("direct: session.run (median)", m["run"], "frames straight to the worker"),
        ("direct: run() link overhead", m["run_overhead"],
         f"{m['run_ratio']:.2f} x TCP (goal <= {GOAL_US:g} us and <= {GOAL_DIRECT:g} x)"),
        *_run_cpu_rows(m),
        ("THE ISSUE'S RELAYED ROUTE", None, f"(goal <= {GOAL_RELAY:g} x TCP): the network route, TLS endpoints, "
         f"which cannot reach the worker's socket in plain text; it needs no relay now (the worker ends TLS)"),
        ("  floor: raw TLS echo, same bytes", m["tls"], f"{m['tls'] / m['tcp']:.2f} x TCP: what TLS alone costs"),
        ("  TLS data port: session.run (median)", m["tls_run"], ""),
        ("  TLS data port: run() link overhead", m["tls_overhead"],
         f"{m['tls_ratio']:.2f} x TCP (goal <= {GOAL_RELAY:g} x); TLS adds {m['tls_overhead'] - m['run_overhead']:.0f}"
         f" us over direct, raw TLS {m['tls'] - m['tcp']:.0f} us over raw TCP"),
        ("USB (the other route without a plain socket)", None, "the direct carrier over the USB mux's DATA channel"),
        ("  floor: raw echo through the emulated bus", m["bus"],
         f"{m['bus'] / m['tcp']:.2f} x TCP: the emulation's own cost (not the product's), so no x TCP goal"),
        ("  USB: run() link overhead", m["usb_overhead"],
         f"{m['usb_ratio']:.2f} x TCP; {m['usb_overhead'] - m['bus']:.0f} us over the bus floor; the gRPC Relay "
         f"over the same mux: {m['usb_relay_ratio']:.2f} x"),
        ("gRPC RELAY FALLBACK", None, "where no byte stream reaches the data port (adb without the data "
         "forward, --no-data-port, an old board bridge); no ratio goal"),
        ("  floor: bare Python gRPC stream echo", m["grpc"], f"{m['grpc'] / m['tcp']:.2f} x TCP, no daemon work"),
        ("  gRPC Relay: session.run (median)", m["relay"], "plain gRPC Relay stream"),
        ("  gRPC Relay: run() overhead", m["relay_overhead"],
         f"{m['relay_ratio']:.2f} x TCP ({m['relay_overhead'] / m['grpc']:.2f} x its floor)"),
        ("  TLS gRPC Relay: run() overhead", m["tls_relay_overhead"],
         f"{m['tls_relay_ratio']:.2f} x TCP (the TLS daemon, a client without the data port's TLS context)"),
        ("in-process per item (loop, interleaved)", m["inproc_item"], ""),
        (f"direct: pipelined per item (depth {DEPTH})", m["item"], ""),
        ("direct: pipelined / in-process throughput", m["throughput"] * 100, f"% (goal >= {GOAL_THROUGHPUT:.0%})"),
        *_cpu_rows(m),
        ("  direct: inputs in the shared-memory ring", m["ring"] * 100,
         "% of rounds (client and worker on one host; elsewhere the byte frames below)"),
        ("  direct: requests and replies in its queue", m["queue"] * 100,
         "% of rounds (shm2: no TCP send per inference; else the inputs only, shm1)"),
        ("direct, byte frames (RKNNLINK_DATA_SHM=0)", None, "what a client on another host gets (adb, a farm relay)"),
        ("  byte frames: run() link overhead", m["bytes_run_overhead"], ""),
        (f"  byte frames: pipelined per item (depth {DEPTH})", m["bytes_item"], ""),
        ("  byte frames: pipelined / in-process", m["bytes_throughput"] * 100, "%"),
        (f"relayed: pipelined per item (depth {DEPTH})", m["relay_item"], ""),
        ("relayed: pipelined / in-process throughput", m["relay_throughput"] * 100, "%"),
        (f"TLS data port: pipelined per item (depth {DEPTH})", m["tls_item"], ""),
        ("TLS data port: pipelined / in-process", m["tls_throughput"] * 100, "%"),
    ]
    print(f"bench_link: {os.cpu_count()} CPUs, load average {load_before[0]:.2f} before / {load_after[0]:.2f} after; "
          f"{ROUNDS} rounds of {N_LATENCY} latency samples and {N_STREAM} pipelined inferences; medians over rounds "
          f"(ratios: median of the per-round ratios against the raw TCP round trip of the same round)")
    for name, value, note in rows:
        if value is None:  # a heading
            print(f"  {name} {note}")
            continue
        unit = "" if note.startswith("%") else " us"
        print(f"  {name:<44} {value:10.1f}{unit} {note}")
    print("  per round (direct / TLS data port / USB / gRPC relay run x TCP, direct run x TCP in CPU, pipelined %, "
          "TCP us): "
          + "; ".join(f"{r['run_ratio']:.2f} / {r['tls_ratio']:.2f} / {r['usb_ratio']:.2f} / {r['relay_ratio']:.2f}, "
                      f"{r.get('cpu_run_ratio', float('nan')):.2f}, {r['throughput']:.0%} ({r['tcp']:.0f})"
                      for r in rounds))
    verdicts = {
        "direct run() <= 0.3 ms": m["run_overhead"] <= GOAL_US,
        f"direct run() <= {GOAL_DIRECT:g} x TCP": m["run_ratio"] <= GOAL_DIRECT,
        f"TLS data port run() <= {GOAL_RELAY:g} x TCP": m["tls_ratio"] <= GOAL_RELAY,
        f"pipelined >= {GOAL_THROUGHPUT:.0%} of in-process": m["throughput"] >= GOAL_THROUGHPUT,
    }
    print("  goals: " + "; ".join(f"{name} {'met' if ok else 'MISSED'}" for name, ok in verdicts.items()))
    ok = m["run_ratio"] <= GOAL_DIRECT and m["tls_ratio"] <= GOAL_RELAY
    print("bench_link:", "PASS" if ok else "FAIL (a link overhead ratio above its goal)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
