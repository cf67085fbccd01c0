"""Board farm throughput: jobs per second over one, two and three boards of a platform, and the
reservation overhead per job, against the same jobs on a direct connection (no farm) in the same run.

Everything runs in a network namespace: a real labgrid-coordinator, one `rknnlink farm export` host
exporting the first N of three simulated rk3588 boards, and WORKERS client processes that each loop
`reserve -> connect -> load (cached) -> one inference -> hold -> release`. The hold stands for the time a
job keeps a real board busy on its NPU (the simulated NPU would otherwise compete for this machine's two
CPU cores, which no real farm does). Needs root (ip netns).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "farm"))

from farm_rig import COORDINATOR, PYTHON, farm_env, infra  # noqa: E402

WORKER = r"""
import json, os, sys, time
import numpy as np
from rknnlink.client import Board
from rknnlink.farm import FarmRequest, reserve
mode, model_path, image_path, jobs, hold, go = sys.argv[1:7]
model, image = open(model_path, "rb").read(), np.load(image_path)
while not os.path.exists(go):
    time.sleep(0.01)
for _ in range(int(jobs)):
    t0 = time.time()
    if mode == "farm":
        lease = reserve(FarmRequest.parse("farm", "rk3588"))
        address, data = lease.address, lease.data_address
    else:
        address, data = mode, None
    t1 = time.time()
    with Board.connect(address, data_address=data) as board:
        with board.load_model(model) as session:
            session.run([image], formats=["nhwc"])
            time.sleep(float(hold))
    t2 = time.time()
    if mode == "farm":
        lease.release()
    t3 = time.time()
    print(json.dumps({"start": t0, "end": t3, "reserve": t1 - t0, "work": t2 - t1, "release": t3 - t2}), flush=True)
"""

PORTS = (52001, 52011, 52021)


class BenchFarm:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.ns = infra.NetNs()
        self.exporter = None
        lib = infra.find_sim_library()
        self._spawn("coordinator", ["env", "-C", str(work), PYTHON, "-m", "labgrid.remote.coordinator", "-l",
                                    COORDINATOR], "listening on")
        for port in PORTS:
            self._spawn(f"sim-{port}", [PYTHON, "-m", "rknnlink.cli", "serve", "--backend", "sim", "--platform",
                                        "rk3588", "--library", lib, "--listen", f"127.0.0.1:{port}",
                                        "--cache-dir", str(work / f"cache-{port}")], "listening on")

    def _spawn(self, name: str, args, ready=None):
        log = self.work / f"{name}.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen(self.ns.cmd(args), env=farm_env(), stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        self.ns.procs.append(proc)
        deadline = time.monotonic() + 30
        while ready and ready not in log.read_text(errors="replace"):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"{name} did not start: {log.read_text()[-2000:]}")
            time.sleep(0.05)
        return proc

    def export(self, boards: int) -> None:
        """(Re)start the exporter host with the first `boards` boards and wait until the pool has them."""
        if self.exporter is not None:
            self.exporter.terminate()
            self.exporter.wait(20)
        args = [PYTHON, "-m", "rknnlink.cli", "farm", "export", "--name", "bench", "--advertise", "127.0.0.2",
                "--no-discover", "--interval", "1", "--config", str(self.work / "exporter.yaml")]
        for port in PORTS[:boards]:
            args += ["--device", f"tcp:127.0.0.1:{port}"]
        self.exporter = self._spawn(f"export-{boards}", args)
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            out = self.ns.run([PYTHON, "-m", "rknnlink.cli", "farm", "list", "--json"], env=farm_env())
            if out.returncode == 0:
                pool = [p for p in json.loads(out.stdout)["places"] if p["tags"].get("rknnlink") == "board"
                        and p["resources"]]
                if len(pool) == boards:
                    return
            time.sleep(0.3)
        raise RuntimeError(f"the pool never held {boards} boards")

    def run_jobs(self, mode: str, workers: int, jobs: int, hold: float, model: Path, image: Path) -> list:
        script = self.work / "worker.py"
        script.write_text(WORKER)
        go = self.work / f"go-{time.monotonic_ns()}"
        procs = [subprocess.Popen(self.ns.cmd([PYTHON, str(script), mode, str(model), str(image), str(jobs),
                                               str(hold), str(go)]), env=farm_env(), stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True) for _ in range(workers)]
        time.sleep(3.0)  # imports done before the clock starts
        go.touch()
        records = []
        for proc in procs:
            out, _ = proc.communicate(timeout=600)
            records += [json.loads(line) for line in out.splitlines() if line.strip()]
        return records

    def close(self) -> None:
        if self.exporter is not None and self.exporter.poll() is None:
            self.exporter.terminate()
            self.exporter.wait(20)
        self.ns.close()


def _rate(records: list) -> float:
    return len(records) / (max(r["end"] for r in records) - min(r["start"] for r in records))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2, help="jobs per worker (default 2)")
    parser.add_argument("--workers", type=int, default=6, help="concurrent client processes (default 6)")
    parser.add_argument("--hold", type=float, default=1.5, help="seconds a job keeps its board (default 1.5)")
    args = parser.parse_args()
    reason = infra.netns_available()
    if reason:
        print(f"bench_farm skipped: {reason}")
        return 0
    import numpy as np

    from rknnlink.api import RKNN
    from rknnlink.demo import make_demo_onnx

    work = Path(tempfile.mkdtemp(prefix="rknnlink-bench-farm-"))
    make_demo_onnx(work / "demo.onnx")
    rknn = RKNN()
    rknn.config(mean_values=[[127.5] * 3], std_values=[[127.5] * 3], target_platform="rk3588")
    rknn.load_onnx(str(work / "demo.onnx"))
    rknn.build(do_quantization=False)
    rknn.export_rknn(str(work / "demo.rknn"))
    np.save(work / "image.npy", np.zeros((1, 64, 64, 3), np.uint8))
    farm = BenchFarm(work)
    try:
        direct = farm.run_jobs(f"127.0.0.1:{PORTS[0]}", 1, 2 * args.jobs, args.hold, work / "demo.rknn",
                               work / "image.npy")
        direct_job = statistics.median(r["end"] - r["start"] for r in direct)
        rates = {}
        for boards in (1, 2, 3):
            farm.export(boards)
            if boards == 1:  # uncontended: one worker, so reserve/release time is pure overhead
                alone = farm.run_jobs("farm", 1, 2 * args.jobs, args.hold, work / "demo.rknn", work / "image.npy")
            records = farm.run_jobs("farm", args.workers, args.jobs, args.hold, work / "demo.rknn",
                                    work / "image.npy")
            rates[boards] = _rate(records)
    finally:
        farm.close()
        shutil.rmtree(work, ignore_errors=True)
    reserve_ms = statistics.median(r["reserve"] for r in alone) * 1e3
    release_ms = statistics.median(r["release"] for r in alone) * 1e3
    farm_job = statistics.median(r["end"] - r["start"] for r in alone)
    print(f"bench_farm: {args.workers} workers x {args.jobs} jobs, each job holds its board {args.hold * 1e3:.0f} ms")
    print(f"{'boards':>6} {'jobs/s':>8} {'vs 1 board':>10} {'ideal':>6}")
    for boards, rate in rates.items():
        print(f"{boards:>6} {rate:8.2f} {rate / rates[1]:10.2f} {boards:6d}")
    print(f"reservation overhead per job (uncontended, one board): reserve {reserve_ms:.1f} ms + release "
          f"{release_ms:.1f} ms; job {farm_job * 1e3:.0f} ms through the farm vs {direct_job * 1e3:.0f} ms direct "
          f"(ratio {farm_job / direct_job:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
