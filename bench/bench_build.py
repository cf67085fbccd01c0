"""Build time and peak memory of the MobileNetV2-like model (tests/model/factories.py) in fp16, int8 normal
and int8 mmse, next to RKNN-Toolkit2 2.5.0's figures measured on the same machine kind (1.1 s, 2.2 s, 56 s;
docs in /work/shared/reference/rknn-toolkit2-measured.md section 3).

Each build runs in a fresh child process so peak RSS (resource.getrusage ru_maxrss) belongs to that build
alone. tracemalloc slows Python down several times, so its peak (Python-level allocations, numpy buffers
included) comes from a second child run and the time from the untraced one. The baseline child only
creates the ONNX model, so "RSS over base" is what the build itself added.

    .venv/bin/python bench/bench_build.py [--samples 20]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOOLKIT_SECONDS = {"fp16": 1.12, "int8 normal": 2.15, "int8 mmse": 56.26}
CASES = {"baseline": None, "fp16": (False, "normal"), "int8 normal": (True, "normal"),
         "int8 mmse": (True, "mmse")}
MEAN = [123.675, 116.28, 103.53]
STD = [58.395, 57.12, 57.375]


def child(case: str, dataset: str, trace: bool) -> dict:
    """Runs in the child process: one build, measured."""
    import resource
    import tracemalloc

    sys.path.insert(0, str(ROOT / "tests" / "model"))
    import factories

    from rknnlink.model.builder import BuildConfig, build, load_onnx

    model = load_onnx(factories.mobilenetv2_like())
    spec = CASES[case]
    if trace:
        tracemalloc.start()
    start = time.perf_counter()
    size = 0
    if spec is not None:
        quantize, algorithm = spec
        cfg = BuildConfig(mean_values=[MEAN], std_values=[STD], quantized_algorithm=algorithm, progress=False)
        size = len(build(model, cfg, quantize, dataset if quantize else None).data)
    seconds = time.perf_counter() - start
    traced_peak = tracemalloc.get_traced_memory()[1] if trace else 0
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": seconds, "rss_mb": rss_mb, "traced_mb": traced_peak / 2 ** 20, "size": size}


def measure(case: str, dataset: str, trace: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--child", case, "--dataset", dataset] + (["--trace"] if trace else [])
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=20, help="calibration images (the toolkit used 20)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--dataset", help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.dataset, args.trace)))
        return
    sys.path.insert(0, str(ROOT / "tests" / "model"))
    import factories

    with tempfile.TemporaryDirectory() as tmp:
        images = factories.smooth_images(args.samples, 224, seed=0)
        dataset = str(factories.write_npy_dataset(Path(tmp) / "calib", images))
        base = measure("baseline", dataset)
        print(f"MobileNetV2-like 224x224, {args.samples} calibration images; baseline RSS {base['rss_mb']:.0f} MB")
        print(f"{'build':<13}{'rknnlink s':>11}{'toolkit s':>11}{'ratio':>8}{'peak RSS MB':>13}"
              f"{'RSS over base':>15}{'traced MB':>11}{'file bytes':>12}")
        for case in ("fp16", "int8 normal", "int8 mmse"):
            r = measure(case, dataset)
            r["traced_mb"] = measure(case, dataset, trace=True)["traced_mb"]
            ref = TOOLKIT_SECONDS[case]
            print(f"{case:<13}{r['seconds']:>11.2f}{ref:>11.2f}{r['seconds'] / ref:>8.2f}{r['rss_mb']:>13.0f}"
                  f"{r['rss_mb'] - base['rss_mb']:>15.0f}{r['traced_mb']:>11.0f}{r['size']:>12,}")
        print("toolkit figures: RKNN-Toolkit2 2.5.0 on this machine kind (fp16 5,943,409 B, int8 3,308,299 B)")


if __name__ == "__main__":
    main()
