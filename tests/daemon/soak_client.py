"""Soak tests' client, run in a process of its own, and the driver that watches it.

The pytest process is the wrong place to watch a client's memory: by the time these tests run it holds torch,
onnxruntime and every earlier module's threads and caches, whose own growth (seen: 7 MB in a CI run, none of it
ours) swamps a per-inference leak. A fresh interpreter holds only the client, so its RSS moves only if the client
leaks. `soak()` drives the phases over stdin/stdout and watches the daemon and worker from outside.

As a script: python soak_client.py ADDRESS CARRIER MODE [STATE]   (CARRIER: direct | relay | tls; MODE: stream |
mixed; STATE: the state directory of a TLS daemon, tests/daemon/tls_daemon.py, for CARRIER tls)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
PAGE = os.sysconf("SC_PAGE_SIZE")
WARM_UP = 2000  # allocator pools, gRPC buffers, thread stacks
MEASURED = 10_000


def usage(pid: int | str = "self") -> tuple[int, int]:
    """(open fds, resident bytes) of a process."""
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    return fds, rss


def soak(address: str, carrier: str, mode: str, state: str = "") -> dict:
    """Run the client through its warm-up and measured phases; return fds/RSS before and after for the client,
    the daemon and the session's worker, plus what the client reported."""
    client = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), address, carrier, mode, *([state] if state else [])],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )

    def step(expected_phase: str) -> dict:
        report = json.loads(client.stdout.readline() or "{}")
        assert report.get("phase") == expected_phase, f"the soak client died before its {expected_phase} report"
        return report

    try:
        warm = step("warm")
        pids = [warm["daemon_pid"], warm["worker_pid"]]
        before = {pid: usage(pid) for pid in pids} | {client.pid: (warm["fds"], warm["rss"])}
        client.stdin.write("go\n")
        client.stdin.flush()
        done = step("done")
        after = {pid: usage(pid) for pid in pids} | {client.pid: (done["fds"], done["rss"])}
        client.stdin.write("close\n")
        client.stdin.flush()
        assert client.wait(timeout=60) == 0
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    return {"before": before, "after": after, "warm": warm, "done": done}


def assert_flat(result: dict) -> None:
    """No process gained more than 2 fds or 6 MB of RSS over the measured phase."""
    for pid, (fds_before, rss_before) in result["before"].items():
        fds_after, rss_after = result["after"][pid]
        assert fds_after <= fds_before + 2, f"pid {pid}: fds {fds_before} -> {fds_after}"
        assert rss_after - rss_before < 6 << 20, f"pid {pid}: RSS {rss_before} -> {rss_after}"


def _say(**fields) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def _client(address: str, carrier: str, mode: str, state: str = "") -> None:
    sys.path.insert(0, str(HERE.parent / "runtime"))
    import sim_models

    from rknnlink.client import Board

    if carrier == "tls":  # a TLS daemon's data port: its state directory has the certificate and the token
        import tls_daemon

        kwargs = tls_daemon.connect_kwargs(address, Path(state))
    else:
        kwargs = {"use_data_channel": carrier == "direct"}
    board = Board.connect(address, timeout=10, **kwargs)
    with board.load_model(sim_models.two_input_model(64)) as session:
        a = np.arange(64, dtype=np.float32).reshape(1, 64)
        b = np.ones((1, 64), np.float32)

        def stream(n: int) -> float:
            with session.pipeline(depth=8) as pipe:
                return sum(float(out[0][0, 1]) for out in pipe.map([a, b] for _ in range(n)))

        def mixed(n: int) -> float:
            # half through run(), half through pipelines of 500 (each its own connection)
            total = sum(float(session.run([a, b])[0][0, 1]) for _ in range(n // 2))
            return total + sum(stream(500) for _ in range(n // 2 // 500))

        run = stream if mode == "stream" else mixed
        warm = run(WARM_UP)
        fds, rss = usage()
        # A client sees only its own sessions in stats(), so the worker's pid is reported from here.
        stats = board.stats()
        worker = next(s["worker_pid"] for s in stats["sessions"] if s["session_id"] == session.id)
        _say(phase="warm", total=warm, fds=fds, rss=rss, daemon_pid=stats["daemon_pid"], worker_pid=worker)
        sys.stdin.readline()  # the parent snapshots the daemon and worker
        total = run(MEASURED)
        fds, rss = usage()
        inferences = next(s["inferences"] for s in board.stats()["sessions"] if s["session_id"] == session.id)
        _say(phase="done", total=total, fds=fds, rss=rss, inferences=inferences)
        sys.stdin.readline()  # the parent snapshots again while the session is still open
    board.close()


if __name__ == "__main__":
    _client(*sys.argv[1:5])
