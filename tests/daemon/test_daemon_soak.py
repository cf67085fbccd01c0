"""10,000 inferences in one session: file descriptors and memory stay flat on the client, daemon and worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent

PAGE = os.sysconf("SC_PAGE_SIZE")


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _rss(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE


def _snapshot(pids):
    return {pid: (_fds(pid), _rss(pid)) for pid in pids}


@pytest.mark.parametrize("carrier", ["direct", "relay"])
def test_ten_thousand_streamed_inferences_leak_nothing(daemon, carrier):
    client = subprocess.Popen(
        [sys.executable, str(HERE / "soak_client.py"), daemon.address, carrier],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        warm = json.loads(client.stdout.readline() or "{}")
        assert warm.get("phase") == "warm", "the soak client died before its warm-up finished"
        assert warm["total"] == 1500 * 2.0
        pids = [warm["daemon_pid"], warm["worker_pid"]]
        before = _snapshot(pids)
        before[client.pid] = (warm["fds"], warm["rss"])
        client.stdin.write("go\n")
        client.stdin.flush()
        done = json.loads(client.stdout.readline() or "{}")
        assert done.get("phase") == "done", "the soak client died during the 10,000 runs"
        assert done["total"] == 10_000 * 2.0
        after = _snapshot(pids)
        after[client.pid] = (done["fds"], done["rss"])
        client.stdin.write("close\n")
        client.stdin.flush()
        assert client.wait(timeout=60) == 0
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    for pid in [client.pid, *pids]:
        fds_before, rss_before = before[pid]
        fds_after, rss_after = after[pid]
        assert fds_after <= fds_before + 2, f"pid {pid}: fds {fds_before} -> {fds_after}"
        assert rss_after - rss_before < 6 << 20, f"pid {pid}: RSS {rss_before} -> {rss_after}"
    assert done["inferences"] == 11_500
