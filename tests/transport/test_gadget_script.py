"""setup_gadget.sh on a scratch configfs tree: the gadget layout it writes, the bridge it starts, and stop."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import time

import pytest
from transport_rig import PYTHON, ROOT, base_env

SCRIPT = ROOT / "board_server" / "usb_gadget" / "setup_gadget.sh"
BRIDGE = ROOT / "board_server" / "usb_gadget" / "rknnlink_usb_bridge.py"


def test_start_builds_the_gadget_and_stop_removes_it(tmp_path):
    if shutil.which("sh") is None:
        pytest.skip("no /bin/sh")
    configfs, udc, ffs = tmp_path / "configfs", tmp_path / "udc", tmp_path / "ffs"
    (configfs / "usb_gadget").mkdir(parents=True)
    (udc / "fc000000.usb").mkdir(parents=True)
    ffs.mkdir()
    (ffs / "ep0").touch()  # what mounting FunctionFS provides; ep1/ep2 stand in for the endpoint files
    os.mkfifo(ffs / "ep1")
    os.mkfifo(ffs / "ep2")
    options = ["--configfs", str(configfs), "--udc-dir", str(udc), "--ffs-dir", str(ffs), "--no-mount",
               "--serial", "SCRATCH01", "--bridge-cmd", f"{PYTHON} {BRIDGE}"]
    env = base_env()
    started = subprocess.run(["sh", str(SCRIPT), "start", *options], env=env, capture_output=True, text=True,
                             timeout=60)
    assert started.returncode == 0, started.stderr
    gadget = configfs / "usb_gadget" / "rknnlink"
    try:
        assert (gadget / "idVendor").read_text().strip() == "0x2207"
        assert (gadget / "strings/0x409/serialnumber").read_text().strip() == "SCRATCH01"
        product = (gadget / "strings/0x409/product").read_text().strip()
        assert product.startswith("rknnlink ") and "(rknnlink 0.1.0)" in product
        assert os.readlink(gadget / "configs/c.1/ffs.rknnlink") == str(gadget / "functions/ffs.rknnlink")
        assert (gadget / "UDC").read_text().strip() == "fc000000.usb"
        pid = int((tmp_path / "ffs.bridge.pid").read_text())
        deadline = time.monotonic() + 15
        while (ffs / "ep0").stat().st_size < 12 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert struct.unpack_from("<I", (ffs / "ep0").read_bytes())[0] == 3  # the bridge wrote descriptors
        os.kill(pid, 0)
    finally:
        stopped = subprocess.run(["sh", str(SCRIPT), "stop", *options], env=env, capture_output=True, text=True,
                                 timeout=60)
    assert stopped.returncode == 0, stopped.stderr
    assert not gadget.exists()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.05)
    else:
        pytest.fail("the bridge kept running after stop")


def test_an_unknown_option_is_rejected():
    result = subprocess.run(["sh", str(SCRIPT), "start", "--bogus"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "unknown option --bogus" in result.stderr
