"""Board side of the rknnlink USB transport: FunctionFS bulk endpoints <-> the daemon on 127.0.0.1:50051.

setup_gadget.sh creates the gadget and mounts FunctionFS at /dev/ffs-rknnlink, then starts this program,
which writes the interface descriptors and strings to ep0 (that makes ep1/ep2 appear), after which the
script binds the gadget to the UDC. ep1 is bulk OUT (host -> board), ep2 bulk IN (board -> host).
Each connection the host multiplexes over the pipe becomes one TCP connection to the daemon
(rknnlink.v1.usbmux, role 'board'): its gRPC port, or for data channels its data port (--data-target,
default the gRPC port + 1, the daemon's default), so inference frames go straight to the session's worker
and the bridge copies bytes without reading them. When the host goes away (unplug, host bridge exits) the
endpoint files fail or reach EOF; the program then waits for the host and starts over.

Run as `rknnlink usb-bridge [--ffs-dir /dev/ffs-rknnlink] [--target 127.0.0.1:50051] [--data-target
HOST:PORT | --no-data-target]` (what
setup_gadget.sh does), or board_server/usb_gadget/rknnlink_usb_bridge.py from a source tree.
"""

from __future__ import annotations

import argparse
import errno
import faulthandler
import logging
import os
import signal
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Optional

from rknnlink.v1.usbmux import IFACE_CLASS, IFACE_PROTOCOL, IFACE_SUBCLASS, Mux, MuxConfig, PipeError, tcp_connector

log = logging.getLogger("rknnlink.usb_bridge")

FUNCTIONFS_DESCRIPTORS_MAGIC_V2 = 3
FUNCTIONFS_STRINGS_MAGIC = 2
FUNCTIONFS_HAS_FS_DESC, FUNCTIONFS_HAS_HS_DESC, FUNCTIONFS_HAS_SS_DESC = 1, 2, 4
USB_DT_INTERFACE, USB_DT_ENDPOINT, USB_DT_SS_ENDPOINT_COMP = 4, 5, 0x30
USB_ENDPOINT_XFER_BULK = 2
FFS_EVENT_NAMES = {0: "BIND", 1: "UNBIND", 2: "ENABLE", 3: "DISABLE", 4: "SETUP", 5: "SUSPEND", 6: "RESUME"}
INTERFACE_STRING = "rknnlink bulk"


def _interface_descriptor() -> bytes:
    # bLength, bDescriptorType, bInterfaceNumber, bAlternateSetting, bNumEndpoints, class, subclass,
    # protocol, iInterface (1 = the first string written to ep0)
    return struct.pack("<BBBBBBBBB", 9, USB_DT_INTERFACE, 0, 0, 2, IFACE_CLASS, IFACE_SUBCLASS, IFACE_PROTOCOL, 1)


def _endpoint_descriptor(address: int, max_packet: int) -> bytes:
    return struct.pack("<BBBBHB", 7, USB_DT_ENDPOINT, address, USB_ENDPOINT_XFER_BULK, max_packet, 0)


def build_descriptors() -> bytes:
    """FunctionFS v2 descriptor blob: full-, high- and super-speed sets of one interface + 2 bulk endpoints."""
    full = _interface_descriptor() + _endpoint_descriptor(0x01, 64) + _endpoint_descriptor(0x82, 64)
    high = _interface_descriptor() + _endpoint_descriptor(0x01, 512) + _endpoint_descriptor(0x82, 512)
    companion = struct.pack("<BBBBH", 6, USB_DT_SS_ENDPOINT_COMP, 0, 0, 0)
    sup = (_interface_descriptor() + _endpoint_descriptor(0x01, 1024) + companion
           + _endpoint_descriptor(0x82, 1024) + companion)
    flags = FUNCTIONFS_HAS_FS_DESC | FUNCTIONFS_HAS_HS_DESC | FUNCTIONFS_HAS_SS_DESC
    counts = struct.pack("<III", 3, 3, 5)
    body = counts + full + high + sup
    return struct.pack("<III", FUNCTIONFS_DESCRIPTORS_MAGIC_V2, 12 + len(body), flags) + body


def build_strings() -> bytes:
    """FunctionFS string blob: one language (en-US) with the interface string."""
    body = struct.pack("<IIH", 1, 1, 0x0409) + INTERFACE_STRING.encode() + b"\0"
    return struct.pack("<II", FUNCTIONFS_STRINGS_MAGIC, 8 + len(body)) + body


class FfsPipe:
    """ep1 (OUT, read here) and ep2 (IN, written here) of the FunctionFS mount; blocking I/O."""

    def __init__(self, ffs_dir: Path) -> None:
        self._out_fd = os.open(ffs_dir / "ep1", os.O_RDONLY)
        try:
            self._in_fd = os.open(ffs_dir / "ep2", os.O_WRONLY)
        except OSError:
            os.close(self._out_fd)
            raise
        self._closed = False

    def write(self, data: bytes, timeout: Optional[float]) -> None:
        view = memoryview(data)
        try:
            while len(view):
                written = os.write(self._in_fd, view)
                view = view[written:]
        except OSError as exc:
            raise PipeError(f"ep2 write: {exc}") from exc

    def read(self, size: int, timeout: Optional[float]) -> bytes:
        try:
            data = os.read(self._out_fd, size)
        except OSError as exc:
            raise PipeError(f"ep1 read: {exc}") from exc
        if not data:
            raise PipeError("ep1 reached end of file (host closed the pipe)")
        return data

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for fd in (self._out_fd, self._in_fd):
            try:
                os.close(fd)
            except OSError:
                pass


def _watch_ep0(ep0: int) -> None:
    """Logs FunctionFS events (12-byte usb_functionfs_event: 8-byte setup, type, 3 pad)."""
    while True:
        try:
            data = os.read(ep0, 12 * 4)
        except OSError as exc:
            if exc.errno != errno.EINTR:
                log.debug("ep0: %s", exc)
                return
            continue
        if not data:
            return  # not a real FunctionFS ep0 (a test directory): no events to wait for
        for offset in range(0, len(data) - 11, 12):
            log.info("gadget event %s", FFS_EVENT_NAMES.get(data[offset + 8], data[offset + 8]))


def run(ffs_dir: Path, target: str, write_descriptors: bool, once: bool = False,
        data_target: Optional[str] = "") -> int:
    """`data_target`: the daemon's data port ("" = the target's port + 1, None = offer no data channels)."""
    host, _, port = target.rpartition(":")
    connect = tcp_connector(host or "127.0.0.1", int(port))
    if data_target == "":
        data_target = f"{host or '127.0.0.1'}:{int(port) + 1}"
    data_connect = None
    if data_target is not None:
        data_host, _, data_port = data_target.rpartition(":")
        data_connect = tcp_connector(data_host or "127.0.0.1", int(data_port))
    if write_descriptors:
        ep0 = os.open(ffs_dir / "ep0", os.O_RDWR)  # kept open: closing ep0 removes the function
        os.write(ep0, build_descriptors())
        os.write(ep0, build_strings())
        threading.Thread(target=_watch_ep0, args=(ep0,), daemon=True).start()
        log.info("descriptors written to %s/ep0", ffs_dir)
    while True:
        try:
            pipe = FfsPipe(ffs_dir)
        except OSError as exc:
            log.warning("cannot open the bulk endpoints in %s: %s; retrying", ffs_dir, exc)
            time.sleep(1.0)
            continue
        ended = threading.Event()
        mux = Mux(pipe, "board", MuxConfig(connect=connect, data_connect=data_connect,
                                           on_failure=lambda _reason, done=ended: done.set()))
        mux.start()
        log.info("USB pipe open; relaying to %s (data channels: %s)", target, data_target or "none")
        ended.wait()
        mux.close()
        mux.join(2.0)
        if once:
            return 0
        time.sleep(0.05)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ffs-dir", default="/dev/ffs-rknnlink", type=Path, help="FunctionFS mount point")
    parser.add_argument("--target", default="127.0.0.1:50051", help="daemon address on the board")
    data = parser.add_mutually_exclusive_group()
    data.add_argument("--data-target", default="", metavar="HOST:PORT",
                      help="the daemon's data port (default: the --target port + 1)")
    data.add_argument("--no-data-target", action="store_true",
                      help="offer no data channels (inference is relayed through the daemon's gRPC port)")
    parser.add_argument("--no-descriptors", action="store_true",
                        help="do not write descriptors to ep0 (another process owns ep0)")


def run_from_args(args: argparse.Namespace) -> int:
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 PID` prints every thread's stack to stderr
    return run(args.ffs_dir, args.target, not args.no_descriptors,
               data_target=None if args.no_data_target else args.data_target)


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(description="rknnlink USB bulk bridge (board side)")
    add_arguments(parser)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname).1s %(name)s: %(message)s")
    return run_from_args(args)


if __name__ == "__main__":
    sys.exit(main())
