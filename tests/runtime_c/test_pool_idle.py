"""The simulator's worker pool sleeps between runs (runtime_c/src/workers.c): its threads spin only while a
run is under way, so the time between two runs (input conversion, the caller's own threads - a board
link's reader and client) has every core.

Measured in a fresh process (no pytest threads in the counts) with RKNNLINK_SIM_THREADS=2 on the pool model
(its GlobalAveragePool job is split over the pool): over back-to-back inferences the pool thread goes to
sleep again and again (voluntary context switches), where a thread that spun on past a run's end would
hardly ever sleep between runs that follow each other within 0.2 ms (on a quiet host: on a busy one a
spinning thread waits for the scheduler past its spin and sleeps too); and once the runs stop it sleeps
and takes no CPU.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 CPUs (threads are capped by CPUs)")

ROOT = Path(__file__).resolve().parents[2]

_PROBE = r"""
import os, sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np, sim_models
from rknnlink.runtime import RuntimeLibrary

def tasks():
    return set(os.listdir("/proc/self/task"))

def status(tid, key):
    for line in open(f"/proc/self/task/{tid}/status"):
        if line.startswith(key + ":"):
            return line.split()[1]

def cpu_ticks(tid):
    fields = open(f"/proc/self/task/{tid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime

image = np.random.default_rng(0).integers(0, 256, size=(1, 224, 224, 3), dtype=np.uint8)
with RuntimeLibrary.load(backend="sim").init(sim_models.pool_model(224, 3)) as ctx:
    before = tasks()
    ctx.infer([image])
    pool = sorted(tasks() - before)
    assert len(pool) == 1, f"expected one pool thread, found {pool}"
    tid = pool[0]
    switches = int(status(tid, "voluntary_ctxt_switches"))
    for _ in range(1000):
        ctx.infer([image])
    slept = int(status(tid, "voluntary_ctxt_switches")) - switches
    deadline = time.monotonic() + 30
    while status(tid, "State") != "S" and time.monotonic() < deadline:
        time.sleep(0.01)
    state = status(tid, "State")
    ticks = cpu_ticks(tid)
    time.sleep(0.3)
    print(slept, state, cpu_ticks(tid) - ticks)
"""


def test_the_pool_thread_sleeps_between_runs_and_when_idle():
    env = dict(os.environ, RKNNLINK_SIM_THREADS="2")
    done = subprocess.run([sys.executable, "-c", _PROBE, str(ROOT / "tests" / "runtime")], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    slept, state, idle_ticks = done.stdout.split()
    # A woken pool thread that misses a job still sleeps again when the run ends; one sleep per 100 runs is
    # far below what it does (about one per run it wakes for) and far above a thread spinning between runs.
    assert int(slept) >= 10, f"the pool thread slept {slept} times over 1000 back-to-back runs"
    assert state == "S", f"the pool thread is in state {state} after the runs ended"
    assert int(idle_ticks) == 0, f"the idle pool thread used {idle_ticks} clock ticks of CPU in 0.3 s"
