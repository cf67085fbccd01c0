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

import ctypes
import fcntl
import hmac
import mmap
import os
import platform
import secrets
import socket
import stat
import struct
import sys
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

from rknnlink.v1.trust import is_loopback

CAPABILITY = "shm1"    # a word of the worker's hello reply message: it takes a setup frame
QUEUE_CAPABILITY = "shm2"  # another word: it also takes a queue setup (requests and replies in the ring)
ENV_SWITCH = "RKNNLINK_DATA_SHM"  # "0" turns the ring off (client: never offered; worker: never offers)
QUEUE_ENV_SWITCH = "RKNNLINK_DATA_SHM_QUEUE"  # "0": the ring carries inputs only (shm1), as an old peer
MAGIC_SETUP, MAGIC_ACK = b"RKLS", b"RKLA"
MAGIC_QUEUE_SETUP = b"RKLT"  # the same setup frame, asking for the queue (see Queue)
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


def queue_enabled() -> bool:
    """The queue is used where futexes and a memory fence are (futex_available, fence_available) unless
    RKNNLINK_DATA_SHM_QUEUE=0 (measurements of the inputs-only ring, an old peer's behaviour)."""
    return enabled() and os.environ.get(QUEUE_ENV_SWITCH, "1") != "0" and futex_available() and fence_available()


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


def geometry(need: int, depth: int, queued: bool = False) -> Optional[Tuple[int, int]]:
    """(n_slots, slot_bytes) for requests of `need` bytes of inputs, `depth` in flight; None when one slot
    would not fit under MAX_RING_BYTES.

    One slot more than `depth`: the client keeps the slot of the last successful slotted run back until a
    later request has run (KEPT_BACK), because the worker replays that run in place for a dump (GetDumps
    of a session whose dumps were off): a slot written again at once would give the dump another input."""
    need += REPLY_AREA if queued else 0  # a Queue's slots end with their reply area
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

    def setup_frame_body(self, queue: bool = False) -> bytes:
        """The setup frame's body (after its length prefix) for this client ring (`queue`: asking for the
        queue too, see Queue)."""
        return SETUP.pack(MAGIC_QUEUE_SETUP if queue else MAGIC_SETUP, os.getpid(), self.fd, self.n_slots,
                          self.slot_bytes, self.token)

    @property
    def input_bytes(self) -> int:
        """Bytes of a slot that inputs may fill: all of it, less the reply area once a Queue uses the ring."""
        return self.slot_bytes - (REPLY_AREA if self.queued else 0)

    queued = False  # a Queue runs on this ring: each slot ends with its reply area

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


# -- the queue (QUEUE_CAPABILITY): requests and replies through the ring, futexes for the wake-ups ----------------
#
# A queued request costs neither side a TCP send: the client writes the inputs into a slot and the request's
# frame body (FLAG_SLOT, exactly the bytes it would have sent) into an entry of the header page, then counts
# it posted; the worker runs it, writes the reply frame's body into the slot's reply area and counts it done.
# A side that finds nothing new waits on the other's counter with FUTEX_WAIT (which sleeps only if the counter
# still holds the value it last saw: no wake-up is ever lost). The client's counter is followed by a
# FUTEX_WAKE every time (the kernel returns at once when nobody waits); the worker's only once it reaches
# the count the client said it waits for (WANTED_AT, written before it sleeps, only ever growing: a stale
# read is an earlier, smaller count, so at worst a wake-up too many, never one too few). A client with
# three or more in flight waits for two results at once: half the wake-ups, two still queued meanwhile.
# What does not fit goes by frame, in order: an entry of length 0 says "the request is the next frame on the
# socket", a reply entry of kind REPLY_FRAME "the reply is the next frame on the socket" (a large output, a
# request whose inputs were in its frame, the error reply to a corrupt entry; always with a wake-up).
# The client's close is an entry too (CLOSE_ENTRY: a counter that moves is the only wake-up a sleeper cannot
# miss). The socket stays open and is watched for the peer's end while
# waiting (a peer that died posts nothing).
POSTED_AT, DONE_AT = 64, 128  # the two u32 counters of the header page, a cache line each
WANTED_AT = 192  # u32: the done count the client sleeps until (the worker wakes it only then)
ENTRIES = MAX_SLOTS        # requests in flight at most (entry of request n: n % ENTRIES)
ENTRY_AT, ENTRY_BYTES = 1024, 128                       # per entry: u32 length, then the request body
CLOSE_ENTRY = 0xFFFFFFFF   # an entry's length word: the client closed the queue (nothing follows)
REPLY_ENTRY_AT, REPLY_ENTRY_BYTES = ENTRY_AT + ENTRIES * ENTRY_BYTES, 16  # per entry: u32 kind, u32 length
REPLY_AREA = 4096          # the last bytes of every slot: the reply body of its request, when it fits
REPLY_HERE, REPLY_FRAME = 1, 2
MAX_ENTRY_BODY = ENTRY_BYTES - 4
QUEUE_POLL = 0.5  # seconds either side of a queue sleeps on a counter before it looks whether the peer is gone
_U32 = struct.Struct("<I")
_U32X2 = struct.Struct("<II")
# Linux syscall numbers of futex(2) by machine (the board's Python has no binding of its own: ctypes).
_FUTEX_SYSCALL = {"x86_64": 202, "amd64": 202, "aarch64": 98, "arm64": 98, "riscv64": 98, "armv7l": 240,
                  "armv8l": 240, "armv6l": 240, "i686": 240, "i386": 240}
_FUTEX_WAIT, _FUTEX_WAKE = 0, 1  # shared (not FUTEX_PRIVATE_FLAG): the two processes map one memfd


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


_futex_call: Optional[Any] = None
_futex_number = -1


def futex_available() -> bool:
    """Whether futex(2) can be called here (Linux on a machine of _FUTEX_SYSCALL, libc through ctypes)."""
    global _futex_call, _futex_number
    if _futex_number < 0:
        number = _FUTEX_SYSCALL.get(platform.machine().lower(), 0) if sys.platform.startswith("linux") else 0
        try:
            call = ctypes.CDLL(None, use_errno=True).syscall if number else None
        except (OSError, AttributeError):
            call = None
        if call is not None:
            call.restype = ctypes.c_long
            call.argtypes = [ctypes.c_long, ctypes.c_void_p, ctypes.c_int, ctypes.c_uint, ctypes.c_void_p,
                             ctypes.c_void_p, ctypes.c_uint]
        _futex_call, _futex_number = call, number if call is not None else 0
    return _futex_number > 0


def futex_wait(address: int, seen: int, timeout: float) -> None:
    """Sleep while the u32 at `address` holds `seen`, at most `timeout` seconds (returns at once when it
    changed already; a wake, a signal or the timeout end it too: the caller looks again)."""
    whole = int(timeout)
    spec = _Timespec(whole, int((timeout - whole) * 1e9))
    _futex_call(_futex_number, address, _FUTEX_WAIT, seen, ctypes.byref(spec), None, 0)


def futex_wake(address: int) -> None:
    """Wake whoever waits on the u32 at `address` (a system call that returns at once when nobody does)."""
    _futex_call(_futex_number, address, _FUTEX_WAKE, 0x7FFFFFFF, None, None, 0)


# Machines whose stores are seen by other cores in program order and whose loads are not reordered with
# each other (x86's TSO): there, data written before a counter is visible to whoever sees the counter, and
# the ring's plain loads and stores need no fence. Everywhere else (the boards' aarch64 and armv7, riscv64)
# a core may make the counter visible before the data it guards, or read the data before the counter: a
# reader of the queue could take a request's or reply's bytes from before they were written.
_ORDERED_MACHINES = frozenset({"x86_64", "amd64", "i686", "i386"})
_SEQ_CST = 5  # memory_order_seq_cst of C11's <stdatomic.h>
_fence_call: Optional[Any] = None
_fence_state = -1  # -1 not looked up, 0 unavailable, 1 not needed (TSO), 2 libatomic's atomic_thread_fence


def fence_available() -> bool:
    """Whether the queue's loads and stores can be ordered here: not needed (TSO machines), or GCC's
    libatomic (libatomic.so.1, atomic_thread_fence) found through ctypes, so that the board needs no compiler.
    Without it the queue is not offered (the inputs-only ring signals through the socket, whose system calls
    order the memory as any pipe or socket does)."""
    global _fence_call, _fence_state
    if _fence_state < 0:
        if platform.machine().lower() in _ORDERED_MACHINES:
            _fence_state = 1
        else:
            try:
                call = ctypes.CDLL("libatomic.so.1").atomic_thread_fence
                call.argtypes, call.restype = [ctypes.c_int], None
                _fence_call, _fence_state = call, 2
            except (OSError, AttributeError):
                _fence_state = 0
    return _fence_state > 0


def fence() -> None:
    """A full memory fence between the ring's data and its counters (see fence_available): a no-op where the
    machine orders them itself."""
    if _fence_call is not None:
        _fence_call(_SEQ_CST)


def _reached(count: int, wanted: int) -> bool:
    """Whether the u32 counter `count` is at or past `wanted` (modulo 2**32: counters wrap)."""
    return (count - wanted) & 0xFFFFFFFF < 0x80000000


class QueueClosedError(Exception):
    """The client closed the queue (its close entry)."""


class Queue:
    """The queue of one ring (see above): the client's side (post / reply) or the worker's (next / answer).
    Counters count requests since the setup; an entry's slot is in its request body (FLAG_SLOT)."""

    def __init__(self, ring: Ring) -> None:
        if ring.slot_bytes <= REPLY_AREA or ring.n_slots > ENTRIES or not futex_available():
            raise RingError(f"a queue needs slots of more than {REPLY_AREA} bytes, at most {ENTRIES} of them, "
                            f"and futexes")
        self.ring = ring
        ring.queued = True
        self.mm = ring.mm
        self._anchor = ctypes.c_char.from_buffer(ring.mm)  # the mapping's address; released by close()
        base = ctypes.addressof(self._anchor)
        self.posted_address, self.done_address = base + POSTED_AT, base + DONE_AT
        self.posted = self.done = 0  # this side's view: requests posted / answered so far

    def close(self) -> None:
        """Drop the hold on the mapping (before Ring.close)."""
        self._anchor = None

    # -- counters
    def _load(self, at: int) -> int:
        return _U32.unpack_from(self.mm, at)[0]

    def wait(self, at: int, address: int, seen: int, timeout: float) -> int:
        """The counter at `at` once it is no longer `seen`, or after `timeout` seconds (then maybe `seen`)."""
        value = _U32.unpack_from(self.mm, at)[0]
        if value == seen:
            futex_wait(address, seen, timeout)
            value = _U32.unpack_from(self.mm, at)[0]
        return value

    def _bump(self, at: int, address: int, value: int) -> None:
        fence()  # what the count announces is written before the count
        _U32.pack_into(self.mm, at, value & 0xFFFFFFFF)
        futex_wake(address)

    def _bump_done(self, force: bool = False) -> None:
        """Count one more reply done; wake the client if it waits for this count or an earlier one, or
        `force` (a reply frame follows on the socket: the client must come and read it)."""
        done = self.done & 0xFFFFFFFF
        mm = self.mm
        fence()  # the reply and its entry are written before the count
        _U32.pack_into(mm, DONE_AT, done)
        if force or _reached(done, _U32.unpack_from(mm, WANTED_AT)[0]):
            futex_wake(self.done_address)

    def done_count(self) -> int:
        """The worker's done counter as it is now (u32)."""
        return _U32.unpack_from(self.mm, DONE_AT)[0]

    def wait_done(self, wanted: int, timeout: float) -> bool:
        """The client's wait: sleep until the worker counted `wanted` replies done (at most `timeout`
        seconds); whether it has. WANTED_AT is written before the last look at the counter, so a worker
        that counts meanwhile either sees it (and wakes) or is seen."""
        mm = self.mm
        wanted &= 0xFFFFFFFF
        if _reached(_U32.unpack_from(mm, DONE_AT)[0], wanted):
            return True
        _U32.pack_into(mm, WANTED_AT, wanted)
        seen = _U32.unpack_from(mm, DONE_AT)[0]
        if _reached(seen, wanted):
            return True
        futex_wait(self.done_address, seen, timeout)
        return _reached(_U32.unpack_from(mm, DONE_AT)[0], wanted)

    # -- client
    def post(self, body: Optional[bytes]) -> None:
        """Post the next request: its slotted body, or None when it is the next frame on the socket (sent by
        the caller after this)."""
        at = ENTRY_AT + (self.posted % ENTRIES) * ENTRY_BYTES
        if body is None:
            _U32.pack_into(self.mm, at, 0)
        else:
            _U32.pack_into(self.mm, at, len(body))
            self.mm[at + 4:at + 4 + len(body)] = body
        self.posted += 1
        self._bump(POSTED_AT, self.posted_address, self.posted)

    def reply(self, slot: int) -> Optional[memoryview]:
        """The oldest unanswered request's reply, after done counted it (wait_done): a copy of its body from
        `slot`'s reply area, or None when it is the next frame on the socket."""
        fence()  # read after the count that announced it (wait_done, done_count)
        at = REPLY_ENTRY_AT + (self.done % ENTRIES) * REPLY_ENTRY_BYTES
        kind, size = _U32X2.unpack_from(self.mm, at)
        self.done += 1
        if kind != REPLY_HERE:
            return None
        if slot < 0 or size > REPLY_AREA:
            raise RingError("a reply in the ring for a request without a slot, or larger than its area")
        start = self.reply_area(slot)
        return memoryview(self.mm[start:start + size])

    def post_close(self) -> None:
        """The client is done with the queue: the worker, woken, ends the connection (no request may follow;
        an entry is free, as at most ENTRIES - 1 requests are in flight)."""
        _U32.pack_into(self.mm, ENTRY_AT + (self.posted % ENTRIES) * ENTRY_BYTES, CLOSE_ENTRY)
        self.posted += 1
        self._bump(POSTED_AT, self.posted_address, self.posted)

    # -- worker
    def entry(self) -> Optional[bytes]:
        """The next posted request's body (a copy: the client may write the entry while it is parsed), or
        None when it is the next frame on the socket. QueueClosedError after the client's close, RingError for a
        length beyond the entry."""
        fence()  # read after the count that announced it (wait)
        at = ENTRY_AT + (self.posted % ENTRIES) * ENTRY_BYTES
        size = _U32.unpack_from(self.mm, at)[0]
        if size == CLOSE_ENTRY:
            raise QueueClosedError()
        if size > MAX_ENTRY_BODY:
            raise RingError(f"a queue entry of {size} bytes (at most {MAX_ENTRY_BODY})")
        self.posted += 1
        return self.mm[at + 4:at + 4 + size] if size else None

    def reply_area(self, slot: int) -> int:
        """Where `slot`'s reply area starts in the mapping."""
        return PAGE + (slot + 1) * self.ring.slot_bytes - REPLY_AREA

    def answered_here(self, size: int) -> None:
        """Count the oldest request done with its reply body of `size` bytes written into its slot's reply
        area by the caller (answer, without the copy)."""
        _U32X2.pack_into(self.mm, REPLY_ENTRY_AT + (self.done % ENTRIES) * REPLY_ENTRY_BYTES, REPLY_HERE, size)
        self.done += 1
        self._bump_done()

    def answer(self, slot: int, parts: Sequence[Any]) -> bool:
        """Count the oldest request done with its reply `parts` (a reply frame, length prefix first) in `slot`'s
        reply area where it fits (True), else as a reply entry saying REPLY_FRAME (False: the caller sends the
        frame on the socket next; the client reads it once it sees this entry)."""
        at = REPLY_ENTRY_AT + (self.done % ENTRIES) * REPLY_ENTRY_BYTES
        frame = parts[0] if len(parts) == 1 else b"".join(parts)  # a small reply is one part already
        size = len(frame) - 8  # the frame's length prefix is not stored
        here = 0 <= slot < self.ring.n_slots and size <= REPLY_AREA
        if here:
            start = self.reply_area(slot)
            self.mm[start:start + size] = memoryview(frame)[8:]
        _U32X2.pack_into(self.mm, at, REPLY_HERE if here else REPLY_FRAME, size)
        self.done += 1
        self._bump_done(force=not here)
        return here


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
    if magic not in (MAGIC_SETUP, MAGIC_QUEUE_SETUP):
        raise RingError("not a ring setup frame")
    return pid, fd, n_slots, slot_bytes, token


def is_setup(body: memoryview) -> bool:
    """Whether a frame body is a ring setup (an inputs-only ring or a queue)."""
    return body[:4] in (MAGIC_SETUP, MAGIC_QUEUE_SETUP)


def wants_queue(body: memoryview) -> bool:
    """Whether a setup frame body asks for the queue (MAGIC_QUEUE_SETUP)."""
    return body[:4] == MAGIC_QUEUE_SETUP


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
