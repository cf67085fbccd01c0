"""The toolkit's printed report formats (eval_perf, eval_memory, get_sdk_version, list_devices).

Users and their tools parse these texts, so the layouts follow RKNN-Toolkit2's (rknn-c-abi.md section 5);
everything we add (the simulator's "estimated" label) goes on lines of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence

PERF_DEBUG_WARNING = "Warning: The performance result is just for debugging, may worse than actual performance!"


def human_size(num_bytes: float) -> str:
    """`3.53 MiB` style sizes, as the toolkit prints memory."""
    value = float(num_bytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024.0 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024.0
    raise AssertionError("unreachable")


@dataclass
class FrequencyInfo:
    """Clock frequencies of the board; `None` prints as Unknown (the simulator, or unreadable sysfs)."""

    cpu_khz: Sequence[Optional[int]] = field(default_factory=lambda: [None])
    npu_hz: Sequence[Optional[int]] = field(default_factory=lambda: [None])
    ddr_hz: Sequence[Optional[int]] = field(default_factory=lambda: [None])


def _frequency_lines(freqs: FrequencyInfo) -> list:
    lines = []
    for title, values in (("CPU Current Frequency List:", freqs.cpu_khz),
                          ("NPU Current Frequency List:", freqs.npu_hz),
                          ("DDR Current Frequency List:", freqs.ddr_hz)):
        lines.append(title)
        lines.extend(f"    - {'Unknown' if v is None else v}" for v in (values or [None]))
    return lines


def format_perf(total_time_us: int, perf_detail: Optional[str], freqs: FrequencyInfo,
                estimated_for: Optional[str] = None) -> str:
    """eval_perf's text: frequency lists, then the total (perf_debug off) or the runtime's layer table."""
    lines = _frequency_lines(freqs)
    if estimated_for:
        lines.append(f"Note: simulated NPU; times are cost-model estimates for {estimated_for}, "
                     "not measurements on hardware.")
    if perf_detail is not None:
        lines.append(PERF_DEBUG_WARNING)
        lines.append(perf_detail.rstrip("\n"))
    else:
        rule = "=" * 43
        fps = 1e6 / total_time_us if total_time_us > 0 else 0.0
        lines += [rule, f"{'Performance':^43}", rule, f"Total Time(us): {total_time_us}",
                  f"FPS: {fps:.2f}", rule]
    return "\n".join(lines) + "\n"


def format_memory(memory: Mapping[str, int], model_size: int) -> str:
    """eval_memory's block (rule of 54 '=', human units, model-size note)."""
    rule = "=" * 54
    return "\n".join([
        rule,
        f"{'Memory Profile Info Dump':^54}".rstrip(),
        rule,
        "NPU model memory detail(bytes):",
        f"    Weight Memory: {human_size(memory['weight_memory'])}",
        f"    Internal Tensor Memory: {human_size(memory['internal_memory'])}",
        f"    Other Memory: {human_size(memory['other_memory'])}",
        f"    Total Memory: {human_size(memory['total_memory'])}",
        "",
        "INFO: When evaluating memory usage, we need consider",
        f"the size of model, current model size is: {human_size(model_size)}",
        rule,
    ]) + "\n"


def format_sdk_version(api_version: str, server_version: Optional[str], runtime_version: str) -> str:
    """get_sdk_version's banner; the rknn_server line is absent in-process (there is no server)."""
    rule = "=" * 46
    lines = [rule, "RKNN VERSION:", f"    API: {api_version}"]
    if server_version is not None:
        lines.append(f"    DRV: rknn_server: {server_version}")
    lines.append(f"    DRV: rknnrt: {runtime_version}")
    lines.append(rule)
    return "\n".join(lines) + "\n"


def format_device_list(adb_devices: Sequence[str], ntb_devices: Sequence[str],
                       daemons: Sequence[str] = ()) -> str:
    """list_devices' printout: asterisk rules around the adb (and, when present, ntb/USB) sections, and our
    addition, rknnlink daemons reachable over TCP (e.g. one on loopback), in a section of its own."""
    rule = "*" * 25
    lines = [rule]
    if daemons:
        lines.append("all device(s) with rknnlink daemon (tcp):")
        lines.extend(daemons)
    if not adb_devices and not ntb_devices:
        if not daemons:
            lines.append("None devices connected.")
    else:
        if adb_devices:
            lines.append("all device(s) with adb mode:")
            lines.extend(adb_devices)
        if ntb_devices:
            lines.append("all device(s) with ntb mode:")
            lines.extend(ntb_devices)
    lines.append(rule)
    return "\n".join(lines) + "\n"


def write_perf_csv(path, total_time_us: int, perf_detail: Optional[str], estimated: bool) -> None:
    """eval_perf as CSV: one row per layer (the runtime table's columns) or one total row."""
    import csv

    from rknnlink.runtime.perf import parse_perf_detail

    rows, total = (parse_perf_detail(perf_detail) if perf_detail else ([], total_time_us))
    with open(path, "w", newline="") as stream:
        writer = csv.writer(stream)
        if rows:
            fields = [k for k in rows[0] if k != "extra"]
            extra = sorted({k for r in rows for k in (r.get("extra") or {})})
            writer.writerow(fields + extra + ["estimated"])
            for r in rows:
                writer.writerow([r.get(k) for k in fields] + [(r.get("extra") or {}).get(k) for k in extra]
                                + [int(estimated)])
        writer.writerow(["total_time_us", total or total_time_us, "estimated", int(estimated)])
