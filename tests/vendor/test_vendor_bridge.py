"""The bridge without RKNN-Toolkit2: a missing or broken environment is a clear error that names the fix,
and the facade's choice between the vendor and the simulator model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rknnlink.vendor import (
    ToolkitBrokenError,
    ToolkitJob,
    ToolkitNotFoundError,
    ToolkitSetupError,
    VendorToolkit,
    environment,
)
from rknnlink.vendor.facade import VendorPlan, board_model, sim_companion


def test_missing_environment_names_the_setup_command(tmp_path, monkeypatch):
    monkeypatch.delenv(environment.PYTHON_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(ToolkitNotFoundError, match="rknnlink toolkit2 setup") as info:
        VendorToolkit()
    assert str(tmp_path / "cache" / "rknnlink" / "toolkit2-2.5.0") in str(info.value)
    assert environment.PYTHON_ENV in str(info.value)


def test_environment_variable_pointing_nowhere(monkeypatch):
    monkeypatch.setenv(environment.PYTHON_ENV, "/nonexistent/bin/python")
    with pytest.raises(ToolkitNotFoundError, match="does not exist"):
        VendorToolkit()


def test_python_without_the_toolkit_is_a_broken_bridge(tmp_path, monkeypatch):
    monkeypatch.setenv(environment.PYTHON_ENV, sys.executable)  # rknnlink's own python: no rknn package
    toolkit = VendorToolkit()
    with pytest.raises(ToolkitBrokenError, match="toolkit2 setup --force") as info:
        _ = toolkit.versions
    assert "rknn" in str(info.value)
    model = tmp_path / "m.onnx"
    model.write_bytes(b"not used")
    with pytest.raises(ToolkitBrokenError, match="has no RKNN-Toolkit2"):
        toolkit.compile(ToolkitJob(model=model, config={"target_platform": "rk3588"}))


def test_cli_check_reports_the_missing_environment(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "c")}
    proc = subprocess.run([sys.executable, "-m", "rknnlink.cli", "toolkit2", "check"], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 1
    assert "rknnlink toolkit2 setup" in proc.stderr


def test_runner_runs_isolated_from_rknnlink():
    """The job runner is executed by path with -I: it must not need anything of rknnlink's."""
    from rknnlink.vendor.jobs import RUNNER, runner_command

    source = RUNNER.read_text()
    assert "import rknnlink" not in source and "from rknnlink" not in source
    proc = subprocess.run([*runner_command(Path(sys.executable)), "--probe"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and '"error"' in proc.stdout  # no toolkit here: reported, not raised


def test_export_names_the_simulator_model_for_load_rknn(tmp_path):
    assert sim_companion(tmp_path / "yolo.rknn") == tmp_path / "yolo.sim.rknn"
    assert sim_companion(tmp_path / "model") == tmp_path / "model.sim.rknn"
    plan = VendorPlan.loaded(b"RKNN" + bytes(60))
    plan.export(tmp_path / "out" / "m.rknn", b"RKLNKSIM...")
    assert (tmp_path / "out" / "m.rknn").read_bytes().startswith(b"RKNN")
    assert (tmp_path / "out" / "m.sim.rknn").read_bytes() == b"RKLNKSIM..."


def test_board_model_matches_the_board_runtime():
    vendor, ours = b"RKNN" + bytes(60), b"RKLNKSIM" + bytes(56)
    assert board_model(VendorPlan.loaded(vendor), ours, "vendor") == vendor
    assert board_model(VendorPlan.loaded(vendor), ours, "sim") == ours
    assert board_model(None, vendor, "vendor") == vendor
    with pytest.raises(ValueError, match="only models compiled by RKNN-Toolkit2"):
        board_model(None, ours, "vendor")
    with pytest.raises(ValueError, match="simulated NPU"):
        board_model(None, vendor, "sim")


def test_targeting_a_vendor_board_without_the_toolkit_says_how_to_set_it_up(vendor_double, tmp_path, monkeypatch):
    from rknnlink.api import RKNN
    from rknnlink.client.local import start_local_daemon
    from rknnlink.demo import make_demo_onnx

    monkeypatch.delenv(environment.PYTHON_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    make_demo_onnx(tmp_path / "demo.onnx")
    rknn = RKNN()
    rknn.config(target_platform="rk3588")
    rknn.load_onnx(str(tmp_path / "demo.onnx"))
    rknn.build(do_quantization=False)
    with start_local_daemon(backend="vendor", extra_args=["--library", vendor_double]) as daemon:
        with pytest.raises(ToolkitNotFoundError, match="rknnlink toolkit2 setup"):
            rknn.init_runtime(target="rk3588", device_id=f"tcp:{daemon.address}")
    assert rknn.init_runtime() == 0  # the simulator model is still there
    assert rknn.inference([np.zeros((1, 64, 64, 3), np.uint8)], data_format="nhwc")[0].shape[0] == 1


def test_a_failed_setup_step_reports_pip_output(tmp_path):
    env_dir = tmp_path / "env"
    (env_dir / "bin").mkdir(parents=True)
    (env_dir / "bin" / "python").symlink_to(sys.executable)  # an existing venv: setup skips creating it
    missing = tmp_path / "torch-2.13.0+cpu-cp311-none-any.whl"
    with pytest.raises(ToolkitSetupError, match="failed with status") as info:
        environment.setup(env_dir, torch=str(missing))
    assert str(missing) in str(info.value) and "setup.log" in str(info.value)
    assert not (env_dir / environment.MARKER).exists()

