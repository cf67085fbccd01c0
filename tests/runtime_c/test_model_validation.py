"""librknnrt_sim.so through its C ABI (ctypes): hostile model bytes, vendor models, end-to-end numerics,
context duplication and context-free memory, independently of the Python binding."""

import ctypes
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rc_models

ERR_PARAM_INVALID, ERR_MODEL_INVALID = -5, -6
FLAG_COLLECT_PERF, MEM_FLAG_ALLOC_NO_CONTEXT = 0x8, 0x20000
QUERY_IN_OUT_NUM, QUERY_PERF_DETAIL, QUERY_PERF_RUN, QUERY_MEM_SIZE = 0, 3, 4, 6


class Input(ctypes.Structure):
    _fields_ = [("index", ctypes.c_uint32), ("buf", ctypes.c_void_p), ("size", ctypes.c_uint32),
                ("pass_through", ctypes.c_uint8), ("type", ctypes.c_int), ("fmt", ctypes.c_int)]


class Output(ctypes.Structure):
    _fields_ = [("want_float", ctypes.c_uint8), ("is_prealloc", ctypes.c_uint8), ("index", ctypes.c_uint32),
                ("buf", ctypes.c_void_p), ("size", ctypes.c_uint32)]


class PerfDetail(ctypes.Structure):
    _fields_ = [("perf_data", ctypes.c_char_p), ("data_len", ctypes.c_uint64)]


def init(lib, data: bytes, flags: int = 0) -> tuple:
    ctx = ctypes.c_uint64(0)
    buf = ctypes.create_string_buffer(data, len(data))
    rc = lib.rknn_init(ctypes.byref(ctx), buf, len(data), flags, None)
    return rc, ctx.value


def test_every_truncation_is_model_invalid(sim_lib):
    data, _ = rc_models.conv_net()
    assert init(sim_lib, data)[0] == 0
    for n in range(1, len(data)):
        rc, ctx = init(sim_lib, data[:n])
        assert rc == ERR_MODEL_INVALID, f"prefix of {n} bytes gave {rc}"
    rc, _ = init(sim_lib, data + b"\0" * 8)
    assert rc == ERR_MODEL_INVALID
    assert b"file_size" in sim_lib.rknnlink_sim_init_error()


def test_crc_catches_every_single_byte_change(sim_lib):
    data, _ = rc_models.conv_net(seed=3)
    rng = np.random.default_rng(7)
    for pos in rng.integers(64, len(data), 400):
        mutated = bytearray(data)
        mutated[pos] ^= 1 << int(rng.integers(0, 8))
        rc, _ = init(sim_lib, bytes(mutated))
        assert rc == ERR_MODEL_INVALID, f"flip at {pos} accepted"
        assert sim_lib.rknnlink_sim_init_error() != b""


def test_mutations_without_crc_never_crash(sim_lib):
    data = bytearray(rc_models.conv_net(seed=4)[0])
    data[40:44] = b"\0\0\0\0"  # crc 0 = not checked: the structural checks alone must hold
    rng = np.random.default_rng(11)
    outcomes = {0: 0, ERR_MODEL_INVALID: 0}
    for _ in range(3000):
        mutated = bytearray(data)
        for pos in rng.integers(0, len(data), 2):
            mutated[pos] = int(rng.integers(0, 256))
        rc, ctx = init(sim_lib, bytes(mutated))
        assert rc in outcomes, f"rc {rc}"
        outcomes[rc] += 1
        if rc == 0:
            assert sim_lib.rknn_destroy(ctx) == 0
    assert outcomes[ERR_MODEL_INVALID] > 0 and outcomes[0] > 0


def _vendor_file(tmp_path: Path, magic: bytes) -> Path:
    payload = b"\x38\0\0\0RKNN" + b"\0" * 100
    head = magic + b"\0" * (8 - len(magic)) if magic == b"RKNN" else magic
    data = head[:4] + b"\0" * 4 + struct.pack("<QQ", 6, len(payload)) + b"\0" * 40 if magic == b"RKNN" else head
    path = tmp_path / "vendor.rknn"
    path.write_bytes(data + payload + struct.pack("<Q", 2) + b"{}")
    return path


@pytest.mark.parametrize("magic", [b"RKNN", b"CYPTRKNN"])
def test_vendor_model_is_refused_with_a_board_hint(sim_lib, tmp_path, capfd, monkeypatch, magic):
    path = _vendor_file(tmp_path, magic)
    monkeypatch.delenv("RKNN_LOG_LEVEL", raising=False)
    ctx = ctypes.c_uint64(0)
    rc = sim_lib.rknn_init(ctypes.byref(ctx), str(path).encode(), 0, 0, None)  # size 0: a path
    assert rc == ERR_MODEL_INVALID
    msg = sim_lib.rknnlink_sim_init_error().decode()
    assert "Rockchip" in msg and "init_runtime(target=...)" in msg and "board" in msg
    err = capfd.readouterr().err
    assert err.startswith("E RKNN: [") and "init_runtime(target=...)" in err
    monkeypatch.setenv("RKNN_LOG_LEVEL", "-1")
    assert sim_lib.rknn_init(ctypes.byref(ctx), str(path).encode(), 0, 0, None) == ERR_MODEL_INVALID
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize("dtype,tol", [("float32", 1e-5), ("float16", 3e-3)])
def test_conv_net_end_to_end_matches_numpy(sim_lib, dtype, tol):
    data, params = rc_models.conv_net(dtype)
    rc, ctx = init(sim_lib, data, FLAG_COLLECT_PERF)
    assert rc == 0, sim_lib.rknnlink_sim_init_error()
    try:
        x = np.random.default_rng(1).uniform(0, 8, (1, 8, 8, 3)).astype(np.float32)
        inp = Input(0, x.ctypes.data, x.nbytes, 0, 0, 1)  # FLOAT32, NHWC
        assert sim_lib.rknn_inputs_set(ctypes.c_uint64(ctx), 1, ctypes.byref(inp)) == 0
        assert sim_lib.rknn_run(ctypes.c_uint64(ctx), None) == 0
        out = np.zeros(3, np.float32)
        o = Output(1, 1, 0, out.ctypes.data, out.nbytes)
        assert sim_lib.rknn_outputs_get(ctypes.c_uint64(ctx), 1, ctypes.byref(o), None) == 0
        np.testing.assert_allclose(out, rc_models.reference(x, params)[0], rtol=tol, atol=tol)
        perf = PerfDetail()
        assert sim_lib.rknn_query(ctx, QUERY_PERF_DETAIL, ctypes.byref(perf), ctypes.sizeof(perf)) == 0
        text = perf.perf_data.decode()
        for name in ("Conv:conv0", "MaxPool:pool0", "Gemm:fc0", "Softmax:softmax0", "ConvRelu"):
            assert name in text
        _check_perf_layout(text, n_rows=8)
        run = ctypes.c_int64(0)
        assert sim_lib.rknn_query(ctx, QUERY_PERF_RUN, ctypes.byref(run), 8) == 0
        assert f"Total Operator Elapsed Per Frame Time(us): {run.value}\n" in text
    finally:
        assert sim_lib.rknn_destroy(ctx) == 0


COLUMNS = ["ID", "OpType", "DataType", "Target", "InputShape", "OutputShape", "Cycles(DDR/NPU/Total)", "Time(us)",
           "MacUsage(%)", "WorkLoad(0/1/2)", "RW(KB)", "FullName"]


def _check_perf_layout(text: str, n_rows: int) -> None:
    """Parses PERF_DETAIL the way column-offset parsers do (5 header lines, fixed starts, 7-field ranking)."""
    lines = text.splitlines()
    assert set(lines[0]) == {"-"} and lines[1].strip() == "Network Layer Information Table"
    header = lines[3]
    starts = [header.index(c) for c in COLUMNS]
    assert starts == sorted(starts) and starts[:3] == [0, 5, 24]
    rows = []
    for line in lines[5:]:
        if line.startswith("-"):
            break
        words = [(m.start(), m.group()) for m in re.finditer(r"\S+", line)]
        assert len(words) == len(COLUMNS), f"row does not split into {len(COLUMNS)} cells: {line!r}"
        for (pos, _), col in zip(words, starts):
            assert pos == col, f"cell at {pos}, column at {col}: {line!r}"
        rows.append(words)
    assert len(rows) == n_rows and [int(r[0][1]) for r in rows] == list(range(1, n_rows + 1))
    assert rows[0][1][1] == "InputOperator" and rows[-1][1][1] == "OutputOperator"
    total = int(re.search(r"^Total Operator Elapsed Per Frame Time\(us\): (\d+)$", text, re.M).group(1))
    assert total == sum(int(r[7][1]) for r in rows)
    float(re.search(r"^Total Memory Read/Write Per Frame Size\(KB\): (\S+)$", text, re.M).group(1))
    rank = text[text.index("Operator Time Consuming Ranking Table"):].splitlines()
    body = [ln.split() for ln in rank[4:] if ln and not ln.startswith("-")]
    assert rank[2].split() == ["OpType", "CallNumber", "CPUTime(us)", "GPUTime(us)", "NPUTime(us)",
                               "TotalTime(us)", "TimeRatio(%)"]
    assert all(len(r) == 7 and r[6].endswith("%") for r in body[:-1])
    assert body[-1][0] == "Total" and int(body[-1][4]) == total
    assert sum(int(r[1]) for r in body[:-1]) == n_rows


def test_dup_context_outlives_its_source(sim_lib):
    data, _ = rc_models.conv_net()
    rc, ctx = init(sim_lib, data)
    assert rc == 0
    src, dup = ctypes.c_uint64(ctx), ctypes.c_uint64(0)
    assert sim_lib.rknn_dup_context(ctypes.byref(src), ctypes.byref(dup)) == 0
    assert dup.value not in (0, ctx)
    assert sim_lib.rknn_destroy(ctx) == 0
    num = (ctypes.c_uint32 * 2)()
    assert sim_lib.rknn_query(dup.value, QUERY_IN_OUT_NUM, num, 8) == 0
    assert list(num) == [1, 1]
    assert sim_lib.rknn_destroy(dup.value) == 0


# Counted in a fresh process: the pytest process's fd table also moves with other threads and with the garbage
# collector closing files that earlier tests dropped, which has nothing to do with the library.
_MEM2_CYCLES = r"""
import ctypes, os, sys
lib = ctypes.CDLL(sys.argv[1])
lib.rknn_create_mem2.argtypes = [ctypes.c_uint64, ctypes.c_uint64, ctypes.c_uint64]
lib.rknn_create_mem2.restype = ctypes.c_void_p
lib.rknn_destroy_mem.argtypes = [ctypes.c_uint64, ctypes.c_void_p]
flag = int(sys.argv[2])
for _ in range(50):
    lib.rknn_destroy_mem(0, lib.rknn_create_mem2(0, 1 << 20, flag))
before = len(os.listdir("/proc/self/fd"))
for i in range(5000):
    mem = lib.rknn_create_mem2(0, 4096 + i, flag)
    assert mem, i
    assert lib.rknn_destroy_mem(0, mem) == 0, i
print(before, len(os.listdir("/proc/self/fd")))
"""


def test_create_mem2_without_context_keeps_fds_flat(sim_lib, c_build):
    proc = subprocess.run([sys.executable, "-c", _MEM2_CYCLES, str(c_build / "librknnrt_sim.so"),
                           str(MEM_FLAG_ALLOC_NO_CONTEXT)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    before, after = (int(v) for v in proc.stdout.split())
    assert after == before, f"open fds {before} -> {after} over 5000 create_mem2/destroy_mem cycles"
    assert not sim_lib.rknn_create_mem2(0, 4096, 0)  # a context is required without the flag
