"""ADB transport against the real adb server and an emulated adbd, inside a network namespace."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time

import pytest
from transport_rig import (
    BOARD_PORT,
    HERE,
    PYTHON,
    ROOT,
    NetNs,
    base_env,
    bundled_adb,
    find_sim_library,
    netns_available,
)

ECHO_SNIPPET = """
import json, os, grpc
from rknnlink.transport import resolve
import adbutils
endpoint = resolve({device_id!r}, timeout=15)
payload = os.urandom(150528)
with grpc.insecure_channel(endpoint.address) as channel:
    echo = channel.unary_unary("/rknnlink.test.Echo/Echo")
    same = echo(payload, timeout=10) == payload
port = int(endpoint.address.rsplit(":", 1)[1])
before = [f.local for f in adbutils.AdbClient().forward_list()]
endpoint.close()
after = [f.local for f in adbutils.AdbClient().forward_list()]
print(json.dumps({{"address": endpoint.address, "kind": endpoint.kind, "serial": endpoint.serial,
                   "same": same, "port": port, "before": before, "after": after}}))
"""


@pytest.fixture(scope="module")
def echo_daemon(adb_rig):
    """A gRPC server with health + echo on the board's daemon port (stands in for the daemon)."""
    proc = adb_rig.ns.spawn([PYTHON, str(HERE / "health_server.py"), "--port", str(BOARD_PORT)], ready="READY")
    yield proc
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)


def test_lists_the_emulated_board(adb_rig):
    adb_rig.connect()
    out = adb_rig.ns.python("import json; from rknnlink.transport import list_adb_serials; "
                            "print(json.dumps({'serials': list_adb_serials()}))")
    assert out["serials"] == [adb_rig.serial]


def test_resolve_forwards_to_the_daemon_and_close_removes_the_forward(adb_rig, echo_daemon):
    adb_rig.connect()
    out = adb_rig.ns.python(ECHO_SNIPPET.format(device_id=None))
    assert out["kind"] == "adb" and out["serial"] == adb_rig.serial
    assert out["address"].startswith("127.0.0.1:")
    assert out["same"] is True
    assert f"tcp:{out['port']}" in out["before"]
    assert out["after"] == []
    assert adb_rig.forwards().strip() == ""


def test_adb_over_tcp_serial_is_connected_on_demand(adb_rig, echo_daemon):
    adb_rig.adb("disconnect", adb_rig.serial)
    assert adb_rig.serial not in adb_rig.adb("devices").stdout
    out = adb_rig.ns.python(ECHO_SNIPPET.format(device_id=adb_rig.serial))
    assert out["same"] is True and out["serial"] == adb_rig.serial
    assert f"{adb_rig.serial}\tdevice" in adb_rig.adb("devices").stdout
    assert out["after"] == []


def test_unknown_serial_gives_an_actionable_error(adb_rig):
    adb_rig.connect()
    out = adb_rig.ns.python("""
import json
from rknnlink.transport import resolve, DeviceNotFoundError
try:
    resolve("FAKE123", timeout=5)
    print(json.dumps({"error": None}))
except DeviceNotFoundError as exc:
    print(json.dumps({"error": str(exc)}))
""")
    assert "FAKE123" in out["error"] and adb_rig.serial in out["error"]


def test_an_unreachable_adb_tcp_serial_fails_with_the_reason(adb_rig):
    out = adb_rig.ns.python("""
import json, time
from rknnlink.transport import resolve, DeviceNotFoundError
started = time.monotonic()
try:
    resolve("127.0.0.1:6999", timeout=60)
    print(json.dumps({"error": None}))
except DeviceNotFoundError as exc:
    print(json.dumps({"error": str(exc), "seconds": time.monotonic() - started}))
""")
    assert "adb connect 127.0.0.1:6999" in out["error"] and "failed" in out["error"]
    assert out["seconds"] < 30  # the refused connect is reported, not the 60 s timeout waited out


def test_missing_daemon_asks_for_deploy_and_leaves_no_forward(adb_rig, echo_daemon, tmp_path):
    adb_rig.connect()
    os.killpg(echo_daemon.pid, signal.SIGTERM)
    echo_daemon.wait(10)
    env = base_env(RKNNLINK_BOARD_PREFIX=str(tmp_path / "empty-prefix"))
    out = adb_rig.ns.python("""
import json
from rknnlink.transport import resolve, DaemonNotInstalledError
try:
    resolve(None, timeout=5)
    print(json.dumps({"error": None}))
except DaemonNotInstalledError as exc:
    print(json.dumps({"error": str(exc)}))
""", env=env)
    assert out["error"] is not None
    assert f"rknnlink deploy {adb_rig.serial}" in out["error"]
    assert adb_rig.forwards().strip() == ""


@pytest.fixture(scope="module")
def deployed(adb_rig, tmp_path_factory):
    """`rknnlink deploy` of this working tree onto the emulated board (a sim-backed daemon)."""
    library = find_sim_library()
    if library is None:
        pytest.skip("the simulated librknnrt is not built (run `pip install -e .`)")
    adb_rig.connect()
    base = tmp_path_factory.mktemp("deploy")
    prefix = base / "opt-rknnlink"
    serve_args = (f"--listen 127.0.0.1:{BOARD_PORT} --backend sim --platform rk3588 --library {library} "
                  f"--cache-dir {base / 'cache'}")
    env = base_env(RKNNLINK_BOARD_PREFIX=str(prefix))
    result = adb_rig.ns.run([PYTHON, "-m", "rknnlink.cli", "deploy", adb_rig.serial, "--serve-args", serve_args,
                             "--timeout", "60"], env=env, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    yield {"prefix": prefix, "env": env, "stdout": result.stdout, "stderr": result.stderr}


def test_deploy_installs_and_starts_the_daemon(adb_rig, deployed):

    from rknnlink import __version__

    prefix = deployed["prefix"]
    assert (prefix / "bin" / "rknnlink").stat().st_mode & 0o111
    assert (prefix / "lib" / "rknnlink" / "transport" / "__init__.py").is_file()
    assert (prefix / "lib" / "rknnlink_server" / "server.py").is_file()
    assert "--backend sim" in (prefix / "serve.args").read_text()
    gadget = prefix / "bin" / "rknnlink-usb-gadget"
    assert gadget.read_bytes() == (ROOT / "board_server/usb_gadget/setup_gadget.sh").read_bytes()
    assert gadget.stat().st_mode & 0o111
    assert f"rknnlink {__version__} installed on {adb_rig.serial}" in deployed["stdout"]
    assert "started with nohup" in deployed["stdout"]
    assert adb_rig.forwards().strip() == ""


def _stop_deployed_daemon(prefix) -> int:
    """SIGTERM to the daemon `deploy`/resolve started through our emulated adbd; waits for it to exit."""
    pid = int((prefix / "serve.pid").read_text())
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
            time.sleep(0.1)
        except ProcessLookupError:
            break
    return pid


def test_resolve_starts_a_stopped_daemon_over_adb_shell(adb_rig, deployed):
    pid = _stop_deployed_daemon(deployed["prefix"])
    out = adb_rig.ns.python("""
import json, logging
logging.basicConfig(level=logging.INFO)
import grpc
from rknnlink import __version__
from rknnlink.transport import resolve
from rknnlink.transport.probe import device_info
endpoint = resolve(None, timeout=30)
with grpc.insecure_channel(endpoint.address) as channel:
    info = device_info(channel, 10)
endpoint.close()
print(json.dumps({"platform": info.platform, "version": info.daemon_version, "expected": __version__,
                  "backend": info.backend}))
""", env=deployed["env"])
    assert "with nohup" in out["_stderr"] and "started the rknnlink daemon" in out["_stderr"]
    assert out["platform"] == "rk3588" and out["backend"] == "sim"
    assert out["version"] == out["expected"]
    new_pid = int((deployed["prefix"] / "serve.pid").read_text())
    assert new_pid != pid
    assert adb_rig.forwards().strip() == ""


def test_devices_cli_shows_the_board_and_its_daemon(adb_rig, deployed):
    from rknnlink import __version__

    result = adb_rig.ns.run([PYTHON, "-m", "rknnlink.cli", "devices", "--json", "--timeout", "3"],
                            env=deployed["env"], timeout=60)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    row = next(r for r in rows if r["id"] == adb_rig.serial)
    assert row == {"id": adb_rig.serial, "transport": "adb", "state": "device", "platform": "rk3588",
                   "daemon_version": __version__, "address": None}
    table = adb_rig.ns.run([PYTHON, "-m", "rknnlink.cli", "devices"], env=deployed["env"], timeout=60)
    assert table.returncode == 0
    assert table.stdout.splitlines()[0].split() == ["ID", "TRANSPORT", "STATE", "PLATFORM", "DAEMON", "ADDRESS"]
    assert adb_rig.serial in table.stdout and "rk3588" in table.stdout


def test_devices_cli_shows_a_stopped_daemon(adb_rig, deployed):
    from rknnlink import __version__

    _stop_deployed_daemon(deployed["prefix"])
    result = adb_rig.ns.run([PYTHON, "-m", "rknnlink.cli", "devices", "--json", "--timeout", "3"],
                            env=deployed["env"], timeout=60)
    assert result.returncode == 0, result.stderr
    row = next(r for r in json.loads(result.stdout) if r["id"] == adb_rig.serial)
    assert row["state"] == "stopped" and row["daemon_version"] == __version__
    assert adb_rig.forwards().strip() == ""  # the probe's forward is gone too


def test_devices_cli_with_nothing_attached_prints_an_empty_list(tmp_path):
    reason = netns_available()
    if reason:
        pytest.skip(reason)
    ns = NetNs()
    try:
        ns.run([bundled_adb(), "start-server"], check=True)
        result = ns.run([PYTHON, "-m", "rknnlink.cli", "devices", "--json", "--timeout", "1"], timeout=60)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == []
        plain = ns.run([PYTHON, "-m", "rknnlink.cli", "devices", "--timeout", "1"], timeout=60)
        assert plain.returncode == 0 and "No devices found" in plain.stdout
        ns.run([bundled_adb(), "kill-server"])
    finally:
        ns.close()


def test_an_old_adb_server_is_reported_not_restarted(monkeypatch):
    """A stand-in adb server answering protocol 1.0.31: rknnlink explains and never sends host:kill."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    requests = []

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                length = conn.recv(4)
                if not length:
                    continue
                request = conn.recv(int(length, 16)).decode()
                requests.append(request)
                if request == "host:version":
                    conn.sendall(b"OKAY" + b"0004" + b"001f")
                else:
                    conn.sendall(b"FAIL0007unknown")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", str(port))
    from rknnlink.transport import AdbServerError, adb

    with pytest.raises(AdbServerError) as info:
        adb.client(timeout=5)
    server.close()
    assert "1.0.31" in str(info.value) and "does not restart" in str(info.value)
    assert "adb kill-server" in str(info.value)
    assert requests == ["host:version"]


E2E_SNIPPET = """
import json, sys
import numpy as np
sys.path.insert(0, {runtime_tests!r})
import sim_models
from rknnlink.client import Board
from rknnlink.runtime.library import RuntimeLibrary
from rknnlink.transport import resolve
import adbutils
model, _w, _b = sim_models.conv_relu_model()
x = np.random.default_rng(7).standard_normal((1, 3, 8, 8)).astype(np.float32)
endpoint = resolve(None, timeout=30)
board = Board.connect(endpoint.address, timeout=10, **endpoint.connect_kwargs())
try:
    remote = board.load_model(model).run([x])
finally:
    board.close()
endpoint.close()
local = RuntimeLibrary.load({library!r}, backend="sim").init(model).infer([x])
print(json.dumps({{"identical": len(remote) == len(local) and all(
    r.dtype == l.dtype and r.shape == l.shape and r.tobytes() == l.tobytes() for r, l in zip(remote, local)),
    "nonzero": bool(any(np.count_nonzero(r) for r in remote)),
    "forwards": [f.local for f in adbutils.AdbClient().forward_list()]}}))
"""


def test_inference_through_the_adb_forward_is_bit_identical_to_in_process(adb_rig, deployed):

    out = adb_rig.ns.python(E2E_SNIPPET.format(runtime_tests=str(ROOT / "tests" / "runtime"),
                                               library=find_sim_library()), env=deployed["env"])
    assert out["identical"] is True and out["nonzero"] is True
    assert out["forwards"] == []


def test_toolkit_api_runs_on_the_adb_board(adb_rig, deployed, tmp_path):
    """RKNN().init_runtime(target='rk3588', device_id=SERIAL) goes through resolve() and the forward."""

    model_path = tmp_path / "conv.rknn"
    out = adb_rig.ns.python(f"""
import json, sys
import numpy as np
sys.path.insert(0, {str(ROOT / "tests" / "runtime")!r})
import sim_models
from rknnlink.api import RKNN
from rknnlink.runtime.library import RuntimeLibrary
import adbutils
model, _w, _b = sim_models.conv_relu_model()
open({str(model_path)!r}, "wb").write(model)
x = np.random.default_rng(9).standard_normal((1, 3, 8, 8)).astype(np.float32)
rknn = RKNN()
assert rknn.load_rknn({str(model_path)!r}) == 0
assert rknn.init_runtime(target="rk3588", device_id={adb_rig.serial!r}) == 0
remote = rknn.inference(inputs=[x], data_format="nchw")
during = [f.local for f in adbutils.AdbClient().forward_list()]
rknn.release()
local = RuntimeLibrary.load({find_sim_library()!r}, backend="sim").init(model).infer([x], formats=["nchw"])
print(json.dumps({{"identical": all(np.array_equal(r, l) for r, l in zip(remote, local)),
                   "during": during, "after": [f.local for f in adbutils.AdbClient().forward_list()]}}))
""", env=deployed["env"])
    assert out["identical"] is True
    assert len(out["during"]) == 2 and out["after"] == []  # gRPC and the direct data channel


def test_deploy_a_wheel_without_starting(adb_rig, tmp_path):
    """`deploy --wheel` installs a wheel of the committed tree with pip on the board, leaving it stopped."""
    import subprocess


    source = tmp_path / "src"
    source.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "HEAD"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(source)], input=archive, check=True)
    built = subprocess.run([PYTHON, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                            str(tmp_path / "dist"), str(source)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("rknnlink-*.whl"))
    adb_rig.connect()
    prefix = tmp_path / "wheel-prefix"
    env = base_env(RKNNLINK_BOARD_PREFIX=str(prefix))
    result = adb_rig.ns.run([PYTHON, "-m", "rknnlink.cli", "deploy", adb_rig.serial, "--wheel", str(wheel),
                             "--no-start"], env=env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "(not started)" in result.stdout
    assert (prefix / "lib" / "rknnlink" / "_native" / "librknnrt_sim.so").is_file()
    assert (prefix / "lib" / "rknnlink_server" / "systemd" / "rknnlink-server.service").is_file()
    version = adb_rig.adb("-s", adb_rig.serial, "shell", f"{prefix}/bin/rknnlink --version")
    assert version.stdout.strip().startswith("rknnlink ")
    assert not (prefix / "serve.pid").exists()


def test_deploy_with_a_missing_wheel_explains(adb_rig, tmp_path):
    adb_rig.connect()
    result = adb_rig.ns.run([PYTHON, "-m", "rknnlink.cli", "deploy", adb_rig.serial, "--wheel",
                             str(tmp_path / "nope.whl")], env=base_env(RKNNLINK_BOARD_PREFIX=str(tmp_path / "p")))
    assert result.returncode == 1
    assert "nope.whl does not exist" in result.stderr and "pip wheel" in result.stderr
