"""What this board is: platform, NPU cores, serial, runtime and driver versions (DeviceInfo)."""

from __future__ import annotations

import platform as _platform
import re
import socket
from pathlib import Path
from typing import Optional

from rknnlink.runtime.platforms import platform_table

# The one platform table (runtime_c/src/platforms.c); longest names first so "rv1106b" wins over "rv1106".
KNOWN_PLATFORMS = tuple(sorted((p.name for p in platform_table()), key=len, reverse=True))
NPU_CORES = {p.name: p.cores for p in platform_table()}
_VERSION_RE = re.compile(rb"lib(?:rknnrt|rknnmrt|rknnrt_sim) version: ([\x20-\x7e]{1,120})")


def npu_cores(platform: str) -> int:
    return NPU_CORES.get(platform, 1)


def detect_platform(compatible: Path = Path("/proc/device-tree/compatible")) -> Optional[str]:
    """The Rockchip SoC named in the device tree (e.g. "rockchip,rk3588s" -> rk3588), or None."""
    try:
        entries = compatible.read_bytes().split(b"\0")
    except OSError:
        return None
    for entry in entries:
        text = entry.decode("ascii", "replace").lower()
        if not text.startswith("rockchip,"):
            continue
        soc = text.split(",", 1)[1]
        for known in KNOWN_PLATFORMS:
            if soc.startswith(known):
                return known
    return None


def board_serial(backend: str, platform: str) -> str:
    """Device-tree serial on a board; a stable host-derived name for the simulator."""
    if backend == "vendor":
        for candidate in (Path("/proc/device-tree/serial-number"), Path("/sys/firmware/devicetree/base/serial-number")):
            try:
                serial = candidate.read_bytes().strip(b"\0\n ").decode("ascii", "replace")
            except OSError:
                continue
            if serial:
                return serial
    return f"sim-{platform}-{socket.gethostname()}" if backend == "sim" else socket.gethostname()


def library_version(path: str) -> str:
    """The "librknnrt version: X" string embedded in the library (what rknn_server itself greps for)."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return ""
    for match in _VERSION_RE.finditer(data):
        text = match.group(1).decode("ascii", "replace").strip()
        if "%" not in text:  # skip printf formats; the real string is assembled at run time there
            return text
    return ""


def driver_version() -> str:
    """The RKNPU kernel driver version, where the kernel exposes it."""
    for candidate in (Path("/sys/kernel/debug/rknpu/version"), Path("/proc/debug/rknpu/version")):
        try:
            text = candidate.read_text().strip()
        except OSError:
            continue
        if text:
            return text.split(":")[-1].strip()
    return ""


def host_description() -> dict:
    return {"hostname": socket.gethostname(), "os": f"{_platform.system()} {_platform.release()}",
            "arch": _platform.machine()}
