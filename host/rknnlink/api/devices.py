"""Which board a toolkit script means, and errors of the toolkit's type when it cannot be reached.

A script written for RKNN-Toolkit2 calls `init_runtime(target='rk3588')` without a device_id: the toolkit
then uses the only adb device. We do the same, and let the environment name the device instead, so the
same unchanged script runs on a simulated board or a board on the network:

    RKNNLINK_DEVICE=sim python test.py                  # a simulated board daemon started for the script
    RKNNLINK_DEVICE=tcp:192.168.1.20:50051 python test.py

Without the variable and without an adb device, a daemon already listening on loopback (`rknnlink serve`
on this machine, port 50051 or $RKNNLINK_LOOPBACK_PORT) is used.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import socket
from typing import Callable, Iterator, List, Optional, Tuple

log = logging.getLogger("rknnlink.api")

DEVICE_ENV = "RKNNLINK_DEVICE"
LOOPBACK_PORT_ENV = "RKNNLINK_LOOPBACK_PORT"
DEFAULT_LOOPBACK_PORT = 50051


def loopback_port() -> int:
    try:
        return int(os.environ.get(LOOPBACK_PORT_ENV, DEFAULT_LOOPBACK_PORT))
    except ValueError as exc:
        raise ValueError(f"{LOOPBACK_PORT_ENV}={os.environ[LOOPBACK_PORT_ENV]!r} is not a port number") from exc


def loopback_daemons(timeout: float = 1.0) -> List[str]:
    """`tcp:127.0.0.1:PORT` when an rknnlink daemon answers there (a TCP connect, then the handshake)."""
    address = f"127.0.0.1:{loopback_port()}"
    try:
        with socket.create_connection(("127.0.0.1", loopback_port()), timeout=0.2):
            pass
    except OSError:
        return []
    try:
        from rknnlink.client import Board

        with Board.connect(address, timeout=timeout, use_data_channel=False):
            return [f"tcp:{address}"]
    except Exception as exc:  # something else listens there: not a board
        log.debug("loopback %s is not an rknnlink daemon: %s", address, exc)
        return []


def default_device(device_id: Optional[str]) -> str:
    """device_id, else $RKNNLINK_DEVICE, else the only adb device, else a daemon on loopback."""
    if device_id is not None:
        return str(device_id)
    named = os.environ.get(DEVICE_ENV, "").strip()
    if named:
        log.info("init_runtime: device_id not given, using %s=%s", DEVICE_ENV, named)
        return named
    from rknnlink.transport import list_adb_serials

    serials = list_adb_serials()
    if len(serials) == 1:
        return serials[0]
    if len(serials) > 1:
        raise ValueError(f"{len(serials)} adb devices are connected ({', '.join(serials)}): pass "
                         f"device_id='SERIAL' to init_runtime, or set {DEVICE_ENV}=SERIAL.")
    daemons = loopback_daemons()
    if daemons:
        log.info("init_runtime: no adb device; using the rknnlink daemon at %s", daemons[0])
        return daemons[0]
    raise ValueError(f"No device: no adb device is connected and no rknnlink daemon answers on "
                     f"127.0.0.1:{loopback_port()}. Connect a board (`adb devices` lists it), pass "
                     f"device_id='tcp:HOST:PORT', or set {DEVICE_ENV}=sim to run on a simulated board.")


def open_endpoint(device_id: str, target: str) -> Tuple[str, Callable[[], None], dict]:
    """(address, close, Board.connect kwargs) for a device id; 'sim' starts a simulated board daemon."""
    if device_id == "sim":
        from rknnlink.client.local import start_local_daemon

        daemon = start_local_daemon(platform=target, backend="sim")
        # stopped at exit too: an RKNN object a script never releases (or a traceback keeps alive) must not
        # leave the daemon running after the process
        atexit.register(daemon.stop)

        def close() -> None:
            atexit.unregister(daemon.stop)
            daemon.stop()

        return daemon.address, close, {}
    from rknnlink.transport import resolve

    endpoint = resolve(device_id, platform=target)  # the target selects a farm board
    return endpoint.address, endpoint.close, endpoint.connect_kwargs()


@contextlib.contextmanager
def explained_failures(device_id: str) -> Iterator[None]:
    """Re-raise transport and connection failures as ValueError (the toolkit's type), cause attached."""
    try:
        yield
    except ValueError:
        raise
    except Exception as exc:
        hint = ("check the cable and `adb devices`, or that `rknnlink serve` runs on the board; "
                f"set {DEVICE_ENV}=sim to try a simulated board")
        if str(device_id).startswith("farm"):
            hint = "see the boards and the queue with `rknnlink farm list` (docs/farm.md)"
        raise ValueError(f"init_runtime: cannot use device {device_id!r}: {exc} ({type(exc).__name__}); "
                         f"{hint}.") from exc
