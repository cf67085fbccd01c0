"""The ctypes structs match the C ABI header byte for byte (compiled probe against runtime_c/include)."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import pytest

from rknnlink.runtime import abi

ROOT = Path(__file__).resolve().parents[2]
STRUCTS = {
    "rknn_input_output_num": abi.RknnInputOutputNum,
    "rknn_tensor_attr": abi.RknnTensorAttr,
    "rknn_input_range": abi.RknnInputRange,
    "rknn_perf_detail": abi.RknnPerfDetail,
    "rknn_perf_run": abi.RknnPerfRun,
    "rknn_sdk_version": abi.RknnSdkVersion,
    "rknn_mem_size": abi.RknnMemSize,
    "rknn_custom_string": abi.RknnCustomString,
    "rknn_tensor_mem": abi.RknnTensorMem,
    "rknn_input": abi.RknnInput,
    "rknn_output": abi.RknnOutput,
    "rknn_init_extend": abi.RknnInitExtend,
    "rknn_run_extend": abi.RknnRunExtend,
    "rknn_output_extend": abi.RknnOutputExtend,
    "rknnlink_layer_info": abi.RknnlinkLayerInfo,
    "rknnlink_dump_info": abi.RknnlinkDumpInfo,
}


def test_reference_sizes_on_this_platform():
    assert ctypes.sizeof(abi.RknnTensorAttr) == 376
    assert ctypes.sizeof(abi.RknnInput) == (32 if ctypes.sizeof(ctypes.c_void_p) == 8 else 24)
    assert ctypes.sizeof(abi.RknnOutput) == (24 if ctypes.sizeof(ctypes.c_void_p) == 8 else 16)
    assert ctypes.sizeof(abi.RknnMemSize) == 64
    assert ctypes.sizeof(abi.RknnSdkVersion) == 512
    # offsets the reference lists for rknn_tensor_attr
    expected = {"name": 72, "n_elems": 328, "size": 332, "fmt": 336, "type": 340, "qnt_type": 344, "fl": 348,
                "zp": 352, "scale": 356, "w_stride": 360, "size_with_stride": 364, "pass_through": 368,
                "h_stride": 372}
    for name, offset in expected.items():
        assert getattr(abi.RknnTensorAttr, name).offset == offset, name


def test_structs_match_the_c_header(tmp_path: Path):
    cc = shutil.which("cc") or shutil.which("gcc")
    header = ROOT / "runtime_c" / "include" / "rknn_api.h"
    if cc is None or not header.is_file():
        pytest.skip("needs a C compiler and runtime_c/include/rknn_api.h")
    lines = ['#include <stdio.h>', '#include <stddef.h>', '#include "rknn_api.h"', '#include "rknnlink_sim.h"',
             "int main(void) {"]
    for c_name, struct in STRUCTS.items():
        lines.append(f'printf("{c_name} SIZEOF %zu\\n", sizeof({c_name}));')
        for field, *_ in struct._fields_:
            lines.append(f'printf("{c_name} {field} %zu\\n", offsetof({c_name}, {field}));')
    lines += ["return 0;", "}"]
    probe = tmp_path / "probe.c"
    probe.write_text("\n".join(lines))
    exe = tmp_path / "probe"
    subprocess.run([cc, "-std=c11", f"-I{ROOT / 'runtime_c' / 'include'}", str(probe), "-o", str(exe)], check=True)
    measured = {}
    for line in subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.splitlines():
        struct_name, field, value = line.split()
        measured[(struct_name, field)] = int(value)
    for c_name, struct in STRUCTS.items():
        assert measured[(c_name, "SIZEOF")] == ctypes.sizeof(struct), c_name
        for field, *_ in struct._fields_:
            assert measured[(c_name, field)] == getattr(struct, field).offset, f"{c_name}.{field}"


def test_error_names_cover_the_abi():
    assert abi.ERROR_NAMES[-6] == "RKNN_ERR_MODEL_INVALID"
    assert abi.ERROR_CODES["RKNN_ERR_INPUT_INVALID"] == -8
    assert len({v for v in abi.ERROR_NAMES.values()}) == len(abi.ERROR_NAMES)
