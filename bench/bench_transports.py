#!/usr/bin/env python3
"""Transport overhead: the same request/reply through raw TCP, an adb forward and the USB bulk bridge.

Each round trip sends 150,528 bytes (a 224x224x3 uint8 image) and receives 4,000 bytes (1000 float32
scores): length-prefixed on one persistent TCP connection, and as one gRPC unary call on one channel.
Everything runs in one network namespace created for the run (root and iproute2 needed): the real adb
server with the emulated adbd from tests/transport, and the USB bridge over the emulated pyusb bus with
the real board-side bridge program on FIFOs. The report is the median/p99 per path and its ratio to the
direct path (raw TCP, or gRPC straight to the server) measured in the same run.

Usage: python bench/bench_transports.py [--rounds 300]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests" / "transport"
REQUEST, REPLY = 150528, 4000
BOARD_PORT, ADBD_PORT, ADB_SERVER_PORT = 50051, 6101, 7137
GRPC_PORT = 50052


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    buf = bytearray()
    while len(buf) < size:
        chunk = sock.recv(size - len(buf))
        if not chunk:
            raise ConnectionError("peer closed")
        buf += chunk
    return bytes(buf)


def serve_board(port: int) -> socket.socket:
    """The 'daemon': reads a length-prefixed request, answers REPLY bytes."""
    server = socket.create_server(("127.0.0.1", port))
    reply = struct.pack("<I", REPLY) + os.urandom(REPLY)

    def handle(conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with conn:
            try:
                while True:
                    size = struct.unpack("<I", _recv_exact(conn, 4))[0]
                    _recv_exact(conn, size)
                    conn.sendall(reply)
            except (ConnectionError, OSError):
                return

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return server


def measure(address: str, rounds: int) -> list:
    host, port = address.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    request = struct.pack("<I", REQUEST) + os.urandom(REQUEST)
    times = []
    with sock:
        for i in range(rounds + 10):
            start = time.perf_counter()
            sock.sendall(request)
            size = struct.unpack("<I", _recv_exact(sock, 4))[0]
            _recv_exact(sock, size)
            if i >= 10:  # warm-up excluded
                times.append((time.perf_counter() - start) * 1e3)
    return times


def measure_grpc(address: str, rounds: int) -> list:
    import grpc

    options = [("grpc.max_receive_message_length", 1 << 24), ("grpc.max_send_message_length", 1 << 24)]
    request = os.urandom(REQUEST)
    times = []
    with grpc.insecure_channel(address, options=options) as channel:
        head = channel.unary_unary("/rknnlink.test.Echo/Head")
        for i in range(rounds + 10):
            start = time.perf_counter()
            reply = head(request, timeout=30)
            if i >= 10:
                times.append((time.perf_counter() - start) * 1e3)
            assert len(reply) == REPLY
    return times


def _adb_path() -> str:
    import adbutils

    return str(Path(adbutils.__file__).parent / "binaries" / "adb")


def adb_forward_address(workdir: Path) -> tuple:
    """Starts the emulated adbd and an isolated adb server; returns (address, cleanup)."""
    env = dict(os.environ, ANDROID_ADB_SERVER_PORT=str(ADB_SERVER_PORT), ADB_MDNS="0", ADB_USB="0")
    adbd = subprocess.Popen([sys.executable, str(TESTS / "fake_adbd.py"), "--port", str(ADBD_PORT), "--home",
                             str(workdir)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    adbd.stdout.readline()
    adb = _adb_path()
    subprocess.run([adb, "start-server"], env=env, check=True, capture_output=True)
    subprocess.run([adb, "connect", f"127.0.0.1:{ADBD_PORT}"], env=env, check=True, capture_output=True)
    os.environ.update(ANDROID_ADB_SERVER_PORT=str(ADB_SERVER_PORT), ADB_MDNS="0", ADB_USB="0")
    from rknnlink.transport import adb as adb_transport

    client = adb_transport.client()
    serial = adb_transport.pick_serial(client, f"127.0.0.1:{ADBD_PORT}", 10)
    board = adb_transport.AdbBoard(client, serial)
    local = board.forward(BOARD_PORT)
    local_grpc = board.forward(GRPC_PORT)

    def cleanup() -> None:
        board.remove_forward(local)
        board.remove_forward(local_grpc)
        subprocess.run([adb, "kill-server"], env=env, capture_output=True)
        adbd.terminate()
        adbd.wait(10)

    return f"127.0.0.1:{local}", f"127.0.0.1:{local_grpc}", cleanup


def usb_bridge_address(workdir: Path, target_port: int, data_port: int = 0) -> tuple:
    """(bridge address, cleanup) of a host bridge over the emulated bus to a board bridge program relaying
    to `target_port`; with `data_port` its data channels go there, and the address is (gRPC, data)."""
    sys.path.insert(0, str(TESTS))
    from fake_usb import FakeBackend, FakeBoard

    from rknnlink.transport.usb import UsbBridge

    ffs = workdir / f"ffs-{target_port}"
    FakeBoard.make_fifos(ffs)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "host"), str(ROOT / "board_server"),
                                                        os.environ.get("PYTHONPATH", "")]))
    board_proc = subprocess.Popen([sys.executable, str(ROOT / "board_server/usb_gadget/rknnlink_usb_bridge.py"),
                                   "--ffs-dir", str(ffs), "--target", f"127.0.0.1:{target_port}",
                                   *(("--data-target", f"127.0.0.1:{data_port}") if data_port else ())], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    serial = f"BENCH{target_port}"
    bridge = UsbBridge(serial, backend=FakeBackend([FakeBoard(ffs, serial)])).start(timeout=15)

    def cleanup() -> None:
        bridge.close()
        board_proc.terminate()
        board_proc.wait(10)

    return ((bridge.address, bridge.data_address) if data_port else bridge.address), cleanup


def inner(rounds: int) -> dict:
    sys.path.insert(0, str(ROOT / "host"))
    sys.path.insert(0, str(TESTS))
    from health_server import build_server

    with tempfile.TemporaryDirectory(prefix="rknnlink-bench-") as tmp:
        return _measure_all(Path(tmp), rounds, build_server)


def _measure_all(workdir: Path, rounds: int, build_server) -> dict:
    server = serve_board(BOARD_PORT)
    grpc_server, _ = build_server(f"127.0.0.1:{GRPC_PORT}")
    grpc_server.start()
    results = {"raw_tcp": measure(f"127.0.0.1:{BOARD_PORT}", rounds)}
    address, grpc_address, cleanup = adb_forward_address(workdir)
    try:
        results["adb_forward"] = measure(address, rounds)
        results["usb_bridge"] = _through_usb(workdir, BOARD_PORT, measure, rounds)
        results["grpc_direct"] = measure_grpc(f"127.0.0.1:{GRPC_PORT}", rounds)
        results["grpc_adb"] = measure_grpc(grpc_address, rounds)
        results["grpc_usb"] = _through_usb(workdir, GRPC_PORT, measure_grpc, rounds)
    finally:
        cleanup()
    grpc_server.stop(0)
    server.close()
    return results


def _through_usb(workdir: Path, target_port: int, measure_fn, rounds: int) -> list:
    address, cleanup = usb_bridge_address(workdir, target_port)
    try:
        return measure_fn(address, rounds)
    finally:
        cleanup()


def report(results: dict) -> None:
    def p99(values: list) -> float:
        return sorted(values)[min(len(values) - 1, int(len(values) * 0.99))]

    print(f"round trip {REQUEST} B out / {REPLY} B back, {len(results['raw_tcp'])} rounds each")
    print(f"{'path':<12} {'median ms':>10} {'p99 ms':>8} {'x direct':>9}")
    for name, values in results.items():
        base = statistics.median(results["grpc_direct" if name.startswith("grpc") else "raw_tcp"])
        median = statistics.median(values)
        print(f"{name:<12} {median:>10.3f} {p99(values):>8.3f} {median / base:>9.2f}")
    print("(x direct: against raw_tcp for the raw paths, against grpc_direct for the gRPC paths)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        print(json.dumps(inner(args.rounds)))
        return 0
    if os.geteuid() != 0:
        print("bench_transports: needs root for a network namespace (ip netns); skipped")
        return 0
    name = f"rknnlink-bench-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "host"), str(ROOT / "board_server"),
                                                            os.environ.get("PYTHONPATH", "")]))
        result = subprocess.run(["ip", "netns", "exec", name, sys.executable, __file__, "--inner", "--rounds",
                                 str(args.rounds)], env=env, capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            print(result.stderr[-3000:], file=sys.stderr)
            return 1
        report(json.loads(result.stdout.strip().splitlines()[-1]))
    finally:
        pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), 9)
            except (ProcessLookupError, ValueError):
                pass
        subprocess.run(["ip", "netns", "del", name], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
