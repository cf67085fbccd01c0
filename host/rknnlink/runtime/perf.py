"""Parse the runtime's RKNN_QUERY_PERF_DETAIL text into rows, the way tools read it: by column positions.

The vendor table is fixed-width (section 5.1 of rknn-c-abi.md); column starts come from its header line, so
SoC-specific column sets parse too. Unknown columns are kept under their header name in `extra`.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Tuple

_COLUMN_FIELDS = {
    "ID": "id", "OpType": "op_type", "DataType": "data_type", "Target": "target", "InputShape": "input_shape",
    "OutputShape": "output_shape", "Time(us)": "time_us", "RW(KB)": "rw_kb", "FullName": "full_name",
}
_PREFIX_FIELDS = {"Cycles": "cycles", "MacUsage": "mac_usage", "WorkLoad": "workload"}
_TOTAL_RE = re.compile(r"Total Operator Elapsed Per Frame Time\(us\):\s*([0-9.]+)")


def _field_for(header: str) -> str:
    if header in _COLUMN_FIELDS:
        return _COLUMN_FIELDS[header]
    for prefix, field in _PREFIX_FIELDS.items():
        if header.startswith(prefix):
            return field
    return header


def _number(text: str) -> float:
    try:
        return float(text.rstrip("%"))
    except ValueError:
        return 0.0


def _is_rule(line: str) -> bool:
    stripped = line.strip()
    return len(stripped) >= 10 and set(stripped) <= {"-", "="}


def parse_perf_detail(text: str) -> Tuple[List[Dict[str, Any]], int]:
    """Rows of the "Network Layer Information Table" and the per-frame total in microseconds (0 if absent)."""
    lines = text.splitlines()
    rows: List[Dict[str, Any]] = []
    header_at = next((i for i, line in enumerate(lines) if "OpType" in line and "ID" in line.split()[:1]), None)
    if header_at is not None:
        columns = [(m.start(), m.group()) for m in re.finditer(r"\S+", lines[header_at])]
        i = header_at + 1
        while i < len(lines) and _is_rule(lines[i]):
            i += 1
        for line in lines[i:]:
            if _is_rule(line) or not line.strip():
                break
            rows.append(_parse_row(line, columns))
    match = _TOTAL_RE.search(text)
    total = int(float(match.group(1))) if match else 0
    return rows, total


def _parse_row(line: str, columns: List[Tuple[int, str]]) -> Dict[str, Any]:
    row: Dict[str, Any] = {}
    extra: Dict[str, str] = {}
    for k, (start, header) in enumerate(columns):
        end = columns[k + 1][0] if k + 1 < len(columns) else len(line)
        cell = line[start:end].strip() if k + 1 < len(columns) else line[start:].strip()
        field = _field_for(header)
        if field == "id":
            row[field] = int(_number(cell))
        elif field in ("time_us", "rw_kb"):
            row[field] = _number(cell)
        elif field == header:
            extra[header] = cell
        else:
            row[field] = cell
    if extra:
        row["extra"] = extra
    return row
