"""`make demo` runs `python -m rknnlink.demo`: the whole connected-board flow against a simulated board."""

import subprocess
import sys


def test_demo_runs_the_connected_board_flow():
    proc = subprocess.run([sys.executable, "-m", "rknnlink.demo"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert [line.split("]")[0] for line in out.splitlines() if line.startswith("[")][:5] == [
        "[1/5", "[2/5", "[3/5", "[4/5", "[5/5"]
    assert "listening on 127.0.0.1:" in out
    assert "Next: run your own RKNN-Toolkit2 script unchanged" in out and "RKNNLINK_DEVICE=sim" in out
    assert "inference: output shape (1, 10)" in out
    assert "Network Layer Information Table" in out and "Memory Profile Info Dump" in out
    assert "DRV: rknn_server:" in out
