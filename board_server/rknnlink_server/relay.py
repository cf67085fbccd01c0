"""The relayed carrier of the data plane: a gRPC `Relay` stream pumped, unread, to and from a session's worker.

Routes that cannot reach the worker's socket (TLS network endpoints, the USB bridge, adb without a data
forward) send the same datawire frames as the direct carrier, inside a bidirectional gRPC stream. The daemon
hands one end of a fresh socket pair to the worker (the SCM_RIGHTS attach the data port uses) and copies
bytes: client messages into the socket as they come, and the worker's replies back one frame per message
(the length in front of every frame says where it ends). The daemon never decodes a frame: caps, request ids
and runtime errors are the worker's and the client's business, as on the direct carrier. Every message
carries exactly one frame, whose length prefix is checked against the message (not decoded), so the pump
knows how many requests are in the worker: an idle stream is cut after --idle-timeout, a busy one only
after --call-timeout more.
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import Callable, Iterator, Optional

from rknnlink.v1 import datawire

log = logging.getLogger("rknnlink_server")


class RelayPump:
    """Pumps one Relay stream. `touch(busy)` is called on every message either way (the idle watchdog;
    busy: requests are in the worker)."""

    def __init__(self, sock: socket.socket, limit: int, touch: Callable[[bool], None]) -> None:
        self.sock, self.limit, self.touch = sock, limit, touch
        self.client_done = threading.Event()  # the client half-closed (or cancelled) its side
        self.error: Optional[str] = None      # why the pump refused the client's stream
        self._sent = 0                         # frames pumped to the worker
        self._returned = 0                     # frames pumped back

    def _forward(self, message: object) -> bool:
        """One client message into the worker's socket, once its length prefix matches the message."""
        frame = message.frame  # type: ignore[attr-defined]
        if len(frame) < datawire.LENGTH.size or \
                datawire.LENGTH.unpack_from(frame)[0] != len(frame) - datawire.LENGTH.size:
            self.error = ("a Relay message must carry exactly one data-plane frame (its 8-byte length prefix, "
                          "then that many bytes)")
            self.stop()
            return False
        self._sent += 1
        self.touch(True)
        self.sock.sendall(frame)
        return True

    def upstream(self, messages: Iterator[object]) -> None:
        """Client -> worker, in a thread of its own while downstream() runs (several frames in flight)."""
        try:
            for message in messages:
                if not self._forward(message):
                    return
        except Exception as exc:  # noqa: BLE001 - cancelled stream or a closed worker socket: stop pumping
            log.debug("relay upstream ended: %s", exc)
        finally:
            self.client_done.set()
            try:
                self.sock.shutdown(socket.SHUT_WR)  # the worker finishes what it has, then closes
            except OSError:
                pass

    def one_at_a_time(self, messages: Iterator[object]) -> Iterator[bytes]:
        """Both directions in the calling thread, for a client that keeps one frame in flight (Session.run
        says so in the call metadata): each message forwarded, then its reply returned - no hand-over
        between threads per frame. A client that sends more anyway is served, one frame at a time."""
        replies = self.downstream()
        try:
            for message in messages:
                if not self._forward(message):
                    return
                reply = next(replies, None)
                if reply is None:  # the worker closed (the caller asks why)
                    return
                yield reply
        except OSError as exc:
            log.debug("relay ended: %s", exc)
            return
        self.client_done.set()

    def downstream(self) -> Iterator[bytes]:
        """Worker -> client: one whole frame (length prefix included) per message, until the worker closes."""
        while True:
            try:
                prefix = self.sock.recv(datawire.LENGTH.size, socket.MSG_WAITALL)
                if len(prefix) < datawire.LENGTH.size:
                    return
                (size,) = datawire.LENGTH.unpack(prefix)
                if size > self.limit:
                    raise datawire.FrameError(f"the worker sent a frame of {size} bytes (limit {self.limit})")
                frame = bytearray(datawire.LENGTH.size + size)
                frame[:datawire.LENGTH.size] = prefix
                datawire.recv_into_exact(self.sock, memoryview(frame)[datawire.LENGTH.size:])
            except (OSError, datawire.PeerClosedError) as exc:
                log.debug("relay downstream ended: %s", exc)
                return
            self._returned += 1
            self.touch(self._returned < self._sent)
            yield bytes(frame)

    def stop(self) -> None:
        """Unblock both directions (the call was cancelled or the daemon stops)."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def close(self) -> None:
        self.stop()
        self.sock.close()
