"""accuracy_analysis text dumps: rknnlink's vectorised `%.6f` writer against np.savetxt(fmt='%.6f').

np.savetxt is what a straightforward writer of the toolkit's one-float-per-line files uses (and what
rknnlink used before); the ratio is printed for a MobileNetV2-sized set of layer outputs (about 10 M floats),
median of 3 rounds, in this run.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from rknnlink.api.textdump import write_floats


def _time(fn, arrays, folder: Path) -> float:
    start = time.perf_counter()
    for i, a in enumerate(arrays):
        fn(folder / f"{i}.txt", a)
    return time.perf_counter() - start


def main() -> int:
    rng = np.random.default_rng(0)
    sizes = [112 * 112 * 32, 112 * 112 * 96, 56 * 56 * 144, 28 * 28 * 192, 14 * 14 * 576, 7 * 7 * 1280, 1000]
    arrays = [(rng.standard_normal(n) * 4).astype(np.float32) for n in sizes]
    total = sum(sizes)
    ours, ref = [], []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for _ in range(3):
            ours.append(_time(write_floats, arrays, folder))
            ref.append(_time(lambda p, a: np.savetxt(p, a.ravel(), fmt="%.6f"), arrays, folder))
    o, r = statistics.median(ours), statistics.median(ref)
    print(f"{total / 1e6:.1f} M floats in {len(arrays)} files")
    print(f"rknnlink write_floats : {o:6.2f} s  ({total / o / 1e6:5.1f} M floats/s)")
    print(f"np.savetxt('%.6f')    : {r:6.2f} s  ({total / r / 1e6:5.1f} M floats/s)")
    print(f"speed-up vs np.savetxt: {r / o:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
