"""Acceptance of the real-NPU path with RKNN-Toolkit2 2.5.0 in the managed environment (`make test` creates it).

One script builds an ONNX model for rk3588 into a vendor file and a simulator model; RKNN-Toolkit2's own
simulator is compared with rknnlink's on the same model; the vendor file goes to a daemon whose librknnrt is
the C double; accuracy_analysis(target=...) writes the runtime folder and columns.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from rknnlink.api import RKNN
from rknnlink.demo import make_calibration_set, make_demo_onnx
from rknnlink.vendor import ToolkitError, ToolkitJob, ToolkitJobError, VendorToolkit, toolkit_config

MEAN, STD = [[127.5] * 3], [[127.5] * 3]


@pytest.fixture(scope="module")
def toolkit() -> VendorToolkit:
    try:
        found = VendorToolkit()
        versions = found.versions
    except ToolkitError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI must provide the toolkit environment (make toolkit2): {exc}")
        pytest.skip(f"no RKNN-Toolkit2 environment: {exc}")
    assert versions["rknn-toolkit2"] == "2.5.0" and not versions["torch_cuda"]
    return found


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("vendor_flow")
    make_demo_onnx(work / "demo.onnx")
    make_calibration_set(work)   # NHWC .npy: rknnlink converts them for the toolkit
    return work


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(7).integers(0, 256, (1, 64, 64, 3)).astype(np.uint8)


def vendor_description(data: bytes) -> dict:
    """The trailing JSON of a vendor container (rknn-c-abi.md section 6)."""
    assert data[:4] == b"RKNN"
    version, payload = struct.unpack_from("<QQ", data, 8)
    start = 64 + payload
    (length,) = struct.unpack_from("<Q", data, start)
    assert start + 8 + length == len(data)
    return json.loads(data[start + 8:])


def cosine(a, b) -> float:
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_one_script_builds_the_vendor_and_the_simulator_model(toolkit, workdir, image, tmp_path, quantize=True):
    rknn = RKNN()
    assert rknn.config(mean_values=MEAN, std_values=STD, target_platform="rk3588", vendor_model=True) == 0
    assert rknn.load_onnx(str(workdir / "demo.onnx")) == 0
    assert rknn.build(do_quantization=quantize, dataset=str(workdir / "dataset.txt") if quantize else None) == 0
    assert rknn.export_rknn(str(tmp_path / "demo.rknn")) == 0
    vendor = (tmp_path / "demo.rknn").read_bytes()
    assert vendor_description(vendor)["target_platform"] == ["rk3588"]
    assert b"rk3588" in vendor[64:]          # the FlatBuffer's runtime field too
    assert (tmp_path / "demo.sim.rknn").read_bytes()[:8] == b"RKLNKSIM"
    assert rknn.init_runtime() == 0
    built = rknn.inference([image], data_format="nhwc")[0]
    rknn.release()

    again = RKNN()
    assert again.load_rknn(str(tmp_path / "demo.rknn")) == 0   # finds demo.sim.rknn
    assert again.init_runtime() == 0
    np.testing.assert_array_equal(again.inference([image], data_format="nhwc")[0], built)
    again.release()


@pytest.mark.parametrize("quantize,floor", [(False, 0.999), (True, 0.98)], ids=["fp16", "int8"])
def test_toolkit_simulator_agrees_with_rknnlink(toolkit, workdir, image, quantize, floor, tmp_path):
    rknn = RKNN()
    rknn.config(mean_values=MEAN, std_values=STD, target_platform="rk3588")
    rknn.load_onnx(str(workdir / "demo.onnx"))
    rknn.build(do_quantization=quantize, dataset=str(workdir / "dataset.txt") if quantize else None)
    rknn.init_runtime()
    ours = rknn.inference([image], data_format="nhwc")[0]
    plan = rknn._vendor
    dataset = plan._write_dataset(tmp_path / "calib") if quantize else None
    result = toolkit.compile(ToolkitJob(model=plan._write_onnx(tmp_path / "m.onnx"), config=toolkit_config(plan.config),
                                        do_quantization=quantize, dataset=dataset, simulate=[image],
                                        data_format=["nhwc"]))
    rknn.release()
    theirs = result.simulator_outputs[0]
    assert theirs.shape == ours.shape
    value = cosine(theirs, ours)
    print(f"\ncosine(RKNN-Toolkit2 simulator, rknnlink simulator) {'int8' if quantize else 'fp16'}: {value:.7f} "
          f"(toolkit build {result.stage_seconds.get('build', 0):.2f} s, job {result.seconds:.1f} s)")
    assert value > floor
    assert int(np.argmax(theirs)) == int(np.argmax(ours))


def test_a_refused_job_reports_the_toolkit_reason(toolkit, workdir):
    with pytest.raises(ToolkitJobError, match="Invalid target_platform") as info:
        toolkit.compile(ToolkitJob(model=workdir / "demo.onnx", config={"target_platform": "rk9999"}))
    assert info.value.stage == "config" and info.value.log


def test_vendor_board_gets_the_vendor_file_and_its_dumps(toolkit, workdir, image, vendor_double, tmp_path,
                                                         monkeypatch):
    from rknnlink.client.local import start_local_daemon

    monkeypatch.setenv("RKNNLINK_DUMP_ROOT", str(tmp_path / "dumps"))
    rknn = RKNN()
    rknn.config(mean_values=MEAN, std_values=STD, target_platform="rk3588")
    rknn.load_onnx(str(workdir / "demo.onnx"))
    rknn.build(do_quantization=False)
    assert rknn._vendor.rknn is None
    with start_local_daemon(backend="vendor", extra_args=["--library", vendor_double]) as daemon:
        device = f"tcp:{daemon.address}"
        assert rknn.init_runtime(target="rk3588", device_id=device) == 0   # compiles the vendor model
        assert rknn._vendor.rknn[:4] == b"RKNN"
        assert not rknn._runtime.is_simulator
        out = rknn.inference([image], data_format="nhwc")
        assert out[0].shape[-1] == 10
        snapshot = tmp_path / "snapshot"
        assert rknn.accuracy_analysis(inputs=[image], output_dir=str(snapshot), target="rk3588",
                                      device_id=device) == 0
        rknn.release()
    report = (snapshot / "error_analysis.txt").read_text()
    assert "runtime_error" in report and "simulator_error" in report
    assert (snapshot / "simulator" / "npy").is_dir()
    rows = [line for line in report.splitlines() if line.startswith("[")]
    assert any(line.startswith("[Input] input") and "|" in line for line in rows)   # matched by name
    assert any(line.startswith("[Gemm] logits") and "|" in line for line in rows)
    assert list((snapshot / "runtime" / "npy").glob("*.npy"))
    assert list((tmp_path / "dumps").iterdir()) == []
