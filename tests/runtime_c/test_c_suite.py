"""Runs the C tests of runtime_c: plain, under ASan/UBSan, and the 10,000-cycle leak check."""

import os
import shutil
import subprocess

import pytest

QUIET = {**os.environ, "RKNN_LOG_LEVEL": "-1"}


def test_c_core_tests(c_build):
    proc = subprocess.run([str(c_build / "test_core")], capture_output=True, text=True, env=QUIET, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
    assert ", 0 failures" in proc.stdout


@pytest.mark.skipif(not (shutil.which("aarch64-linux-gnu-gcc") and shutil.which("qemu-aarch64")),
                    reason="needs Debian's gcc-aarch64-linux-gnu and qemu-user (`make deps` installs them)")
def test_c_core_and_kernel_tests_pass_on_aarch64(run_make):
    """The boards run the simulator's portable kernels: built for aarch64 with -Werror, run under qemu-aarch64."""
    proc = run_make("aarch64", timeout=1200)
    assert proc.returncode == 0, f"aarch64 build or run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    assert proc.stdout.count(", 0 failures") == 2, proc.stdout[-3000:]


def test_core_under_asan_and_ubsan_with_stand_in_kernels(run_make):
    """The core alone (parser, executor, API) with the test stand-in kernels: core bugs are not masked."""
    proc = run_make("asan-core", timeout=900)
    assert proc.returncode == 0, f"ASan/UBSan run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    assert ", 0 failures" in proc.stdout


@pytest.mark.slow
def test_c_core_tests_under_asan_and_ubsan(run_make):
    proc = run_make("asan", timeout=900)
    assert proc.returncode == 0, f"ASan/UBSan run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    assert ", 0 failures" in proc.stdout


def test_threads_under_thread_sanitizer(run_make):
    """Two contexts sharing one model in parallel, and one context from two threads, under TSan."""
    proc = run_make("tsan", timeout=900)
    assert proc.returncode == 0, f"TSan run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    assert ", 0 failures" in proc.stdout


@pytest.mark.slow
def test_10000_cycles_keep_fds_and_rss_flat(c_build):
    """init/dup/inputs_set/run/outputs_get/perf/release/destroy + create_mem2(no context) 10,000 times."""
    proc = subprocess.run([str(c_build / "leak_cycle"), "10000"], capture_output=True, text=True, env=QUIET,
                          timeout=600)
    assert proc.returncode in (0, 1), proc.stderr
    fds_before, fds_after, rss_before, rss_after = (int(v) for v in proc.stdout.split())
    assert fds_after == fds_before, f"open fds {fds_before} -> {fds_after}"
    assert rss_after - rss_before < 4096, f"VmRSS grew from {rss_before} kB to {rss_after} kB"
    assert proc.returncode == 0
