"""One float per line with six decimals (`%.6f`), the toolkit's tensor dump format, written fast.

`np.savetxt` formats every value through Python's `%` operator (about 1 µs per value); accuracy_analysis
dumps every layer of the model twice or three times, so that dominated its run time. Here the digits are
computed with integer arithmetic on whole arrays and the text assembled with one boolean mask. Values below
1000 (nearly every activation) take the short path: each line is a 12-byte row, a uint32 holding the sign
and three integer digits and a uint64 holding ".dddddd\n", the digits packed three at a time from a
1000-entry table; the mask then drops the unused leading bytes (bench/bench_text_dumps.py measures it).

Exactness: a float32 times 10**6 is exact in float64 (24 + 14 significant bits < 53), so `np.rint` of it
is the correctly rounded (half to even) value `%.6f` prints. Values too large for that path, NaN and
infinities go through `%`-formatting, so the output always equals `"%.6f" % value`.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO, Union

import numpy as np

_LIMIT = 9.0e9                   # below 2**53 / 10**6: the scaled value stays an exact integer
_GROUPS = 4                      # integer part in groups of three digits: 12 >= the 10 digits below _LIMIT
_INT_DIGITS = 3 * _GROUPS
_CHUNK = 1 << 20
# "000" ... "999" as a (1000, 3) table: digits come from two table look-ups per group instead of divisions.
_TRIPLETS = np.frombuffer("".join(f"{i:03d}" for i in range(1000)).encode(), np.uint8).reshape(1000, 3)
_THRESHOLDS = 10 ** np.arange(1, _INT_DIGITS, dtype=np.int64)  # 10, 100, ...: digit counts by searchsorted
# the short path: "000" ... "999" packed little-endian (first digit in the low byte) ...
_PACKED = (_TRIPLETS.astype(np.uint64) << np.array([0, 8, 16], np.uint64)).sum(axis=1, dtype=np.uint64)
_ROW = np.dtype([("prefix", "<u4"), ("suffix", "<u8")])  # sign + 3 integer digits | ".dddddd\n"
# ... and which of a row's 12 bytes a line keeps, by 3 * negative + (integer digits - 1)
_KEEP = np.ones((6, 12), bool)
for _row, (_negative, _digits) in enumerate((n, d) for n in (0, 1) for d in (1, 2, 3)):
    _KEEP[_row, 0] = bool(_negative)
    _KEEP[_row, 1:4] = np.arange(3, 0, -1) <= _digits


def _format_short(x: np.ndarray, whole: np.ndarray, frac: np.ndarray) -> bytes:
    """Values below 1000 (the caller checked): one 12-byte row per value, then the kept bytes."""
    rows = np.empty(x.size, _ROW)
    rows["prefix"] = (_PACKED.take(whole) << np.uint64(8) | np.uint64(ord("-"))).astype(np.uint32)
    hi, lo = np.divmod(frac, 1000)
    rows["suffix"] = (_PACKED.take(hi) << np.uint64(8) | _PACKED.take(lo) << np.uint64(32)
                      | np.uint64(ord(".") | ord("\n") << 56))
    kind = (whole >= 10).astype(np.intp) + (whole >= 100) + 3 * np.signbit(x)
    return rows.view(np.uint8).reshape(-1, 12)[_KEEP.take(kind, axis=0)].tobytes()


def _format_chunk(values: np.ndarray) -> bytes:
    x = values.astype(np.float64)
    if not (np.isfinite(x) & (np.abs(x) < _LIMIT)).all():
        return "".join("%.6f\n" % v for v in x.tolist()).encode()  # noqa: UP031 - the exact reference format
    scaled = np.rint(np.abs(x) * 1e6).astype(np.int64)
    whole, frac = np.divmod(scaled, 1_000_000)
    if whole.max(initial=0) < 1000:
        return _format_short(x, whole, frac)
    digits = np.searchsorted(_THRESHOLDS, whole, side="right") + 1
    groups = int(-(-int(digits.max()) // 3))
    width = 1 + 3 * groups + 1 + 6 + 1
    chars = np.empty((x.size, width), np.uint8)
    chars[:, 0] = ord("-")
    rest = whole
    for g in range(groups):  # least significant group last
        rest, group = np.divmod(rest, 1000)
        column = 1 + 3 * (groups - 1 - g)
        chars[:, column:column + 3] = _TRIPLETS[group]
    chars[:, 3 * groups + 1] = ord(".")
    chars[:, 3 * groups + 2:3 * groups + 5] = _TRIPLETS[frac // 1000]
    chars[:, 3 * groups + 5:3 * groups + 8] = _TRIPLETS[frac % 1000]
    chars[:, -1] = ord("\n")
    keep = np.ones((x.size, width), bool)
    keep[:, 0] = np.signbit(x)
    keep[:, 1:1 + 3 * groups] = np.arange(3 * groups, 0, -1)[None, :] <= digits[:, None]
    return chars[keep].tobytes()


def format_floats(values: np.ndarray) -> bytes:
    """The bytes of `values` (any shape, flattened in C order) as `%.6f` lines."""
    flat = np.ascontiguousarray(values).reshape(-1)
    return b"".join(_format_chunk(flat[i:i + _CHUNK]) for i in range(0, flat.size, _CHUNK))


def write_floats(target: Union[str, Path, BinaryIO], values: np.ndarray) -> None:
    """Write `values` as one `%.6f` float per line (what np.savetxt(fmt='%.6f') writes for a 1-D array)."""
    if isinstance(target, (str, Path)):
        with open(target, "wb") as stream:
            write_floats(stream, values)
        return
    flat = np.ascontiguousarray(values).reshape(-1)
    for start in range(0, flat.size, _CHUNK):
        target.write(_format_chunk(flat[start:start + _CHUNK]))
