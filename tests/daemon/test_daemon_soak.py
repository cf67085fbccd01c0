"""10,000 inferences in one session: file descriptors and memory stay flat on the client, daemon and worker."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import sim_models

PAGE = os.sysconf("SC_PAGE_SIZE")


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _rss(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE


def _snapshot(pids):
    return {pid: (_fds(pid), _rss(pid)) for pid in pids}


def test_ten_thousand_streamed_inferences_leak_nothing(board):
    with board.load_model(sim_models.two_input_model(64)) as session:
        stats = board.stats()
        worker = next(s["worker_pid"] for s in stats["sessions"] if s["session_id"] == session.id)
        pids = [os.getpid(), stats["daemon_pid"], worker]
        a = np.arange(64, dtype=np.float32).reshape(1, 64)
        b = np.ones((1, 64), np.float32)

        def run(n: int) -> float:
            total = 0.0
            with session.pipeline(depth=8) as pipe:
                for out in pipe.map([a, b] for _ in range(n)):
                    total += float(out[0][0, 1])
            return total

        assert run(1500) == 1500 * 2.0  # warm-up: allocator pools, gRPC buffers, thread stacks
        before = _snapshot(pids)
        assert run(10_000) == 10_000 * 2.0
        after = _snapshot(pids)
        for pid in pids:
            fds_before, rss_before = before[pid]
            fds_after, rss_after = after[pid]
            assert fds_after <= fds_before + 2, f"pid {pid}: fds {fds_before} -> {fds_after}"
            assert rss_after - rss_before < 6 << 20, f"pid {pid}: RSS {rss_before} -> {rss_after}"
        assert next(s["inferences"] for s in board.stats()["sessions"] if s["session_id"] == session.id) == 11_500
