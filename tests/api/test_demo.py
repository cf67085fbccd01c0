"""`make demo` runs `python -m rknnlink.demo`: the whole connected-board flow against a simulated board."""

import subprocess
import sys


def test_demo_runs_the_connected_board_flow():
    proc = subprocess.run([sys.executable, "-m", "rknnlink.demo"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "Simulated rk3588 board daemon listening on 127.0.0.1:" in out
    assert "inference: output shape (1, 10)" in out
    assert "Network Layer Information Table" in out and "Memory Profile Info Dump" in out
    assert "DRV: rknn_server:" in out
