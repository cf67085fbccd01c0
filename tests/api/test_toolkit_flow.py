"""A script written for RKNN-Toolkit2 with only its import changed, in-process and through a real daemon."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from rknnlink.api import RKNN
from rknnlink.demo import make_calibration_set, make_demo_onnx


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("toolkit_flow")
    make_demo_onnx(work / "demo.onnx")
    make_calibration_set(work)
    return work


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(7).integers(0, 256, (1, 64, 64, 3)).astype(np.uint8)


def _built(workdir: Path, quantize: bool, platform: str = "rk3588") -> RKNN:
    rknn = RKNN()
    assert rknn.config(mean_values=[[127.5] * 3], std_values=[[127.5] * 3], target_platform=platform) == 0
    assert rknn.load_onnx(str(workdir / "demo.onnx")) == 0
    assert rknn.build(do_quantization=quantize, dataset=str(workdir / "dataset.txt") if quantize else None) == 0
    return rknn


def _reference(workdir: Path, image: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(workdir / "demo.onnx"), providers=["CPUExecutionProvider"])
    x = ((image.astype(np.float32) - 127.5) / 127.5).transpose(0, 3, 1, 2)
    return session.run(None, {"input": x})[0]


def _cosine(a, b) -> float:
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("quantize", [False, True], ids=["fp16", "int8"])
def test_in_process_build_export_load_round_trip_is_bit_identical(workdir, image, quantize):
    rknn = _built(workdir, quantize)
    path = workdir / f"demo_{int(quantize)}.rknn"
    assert rknn.export_rknn(str(path)) == 0
    assert rknn.init_runtime() == 0
    built_out = rknn.inference(inputs=[image], data_format="nhwc")
    rknn.release()
    assert _cosine(built_out[0], _reference(workdir, image)) >= (0.97 if quantize else 0.9999)

    loaded = RKNN()
    assert loaded.load_rknn(str(path)) == 0
    assert loaded.init_runtime() == 0  # the toolkit returns -1 here: no simulator for saved models
    loaded_out = loaded.inference(inputs=[image], data_format="nhwc")
    np.testing.assert_array_equal(loaded_out[0], built_out[0])
    # NCHW input of the same image gives the same result
    nchw_out = loaded.inference(inputs=[image.transpose(0, 3, 1, 2)], data_format="nchw")
    np.testing.assert_array_equal(nchw_out[0], built_out[0])
    perf = loaded.eval_perf(is_print=False)
    assert perf["estimated"] and perf["total_time_us"] > 0
    loaded.release()


def test_connected_board_script_matches_in_process(workdir, image, capsys):
    from rknnlink.client.local import start_local_daemon

    rknn = _built(workdir, quantize=True)
    assert rknn.init_runtime() == 0
    local = rknn.inference(inputs=[image])
    rknn.release()

    daemon = start_local_daemon(platform="rk3588", backend="sim")
    try:
        assert rknn.init_runtime(target="rk3588", device_id=f"tcp:{daemon.address}", perf_debug=True,
                                 eval_mem=True) == 0
        remote = rknn.inference(inputs=[image])
        np.testing.assert_array_equal(remote[0], local[0])
        perf = rknn.eval_perf()
        printed = capsys.readouterr().out
        assert "Network Layer Information Table" in printed
        assert "Warning: The performance result is just for debugging" in printed
        assert perf["total_time_us"] > 0
        memory = rknn.eval_memory()
        assert set(memory) == {"weight_memory", "internal_memory", "other_memory", "total_memory"}
        assert memory["weight_memory"] > 0 and memory["total_memory"] == sum(
            memory[k] for k in ("weight_memory", "internal_memory", "other_memory"))
        assert "Memory Profile Info Dump" in capsys.readouterr().out
        version = rknn.get_sdk_version()
        assert re.search(r"DRV: rknn_server: \S+", version) and "DRV: rknnrt:" in version
        rknn.release()
    finally:
        daemon.stop()


def test_target_must_match_the_model(workdir):
    rknn = _built(workdir, quantize=False, platform="rk3566")
    with pytest.raises(ValueError, match="built for rk3566 but target is rk3588"):
        rknn.init_runtime(target="rk3588", device_id="sim")
    rknn.release()


def test_misuse_gets_actionable_errors(workdir, image, caplog):
    rknn = RKNN()
    assert rknn.inference(inputs=[image]) is None
    assert "init_runtime" in caplog.text
    with pytest.raises(ValueError, match="not exists"):
        rknn.load_onnx(str(workdir / "missing.onnx"))
    with pytest.raises(ValueError, match="target_platform"):
        rknn.config(target_platform="rk9999")
    rknn.config(target_platform="rk3566")
    rknn.load_onnx(str(workdir / "demo.onnx"))
    with pytest.raises(ValueError, match="dataset"):
        rknn.build(do_quantization=True)
    rknn.build(do_quantization=False)
    with pytest.raises(ValueError, match="one core"):
        rknn.init_runtime(core_mask=RKNN.NPU_CORE_0_1_2)
    with pytest.raises(ValueError, match="init_runtime"):
        rknn.eval_perf()
    rknn.release()


def test_vendor_model_is_recognised_and_needs_a_board(tmp_path, caplog):
    vendor = tmp_path / "vendor.rknn"
    vendor.write_bytes(b"RKNN" + b"\0" * 4 + (6).to_bytes(8, "little") + b"\0" * 200)
    rknn = RKNN()
    assert rknn.load_rknn(str(vendor)) == 0
    assert "real board" in caplog.text
    assert rknn.init_runtime() == -1
    rknn.release()


def test_accuracy_analysis_writes_per_layer_report(workdir, image, tmp_path):
    rknn = _built(workdir, quantize=False)
    out = tmp_path / "snapshot"
    assert rknn.accuracy_analysis(inputs=[image], output_dir=str(out)) == 0
    report = (out / "error_analysis.txt").read_text().splitlines()
    rows = [re.findall(r"(\d+\.\d+) \| +(\d+\.\d+)", line) for line in report if line.startswith("[")]
    # a Conv fused with its activation has no value of its own (an empty row, as in the toolkit)
    rows = [r for r in rows if r]
    assert len(rows) >= 6 and all(len(r) == 2 for r in rows), report  # entire and single on every layer
    (entire_cos, _), (single_cos, single_euc) = rows[-1]
    assert float(entire_cos) >= 0.9999 and float(single_cos) >= 0.9999
    assert any(float(euc) > 0 for row in rows for _cos, euc in row)  # fp16 rounding is visible
    assert list((out / "golden" / "npy").glob("*.npy")) and list((out / "simulator" / "npy").glob("*.npy"))
    rknn.release()


def test_accuracy_analysis_on_a_board_uses_its_dumps(workdir, image, tmp_path):
    rknn = _built(workdir, quantize=True)
    out = tmp_path / "snapshot_board"
    assert rknn.accuracy_analysis(inputs=[image], output_dir=str(out), target="rk3588", device_id="sim") == 0
    report = (out / "error_analysis.txt").read_text()
    assert report.startswith("# simulator_error") and "# runtime_error" in report
    cosines = [float(c) for c in re.findall(r"(\d+\.\d+) \|", report)]
    assert cosines and cosines[-1] >= 0.97
    assert list((out / "runtime" / "npy").glob("*.npy"))
    rknn.release()


def test_core_mask_in_process_on_a_three_core_platform(workdir, image):
    rknn = _built(workdir, quantize=False)
    assert rknn.init_runtime() == 0
    expected = rknn.inference(inputs=[image], data_format="nhwc")[0]
    assert rknn.init_runtime(core_mask=RKNN.NPU_CORE_0_1_2) == 0
    np.testing.assert_array_equal(rknn.inference(inputs=[image], data_format="nhwc")[0], expected)
    rknn.release()


def test_list_devices_prints_the_toolkit_layout(monkeypatch, capsys):
    import rknnlink.transport as transport

    monkeypatch.setattr(transport, "list_adb_serials", lambda: ["VD46C3KM6N"])
    monkeypatch.setattr(transport, "list_usb_serials", lambda: [])
    assert RKNN().list_devices() == (["VD46C3KM6N"], [])
    assert capsys.readouterr().out.splitlines() == ["*" * 25, "all device(s) with adb mode:", "VD46C3KM6N", "*" * 25]
