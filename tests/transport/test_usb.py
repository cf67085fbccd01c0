"""USB bulk bridge: the host bridge over an emulated pyusb bus, the real board program on FIFO endpoints.

Board side: board_server/usb_gadget/rknnlink_usb_bridge.py (or `rknnlink usb-bridge`) --ffs-dir DIR
(DIR/ep1, DIR/ep2 are FIFOs in place of FunctionFS endpoint files) relaying to a gRPC server or the real
daemon on 127.0.0.1.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import fake_usb
import grpc
import numpy as np
import pytest
from fake_usb import FakeBackend, FakeBoard
from transport_rig import HERE, PYTHON, ROOT, NetNs, base_env, find_sim_library, netns_available

from rknnlink.v1.usbmux import MuxConfig

SERIAL = "USBBOARD42"
BRIDGE_PROGRAM = ROOT / "board_server" / "usb_gadget" / "rknnlink_usb_bridge.py"
OPTIONS = [("grpc.max_receive_message_length", 1 << 26), ("grpc.max_send_message_length", 1 << 26)]


class UsbRig:
    """Echo server + board bridge program + emulated bus, all on this machine's loopback."""

    def __init__(self, workdir: Path, target_port: int, via_cli: bool = False, extra: tuple = ()) -> None:
        self.workdir = workdir
        self.ffs = workdir / "ffs"
        FakeBoard.make_fifos(self.ffs)
        self.log = open(workdir / "board_bridge.log", "ab")  # noqa: SIM115 - closed in stop()
        program = [PYTHON, "-m", "rknnlink.cli", "-v", "usb-bridge"] if via_cli else [PYTHON, str(BRIDGE_PROGRAM), "-v"]
        self.board_proc = subprocess.Popen(
            program + ["--ffs-dir", str(self.ffs), "--target", f"127.0.0.1:{target_port}", *extra],
            env=base_env(), stdout=self.log, stderr=self.log)
        self.board = FakeBoard(self.ffs, SERIAL)
        self.backend = FakeBackend([self.board])

    def bridge(self, **config):
        from rknnlink.transport.usb import UsbBridge

        mux_config = MuxConfig(**{"io_timeout": 1.0, "link_timeout": 1.5, "ping_interval": 0.3, **config})
        return UsbBridge(SERIAL, backend=self.backend, config=mux_config, handshake_timeout=2.0).start(timeout=15)

    def stop(self) -> None:
        if self.board_proc.poll() is None:
            self.board_proc.send_signal(signal.SIGCONT)
            self.board_proc.terminate()
            self.board_proc.wait(10)
        self.log.close()


@pytest.fixture(scope="module")
def echo_server():
    proc = subprocess.Popen([PYTHON, str(HERE / "health_server.py"), "--port", "0"], env=base_env(),
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.startswith("READY"), line
    yield int(line.split()[1])
    proc.terminate()
    proc.wait(10)


@pytest.fixture()
def rig(echo_server, tmp_path):
    rig = UsbRig(tmp_path, echo_server)
    yield rig
    rig.stop()


def _echo(address: str):
    channel = grpc.insecure_channel(address, options=OPTIONS)
    return channel, channel.unary_unary("/rknnlink.test.Echo/Echo")


def test_board_program_writes_functionfs_descriptors(rig):
    deadline = time.monotonic() + 10
    blob = b""
    while time.monotonic() < deadline and len(blob) < 12:
        blob = (rig.ffs / "ep0").read_bytes()
        time.sleep(0.05)
    magic, length, flags = struct.unpack_from("<III", blob)
    assert (magic, flags) == (3, 7)  # FUNCTIONFS_DESCRIPTORS_MAGIC_V2; full, high and super speed
    assert struct.unpack_from("<III", blob, 12) == (3, 3, 5)
    descriptors = blob[24:length]
    interface = descriptors[:9]
    assert interface[1] == 4 and tuple(interface[5:8]) == (0xFF, 0x52, 0x4C) and interface[4] == 2
    speeds = []
    offset = 0
    while offset < len(descriptors):
        size, kind = descriptors[offset], descriptors[offset + 1]
        if kind == 5:
            address, attributes, packet = struct.unpack_from("<BBH", descriptors, offset + 2)
            speeds.append((address, attributes, packet))
        offset += size
    assert offset == len(descriptors)
    assert speeds == [(0x01, 2, 64), (0x82, 2, 64), (0x01, 2, 512), (0x82, 2, 512), (0x01, 2, 1024), (0x82, 2, 1024)]
    strings = blob[length:]
    magic, total, count, langs, lang = struct.unpack_from("<IIIIH", strings)
    assert (magic, total, count, langs, lang) == (2, len(strings), 1, 1, 0x0409)
    assert strings[18:] == b"rknnlink bulk\0"


def test_listing_finds_the_board_through_a_configured_backend(rig, monkeypatch):
    from rknnlink.transport import list_usb_serials
    from rknnlink.transport.usb import describe_devices

    monkeypatch.setattr(fake_usb, "CURRENT", rig.backend)
    monkeypatch.setenv("RKNNLINK_USB_BACKEND", "fake_usb:current_backend")
    assert list_usb_serials() == [SERIAL]
    records = describe_devices(timeout=5)
    assert [(r.id, r.transport, r.state, r.platform, r.daemon_version) for r in records] == \
        [(f"usb:{SERIAL}", "usb", "device", "rk3588", "0.1.0")]
    rig.board.unplug()
    assert list_usb_serials() == []


def test_devices_cli_lists_the_usb_board(rig):
    """The CLI in a fresh namespace (its adb server starts and dies there) sees the emulated USB board."""
    import json

    reason = netns_available()
    if reason:
        pytest.skip(reason)
    env = base_env(RKNNLINK_USB_BACKEND="fake_usb:current_backend", FAKE_USB_BOARDS=f"{rig.ffs}={SERIAL}")
    ns = NetNs()
    try:
        result = ns.run([PYTHON, "-m", "rknnlink.cli", "devices", "--json", "--timeout", "5"], env=env, timeout=120)
    finally:
        ns.close()
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert rows == [{"id": f"usb:{SERIAL}", "transport": "usb", "state": "device", "platform": "rk3588",
                     "daemon_version": "0.1.0", "address": None}]


def test_an_unknown_usb_serial_fails_fast_and_lists_the_attached_boards(rig):
    from rknnlink.transport import DeviceNotFoundError
    from rknnlink.transport.usb import UsbBridge

    started = time.monotonic()
    with pytest.raises(DeviceNotFoundError) as info:
        UsbBridge("NOSUCHBOARD", backend=rig.backend).start(timeout=60)
    assert time.monotonic() - started < 30  # from the bus listing, not by waiting out the 60 s timeout
    assert "NOSUCHBOARD" in str(info.value) and f"Attached rknnlink USB boards: {SERIAL}" in str(info.value)


def test_bridge_carries_many_concurrent_and_large_messages(rig):
    bridge = rig.bridge()
    channel, echo = _echo(bridge.address)
    try:
        payloads = [os.urandom(150528) for _ in range(8)]
        results = [None] * len(payloads)

        def call(index: int) -> None:
            for _ in range(5):
                results[index] = echo(payloads[index], timeout=20) == payloads[index]

        threads = [threading.Thread(target=call, args=(i,)) for i in range(len(payloads))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert results == [True] * len(payloads)
        big = os.urandom(12 * 1024 * 1024)  # 12 windows: flow control has to hand out credit
        assert echo(big, timeout=60) == big
        assert bridge.mux.stats.protocol_errors == 0 and bridge.sessions == 1
        other_channel, other_echo = _echo(bridge.address)  # a second connection on the same bridge
        assert other_echo(b"second", timeout=10) == b"second"
        other_channel.close()
    finally:
        channel.close()
        bridge.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", bridge.port), timeout=2)


def test_a_dropped_transfer_resets_the_session_and_the_next_call_succeeds(rig):
    bridge = rig.bridge()
    channel, echo = _echo(bridge.address)
    try:
        payload = os.urandom(150528)
        assert echo(payload, timeout=10) == payload
        rig.board.drop_min_size = 4096
        rig.board.drop_next_write = True
        with pytest.raises(grpc.RpcError) as info:
            echo(payload, timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert rig.board.dropped == 1
        assert any("sequence gap" in reason for reason in bridge.failures), bridge.failures
        assert bridge.wait_link(10)
        assert echo(payload, timeout=10, wait_for_ready=True) == payload
        assert bridge.sessions == 2
    finally:
        channel.close()
        bridge.close()


def test_a_stalled_board_times_out_and_the_link_recovers(rig):
    bridge = rig.bridge()
    channel, echo = _echo(bridge.address)
    try:
        payload = os.urandom(150528)
        assert echo(payload, timeout=10) == payload
        rig.board_proc.send_signal(signal.SIGSTOP)
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            echo(payload, timeout=20)
        elapsed = time.monotonic() - started
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        # UNAVAILABLE (not DEADLINE_EXCEEDED) already says the bridge's stall detection fired before the 20 s
        # deadline; the elapsed time is kept only for the message.
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE, f"after {elapsed:.1f} s"
        assert any("timed out" in r or "no answer" in r for r in bridge.failures), bridge.failures
        rig.board_proc.send_signal(signal.SIGCONT)
        assert bridge.wait_link(15)
        assert echo(payload, timeout=10, wait_for_ready=True) == payload
    finally:
        rig.board_proc.send_signal(signal.SIGCONT)
        channel.close()
        bridge.close()


def test_unplug_and_replug_reconnects_on_the_same_port(rig):
    bridge = rig.bridge()
    channel, echo = _echo(bridge.address)
    try:
        assert echo(b"before", timeout=10) == b"before"
        port = bridge.port
        rig.board.unplug()
        deadline = time.monotonic() + 5
        while not bridge.failures and time.monotonic() < deadline:
            time.sleep(0.05)
        assert bridge.failures, "unplugging went unnoticed"
        with pytest.raises(grpc.RpcError):
            echo(b"while unplugged", timeout=1)
        rig.board.replug()
        assert bridge.wait_link(15)
        assert bridge.port == port
        assert echo(b"after", timeout=10, wait_for_ready=True) == b"after"
        assert bridge.sessions >= 2
    finally:
        channel.close()
        bridge.close()


@pytest.fixture()
def usb_daemon(tmp_path):
    """`rknnlink serve` (sim) on this machine's loopback, as on the board: (the board bridge's arguments for its
    gRPC and data ports, the library). The data port is read from the daemon's log (a free port here)."""
    library = find_sim_library()
    port_file = tmp_path / "daemon.port"
    log_path = tmp_path / "daemon.log"
    daemon = subprocess.Popen([PYTHON, "-m", "rknnlink.cli", "serve", "--listen", "127.0.0.1:0", "--port-file",
                               str(port_file), "--backend", "sim", "--platform", "rk3588", "--library", library,
                               "--cache-dir", str(tmp_path / "cache")], env=base_env(),
                              stdout=subprocess.DEVNULL, stderr=open(log_path, "wb"))  # noqa: SIM115
    try:
        deadline = time.monotonic() + 30
        while not port_file.exists() and time.monotonic() < deadline:
            assert daemon.poll() is None, log_path.read_text()
            time.sleep(0.1)
        port = int(port_file.read_text().strip().rsplit(":", 1)[1])
        data_port = re.search(r"data channel on port (\d+)", log_path.read_text()).group(1)
        yield port, ("--data-target", f"127.0.0.1:{data_port}"), library
    finally:
        daemon.terminate()
        daemon.wait(15)


@pytest.mark.parametrize("data", [True, False], ids=["data-channel", "no-data-target"])
def test_resolve_usb_runs_inference_on_the_real_daemon_bit_identical(usb_daemon, tmp_path, monkeypatch, data):
    """usb:SERIAL end to end: rknnlink serve (sim) <- board program <- FIFOs <- pyusb <- bridge <- client.
    The board's bridge opens data channels to the daemon's data port, so frames take the direct carrier
    over the mux; a bridge started with --no-data-target leaves the gRPC Relay stream."""
    sys.path.insert(0, str(ROOT / "tests" / "runtime"))
    import sim_models

    from rknnlink.client import Board
    from rknnlink.runtime.library import RuntimeLibrary
    from rknnlink.transport import resolve

    daemon_port, data_target, library = usb_daemon
    rig = UsbRig(tmp_path, daemon_port, via_cli=True, extra=data_target if data else ("--no-data-target",))
    try:
        monkeypatch.setattr(fake_usb, "CURRENT", rig.backend)
        monkeypatch.setenv("RKNNLINK_USB_BACKEND", "fake_usb:current_backend")
        model, _weight, _bias = sim_models.conv_relu_model()
        x = np.random.default_rng(3).standard_normal((1, 3, 8, 8)).astype(np.float32)
        endpoint = resolve(f"usb:{SERIAL}", timeout=15)
        assert endpoint.kind == "usb" and endpoint.serial == SERIAL
        assert (endpoint.data_address is not None) == data
        board = Board.connect(endpoint.address, timeout=10, **endpoint.connect_kwargs())
        try:
            assert board.info.platform == "rk3588"
            session = board.load_model(model)
            remote = session.run([x])
            assert session.carrier == ("direct" if data else "relay")
            with session.pipeline(depth=3) as pipe:
                assert all(o[0].tobytes() == remote[0].tobytes() for o in pipe.map([x] for _ in range(5)))
        finally:
            board.close()
        endpoint.close()
        local = RuntimeLibrary.load(library, backend="sim").init(model).infer([x])
        assert len(remote) == len(local)
        for got, want in zip(remote, local):
            assert got.dtype == want.dtype and got.shape == want.shape
            assert got.tobytes() == want.tobytes()
        for address in (endpoint.address, endpoint.data_address):
            if address is not None:
                host, port = address.rsplit(":", 1)
                with pytest.raises(OSError):  # close() stopped the bridge
                    socket.create_connection((host, int(port)), timeout=2)
    finally:
        rig.stop()


def test_usb_data_channel_refuses_bad_hellos_and_frames_and_reports_a_killed_worker(usb_daemon, tmp_path,
                                                                                    monkeypatch):
    """Over the mux's data channel the daemon's data port protects itself as on loopback: a wrong secret is
    refused, a 2^40 length prefix gets an error reply before anything is allocated, and a worker killed in
    the middle of a frame ends the connection and the session is reported lost; other sessions go on."""
    sys.path.insert(0, str(ROOT / "tests" / "runtime"))
    import sim_models

    from rknnlink.client import Board, SessionLostError
    from rknnlink.transport import resolve
    from rknnlink.v1 import datawire

    daemon_port, data_target, _library = usb_daemon
    rig = UsbRig(tmp_path, daemon_port, via_cli=True, extra=data_target)
    try:
        monkeypatch.setattr(fake_usb, "CURRENT", rig.backend)
        monkeypatch.setenv("RKNNLINK_USB_BACKEND", "fake_usb:current_backend")
        model = sim_models.conv_relu_model()[0]
        x = np.ones((1, 3, 8, 8), np.float32)
        with resolve(f"usb:{SERIAL}", timeout=15) as endpoint, \
                Board.connect(endpoint.address, timeout=10, **endpoint.connect_kwargs()) as board:
            host, port = endpoint.data_address.rsplit(":", 1)
            session, bystander = board.load_model(model), board.load_model(model)
            assert session.run([x], formats=["nchw"])[0].shape == (1, 4, 8, 8) and session.carrier == "direct"

            def connect(secret: bytes) -> tuple:
                sock = socket.create_connection((host, int(port)), timeout=30)
                sock.sendall(datawire.encode_hello(session.id, secret))
                return sock, datawire.read_hello_reply(sock)

            sock, (status, message) = connect(b"\0" * 32)
            sock.close()
            assert status == datawire.REFUSED and "wrong secret" in message
            sock, (status, message) = connect(session._secret)
            with sock:
                assert status == 0, message
                sock.sendall(struct.pack("<Q", 1 << 40))
                rid, status, _us, payload = datawire.parse_reply(datawire.FrameReader(sock).read(1 << 20), 1 << 20)
                assert rid == 0 and status != 0 and "frame" in payload[1]
            assert session.run([x], formats=["nchw"])[0].shape == (1, 4, 8, 8)
            sock, (status, message) = connect(session._secret)
            with sock:
                assert status == 0, message
                sock.sendall(struct.pack("<Q", 1 << 20) + b"\0" * 1000)  # a frame the worker waits for
                pid = next(s["worker_pid"] for s in board.stats()["sessions"] if s["session_id"] == session.id)
                os.kill(pid, signal.SIGKILL)
                sock.settimeout(60)
                try:
                    assert sock.recv(1) == b""
                except ConnectionResetError:
                    pass
            with pytest.raises(SessionLostError, match=r"crashed \(signal 9\)"):
                session.run([x], formats=["nchw"])
            assert bystander.run([x], formats=["nchw"])[0].shape == (1, 4, 8, 8)
    finally:
        rig.stop()
