"""`rknnlink serve` as a real process, and the systemd unit from `rknnlink install-service`."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rknnlink.client import Board


def _rknnlink(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "rknnlink.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ), **kwargs)


def test_serve_prints_the_bound_address_and_stops_on_sigterm(sim_library, tmp_path):
    port_file = tmp_path / "port"
    proc = _rknnlink("serve", "--listen", "127.0.0.1:0", "--backend", "sim", "--platform", "rk3566",
                     "--cache-dir", str(tmp_path / "cache"), "--port-file", str(port_file))
    try:
        line = proc.stdout.readline()
        match = re.fullmatch(r"rknnlink daemon listening on (127\.0\.0\.1:\d+)\n", line)
        assert match, line
        assert port_file.read_text().strip() == match.group(1)
        with Board.connect(match.group(1)) as board:
            assert board.info.platform == "rk3566" and board.info.npu_cores == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "rknnlink daemon on 127.0.0.1" in proc.stderr.read()


def test_serve_refuses_a_bad_listen_address(sim_library, tmp_path):
    proc = _rknnlink("serve", "--listen", "nonsense", "--backend", "sim", "--cache-dir", str(tmp_path))
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1 and "must be HOST:PORT" in err


def test_serve_vendor_backend_without_a_library_says_what_to_install(tmp_path, monkeypatch):
    env = dict(os.environ, LIBRKNNRT_PATH=str(tmp_path / "missing.so"))
    proc = subprocess.run([sys.executable, "-m", "rknnlink.cli", "serve", "--backend", "vendor", "--listen",
                           "127.0.0.1:0", "--cache-dir", str(tmp_path)], capture_output=True, text=True, env=env,
                          timeout=30)
    assert proc.returncode == 1 and "LIBRKNNRT_PATH" in proc.stderr


def test_installed_unit_passes_systemd_analyze_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    stub = tmp_path / "usr" / "bin" / "rknnlink"  # verify needs ExecStart to exist
    stub.parent.mkdir(parents=True)
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    proc = subprocess.run([sys.executable, "-m", "rknnlink.cli", "install-service", "--root", str(tmp_path),
                           "--exec", str(stub), "--listen", "0.0.0.0:50051"], capture_output=True, text=True,
                          env=dict(os.environ), timeout=30)
    assert proc.returncode == 0, proc.stderr
    unit = tmp_path / "etc" / "systemd" / "system" / "rknnlink-server.service"
    text = unit.read_text()
    assert f"ExecStart={stub} serve --listen 0.0.0.0:50051" in text
    for key in ("Restart=on-failure", "NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes",
                "CacheDirectory=rknnlink", "DeviceAllow=/dev/rknpu rw", "DeviceAllow=char-drm rw"):
        assert key in text
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout == "" and result.stderr == "", result.stdout + result.stderr


@pytest.mark.parametrize("listen", ["not-an-address", "127.0.0.1:99999", "127.0.0.1:0", "a b:1", "h%n:1",
                                    "$(id):1", "::1:50051"])
def test_install_service_rejects_bad_addresses(tmp_path, listen):
    proc = subprocess.run([sys.executable, "-m", "rknnlink.cli", "install-service", "--root", str(tmp_path),
                           "--exec", "/usr/bin/rknnlink", "--listen", listen], capture_output=True, text=True,
                          env=dict(os.environ), timeout=30)
    assert proc.returncode == 1 and f"cannot install the service: address {listen!r}" in proc.stderr
    assert not (tmp_path / "etc" / "systemd" / "system" / "rknnlink-server.service").exists()


def test_install_service_escapes_systemd_specifiers_and_variables(tmp_path):
    """% in the executable path reaches systemd escaped, spaces quoted; systemd-analyze finds the file."""
    from rknnlink_server.install import install

    exe = tmp_path / "opt" / "my %h tools $HOME" / "rknnlink"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    unit = install(tmp_path, "[::1]:50051", executable=str(exe))
    text = unit.read_text()
    assert f'ExecStart="{str(exe).replace("%", "%%")}" serve --listen [::1]:50051' in text  # $ is literal there
    with pytest.raises(ValueError, match="control characters"):
        install(tmp_path, "127.0.0.1:50051", executable="/opt/x\nExecStartPre=/bin/evil")
    with pytest.raises(ValueError, match="absolute"):
        install(tmp_path, "127.0.0.1:50051", executable="rknnlink")
    analyze = shutil.which("systemd-analyze")
    if analyze is not None:
        result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and result.stderr == "", result.stdout + result.stderr


def test_deploy_launcher_quotes_the_prefix(tmp_path):
    """The prefix used to go into the launcher unquoted: `$(...)` in it ran on the board."""
    from rknnlink.transport.deploy import _launcher, check_serve_args
    from rknnlink.transport.errors import TransportError

    marker = tmp_path / "pwned"
    prefix = f"/opt/$(touch {marker})`touch {marker}` x"
    script = _launcher(prefix).replace('exec python3 -m rknnlink.cli "$@"', 'printf %s "$PYTHONPATH"')
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, env={"PATH": os.environ["PATH"]},
                         timeout=10)
    assert out.stdout == f"{prefix}/lib:{prefix}/deps" and not marker.exists()
    with pytest.raises(TransportError, match="absolute path"):
        _launcher("relative/prefix")
    for bad in ("--listen $(reboot)", "--listen 127.0.0.1:1 *", "--listen not-an-address", "--cache-dir 'a b'"):
        with pytest.raises(TransportError):
            check_serve_args(bad)
    assert check_serve_args("--listen 127.0.0.1:50051 --max-sessions 4") == "--listen 127.0.0.1:50051 --max-sessions 4"


def test_network_listener_fails_closed_without_its_serving_module(monkeypatch):
    """A listener beyond loopback used to serve without TLS when its serving module failed to import."""
    import sys as _sys

    from rknnlink_server.server import DaemonConfig, listen_setup
    from rknnlink_server.service import RuntimeSetup

    monkeypatch.setitem(_sys.modules, "rknnlink_server.listening", None)  # import raises ImportError
    runtime = RuntimeSetup(library="/nonexistent.so", backend="sim", platform="rk3588", serial="sim-test")
    with pytest.raises(OSError, match="needs TLS and a token"):
        listen_setup(DaemonConfig(listen="192.0.2.10:50051"), runtime)
    assert listen_setup(DaemonConfig(listen="127.0.0.1:0"), runtime) is None
    assert listen_setup(DaemonConfig(listen="192.0.2.10:50051", insecure=True), runtime) is None


def test_unit_template_is_packaged():
    from rknnlink_server.install import TEMPLATE

    assert Path(TEMPLATE).is_file() and "@EXEC@" in Path(TEMPLATE).read_text()


def test_network_listener_gets_tls_and_a_token(tmp_path):
    pytest.importorskip("cryptography")
    from rknnlink_server.server import DaemonConfig, listen_setup
    from rknnlink_server.service import RuntimeSetup

    runtime = RuntimeSetup(library="/nonexistent.so", backend="sim", platform="rk3588", serial="sim-test")
    loopback = listen_setup(DaemonConfig(listen="127.0.0.1:0", state_dir=tmp_path / "a"), runtime)
    assert loopback is None or (loopback.credentials is None and not loopback.network)
    network = listen_setup(DaemonConfig(listen="192.0.2.10:50051", state_dir=tmp_path / "b"), runtime)
    assert network.network and network.credentials is not None and network.interceptors
    assert network.token_path.is_file() and oct(network.token_path.stat().st_mode & 0o777) == "0o600"
    insecure = listen_setup(DaemonConfig(listen="192.0.2.10:50051", state_dir=tmp_path / "c", insecure=True), runtime)
    assert insecure.credentials is None
