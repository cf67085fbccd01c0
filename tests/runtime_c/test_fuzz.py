"""libFuzzer on rknn_init + query + inputs_set/run (runtime_c/tests/fuzz_init.c), seeded with valid models from
the C writer and from rknnlink.model.format; plus the saved regression inputs.

The suite's runs are deterministic: a fixed -seed and a fixed number of units (-runs), so a run that passes
here passes in CI. A time-boxed random run explores differently on every machine and, in CI, found new inputs
(a GroupNorm use-after-free, a NaN Gather index) that blocked everything behind them. Open-ended random
fuzzing is `make -C runtime_c fuzz` (FUZZ_SECONDS); what it finds goes to runtime_c/tests/fuzz_regressions,
replayed below."""

import os
import re
import resource
import subprocess
from pathlib import Path

import pytest
import rc_models

RUNTIME_C = Path(__file__).resolve().parents[2] / "runtime_c"
REGRESSIONS = RUNTIME_C / "tests" / "fuzz_regressions"
# A hostile model may declare huge tensors: keep contexts well under the fuzzer's RSS limit.
QUIET = {**os.environ, "RKNN_LOG_LEVEL": "-1", "RKNNLINK_SIM_MAX_MB": "64", "RKNNLINK_SIM_THREADS": "1"}


@pytest.fixture(scope="module")
def fuzzer(clang14, run_make) -> Path:
    proc = run_make("fuzz-build", timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return RUNTIME_C / "build" / "fuzz_init"


def _seeds(tmp_path: Path) -> Path:
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    subprocess.run([str(RUNTIME_C / "build" / "gen_corpus"), str(seeds)], check=True)
    for dtype in ("float32", "float16"):
        for target in ("rk3588", "rv1106"):
            (seeds / f"conv_net_{dtype}_{target}.rknn").write_bytes(rc_models.conv_net(dtype, target=target)[0])
    return seeds


FUZZ_SEED = 1
MAX_FUZZ_SECONDS = 300  # about 30 s on an idle machine; the time box only bounds an unlucky run


def _fuzz(binary: Path, seeds: Path, tmp_path: Path, runs: int) -> None:
    corpus = tmp_path / f"corpus_{binary.name}"
    corpus.mkdir()
    artifacts = tmp_path / f"artifacts_{binary.name}"
    artifacts.mkdir()
    # Linux carries the parent's peak RSS into a forked child (ru_maxrss), and libFuzzer checks ru_maxrss: from a
    # pytest process that loaded torch and onnxruntime it would start "over" a fixed limit. Allow 2 GiB above it.
    rss_limit = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024 + 2048
    proc = subprocess.run(
        [str(binary), f"-seed={FUZZ_SEED}", f"-runs={runs}", f"-max_total_time={MAX_FUZZ_SECONDS}",
         f"-rss_limit_mb={rss_limit}", "-malloc_limit_mb=512", "-max_len=16384", "-timeout=10",
         "-report_slow_units=5", "-print_final_stats=1", f"-artifact_prefix={artifacts}/", str(corpus), str(seeds)],
        capture_output=True, text=True, env=QUIET, timeout=MAX_FUZZ_SECONDS + 240)
    found = sorted(p.name for p in artifacts.iterdir())
    assert proc.returncode == 0 and not found, f"fuzzer found {found}:\n{proc.stderr[-6000:]}"
    done = re.search(r"number_of_executed_units:\s*(\d+)", proc.stderr)
    # The pool's threads make coverage (so the mutations) differ run to run: a run may meet slow units. It
    # stops at the time box then, still having fuzzed a large share of the units.
    assert done and int(done.group(1)) >= runs // 10, proc.stderr[-2000:]


@pytest.mark.slow
def test_fuzz_init(fuzzer, tmp_path):
    """The whole library (parser, kernels' prepare/run, executor, API) on 1,000,000 mutated valid models."""
    _fuzz(fuzzer, _seeds(tmp_path), tmp_path, 1_000_000)


@pytest.mark.slow
def test_fuzz_core(fuzzer, run_make, tmp_path):
    """The core with the stand-in kernels, so parser/executor/API findings are not masked by kernel ones."""
    proc = run_make("build/fuzz_core", timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _fuzz(RUNTIME_C / "build" / "fuzz_core", _seeds(tmp_path), tmp_path, 500_000)


def test_fuzz_regression_inputs(fuzzer):
    inputs = sorted(REGRESSIONS.glob("*.bin"))
    assert inputs, "no regression inputs"
    # The same allocation limit as the fuzzing runs: resize_table_oom.bin once asked for an 805 MB table.
    proc = subprocess.run([str(fuzzer), "-malloc_limit_mb=512", *map(str, inputs)], capture_output=True, text=True,
                          env=QUIET, timeout=120)
    assert proc.returncode == 0, proc.stderr[-6000:]
