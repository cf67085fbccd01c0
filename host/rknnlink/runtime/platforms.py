"""The platform table: every target_platform the toolkit accepts, what its NPU has, and the cost-model rates.

The one copy lives in the simulated NPU (runtime_c/src/platforms.c), which costs layers with it; this module
reads it through the simulator's extension API (rknnlink_sim_platform_info), so the toolkit facade, the model
builder and the board daemon agree with the C runtime by construction. Standard library + ctypes only: it
runs on a board's Python 3.9 (the package builds the simulator library on every install).
"""

from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass
from typing import Tuple

from rknnlink.runtime import abi
from rknnlink.runtime.library import RuntimeLibrary, _c_str


@dataclass(frozen=True)
class Platform:
    """One row of runtime_c/src/platforms.c (rknnlink_platform_info); docs/cost-model.md explains each figure."""

    name: str
    cores: int
    perf_detail: bool  # False on RV1103/RV1106: their librknnmrt has no PERF_DETAIL / PERF_RUN
    npu_hz: float
    peak_int8_macs_per_cycle: float
    fp16_ratio: float
    dense_macs_per_cycle: float
    depthwise_macs_per_cycle: float
    eltwise_per_cycle: float
    activation_per_cycle: float
    ddr_bytes_per_s: float
    layer_overhead_us: float
    io_bytes_per_s: float


@functools.lru_cache(maxsize=1)
def platform_table() -> Tuple[Platform, ...]:
    """All rows, in RKNN-Toolkit2's order of target_platform values."""
    lib = RuntimeLibrary.load(backend="sim")
    if not lib.has("rknnlink_sim_platform_info"):
        raise RuntimeError(f"the simulated NPU {lib.path} predates the platform table; rebuild it "
                           "(`make sim`, or `make -C runtime_c` for RKNNLINK_SIM_LIB)")
    count = ctypes.c_uint32(0)
    lib.fn("rknnlink_sim_platform_count")(ctypes.byref(count))
    rows = []
    for i in range(count.value):
        s = abi.RknnlinkPlatformInfo()
        ret = lib.fn("rknnlink_sim_platform_info")(i, ctypes.byref(s), ctypes.sizeof(s))
        if ret != 0:
            raise RuntimeError(f"rknnlink_sim_platform_info({i}) failed with {ret}")
        fields = {name: getattr(s, name) for name, _ in abi.RknnlinkPlatformInfo._fields_
                  if name not in ("name", "reserved")}
        rows.append(Platform(name=_c_str(bytes(s.name)), **{k: (bool(v) if k == "perf_detail" else v)
                                                             for k, v in fields.items()}))
    return tuple(rows)


def platform_names() -> Tuple[str, ...]:
    return tuple(p.name for p in platform_table())


def find_platform(name: str) -> Platform:
    """The row of `name` (case-insensitive); ValueError listing the known platforms otherwise."""
    for p in platform_table():
        if p.name == str(name).lower():
            return p
    raise ValueError(f"unknown platform {name!r}; use one of: {', '.join(platform_names())}")
