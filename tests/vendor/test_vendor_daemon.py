"""The daemon's vendor path through the real daemon, with only librknnrt emulated (runtime_c/vendor_double).

Upload of a vendor file, routing to the vendor backend, per-layer dumps from the runtime's own dump files,
clean-up of the dump directory, and the storage errors.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from vendor_files import double_output, vendor_rknn

from rknnlink.client import Board, RemoteRknnError
from rknnlink.runtime import RknnError, RuntimeLibrary

SHAPE = [1, 3, 8, 8]


def _model(shape=SHAPE, dtype="float32") -> bytes:
    return vendor_rknn([("images", shape, dtype)], [("/head/Conv_output_0", shape, dtype), ("logits", shape, dtype)])


@pytest.fixture()
def vendor_daemon(vendor_double, tmp_path, monkeypatch):
    from rknnlink.client.local import start_local_daemon

    dumps = tmp_path / "dumps"
    monkeypatch.setenv("RKNNLINK_DUMP_ROOT", str(dumps))
    log_path = tmp_path / "daemon.log"
    daemon = start_local_daemon(platform="rk3588", backend="vendor", log_path=log_path,
                                extra_args=["--library", vendor_double])
    daemon.dump_root = dumps
    daemon.log_path = log_path
    yield daemon
    daemon.stop()


def test_double_runs_vendor_files_and_refuses_ours(vendor_double):
    from rknnlink.model.format import MAGIC

    lib = RuntimeLibrary.load(path=vendor_double, backend="vendor")
    assert not lib.is_simulator
    x = np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32)
    with lib.init(_model()) as ctx:
        assert [a.name for a in ctx.output_attrs] == ["/head/Conv_output_0", "logits"]
        assert ctx.input_attrs[0].dims == (1, 8, 8, 3) and ctx.input_attrs[0].fmt == "NHWC"
        out = ctx.infer([x], formats=["nchw"])
        nhwc = ctx.infer([x.transpose(0, 2, 3, 1).copy()], formats=["nhwc"])
    for j in range(2):
        np.testing.assert_allclose(out[j].ravel(), double_output([x], j), rtol=1e-6)
        np.testing.assert_array_equal(out[j], nhwc[j])
    with pytest.raises(RknnError) as info:
        lib.init(MAGIC + bytes(200))
    assert info.value.code == -6
    with pytest.raises(RknnError):
        lib.init(_model()[:100])  # truncated container


def test_daemon_routes_a_vendor_file_to_the_vendor_runtime(vendor_daemon):
    x = np.linspace(-1, 1, int(np.prod(SHAPE)), dtype=np.float32).reshape(SHAPE)
    with Board.connect(vendor_daemon.address, timeout=10) as board:
        assert board.info.backend == "vendor"
        assert board.info.platform == "rk3588"
        assert "rknnlink-vendor-double" in board.info.runtime_version
        model = _model()
        with board.load_model(model) as session:
            assert not session.is_simulator
            out = session.run([x], formats=["nchw"])
            np.testing.assert_allclose(out[1].ravel(), double_output([x], 1), rtol=1e-6)
        assert board.has_model(__import__("hashlib").sha256(model).hexdigest())


def test_vendor_dumps_come_from_the_runtime_files_and_are_cleaned_up(vendor_daemon):
    x = np.random.default_rng(1).standard_normal(SHAPE).astype(np.float32)
    with Board.connect(vendor_daemon.address, timeout=10) as board, board.load_model(_model()) as session:
        with pytest.raises(RemoteRknnError, match="no run happened yet"):
            session.dumps()
        session.run([x.transpose(0, 2, 3, 1).copy()], formats=["nhwc"])
        tensors = session.dump_tensors(include_raw=True)
        names = [info["name"] for info, _f32, _raw in tensors]
        assert names == ["images", "/head/Conv_output_0", "logits"]  # file-safe names mapped back
        dumps = {info["name"]: f32 for info, f32, _raw in tensors}
        np.testing.assert_array_equal(dumps["images"], x)  # the runtime dumps NCHW
        np.testing.assert_allclose(dumps["logits"].ravel(), double_output([x], 1), rtol=1e-6)
        assert [info["layer_index"] for info, _f, _r in tensors] == [0, 1, 2]
        # the session's own context kept running without dumps
        assert session.run([x], formats=["nchw"])[0].shape == tuple(SHAPE)
    assert list(vendor_daemon.dump_root.iterdir()) == []  # per-session directory and log removed


def test_unwritable_dump_directory_is_reported(vendor_double, tmp_path, monkeypatch):
    from rknnlink.client.local import start_local_daemon

    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the dump directory should be")
    monkeypatch.setenv("RKNNLINK_DUMP_ROOT", str(blocker))
    x = np.zeros(SHAPE, np.float32)
    with start_local_daemon(backend="vendor", extra_args=["--library", vendor_double]) as daemon, \
            Board.connect(daemon.address, timeout=10) as board, board.load_model(_model()) as session:
        session.run([x], formats=["nchw"])
        with pytest.raises(RemoteRknnError, match="RKNNLINK_DUMP_ROOT"):
            session.dumps()


@pytest.fixture()
def small_filesystem(tmp_path):
    """A 64 KiB tmpfs: real 'no space left' conditions (needs root, as CI has)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True,
                            text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_short_storage_is_a_clear_error(vendor_double, small_filesystem, monkeypatch):
    from rknnlink.client.local import start_local_daemon

    monkeypatch.setenv("RKNNLINK_DUMP_ROOT", str(small_filesystem / "dumps"))
    shape = [1, 3, 32, 32]
    x = np.ones(shape, np.float32)
    with start_local_daemon(backend="vendor", extra_args=["--library", vendor_double]) as daemon, \
            Board.connect(daemon.address, timeout=10) as board, board.load_model(_model(shape)) as session:
        session.run([x], formats=["nchw"])
        with pytest.raises(RemoteRknnError, match="storage is short") as info:
            session.dumps()
        assert info.value.code == -4 and "MiB free" in info.value.message
        assert session.run([x], formats=["nchw"])[1].shape == tuple(shape)  # the session survives


def test_dump_files_that_do_not_fit_are_reported(vendor_double, small_filesystem, tmp_path):
    """The runtime writes until the disk is full; the collector notices the broken files."""
    from rknnlink_server import vendor_dumps

    big = [1, 4, 48, 48]   # 36 KiB per tensor, 3 tensors on a 64 KiB disk
    model_path = tmp_path / "m.rknn"
    model_path.write_bytes(_model(big))
    lib = RuntimeLibrary.load(path=vendor_double, backend="vendor")
    x = np.ones(big, np.float32)
    with lib.init(model_path.read_bytes()) as ctx:
        attrs = ctx.input_attrs + ctx.output_attrs
    os.environ[vendor_dumps.ROOT_ENV] = str(small_filesystem)
    try:
        old_headroom, vendor_dumps.HEADROOM = vendor_dumps.HEADROOM, -(200 << 10)  # let the early check pass
        with pytest.raises(RknnError, match="could not be written or read") as info:
            vendor_dumps.collect(lib, str(model_path), ([x], ["nchw"], [False]), attrs, False)
    finally:
        vendor_dumps.HEADROOM = old_headroom
        del os.environ[vendor_dumps.ROOT_ENV]
    assert "storage is short" in info.value.message
    assert list(Path(small_filesystem).iterdir()) == []
