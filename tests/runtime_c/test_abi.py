"""The ABI of include/rknn_api.h against the reference tables (rknn-c-abi.md sections 2 and 3).

The expected numbers are written here from the reference document, not read from the header, so a wrong
header fails. x86_64 is checked through the compiled probe; aarch64 and armv7 by compiling static
assertions with clang-14 for those targets.
"""

import re
import subprocess
from pathlib import Path

import pytest

RUNTIME_C = Path(__file__).resolve().parents[2] / "runtime_c"

# name -> (x86_64/aarch64 value, armv7 value or None if the same)
SIZES = {
    "rknn_context": (8, 4), "rknn_input_output_num": (8, None), "rknn_tensor_attr": (376, None),
    "rknn_input_range": (33040, None), "rknn_perf_detail": (16, None), "rknn_perf_run": (8, None),
    "rknn_sdk_version": (512, None), "rknn_mem_size": (64, None), "rknn_custom_string": (1024, None),
    "rknn_tensor_mem": (40, None), "rknn_input": (32, 24), "rknn_output": (24, 16),
    "rknn_init_extend": (136, 132), "rknn_run_extend": (24, None), "rknn_output_extend": (8, None),
    "rknn_query_cmd": (4, None), "rknn_tensor_type": (4, None), "rknn_tensor_qnt_type": (4, None),
    "rknn_tensor_format": (4, None), "rknn_core_mask": (4, None), "rknn_tensor_mem_flags": (4, None),
    "rknn_mem_alloc_flags": (4, None), "rknn_mem_sync_mode": (4, None),
}
ALIGNS = {
    "rknn_input_output_num": (4, None), "rknn_tensor_attr": (4, None), "rknn_input_range": (4, None),
    "rknn_perf_detail": (8, None), "rknn_perf_run": (8, None), "rknn_sdk_version": (1, None),
    "rknn_mem_size": (8, None), "rknn_tensor_mem": (8, None), "rknn_input": (8, 4), "rknn_output": (8, 4),
    "rknn_init_extend": (8, 4), "rknn_run_extend": (8, None), "rknn_output_extend": (8, None),
}
OFFSETS = {
    "rknn_input_output_num": {"n_input": 0, "n_output": 4},
    "rknn_tensor_attr": {"index": 0, "n_dims": 4, "dims": 8, "name": 72, "n_elems": 328, "size": 332, "fmt": 336,
                         "type": 340, "qnt_type": 344, "fl": 348, "zp": 352, "scale": 356, "w_stride": 360,
                         "size_with_stride": 364, "pass_through": 368, "h_stride": 372},
    "rknn_input_range": {"index": 0, "shape_number": 4, "fmt": 8, "name": 12, "dyn_range": 268, "n_dims": 33036},
    "rknn_perf_detail": {"perf_data": 0, "data_len": 8},
    "rknn_perf_run": {"run_duration": 0},
    "rknn_sdk_version": {"api_version": 0, "drv_version": 256},
    "rknn_mem_size": {"total_weight_size": 0, "total_internal_size": 4, "total_dma_allocated_size": 8,
                      "total_sram_size": 16, "free_sram_size": 20, "reserved": 24},
    "rknn_custom_string": {"string": 0},
    "rknn_tensor_mem": {"virt_addr": 0, "phys_addr": 8, "fd": 16, "offset": 20, "size": 24, "flags": 28,
                        "priv_data": 32},
    "rknn_input": {"index": 0, "buf": 8, "size": 16, "pass_through": 20, "type": 24, "fmt": 28},
    "rknn_output": {"want_float": 0, "is_prealloc": 1, "index": 4, "buf": 8, "size": 16},
    "rknn_init_extend": {"ctx": 0, "real_model_offset": 8, "real_model_size": 12, "model_buffer_fd": 16,
                         "model_buffer_flags": 20, "reserved": 24},
    "rknn_run_extend": {"frame_id": 0, "non_block": 8, "timeout_ms": 12, "fence_fd": 16},
    "rknn_output_extend": {"frame_id": 0},
}
ARMV7_OFFSETS = {
    "rknn_input": {"index": 0, "buf": 4, "size": 8, "pass_through": 12, "type": 16, "fmt": 20},
    "rknn_output": {"want_float": 0, "is_prealloc": 1, "index": 4, "buf": 8, "size": 12},
    "rknn_init_extend": {"ctx": 0, "real_model_offset": 4, "real_model_size": 8, "model_buffer_fd": 12,
                         "model_buffer_flags": 16, "reserved": 20},
}
VALUES = {
    # 2.1 init flags
    "RKNN_FLAG_PRIOR_HIGH": 0x0, "RKNN_FLAG_PRIOR_MEDIUM": 0x1, "RKNN_FLAG_PRIOR_LOW": 0x2,
    "RKNN_FLAG_ASYNC_MASK": 0x4, "RKNN_FLAG_COLLECT_PERF_MASK": 0x8, "RKNN_FLAG_MEM_ALLOC_OUTSIDE": 0x10,
    "RKNN_FLAG_SHARE_WEIGHT_MEM": 0x20, "RKNN_FLAG_FENCE_IN_OUTSIDE": 0x40, "RKNN_FLAG_FENCE_OUT_OUTSIDE": 0x80,
    "RKNN_FLAG_COLLECT_MODEL_INFO_ONLY": 0x100, "RKNN_FLAG_INTERNAL_ALLOC_OUTSIDE": 0x200,
    "RKNN_FLAG_EXECUTE_FALLBACK_PRIOR_DEVICE_GPU": 0x400, "RKNN_FLAG_ENABLE_SRAM": 0x800,
    "RKNN_FLAG_SHARE_SRAM": 0x1000, "RKNN_FLAG_DISABLE_PROC_HIGH_PRIORITY": 0x2000,
    "RKNN_FLAG_DISABLE_FLUSH_INPUT_MEM_CACHE": 0x4000, "RKNN_FLAG_DISABLE_FLUSH_OUTPUT_MEM_CACHE": 0x8000,
    "RKNN_FLAG_MODEL_BUFFER_ZERO_COPY": 0x10000, "RKNN_MEM_FLAG_ALLOC_NO_CONTEXT": 0x20000,
    # 2.2 error codes
    "RKNN_SUCC": 0, "RKNN_ERR_FAIL": -1, "RKNN_ERR_TIMEOUT": -2, "RKNN_ERR_DEVICE_UNAVAILABLE": -3,
    "RKNN_ERR_MALLOC_FAIL": -4, "RKNN_ERR_PARAM_INVALID": -5, "RKNN_ERR_MODEL_INVALID": -6,
    "RKNN_ERR_CTX_INVALID": -7, "RKNN_ERR_INPUT_INVALID": -8, "RKNN_ERR_OUTPUT_INVALID": -9,
    "RKNN_ERR_DEVICE_UNMATCH": -10, "RKNN_ERR_INCOMPATILE_PRE_COMPILE_MODEL": -11,
    "RKNN_ERR_INCOMPATILE_OPTIMIZATION_LEVEL_VERSION": -12, "RKNN_ERR_TARGET_PLATFORM_UNMATCH": -13,
    # 2.3 constants
    "RKNN_MAX_DIMS": 16, "RKNN_MAX_NUM_CHANNEL": 15, "RKNN_MAX_NAME_LEN": 256, "RKNN_MAX_DYNAMIC_SHAPE_NUM": 512,
    # 2.4 query commands
    "RKNN_QUERY_IN_OUT_NUM": 0, "RKNN_QUERY_INPUT_ATTR": 1, "RKNN_QUERY_OUTPUT_ATTR": 2,
    "RKNN_QUERY_PERF_DETAIL": 3, "RKNN_QUERY_PERF_RUN": 4, "RKNN_QUERY_SDK_VERSION": 5, "RKNN_QUERY_MEM_SIZE": 6,
    "RKNN_QUERY_CUSTOM_STRING": 7, "RKNN_QUERY_NATIVE_INPUT_ATTR": 8, "RKNN_QUERY_NATIVE_OUTPUT_ATTR": 9,
    "RKNN_QUERY_NATIVE_NC1HWC2_INPUT_ATTR": 8, "RKNN_QUERY_NATIVE_NC1HWC2_OUTPUT_ATTR": 9,
    "RKNN_QUERY_NATIVE_NHWC_INPUT_ATTR": 10, "RKNN_QUERY_NATIVE_NHWC_OUTPUT_ATTR": 11,
    "RKNN_QUERY_DEVICE_MEM_INFO": 12, "RKNN_QUERY_INPUT_DYNAMIC_RANGE": 13, "RKNN_QUERY_CURRENT_INPUT_ATTR": 14,
    "RKNN_QUERY_CURRENT_OUTPUT_ATTR": 15, "RKNN_QUERY_CURRENT_NATIVE_INPUT_ATTR": 16,
    "RKNN_QUERY_CURRENT_NATIVE_OUTPUT_ATTR": 17, "RKNN_QUERY_CMD_MAX": 18,
    # 2.5 tensor types
    "RKNN_TENSOR_FLOAT32": 0, "RKNN_TENSOR_FLOAT16": 1, "RKNN_TENSOR_INT8": 2, "RKNN_TENSOR_UINT8": 3,
    "RKNN_TENSOR_INT16": 4, "RKNN_TENSOR_UINT16": 5, "RKNN_TENSOR_INT32": 6, "RKNN_TENSOR_UINT32": 7,
    "RKNN_TENSOR_INT64": 8, "RKNN_TENSOR_BOOL": 9, "RKNN_TENSOR_INT4": 10, "RKNN_TENSOR_BFLOAT16": 11,
    "RKNN_TENSOR_TYPE_MAX": 12,
    # 2.6 - 2.9
    "RKNN_TENSOR_QNT_NONE": 0, "RKNN_TENSOR_QNT_DFP": 1, "RKNN_TENSOR_QNT_AFFINE_ASYMMETRIC": 2,
    "RKNN_TENSOR_QNT_MAX": 3,
    "RKNN_TENSOR_NCHW": 0, "RKNN_TENSOR_NHWC": 1, "RKNN_TENSOR_NC1HWC2": 2, "RKNN_TENSOR_UNDEFINED": 3,
    "RKNN_TENSOR_FORMAT_MAX": 4,
    "RKNN_NPU_CORE_AUTO": 0, "RKNN_NPU_CORE_0": 1, "RKNN_NPU_CORE_1": 2, "RKNN_NPU_CORE_2": 4,
    "RKNN_NPU_CORE_0_1": 3, "RKNN_NPU_CORE_0_1_2": 7, "RKNN_NPU_CORE_ALL": 0xFFFF,
    "RKNN_NPU_CORE_UNDEFINED": 0x10000,
    "RKNN_TENSOR_MEMORY_FLAGS_ALLOC_INSIDE": 1, "RKNN_TENSOR_MEMORY_FLAGS_FROM_FD": 2,
    "RKNN_TENSOR_MEMORY_FLAGS_FROM_PHYS": 3, "RKNN_TENSOR_MEMORY_FLAGS_UNKNOWN": 4,
    "RKNN_FLAG_MEMORY_FLAGS_DEFAULT": 0, "RKNN_FLAG_MEMORY_CACHEABLE": 1, "RKNN_FLAG_MEMORY_NON_CACHEABLE": 2,
    "RKNN_FLAG_MEMORY_TRY_ALLOC_SRAM": 4,
    "RKNN_MEMORY_SYNC_TO_DEVICE": 1, "RKNN_MEMORY_SYNC_FROM_DEVICE": 2, "RKNN_MEMORY_SYNC_BIDIRECTIONAL": 3,
}
CORE_FUNCTIONS = {
    "rknn_init", "rknn_dup_context", "rknn_destroy", "rknn_query", "rknn_inputs_set", "rknn_set_batch_core_num",
    "rknn_set_core_mask", "rknn_run", "rknn_wait", "rknn_outputs_get", "rknn_outputs_release",
    "rknn_create_mem_from_phys", "rknn_create_mem_from_fd", "rknn_create_mem_from_mb_blk", "rknn_create_mem",
    "rknn_create_mem2", "rknn_destroy_mem", "rknn_set_weight_mem", "rknn_set_internal_mem", "rknn_set_io_mem",
    "rknn_set_input_shape", "rknn_set_input_shapes", "rknn_mem_sync",
}
EXTENSIONS = {
    "rknnlink_sim_version", "rknnlink_sim_layer_count", "rknnlink_sim_layer_info", "rknnlink_sim_set_dump",
    "rknnlink_sim_dump_count", "rknnlink_sim_dump_info", "rknnlink_sim_dump_read", "rknnlink_sim_last_error",
    "rknnlink_sim_init_error", "rknnlink_sim_platform_count", "rknnlink_sim_platform_info",
}


def expected(arm: bool) -> dict:
    """Every probe line the reference determines, as {"size NAME": n, "offset S.F": n, ...}."""
    out = {}
    for name, (v, v7) in SIZES.items():
        out[f"size {name}"] = v7 if arm and v7 is not None else v
    for name, (v, v7) in ALIGNS.items():
        out[f"align {name}"] = v7 if arm and v7 is not None else v
    for struct, fields in OFFSETS.items():
        src = ARMV7_OFFSETS.get(struct, fields) if arm else fields
        for f, off in src.items():
            out[f"offset {struct}.{f}"] = off
    for name, v in VALUES.items():
        out[f"value {name}"] = v
    return out


def test_probe_matches_reference(c_build):
    text = subprocess.run([str(c_build / "abi_probe")], capture_output=True, text=True, check=True).stdout
    got = {}
    for line in text.splitlines():
        kind, name, value = line.split()
        got[f"{kind} {name}"] = int(value)
    want = expected(arm=False)
    wrong = {k: (got.get(k), v) for k, v in want.items() if got.get(k) != v}
    assert not wrong, f"probe differs from the reference (got, want): {wrong}"
    unchecked = sorted(k for k in got if k not in want and not k.startswith("align "))
    assert not unchecked, f"probe prints entries the test does not check: {unchecked}"


def _static_asserts(arm: bool) -> str:
    lines = ['#include <stddef.h>', '#include "rknn_api.h"']
    for key, v in expected(arm).items():
        kind, name = key.split(" ", 1)
        if kind == "size":
            expr = f"sizeof({name})"
        elif kind == "align":
            expr = f"_Alignof({name})"
        elif kind == "offset":
            struct, field = name.split(".")
            expr = f"offsetof({struct}, {field})"
        else:
            expr = f"({name})"
        tag = re.sub(r"\W", "_", key)
        lines.append(f'_Static_assert((long long){expr} == {v}LL, "{tag}");')
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("target,arm", [("aarch64-linux-gnu", False), ("armv7a-linux-gnueabihf", True),
                                        ("x86_64-linux-gnu", False)])
def test_layout_on_other_targets(clang14, tmp_path, target, arm):
    src = tmp_path / "asserts.c"
    src.write_text(_static_asserts(arm))
    proc = subprocess.run([clang14, f"--target={target}", "-ffreestanding", "-std=c11", "-fsyntax-only",
                           f"-I{RUNTIME_C / 'include'}", str(src)], capture_output=True, text=True)
    assert proc.returncode == 0, f"layout differs on {target}:\n{proc.stderr[:4000]}"


def test_exports_exactly_the_abi(c_build):
    out = subprocess.run(["nm", "-D", "--defined-only", str(c_build / "librknnrt_sim.so")], capture_output=True,
                         text=True, check=True).stdout
    names = {line.split()[-1] for line in out.splitlines() if line.split()[1] in ("T", "W")}
    assert names == CORE_FUNCTIONS | EXTENSIONS, f"unexpected exports {names ^ (CORE_FUNCTIONS | EXTENSIONS)}"
