"""The printed formats users' tools parse: layouts of eval_perf, eval_memory, get_sdk_version, list_devices."""

import re

import pytest

from rknnlink.api import platforms, reports


def test_human_size_units():
    assert reports.human_size(512) == "512 B"
    assert reports.human_size(3 * 1024 + 512) == "3.50 KiB"
    assert reports.human_size(int(3.53 * 1024 * 1024)) == "3.53 MiB"
    assert reports.human_size(5 * 1024**3) == "5.00 GiB"


def test_memory_block_layout():
    memory = {"weight_memory": 3_700_000, "internal_memory": 1_204_224, "other_memory": 300_000,
              "total_memory": 5_204_224}
    text = reports.format_memory(memory, model_size=4_290_000)
    lines = text.splitlines()
    assert lines[0] == "=" * 54 and lines[2] == "=" * 54 and lines[-1] == "=" * 54
    assert lines[1].strip() == "Memory Profile Info Dump"
    assert lines[3] == "NPU model memory detail(bytes):"
    assert lines[4] == "    Weight Memory: 3.53 MiB"
    assert lines[5] == "    Internal Tensor Memory: 1.15 MiB"
    assert lines[6] == "    Other Memory: 292.97 KiB"
    assert lines[7] == "    Total Memory: 4.96 MiB"
    assert "the size of model, current model size is: 4.09 MiB" in text


def test_sdk_version_banner_with_and_without_server():
    text = reports.format_sdk_version("0.1.0 (rknnlink)", "0.1.0", "2.3.2 (sim@2026)")
    lines = text.splitlines()
    assert lines == ["=" * 46, "RKNN VERSION:", "    API: 0.1.0 (rknnlink)", "    DRV: rknn_server: 0.1.0",
                     "    DRV: rknnrt: 2.3.2 (sim@2026)", "=" * 46]
    assert "rknn_server" not in reports.format_sdk_version("a", None, "b")


def test_device_list_layouts():
    assert reports.format_device_list([], []).splitlines() == ["*" * 25, "None devices connected.", "*" * 25]
    lines = reports.format_device_list(["VD46C3KM6N", "192.168.1.5:5555"], []).splitlines()
    assert lines == ["*" * 25, "all device(s) with adb mode:", "VD46C3KM6N", "192.168.1.5:5555", "*" * 25]
    assert "all device(s) with ntb mode:" in reports.format_device_list([], ["usb1"])


def test_perf_without_detail_reports_total_and_fps():
    text = reports.format_perf(2000, None, reports.FrequencyInfo(cpu_khz=[1800000, 2256000]))
    assert "    - 1800000" in text and "    - 2256000" in text
    assert re.search(r"^Total Time\(us\): 2000$", text, re.M)
    assert re.search(r"^FPS: 500.00$", text, re.M)
    assert reports.PERF_DEBUG_WARNING not in text


def test_perf_with_detail_keeps_runtime_text_verbatim_and_labels_estimates():
    detail = "-----\nNetwork Layer Information Table\n-----\nrow\n"
    text = reports.format_perf(10, detail, reports.FrequencyInfo(), estimated_for="rk3588")
    assert reports.PERF_DEBUG_WARNING + "\n" + detail in text
    assert "cost-model estimates for rk3588" in text
    assert text.count("Unknown") == 3


@pytest.mark.parametrize("bad", ["rk9999", None, 3588, "RK35"])
def test_invalid_platform_names_list_the_valid_ones(bad):
    with pytest.raises(ValueError, match="rk3588") as info:
        platforms.normalize_platform(bad)
    assert repr(bad) in str(info.value)


def test_core_mask_rules():
    platforms.check_core_mask("rk3588", 7)
    platforms.check_core_mask("rk3566", 0)
    with pytest.raises(ValueError, match="one core"):
        platforms.check_core_mask("rk3566", 1)
    with pytest.raises(ValueError, match="needs 3 NPU cores; rk3576 has 2"):
        platforms.check_core_mask("rk3576", 7)
    with pytest.raises(ValueError, match="NPU_CORE_"):
        platforms.check_core_mask("rk3588", 5)
