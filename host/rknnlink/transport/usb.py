"""`usb:SERIAL`: a host-side bridge from a loopback TCP listener to a board's rknnlink USB bulk interface.

The board exposes a vendor-class interface (class 0xFF, subclass 0x52 'R', protocol 0x4C 'L') with one
bulk OUT and one bulk IN endpoint through a FunctionFS gadget (board_server/usb_gadget). The bridge
accepts gRPC connections on 127.0.0.1 and multiplexes them over that pipe (see usbmux). When the board
disappears or stops answering, the bridge drops the open connections, waits for the board to come back
(same serial) and starts a new session on the same local port, so gRPC channels simply reconnect.

RKNNLINK_USB_BACKEND=module:callable picks a pyusb backend (tests use an emulated one); by default pyusb
uses libusb-1.0.
"""

from __future__ import annotations

import errno
import importlib
import logging
import os
import re
import socket
import threading
import time
from typing import List, Optional, Tuple

from rknnlink.v1.usbmux import IFACE_CLASS, IFACE_PROTOCOL, IFACE_SUBCLASS, Mux, MuxConfig, PipeError, PipeTimeoutError

from . import DeviceRecord, Endpoint
from .errors import DeviceNotFoundError, TransportError

log = logging.getLogger(__name__)

ROCKCHIP_VID = 0x2207


def _backend(backend=None):
    if backend is not None:
        return backend
    spec = os.environ.get("RKNNLINK_USB_BACKEND", "").strip()
    if not spec:
        return None
    module_name, _, attr = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr or "get_backend")
    except (ImportError, AttributeError) as exc:
        raise TransportError(f"RKNNLINK_USB_BACKEND={spec!r} cannot be loaded: {exc}") from exc
    return factory()


def _rknnlink_interface(device):
    """The rknnlink bulk interface of a device, or None."""
    import usb.core

    try:
        for config in device:
            for interface in config:
                if (interface.bInterfaceClass, interface.bInterfaceSubClass, interface.bInterfaceProtocol) == \
                        (IFACE_CLASS, IFACE_SUBCLASS, IFACE_PROTOCOL):
                    return config, interface
    except usb.core.USBError as exc:
        log.debug("reading descriptors of %s: %s", device, exc)
    return None


def _find(backend=None, serial: Optional[str] = None) -> List[Tuple[object, str]]:
    """(device, serial) pairs of attached boards with the rknnlink interface."""
    try:
        import usb.core
    except ImportError as exc:
        raise TransportError("USB support needs pyusb: pip install 'rknnlink[host]'") from exc

    try:
        devices = list(usb.core.find(find_all=True, idVendor=ROCKCHIP_VID, backend=_backend(backend)))
    except usb.core.NoBackendError as exc:
        raise TransportError("pyusb found no USB backend: install libusb-1.0 "
                             "(`apt-get install libusb-1.0-0`).") from exc
    found = []
    for device in devices:
        if _rknnlink_interface(device) is None:
            continue
        try:
            device_serial = device.serial_number or ""
        except (ValueError, usb.core.USBError) as exc:
            log.warning("cannot read the serial of USB device %04x:%04x (%s); add a udev rule giving you "
                        "access to Rockchip devices (SUBSYSTEM==\"usb\", ATTR{idVendor}==\"2207\", "
                        "MODE=\"0660\", GROUP=\"plugdev\")", device.idVendor, device.idProduct, exc)
            continue
        if serial is None or device_serial == serial:
            found.append((device, device_serial))
    return found


def find_serials(backend=None) -> List[str]:
    return [serial for _, serial in _find(backend)]


class UsbPipe:
    """The bulk endpoints of the rknnlink interface of one opened device."""

    def __init__(self, device) -> None:
        import usb.core
        import usb.util

        self._usb_core = usb.core
        match = _rknnlink_interface(device)
        if match is None:
            raise TransportError("the USB device has no rknnlink interface")
        config, interface = match
        self.device = device
        self.interface = interface.bInterfaceNumber
        try:
            try:
                if device.is_kernel_driver_active(self.interface):
                    device.detach_kernel_driver(self.interface)
            except (NotImplementedError, usb.core.USBError):
                pass
            device.set_configuration(config.bConfigurationValue)
            usb.util.claim_interface(device, self.interface)
        except usb.core.USBError as exc:
            raise TransportError(f"cannot claim the rknnlink USB interface: {exc}. Another program (an older "
                                 "bridge?) may hold it, or you lack permission (udev rule).") from exc
        direction = usb.util.endpoint_direction
        self.ep_out = usb.util.find_descriptor(
            interface, custom_match=lambda ep: direction(ep.bEndpointAddress) == usb.util.ENDPOINT_OUT)
        self.ep_in = usb.util.find_descriptor(
            interface, custom_match=lambda ep: direction(ep.bEndpointAddress) == usb.util.ENDPOINT_IN)
        if self.ep_out is None or self.ep_in is None:
            raise TransportError("the rknnlink USB interface lacks a bulk IN or OUT endpoint")

    def _translate(self, exc: Exception) -> Exception:
        if isinstance(exc, self._usb_core.USBTimeoutError) or getattr(exc, "errno", None) == errno.ETIMEDOUT:
            return PipeTimeoutError(str(exc))
        return PipeError(str(exc))

    def write(self, data: bytes, timeout: Optional[float]) -> None:
        try:
            written = self.ep_out.write(data, timeout=int((timeout or 0) * 1000))
        except self._usb_core.USBError as exc:
            raise self._translate(exc) from exc
        if written != len(data):
            raise PipeError(f"short bulk write ({written} of {len(data)} bytes)")

    def read(self, size: int, timeout: Optional[float]) -> bytes:
        try:
            return bytes(self.ep_in.read(size, timeout=int((timeout or 0) * 1000)))
        except self._usb_core.USBError as exc:
            raise self._translate(exc) from exc

    def close(self) -> None:
        import usb.util

        try:
            usb.util.release_interface(self.device, self.interface)
            usb.util.dispose_resources(self.device)
        except self._usb_core.USBError:
            pass


class UsbBridge:
    """Loopback TCP listeners whose connections travel over the USB pipe of the board with `serial`: one for
    the daemon's gRPC port (`address`), one for its data port (`data_address`, None when the board's bridge
    offers no data channels), so inference frames take the direct carrier over the mux."""

    def __init__(self, serial: Optional[str], *, backend=None, listen_port: int = 0,
                 config: Optional[MuxConfig] = None, handshake_timeout: float = 3.0,
                 reconnect_timeout: float = 30.0) -> None:
        self.serial = serial
        self._backend = backend
        self._config = config or MuxConfig()
        self.handshake_timeout = handshake_timeout
        self.reconnect_timeout = reconnect_timeout
        self._listener = socket.create_server(("127.0.0.1", listen_port))
        self.port = self._listener.getsockname()[1]
        try:
            self._data_listener = socket.create_server(("127.0.0.1", 0))
        except OSError:
            self._listener.close()
            raise
        self.data_port = self._data_listener.getsockname()[1]
        self._mux: Optional[Mux] = None
        self._link_up = threading.Event()
        self._link_down = threading.Event()
        self._closed = threading.Event()
        self.sessions = 0
        self.failures: List[str] = []

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def data_address(self) -> Optional[str]:
        """Where the board's data port is reached, once the board said it can open data channels."""
        mux = self._mux
        return f"127.0.0.1:{self.data_port}" if mux is not None and mux.board_has_data else None

    def start(self, timeout: float = 10.0) -> UsbBridge:
        """Connects to the board (raising a TransportError on failure) and starts serving the listener."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._connect()
                break
            except DeviceNotFoundError as exc:
                self._close_listeners()
                attached = ", ".join(find_serials(self._backend)) or "none"
                raise DeviceNotFoundError(f"{exc} Attached rknnlink USB boards: {attached}.") from None
            except TransportError:
                if time.monotonic() >= deadline:
                    self._close_listeners()
                    raise
                time.sleep(0.2)
        threading.Thread(target=self._accept_loop, args=(self._listener, False), name="usb-bridge-accept",
                         daemon=True).start()
        threading.Thread(target=self._accept_loop, args=(self._data_listener, True), name="usb-bridge-data",
                         daemon=True).start()
        threading.Thread(target=self._supervise, name="usb-bridge-supervisor", daemon=True).start()
        return self

    def _connect(self) -> None:
        matches = _find(self._backend, self.serial)
        if not matches:
            wanted = f" and serial {self.serial}" if self.serial else ""
            raise DeviceNotFoundError(
                f"no Rockchip board with the rknnlink USB interface{wanted} is attached. "
                "Check the cable and that the board runs board_server/usb_gadget/setup_gadget.sh.")
        device, serial = matches[0]
        self.serial = self.serial or serial
        pipe = UsbPipe(device)
        config = MuxConfig(window=self._config.window, io_timeout=self._config.io_timeout,
                           link_timeout=self._config.link_timeout, ping_interval=self._config.ping_interval,
                           on_failure=self._on_failure)
        mux = Mux(pipe, "host", config)
        mux.start()
        try:
            mux.handshake(self.handshake_timeout)
        except (PipeTimeoutError, PipeError) as exc:
            mux.close()
            mux.join(2.0)
            raise TransportError(f"the board {self.serial} does not answer on its rknnlink USB interface: {exc}. "
                                 "Is rknnlink_usb_bridge.py running on the board?") from exc
        self._mux = mux
        self.sessions += 1
        self._link_down.clear()
        self._link_up.set()
        log.info("USB bridge %s -> board %s, session %d", self.address, self.serial, self.sessions)

    def _on_failure(self, reason: str) -> None:
        self.failures.append(reason)
        self._link_up.clear()
        self._link_down.set()

    def _supervise(self) -> None:
        """Re-establishes the session after a failure: same device if it is still there, else waits for it."""
        while not self._closed.is_set():
            if not self._link_down.wait(0.5):
                continue
            old = self._mux
            if old is not None:
                old.close()
                old.join(2.0)
            while not self._closed.is_set():
                try:
                    self._connect()
                    break
                except TransportError as exc:
                    log.debug("USB reconnect: %s", exc)
                    self._closed.wait(0.3)

    def _accept_loop(self, listener: socket.socket, data: bool) -> None:
        while not self._closed.is_set():
            try:
                sock, _ = listener.accept()
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._attach, args=(sock, data), daemon=True).start()

    def _attach(self, sock: socket.socket, data: bool) -> None:
        if not self._link_up.wait(self.reconnect_timeout):
            log.warning("USB link to %s is down; refusing a connection", self.serial)
            sock.close()
            return
        mux = self._mux
        try:
            if mux is None:
                raise PipeError("no session")
            if data and not mux.board_has_data:
                raise PipeError("the board's bridge opens no data channels")
            mux.open_channel(sock, data=data)
        except (PipeError, PipeTimeoutError):
            sock.close()

    @property
    def mux(self) -> Optional[Mux]:
        return self._mux

    def wait_link(self, timeout: float) -> bool:
        return self._link_up.wait(timeout)

    def _close_listeners(self) -> None:
        for listener in (self._listener, self._data_listener):
            try:
                listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() of the listener thread
            except OSError:
                pass
            listener.close()

    def close(self) -> None:
        self._closed.set()
        self._close_listeners()
        if self._mux is not None:
            self._mux.close()
            self._mux.join(2.0)


def resolve_usb(serial: str, *, timeout: float = 10.0) -> Endpoint:
    """Starts a bridge to the board and checks that its daemon answers through it."""
    from .probe import wait_until_serving

    bridge = UsbBridge(serial or None).start(timeout=timeout)
    result = wait_until_serving(bridge.address, timeout=min(timeout, 10.0))
    if not result.ok:
        bridge.close()
        raise TransportError(
            f"the board {serial} answers on USB but its daemon does not ({result.status}: {result.detail}). "
            "Start it on the board (`systemctl start rknnlink` or `rknnlink serve`).")
    return Endpoint(address=bridge.address, kind="usb", serial=bridge.serial, data_address=bridge.data_address,
                    _closer=bridge.close)


def describe_devices(timeout: float, backend=None) -> List[DeviceRecord]:
    """Rows for `rknnlink devices`: platform from the product string, daemon state through a short bridge."""
    from .probe import address_info, check_address

    records = []
    for device, serial in _find(backend):
        record = DeviceRecord(id=f"usb:{serial}", transport="usb", state="no-daemon")
        try:
            product = device.product or ""
        except (ValueError, OSError):
            product = ""
        match = re.search(r"\b(rk\d{4}b?|rv\d{4}b?)\b", product.lower())
        record.platform = match.group(1) if match else None
        version = re.search(r"rknnlink[ -](\d+\.\d+(?:\.\d+)?)", product)
        record.daemon_version = version.group(1) if version else None
        try:
            bridge = UsbBridge(serial, backend=backend, handshake_timeout=min(timeout, 3.0)).start(timeout=timeout)
        except TransportError as exc:
            record.state = "no-bridge"
            log.info("usb:%s: %s", serial, exc)
            records.append(record)
            continue
        try:
            if check_address(bridge.address, timeout=timeout).ok:
                record.state = "device"
                info = address_info(bridge.address, timeout=timeout)
                if info is not None:
                    record.platform = info.platform or record.platform
                    record.daemon_version = info.daemon_version or record.daemon_version
        finally:
            bridge.close()
        records.append(record)
    return records
