"""An emulated USB bus for pyusb: a Rockchip board whose rknnlink gadget endpoints are FIFOs.

The kernel here has no USB at all, so the device side is the real board program
(board_server/usb_gadget/rknnlink_usb_bridge.py --ffs-dir DIR) reading DIR/ep1 and writing DIR/ep2, which
are named pipes instead of FunctionFS endpoint files. This backend implements pyusb's IBackend on top of
them: descriptors and string descriptors (through control transfers) come from a table, bulk OUT writes go
to ep1, bulk IN reads come from ep2, and timeouts raise USBTimeoutError like libusb does. Faults for tests:
`drop_next_write` (a lost transfer), `unplug()`/`replug()`; stopping the board process gives timeouts.
"""

from __future__ import annotations

import array
import errno
import os
import select
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import List, Optional

import usb.backend
import usb.core

VID, PID = 0x2207, 0x0019
EP_OUT, EP_IN = 0x01, 0x82


def _string_descriptor(text: str) -> bytes:
    data = text.encode("utf-16-le")
    return bytes([2 + len(data), 3]) + data


class FakeBoard:
    """One plugged-in board: descriptors plus the FIFO endpoints shared with the board program."""

    def __init__(self, ffs_dir: Path, serial: str, product: str = "rknnlink rk3588 (rknnlink 0.1.0)") -> None:
        self.ffs_dir = Path(ffs_dir)
        self.serial = serial
        self.strings = {1: "Rockchip", 2: product, 3: serial, 4: "rknnlink bulk"}
        self.plugged = True
        self.drop_next_write = False
        self.drop_min_size = 0          # only a transfer at least this big is dropped
        self.dropped = 0
        self._lock = threading.RLock()
        self._out_fd: Optional[int] = None
        self._in_fd: Optional[int] = None
        self.generation = 0

    @staticmethod
    def make_fifos(ffs_dir: Path) -> None:
        ffs_dir.mkdir(parents=True, exist_ok=True)
        for name in ("ep1", "ep2"):
            path = ffs_dir / name
            if not path.exists():
                os.mkfifo(path)
        (ffs_dir / "ep0").touch()

    # ------------------------------------------------------------ plug state
    def unplug(self) -> None:
        with self._lock:
            self.plugged = False
            self._close_fds()

    def replug(self) -> None:
        with self._lock:
            self.plugged = True
            self.generation += 1

    def _close_fds(self) -> None:
        for fd in (self._out_fd, self._in_fd):
            if fd is not None:
                os.close(fd)
        self._out_fd = self._in_fd = None

    def _check(self) -> None:
        if not self.plugged:
            raise usb.core.USBError("No such device (it may have been disconnected)", errno=errno.ENODEV)

    def _fds(self, timeout_s: float):
        """Opens the FIFOs on first use after a plug: ep2 (reader, never blocks) first, then ep1."""
        with self._lock:
            self._check()
            if self._in_fd is None:
                self._in_fd = os.open(self.ffs_dir / "ep2", os.O_RDONLY | os.O_NONBLOCK)
            if self._out_fd is None:
                deadline = time.monotonic() + timeout_s
                while True:
                    try:
                        self._out_fd = os.open(self.ffs_dir / "ep1", os.O_WRONLY | os.O_NONBLOCK)
                        break
                    except OSError as exc:
                        if exc.errno != errno.ENXIO or time.monotonic() >= deadline:
                            raise usb.core.USBTimeoutError("board endpoint not ready", errno=errno.ETIMEDOUT) from exc
                        time.sleep(0.01)
            return self._out_fd, self._in_fd

    # ------------------------------------------------------------ transfers
    def write(self, data: bytes, timeout_ms: int) -> int:
        timeout_s = (timeout_ms or 5000) / 1000.0
        out_fd, _ = self._fds(timeout_s)
        if self.drop_next_write and len(data) >= self.drop_min_size:
            self.drop_next_write = False
            self.dropped += 1
            return len(data)  # the transfer "completed" but never reaches the board
        view = memoryview(data)
        deadline = time.monotonic() + timeout_s
        while len(view):
            self._check()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise usb.core.USBTimeoutError("bulk write timed out", errno=errno.ETIMEDOUT)
            try:
                _, writable, _ = select.select([], [out_fd], [], remaining)
                if not writable:
                    continue
                view = view[os.write(out_fd, view):]
            except BlockingIOError:
                continue
            except (OSError, ValueError) as exc:
                self._check()
                raise usb.core.USBError(f"bulk write failed: {exc}", errno=errno.EIO) from exc
        return len(data)

    def read(self, size: int, timeout_ms: int) -> bytes:
        timeout_s = (timeout_ms or 5000) / 1000.0
        deadline = time.monotonic() + timeout_s
        _, in_fd = self._fds(timeout_s)
        while True:
            self._check()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise usb.core.USBTimeoutError("bulk read timed out", errno=errno.ETIMEDOUT)
            try:
                readable, _, _ = select.select([in_fd], [], [], remaining)
                if not readable:
                    continue
                data = os.read(in_fd, size)
            except BlockingIOError:
                continue
            except (OSError, ValueError) as exc:  # unplugged while reading: the fd was closed under us
                self._check()
                raise usb.core.USBError(f"bulk read failed: {exc}", errno=errno.EIO) from exc
            if data:
                return data
            time.sleep(0.005)  # no writer (board program not attached): like an idle endpoint

    # ------------------------------------------------------------ descriptors
    def device_descriptor(self) -> SimpleNamespace:
        return SimpleNamespace(
            bLength=18, bDescriptorType=1, bcdUSB=0x0200, bDeviceClass=0, bDeviceSubClass=0, bDeviceProtocol=0,
            bMaxPacketSize0=64, idVendor=VID, idProduct=PID, bcdDevice=0x0100, iManufacturer=1, iProduct=2,
            iSerialNumber=3, bNumConfigurations=1, address=7, bus=1, port_number=1, port_numbers=(1,), speed=3)

    def string(self, index: int) -> bytes:
        if index == 0:
            return bytes([4, 3, 0x09, 0x04])
        return _string_descriptor(self.strings.get(index, ""))


class FakeBackend(usb.backend.IBackend):
    """pyusb backend over a list of FakeBoard objects (the 'bus')."""

    def __init__(self, boards: Optional[List[FakeBoard]] = None) -> None:
        self.boards: List[FakeBoard] = list(boards or [])

    def enumerate_devices(self):
        return iter([board for board in self.boards if board.plugged])

    def get_parent(self, dev):
        return None

    def get_device_descriptor(self, dev):
        return dev.device_descriptor()

    def get_configuration_descriptor(self, dev, config):
        return SimpleNamespace(bLength=9, bDescriptorType=2, wTotalLength=32, bNumInterfaces=1,
                               bConfigurationValue=1, iConfiguration=0, bmAttributes=0x80, bMaxPower=250,
                               extra_descriptors=b"")

    def get_interface_descriptor(self, dev, intf, alt, config):
        if intf != 0 or alt != 0:
            raise IndexError("no such interface")
        return SimpleNamespace(bLength=9, bDescriptorType=4, bInterfaceNumber=0, bAlternateSetting=0,
                               bNumEndpoints=2, bInterfaceClass=0xFF, bInterfaceSubClass=0x52,
                               bInterfaceProtocol=0x4C, iInterface=4, extra_descriptors=b"")

    def get_endpoint_descriptor(self, dev, ep, intf, alt, config):
        address = (EP_OUT, EP_IN)[ep]
        return SimpleNamespace(bLength=7, bDescriptorType=5, bEndpointAddress=address, bmAttributes=2,
                               wMaxPacketSize=512, bInterval=0, bRefresh=0, bSynchAddress=0, extra_descriptors=b"")

    def open_device(self, dev):
        dev._check()
        return dev

    def close_device(self, dev_handle):
        pass

    def set_configuration(self, dev_handle, config_value):
        dev_handle._check()

    def get_configuration(self, dev_handle):
        return 1

    def set_interface_altsetting(self, dev_handle, intf, altsetting):
        pass

    def claim_interface(self, dev_handle, intf):
        dev_handle._check()

    def release_interface(self, dev_handle, intf):
        pass

    def is_kernel_driver_active(self, dev_handle, intf):
        return False

    def bulk_write(self, dev_handle, ep, intf, data, timeout):
        if ep != EP_OUT:
            raise usb.core.USBError("wrong endpoint", errno=errno.EINVAL)
        return dev_handle.write(bytes(data), timeout)

    def bulk_read(self, dev_handle, ep, intf, buff, timeout):
        if ep != EP_IN:
            raise usb.core.USBError("wrong endpoint", errno=errno.EINVAL)
        data = dev_handle.read(len(buff), timeout)
        buff[: len(data)] = array.array("B", data)
        return len(data)

    def ctrl_transfer(self, dev_handle, bmRequestType, bRequest, wValue, wIndex, data, timeout):  # noqa: N803
        dev_handle._check()
        if bRequest == 6 and (wValue >> 8) == 3:  # GET_DESCRIPTOR(STRING)
            descriptor = dev_handle.string(wValue & 0xFF)[: len(data)]
            data[: len(descriptor)] = array.array("B", descriptor)
            return len(descriptor)
        raise usb.core.USBError("request not supported by the emulated device", errno=errno.EPIPE)

    def clear_halt(self, dev_handle, ep):
        pass

    def reset_device(self, dev_handle):
        pass


# The bus RKNNLINK_USB_BACKEND=fake_usb:current_backend hands to rknnlink (set by the tests).
CURRENT: Optional[FakeBackend] = None


def current_backend() -> FakeBackend:
    """The bus set by a test in this process, else one described by FAKE_USB_BOARDS=DIR=SERIAL[;...]
    (how a child process, e.g. the `rknnlink devices` CLI, sees the same emulated boards)."""
    global CURRENT
    if CURRENT is None:
        spec = os.environ.get("FAKE_USB_BOARDS", "")
        if not spec:
            raise RuntimeError("no emulated USB bus is set up (fake_usb.CURRENT or FAKE_USB_BOARDS)")
        boards = [FakeBoard(Path(item.split("=", 1)[0]), item.split("=", 1)[1]) for item in spec.split(";") if item]
        CURRENT = FakeBackend(boards)
    return CURRENT
