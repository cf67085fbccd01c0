"""`rknnlink devices`: every board on every transport, each probed in parallel within one time budget."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, List

from . import DeviceRecord
from .errors import TransportError

log = logging.getLogger(__name__)


def discover_all(timeout: float) -> List[DeviceRecord]:
    """Runs the adb, USB and mDNS listings side by side; a transport that is unavailable lists nothing."""
    sources: List[Callable[[float], List[DeviceRecord]]] = [_adb_records, _usb_records, _network_records]
    records: List[DeviceRecord] = []
    with ThreadPoolExecutor(max_workers=len(sources)) as pool:
        futures = [pool.submit(_guarded, source, timeout) for source in sources]
        for future in futures:
            records.extend(future.result())
    return records


def _guarded(source: Callable[[float], List[DeviceRecord]], timeout: float) -> List[DeviceRecord]:
    try:
        return source(timeout)
    except (TransportError, ImportError, OSError) as exc:
        log.info("%s: %s", source.__name__.strip("_").replace("_records", ""), exc)
        return []


def _adb_records(timeout: float) -> List[DeviceRecord]:
    from . import adb

    client = adb.client(timeout=max(timeout, 2.0))
    records = []
    for device in adb.list_devices(client):
        record = DeviceRecord(id=device.serial, transport="adb", state=device.state)
        if device.state == "device":
            _probe_adb(adb.AdbBoard(client, device.serial), record, timeout)
        records.append(record)
    return records


def _probe_adb(board, record: DeviceRecord, timeout: float) -> None:
    """Fills state/platform/version of one adb board; the forward lives only for the probe."""
    from . import adb
    from .probe import address_info, check_address

    local_port = board.forward(adb.board_port())
    try:
        address = f"127.0.0.1:{local_port}"
        result = check_address(address, timeout=timeout)
        info = address_info(address, timeout=timeout) if result.ok else None
    finally:
        board.remove_forward(local_port)
    if info is not None:
        record.platform, record.daemon_version = info.platform or None, info.daemon_version or None
    else:
        record.platform, record.daemon_version = board.platform(), board.daemon_version()
    if result.ok:
        record.state = "device"
    else:
        record.state = "stopped" if record.daemon_version else "no-daemon"


def _usb_records(timeout: float) -> List[DeviceRecord]:
    from .usb import describe_devices

    return describe_devices(timeout)


def _network_records(timeout: float) -> List[DeviceRecord]:
    from . import mdns

    records = []
    for service in mdns.discover(timeout=timeout):
        record = DeviceRecord(id=f"tcp:{service.address}", transport="tcp", state="device",
                              platform=service.platform, daemon_version=service.daemon_version,
                              address=service.address)
        record.state = _network_state(service, timeout)
        records.append(record)
    return records


def _network_state(service, timeout: float) -> str:
    """'device' when the advertised daemon answers its health check (over pinned TLS when it uses TLS)."""
    from .network import resolve_tcp
    from .probe import check_channel

    try:
        endpoint = resolve_tcp(service.address, timeout=timeout, expected_fingerprint=service.fingerprint,
                               warn_without_token=False)
    except TransportError as exc:
        log.info("tcp:%s: %s", service.address, exc)
        return "unreachable"
    with endpoint.open_channel() as channel:
        return "device" if check_channel(channel, timeout).ok else "unreachable"
