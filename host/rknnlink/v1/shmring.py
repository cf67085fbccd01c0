"""Shared-memory input slots of a data connection whose client and worker share a host.

A pipelined inference on the direct carrier used to move every input through loopback TCP: a copy into the
kernel on the client, the whole TCP stack for ~150 KB, a copy out and the page faults of a fresh frame buffer
in the worker (perf, bench_link: about half of the link's CPU per item). When both ends are on one host the
client instead writes the inputs into a slot of a ring it shares with the worker and sends a request frame of
headers only that names the slot; the worker hands the slot's bytes straight to the runtime.

How the ring is shared (the direct carrier is TCP, which cannot carry a file descriptor):
  * the client makes a memfd (sealed against shrinking and growing, so the worker's mapping can never turn
    into SIGBUS), writes a random token into its first page and sends a setup frame with its pid, the fd's
    number, the ring's geometry and the token;
  * the worker first checks that process <pid> holds the other end of this very connection (peer_is), so a
    setup can only name the connected process's own files, never those of another process of the board;
  * it opens /proc/<pid>/fd/<fd>, checks that it is a regular sealed file of exactly that size with
    that token (a worker on another host, an adb forward, another user or a stale pid fails one of these:
    the client then keeps the byte frames), maps it and closes the descriptor it opened (Python's mmap
    object keeps a duplicate of its own until it is unmapped: one descriptor per ring, on each side);
  * the worker answers with an ack frame; the client closes its descriptor too (the mappings stay).

A worker offers the ring (CAPABILITY in its hello reply's message) and a client uses it only after that
offer, so an old peer on either side keeps the byte frames. Geometry is fixed at setup and capped
(MAX_SLOTS, MAX_RING_BYTES): the memory a connection can pin is bounded. See docs/protocol.md.
"""

from __future__ import annotations

import fcntl
import hmac
import mmap
import os
import secrets
import socket
import stat
import struct
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from rknnlink.v1.trust import is_loopback

CAPABILITY = "shm1"    # a word of the worker's hello reply message: it takes a setup frame
ENV_SWITCH = "RKNNLINK_DATA_SHM"  # "0" turns the ring off (client: never offered; worker: never offers)
MAGIC_SETUP, MAGIC_ACK = b"RKLS", b"RKLA"
SETUP = struct.Struct("<4sIiIQ16s")  # magic, client pid, client fd, n_slots, slot_bytes, token
ACK = struct.Struct("<4siI")         # magic, status (0 = attached), len(message), then the UTF-8 message
TOKEN_BYTES = 16
MAX_SLOTS = 16
MAX_RING_BYTES = 256 << 20
ALIGN = 64                           # every input starts on a cache line of its slot
KEPT_BACK = 1                        # slots a client leaves untouched after their run (see geometry)
PAGE = mmap.PAGESIZE
_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL


class RingError(ValueError):
    """A ring that cannot be set up or a slot reference outside it."""


def enabled() -> bool:
    """The ring is used unless RKNNLINK_DATA_SHM=0 (measurements of the byte path, a peer that misbehaves)."""
    return os.environ.get(ENV_SWITCH, "1") != "0"


def spans(sizes: Sequence[int]) -> Tuple[List[Tuple[int, int]], int]:
    """Offsets (start, end) of inputs of these sizes inside one slot, and the bytes they need in all."""
    out, at = [], 0
    for size in sizes:
        out.append((at, at + size))
        at += -(-size // ALIGN) * ALIGN
    return out, at


def ring_bytes(n_slots: int, slot_bytes: int) -> int:
    """The memfd's size: one header page (the token), then the slots."""
    return PAGE + n_slots * slot_bytes


def geometry(need: int, depth: int) -> Optional[Tuple[int, int]]:
    """(n_slots, slot_bytes) for requests of `need` bytes of inputs, `depth` in flight; None when one slot
    would not fit under MAX_RING_BYTES.

    One slot more than `depth`: the client keeps the slot of the last successful slotted run back until a
    later request has run (KEPT_BACK), because the worker replays that run in place for a dump (GetDumps
    of a session whose dumps were off): a slot written again at once would give the dump another input."""
    slot_bytes = max(PAGE, -(-need // PAGE) * PAGE)
    n_slots = min(max(1, depth) + KEPT_BACK, MAX_SLOTS, (MAX_RING_BYTES - PAGE) // slot_bytes)
    return (n_slots, slot_bytes) if n_slots >= 1 else None


class Ring:
    """One mapping of a ring: slot i is the bytes [PAGE + i * slot_bytes, PAGE + (i + 1) * slot_bytes)."""

    def __init__(self, mm: mmap.mmap, n_slots: int, slot_bytes: int, fd: int = -1, token: bytes = b"") -> None:
        self.mm, self.n_slots, self.slot_bytes, self.fd, self.token = mm, n_slots, slot_bytes, fd, token
        self.view = memoryview(mm)

    @classmethod
    def create(cls, n_slots: int, slot_bytes: int) -> Ring:
        """The client's side: a new sealed memfd, mapped, with a fresh token in its header page. `fd` stays
        open until the worker has opened it (close_fd)."""
        if not 1 <= n_slots <= MAX_SLOTS or slot_bytes % PAGE or ring_bytes(n_slots, slot_bytes) > MAX_RING_BYTES:
            raise RingError(f"a ring of {n_slots} slots of {slot_bytes} bytes is outside the limits")
        size = ring_bytes(n_slots, slot_bytes)
        fd = os.memfd_create("rknnlink-slots", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.ftruncate(fd, size)
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
            mm = mmap.mmap(fd, size)
        except BaseException:
            os.close(fd)
            raise
        token = secrets.token_bytes(TOKEN_BYTES)
        mm[:TOKEN_BYTES] = token
        return cls(mm, n_slots, slot_bytes, fd, token)

    @classmethod
    def attach(cls, pid: int, fd: int, n_slots: int, slot_bytes: int, token: bytes) -> Ring:
        """The worker's side: map the client's memfd through /proc after checking every claim of the setup
        frame; RingError (with the reason) when any does not hold."""
        if not 1 <= n_slots <= MAX_SLOTS or slot_bytes <= 0 or slot_bytes % PAGE \
                or ring_bytes(n_slots, slot_bytes) > MAX_RING_BYTES or pid <= 0 or fd < 0:
            raise RingError(f"a ring of {n_slots} slots of {slot_bytes} bytes (pid {pid}, fd {fd}) is outside "
                            f"the limits")
        size = ring_bytes(n_slots, slot_bytes)
        path = f"/proc/{pid}/fd/{fd}"
        try:
            before = os.stat(path)  # before open(): never open a device, FIFO or socket the client names
            if not stat.S_ISREG(before.st_mode) or before.st_size != size:
                raise RingError(f"{path} is not a ring of {size} bytes")
            own = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError as exc:
            raise RingError(f"cannot open the client's ring ({exc.strerror}): not on this host, or another "
                            f"user") from None
        try:
            st = os.fstat(own)
            if (st.st_dev, st.st_ino) != (before.st_dev, before.st_ino) or st.st_size != size:
                raise RingError("the client's ring changed while it was opened")
            seals = fcntl.fcntl(own, fcntl.F_GET_SEALS)
            if seals & (fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW) != fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW:
                raise RingError("the client's ring is not sealed against resizing")
            mm = mmap.mmap(own, size)
        except OSError as exc:
            raise RingError(f"cannot map the client's ring: {exc}") from None
        finally:
            os.close(own)  # the mapping keeps the memory (and mmap its own duplicate of the descriptor)
        if not hmac.compare_digest(bytes(mm[:TOKEN_BYTES]), token):
            mm.close()
            raise RingError("the ring's token does not match (another process's file)")
        return cls(mm, n_slots, slot_bytes)

    def setup_frame_body(self) -> bytes:
        """The setup frame's body (after its length prefix) for this client ring."""
        return SETUP.pack(MAGIC_SETUP, os.getpid(), self.fd, self.n_slots, self.slot_bytes, self.token)

    def slot(self, index: int) -> memoryview:
        """Slot `index` as a writable view; RingError outside the ring."""
        if not 0 <= index < self.n_slots:
            raise RingError(f"slot {index} of a ring of {self.n_slots}")
        start = PAGE + index * self.slot_bytes
        return self.view[start:start + self.slot_bytes]

    def views(self, index: int, spans_: Sequence[Tuple[int, int]]) -> List[memoryview]:
        """The inputs of slot `index` at these spans (checked against the slot once, by the caller's parse:
        end <= slot_bytes); RingError for a slot outside the ring."""
        if not 0 <= index < self.n_slots:
            raise RingError(f"slot {index} of a ring of {self.n_slots}")
        base = PAGE + index * self.slot_bytes
        view = self.view
        return [view[base + a:base + b] for a, b in spans_]

    def owns(self, view: memoryview) -> bool:
        """Whether `view` is a view of this ring's mapping."""
        return view.obj is self.mm

    def close_fd(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def close(self) -> None:
        """Close the descriptor and unmap. A view still alive elsewhere keeps the mapping (it is unmapped
        when the last view goes): never an access to unmapped memory."""
        self.close_fd()
        try:
            self.view.release()
            self.mm.close()
        except BufferError:  # views of it exist: the mapping goes with the last of them
            pass


def _proc_net_address(family: int, host: str, port: int) -> str:
    """An endpoint as /proc/net/tcp{,6} prints it: each 32-bit word of the address in host order, in hex."""
    raw = socket.inet_pton(family, host)
    words = "".join(f"{struct.unpack('=I', raw[i:i + 4])[0]:08X}" for i in range(0, len(raw), 4))
    return f"{words}:{port:04X}"


def _endpoint_forms(address: Tuple) -> List[str]:
    """The /proc/net forms of a TCP endpoint: as IPv4 and as IPv6 (a v4-mapped address is both)."""
    host, port = address[0], address[1]
    forms = []
    if ":" in host:
        forms.append(_proc_net_address(socket.AF_INET6, host, port))
        if host.lower().startswith("::ffff:") and "." in host:
            forms.append(_proc_net_address(socket.AF_INET, host[7:], port))
    else:
        forms.append(_proc_net_address(socket.AF_INET, host, port))
        forms.append(_proc_net_address(socket.AF_INET6, f"::ffff:{host}", port))
    return forms


def peer_on_this_host(conn: socket.socket) -> bool:
    """Whether `conn`'s peer is on this host (a unix socket, or TCP from loopback): the only connections a
    ring can be shared over. (An adb forward's peer is loopback too: peer_is and Ring.attach refuse it.)"""
    if conn.family == socket.AF_UNIX:
        return True
    if conn.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    try:
        return is_loopback(conn.getpeername()[0])
    except OSError:
        return False


def peer_is(conn: socket.socket, pid: int) -> bool:
    """Whether process `pid` holds the other end of `conn`, so that a setup frame can only name a file of
    the process that is actually connected (not, through an adb forward or a forged pid, any process of the
    board the worker may open). Unix sockets: SO_PEERCRED. Loopback TCP: the peer's socket inode, found in
    /proc/net/tcp{,6} by the two endpoints, must be among /proc/<pid>/fd."""
    if conn.family == socket.AF_UNIX:
        cred = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        return struct.unpack("3i", cred)[0] == pid
    try:
        theirs, ours = set(_endpoint_forms(conn.getpeername())), set(_endpoint_forms(conn.getsockname()))
    except (OSError, ValueError):
        return False
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[1] in theirs and fields[2] in ours:
                inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return False
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                    return True
            except OSError:
                continue
    except OSError:
        return False
    return False


def parse_setup(body: memoryview) -> Tuple[int, int, int, int, bytes]:
    """(pid, fd, n_slots, slot_bytes, token) of a setup frame body; RingError when malformed."""
    if body.nbytes != SETUP.size:
        raise RingError(f"a ring setup frame of {body.nbytes} bytes (expected {SETUP.size})")
    magic, pid, fd, n_slots, slot_bytes, token = SETUP.unpack(body)
    if magic != MAGIC_SETUP:
        raise RingError("not a ring setup frame")
    return pid, fd, n_slots, slot_bytes, token


def encode_ack(status: int, message: str = "") -> bytes:
    """An ack frame, length prefix included."""
    text = message.encode()[:4096]
    body = ACK.pack(MAGIC_ACK, status, len(text)) + text
    return struct.pack("<Q", len(body)) + body


def parse_ack(body: memoryview) -> Tuple[int, str]:
    if body.nbytes < ACK.size:
        raise RingError("a ring ack frame shorter than its header")
    magic, status, size = ACK.unpack_from(body)
    if magic != MAGIC_ACK or body.nbytes != ACK.size + size:
        raise RingError("not a ring ack frame")
    return status, bytes(body[ACK.size:]).decode(errors="replace")
