"""Exceptions of the transport layer; every message says what went wrong and what the user can do."""

from __future__ import annotations


class TransportError(RuntimeError):
    """A board could not be reached through the requested transport."""


class DeviceNotFoundError(TransportError):
    """No device, or not the requested one, is attached."""


class DaemonNotInstalledError(TransportError):
    """The board answers but has no (or a too old) rknnlink daemon; `rknnlink deploy SERIAL` fixes it."""


class AdbServerError(TransportError):
    """The adb server is unreachable or incompatible; rknnlink never restarts a user's adb server."""
