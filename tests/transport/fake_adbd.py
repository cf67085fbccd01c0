"""An emulated adbd: the device side of the ADB transport protocol over TCP, for tests on a board-less machine.

The real adb server attaches to it with `adb connect 127.0.0.1:PORT` (use a port above 5585 so the server
does not treat it as an emulator console). It serves what rknnlink needs from a board: `shell:` and
`shell,v2:` (exit codes), `sync:` (STAT, SEND, RECV, LIST, QUIT), and `tcp:PORT` streams, which is what
`adb forward` opens on the device. Shell commands run for real with /bin/sh on this machine, so run the
emulator inside a network namespace the test created.

Run: python fake_adbd.py --port 6001 [--model RK3588-EVB] [--serial ...]; it prints READY once listening.
"""

from __future__ import annotations

import argparse
import os
import queue
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path
from typing import Callable, Dict, Optional

A_CNXN = 0x4E584E43
A_OPEN = 0x4E45504F
A_OKAY = 0x59414B4F
A_WRTE = 0x45545257
A_CLSE = 0x45534C43
A_VERSION = 0x01000001
MAX_PAYLOAD = 256 * 1024
HEADER = struct.Struct("<6I")

# shell v2 packet ids
SHELL_STDIN, SHELL_STDOUT, SHELL_STDERR, SHELL_EXIT, SHELL_CLOSE_STDIN = 0, 1, 2, 3, 4


def _nodelay(sock: socket.socket) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class Stream:
    """One adb stream: inbound WRTE payloads are queued, outbound writes wait for the peer's OKAY."""

    def __init__(self, conn: Connection, local_id: int, remote_id: int) -> None:
        self.conn = conn
        self.local_id = local_id
        self.remote_id = remote_id
        self.inbound: queue.Queue[Optional[bytes]] = queue.Queue()
        self.acked = threading.Event()
        self.acked.set()
        self.closed = threading.Event()
        self.write_lock = threading.Lock()   # stdout and stderr pumps of one shell share the stream
        self._pending = b""

    def write(self, data: bytes) -> bool:
        view = memoryview(data)
        while len(view):
            if not self._wait_ack():
                return False
            chunk = bytes(view[: self.conn.max_payload])
            view = view[len(chunk):]
            self.acked.clear()
            self.conn.send(A_WRTE, self.local_id, self.remote_id, chunk)
        return True

    def _wait_ack(self) -> bool:
        while not self.acked.wait(0.5):
            if self.closed.is_set():
                return False
        return not self.closed.is_set()

    def read_some(self) -> bytes:
        """Returns the next inbound bytes, or b'' once the peer closed the stream."""
        if self._pending:
            data, self._pending = self._pending, b""
            return data
        data = self.inbound.get()
        return data or b""

    def read_exact(self, size: int) -> bytes:
        buf = bytearray()
        while len(buf) < size:
            data = self.read_some()
            if not data:
                raise EOFError("stream closed")
            buf += data
        self._pending = bytes(buf[size:]) + self._pending
        return bytes(buf[:size])

    def close(self) -> None:
        self.wait_drained()
        if not self.closed.is_set():
            self.closed.set()
            self.conn.send(A_CLSE, self.local_id, self.remote_id, b"")
        self.conn.forget(self.local_id)

    def wait_drained(self) -> None:
        self._wait_ack()

    def peer_closed(self) -> None:
        self.closed.set()
        self.acked.set()
        self.inbound.put(None)


class Connection:
    """One attached adb server."""

    def __init__(self, sock: socket.socket, banner: bytes, env: Dict[str, str]) -> None:
        self.sock = sock
        self.banner = banner
        self.env = env
        self.max_payload = MAX_PAYLOAD
        self._send_lock = threading.Lock()
        self._streams: Dict[int, Stream] = {}
        self._next_id = 1
        self._lock = threading.Lock()

    def send(self, command: int, arg0: int, arg1: int, data: bytes) -> None:
        header = HEADER.pack(command, arg0, arg1, len(data), 0, command ^ 0xFFFFFFFF)
        with self._send_lock:
            try:
                self.sock.sendall(header + data)
            except OSError:
                pass

    def forget(self, local_id: int) -> None:
        with self._lock:
            self._streams.pop(local_id, None)

    def _recv_exact(self, size: int) -> bytes:
        buf = bytearray()
        while len(buf) < size:
            chunk = self.sock.recv(size - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return bytes(buf)

    def serve(self) -> None:
        try:
            while True:
                command, arg0, arg1, length, _crc, magic = HEADER.unpack(self._recv_exact(HEADER.size))
                if magic != command ^ 0xFFFFFFFF or length > 16 * 1024 * 1024:
                    raise EOFError("bad adb header")
                data = self._recv_exact(length) if length else b""
                self._dispatch(command, arg0, arg1, data)
        except (EOFError, OSError):
            pass
        finally:
            with self._lock:
                streams = list(self._streams.values())
            for stream in streams:
                stream.peer_closed()
            self.sock.close()

    def _dispatch(self, command: int, arg0: int, arg1: int, data: bytes) -> None:
        if command == A_CNXN:
            self.max_payload = max(4096, min(MAX_PAYLOAD, arg1))
            self.send(A_CNXN, A_VERSION, MAX_PAYLOAD, self.banner)
        elif command == A_OPEN:
            self._open(arg0, data.rstrip(b"\0").decode("utf-8", "replace"))
        else:
            with self._lock:
                stream = self._streams.get(arg1)
            if stream is None:
                if command == A_WRTE:
                    self.send(A_CLSE, 0, arg0, b"")
                return
            if command == A_OKAY:
                stream.remote_id = arg0
                stream.acked.set()
            elif command == A_WRTE:
                stream.inbound.put(data)
                self.send(A_OKAY, stream.local_id, stream.remote_id, b"")
            elif command == A_CLSE:
                stream.peer_closed()
                self.forget(stream.local_id)

    def _open(self, remote_id: int, service: str) -> None:
        handler = _service_handler(service)
        if handler is None:
            self.send(A_CLSE, 0, remote_id, b"")
            return
        with self._lock:
            local_id = self._next_id
            self._next_id += 1
            stream = Stream(self, local_id, remote_id)
            self._streams[local_id] = stream
        target = handler(service)
        if target is None:
            self.forget(local_id)
            self.send(A_CLSE, 0, remote_id, b"")
            return
        self.send(A_OKAY, local_id, remote_id, b"")
        threading.Thread(target=_run_service, args=(target, stream, self.env), daemon=True).start()


ServiceFn = Callable[[Stream, Dict[str, str]], None]


def _run_service(target: ServiceFn, stream: Stream, env: Dict[str, str]) -> None:
    try:
        target(stream, env)
    except Exception as exc:  # noqa: BLE001 - an emulator must keep serving
        print(f"fake_adbd: service error: {exc!r}", file=sys.stderr)
    finally:
        stream.close()


def _service_handler(service: str) -> Optional[Callable[[str], Optional[ServiceFn]]]:
    if service.startswith("shell"):
        return _shell_service
    if service == "sync:":
        return lambda _s: _sync_service
    if service.startswith("tcp:"):
        return _tcp_service
    return None


# ---------------------------------------------------------------- shell

def _shell_service(service: str) -> Optional[ServiceFn]:
    head, _, command = service.partition(":")
    options = head.split(",")[1:]
    v2 = "v2" in options
    if not command:
        return None  # interactive shells are not emulated

    def run(stream: Stream, env: Dict[str, str]) -> None:
        proc = subprocess.Popen(["/bin/sh", "-c", command], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE if v2 else subprocess.STDOUT, env=env,
                                cwd=env.get("HOME", "/"))
        threads = [threading.Thread(target=_pump, args=(proc.stdout, stream, SHELL_STDOUT if v2 else None))]
        if v2:
            threads.append(threading.Thread(target=_pump, args=(proc.stderr, stream, SHELL_STDERR)))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        code = proc.wait()
        if v2:
            stream.write(struct.pack("<BI", SHELL_EXIT, 1) + bytes([code & 0xFF]))

    return run


def _pump(pipe, stream: Stream, packet_id: Optional[int]) -> None:
    while True:
        data = os.read(pipe.fileno(), 65536)
        if not data:
            return
        with stream.write_lock:
            if packet_id is None:
                stream.write(data)
            else:
                stream.write(struct.pack("<BI", packet_id, len(data)) + data)


# ---------------------------------------------------------------- sync

def _sync_service(stream: Stream, _env: Dict[str, str]) -> None:
    while True:
        try:
            request = stream.read_exact(8)
        except EOFError:
            return
        cmd, length = request[:4], struct.unpack("<I", request[4:])[0]
        arg = stream.read_exact(length).decode("utf-8", "replace") if length else ""
        if cmd == b"QUIT":
            return
        if cmd == b"STAT":
            _sync_stat(stream, arg)
        elif cmd == b"LIST":
            _sync_list(stream, arg)
        elif cmd == b"SEND":
            _sync_send(stream, arg)
        elif cmd == b"RECV":
            _sync_recv(stream, arg)
        else:
            _sync_fail(stream, f"unsupported sync command {cmd!r}")
            return


def _sync_fail(stream: Stream, message: str) -> None:
    data = message.encode()
    stream.write(b"FAIL" + struct.pack("<I", len(data)) + data)


def _sync_stat(stream: Stream, path: str) -> None:
    try:
        st = os.stat(path)
        stream.write(b"STAT" + struct.pack("<III", st.st_mode, st.st_size & 0xFFFFFFFF, int(st.st_mtime)))
    except OSError:
        stream.write(b"STAT" + struct.pack("<III", 0, 0, 0))


def _sync_list(stream: Stream, path: str) -> None:
    try:
        entries = list(os.scandir(path))
    except OSError:
        entries = []
    for entry in entries:
        st = entry.stat(follow_symlinks=False)
        name = entry.name.encode()
        stream.write(b"DENT" + struct.pack("<IIII", st.st_mode, st.st_size & 0xFFFFFFFF, int(st.st_mtime),
                                           len(name)) + name)
    stream.write(b"DONE" + bytes(16))


def _sync_send(stream: Stream, arg: str) -> None:
    path, _, mode_text = arg.rpartition(",")
    mode = int(mode_text or "420") & 0o7777
    target = Path(path)
    error = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        out = target.open("wb")
    except OSError as exc:
        error, out = str(exc), None
    while True:
        head = stream.read_exact(8)
        kind, length = head[:4], struct.unpack("<I", head[4:])[0]
        if kind == b"DATA":
            data = stream.read_exact(length)
            if out is not None:
                out.write(data)
        elif kind == b"DONE":
            break
        else:
            error = f"unexpected {kind!r} during SEND"
            break
    if out is not None:
        out.close()
        os.chmod(target, mode or 0o644)
    if error:
        _sync_fail(stream, error)
    else:
        stream.write(b"OKAY" + bytes(4))


def _sync_recv(stream: Stream, path: str) -> None:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        _sync_fail(stream, str(exc))
        return
    for start in range(0, len(data), 64 * 1024):
        chunk = data[start:start + 64 * 1024]
        stream.write(b"DATA" + struct.pack("<I", len(chunk)) + chunk)
    stream.write(b"DONE" + bytes(4))


# ---------------------------------------------------------------- tcp (adb forward)

def _tcp_service(service: str) -> Optional[ServiceFn]:
    parts = service.split(":")
    try:
        port = int(parts[1])
    except (IndexError, ValueError):
        return None
    host = parts[2] if len(parts) > 2 and parts[2] else "127.0.0.1"
    try:
        sock = socket.create_connection((host, port), timeout=5)
    except OSError:
        return None  # adb reports the failed forward to the host side as a closed stream
    sock.settimeout(None)
    _nodelay(sock)

    def run(stream: Stream, _env: Dict[str, str]) -> None:
        def upstream() -> None:
            while True:
                data = stream.read_some()
                if not data:
                    break
                try:
                    sock.sendall(data)
                except OSError:
                    break
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass

        thread = threading.Thread(target=upstream, daemon=True)
        thread.start()
        try:
            while True:
                data = sock.recv(MAX_PAYLOAD)
                if not data or not stream.write(data):
                    break
        except OSError:
            pass
        sock.close()

    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--model", default="RK3588-EVB")
    parser.add_argument("--home", default="/tmp", help="working directory of shell commands")
    parser.add_argument("--path-prepend", default="", help="directories put in front of PATH for shells")
    args = parser.parse_args()
    banner = (f"device::ro.product.name=rk3588;ro.product.model={args.model};ro.product.device=rk3588;"
              "features=shell_v2,cmd").encode()
    env = dict(os.environ)
    env["HOME"] = args.home
    if args.path_prepend:
        env["PATH"] = args.path_prepend + os.pathsep + env.get("PATH", "")
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((args.host, args.port))
    server.listen(8)
    print("READY", flush=True)
    while True:
        sock, _ = server.accept()
        _nodelay(sock)
        conn = Connection(sock, banner, env)
        threading.Thread(target=conn.serve, daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
