"""A TCP relay on the exporter host: farm clients reach a board's daemon (and its data channel) at the
exporter host's address, while the daemon itself stays on a loopback port (an adb forward, the USB
bridge, a local simulated board). Bytes are relayed untouched; TCP_NODELAY on both legs keeps gRPC's
small frames from waiting on Nagle (see docs/transports.md)."""

from __future__ import annotations

import logging
import socket
import threading
from typing import List, Tuple

log = logging.getLogger(__name__)


def _nodelay(sock: socket.socket) -> socket.socket:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class TcpRelay:
    """Listens on (host, port 0 = any) and relays each connection to `target`."""

    def __init__(self, host: str, target: Tuple[str, int], port: int = 0) -> None:
        self.target = target
        self._server = socket.create_server((host, port), reuse_port=False)
        self.host, self.port = self._server.getsockname()[:2]
        self._conns: List[socket.socket] = []
        self._lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._accept, name=f"farm-relay-{self.port}", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            try:
                upstream = _nodelay(socket.create_connection(self.target, timeout=5))
                upstream.settimeout(None)
            except OSError as exc:
                log.warning("relay %s:%d -> %s:%d: %s", self.host, self.port, *self.target, exc)
                client.close()
                continue
            _nodelay(client)
            with self._lock:
                if self.closed:
                    client.close()
                    upstream.close()
                    return
                self._conns += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(1 << 16)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            with self._lock:
                for sock in (src, dst):
                    if sock in self._conns:
                        self._conns.remove(sock)
                        sock.close()

    def close(self) -> None:
        with self._lock:
            self.closed = True
            conns, self._conns = self._conns, []
        self._server.close()
        for sock in conns:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
