"""The vocabulary rknnlink shares with labgrid: resource classes, place tags and names.

A farm board is one labgrid *place* with two resources in one exporter group: ``daemon``
(class RKNNLinkDaemon: the address, port and data port at which the exporter host relays the board's
rknnlink daemon) and ``device`` (how the exporter host reaches the board: RKNNLinkADBDevice with the adb
serial, RKNNLinkUSBDevice with the USB serial, RKNNLinkNetworkDevice with the daemon's own address).
Its tags are what users select by. labgrid tag keys are ``[a-z][a-z0-9_]+``.
"""

from __future__ import annotations

import re
from typing import Any, Dict

DAEMON_CLASS = "RKNNLinkDaemon"
DEVICE_CLASSES = {"adb": "RKNNLinkADBDevice", "usb": "RKNNLinkUSBDevice", "tcp": "RKNNLinkNetworkDevice"}

POOL_TAG = "rknnlink"      # every board in the pool carries rknnlink=board; a board that left has none
POOL_VALUE = "board"
STATE_TAG = "state"        # 'ready' or 'unplugged'
READY, UNPLUGGED = "ready", "unplugged"
SELECTION_TAGS = ("platform", "npu_cores", "backend", "daemon_version", "librknnrt_version", "transport")


def board_tags(info: Any, transport: str) -> Dict[str, str]:
    """Selection tags of a board from its daemon's DeviceInfo (rknnlink.client.DeviceInfo)."""
    tags = {"platform": info.platform, "npu_cores": str(info.npu_cores), "backend": info.backend,
            "daemon_version": info.daemon_version, "librknnrt_version": _version(info.runtime_version),
            "transport": transport}
    return {key: value for key, value in tags.items() if value}


def _version(text: str) -> str:
    """'2.3.0 (c949ad889d@2024-11-07T11:39:30)' -> '2.3.0' (tag values are matched exactly)."""
    match = re.search(r"\d+(\.\d+)+", text or "")
    return match.group(0) if match else (text or "").strip()


def group_name(device_id: str) -> str:
    """An exporter group (and place-name suffix) for a board: its id with only [a-z0-9_] kept."""
    name = re.sub(r"[^a-z0-9]+", "_", device_id.lower()).strip("_")
    return name or "board"


def place_name(exporter: str, group: str) -> str:
    return f"{exporter}-{group}"
