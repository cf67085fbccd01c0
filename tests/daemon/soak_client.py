"""The client side of the soak test, run in a process of its own.

The pytest process is the wrong place to watch a client's memory: by the time this test runs it holds torch,
onnxruntime and every earlier module's threads and caches, whose own growth (seen: 7 MB in a CI run, none of it
ours) swamps a per-inference leak. A fresh interpreter holds only the client, so its RSS moves only if the client
leaks. The parent test drives the phases over stdin/stdout and watches the daemon and worker from outside.

Usage: python soak_client.py ADDRESS CARRIER   (CARRIER: direct | relay)
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "runtime"))
import sim_models  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")


def _self_usage() -> tuple[int, int]:
    fds = len(os.listdir("/proc/self/fd"))
    rss = int(Path("/proc/self/statm").read_text().split()[1]) * PAGE
    return fds, rss


def _say(**fields) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def main(address: str, carrier: str) -> None:
    from rknnlink.client import Board

    board = Board.connect(address, timeout=10, use_data_channel=carrier == "direct")
    with board.load_model(sim_models.two_input_model(64)) as session:
        a = np.arange(64, dtype=np.float32).reshape(1, 64)
        b = np.ones((1, 64), np.float32)

        def run(n: int) -> float:
            total = 0.0
            with session.pipeline(depth=8) as pipe:
                for out in pipe.map([a, b] for _ in range(n)):
                    total += float(out[0][0, 1])
            return total

        warm = run(1500)  # allocator pools, gRPC buffers, thread stacks
        fds, rss = _self_usage()
        # A client sees only its own sessions in stats(), so the worker's pid is reported from here.
        stats = board.stats()
        worker = next(s["worker_pid"] for s in stats["sessions"] if s["session_id"] == session.id)
        _say(phase="warm", total=warm, fds=fds, rss=rss, daemon_pid=stats["daemon_pid"], worker_pid=worker)
        sys.stdin.readline()  # the parent snapshots the daemon and worker
        total = run(10_000)
        fds, rss = _self_usage()
        inferences = next(s["inferences"] for s in board.stats()["sessions"] if s["session_id"] == session.id)
        _say(phase="done", total=total, fds=fds, rss=rss, inferences=inferences)
        sys.stdin.readline()  # the parent snapshots again while the session is still open
    board.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
