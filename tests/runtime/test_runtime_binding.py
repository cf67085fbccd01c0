"""RuntimeLibrary / RuntimeContext against the real simulated NPU."""

from __future__ import annotations

import ctypes
import ctypes.util

import numpy as np
import pytest
import sim_models

from rknnlink.runtime import RknnError, RuntimeLibrary
from rknnlink.runtime.abi import RKNN_FLAG_COLLECT_PERF_MASK


@pytest.fixture()
def conv(lib):
    model, weight, bias = sim_models.conv_relu_model()
    ctx = lib.init(model, flags=RKNN_FLAG_COLLECT_PERF_MASK)
    yield ctx, weight, bias
    ctx.close()


def _x(seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, 3, 8, 8)).astype(np.float32)


def test_load_sim_and_attrs(lib, conv):
    ctx, _, _ = conv
    assert lib.backend == "sim" and lib.is_simulator and ctx.is_simulator
    assert (ctx.n_inputs, ctx.n_outputs) == (1, 1)
    a = ctx.input_attrs[0]
    assert a.name == "x" and a.n_elems == 192 and a.size == 768 and a.dtype == np.float32 and a.rknn_type == 0
    assert ctx.output_attrs[0].dims == (1, 4, 8, 8)
    assert ctx.native_input_attrs[0].n_elems == 192


def test_infer_matches_numpy_in_both_layouts(conv):
    ctx, weight, bias = conv
    x = _x()
    ref = sim_models.conv_relu_reference(x, weight, bias)
    nchw = ctx.infer([x], formats=["nchw"])
    nhwc = ctx.infer([x.transpose(0, 2, 3, 1)])  # default for 4-D input is NHWC, like the toolkit
    for out in (nchw, nhwc):
        assert out[0].shape == (1, 4, 8, 8) and out[0].dtype == np.float32
        np.testing.assert_allclose(out[0], ref, atol=1e-4)
    assert nchw[0] is not nhwc[0] and nchw[0].flags.writeable


def test_input_dtypes_are_converted_by_the_runtime(conv):
    ctx, weight, bias = conv
    x = np.random.default_rng(3).integers(0, 4, size=(1, 3, 8, 8)).astype(np.uint8)
    ref = sim_models.conv_relu_reference(x.astype(np.float32), weight, bias)
    for dtype in (np.uint8, np.int8, np.float16, np.float64):
        out = ctx.infer([x.astype(dtype)], formats=["nchw"])
        np.testing.assert_allclose(out[0], ref, atol=2e-3)


def test_pass_through_takes_the_native_layout(conv):
    ctx, _, _ = conv
    x = _x(7)
    native = ctx.native_input_attrs[0]
    assert native.dims == (1, 3, 8, 8) and native.fmt == "NCHW"
    np.testing.assert_array_equal(ctx.infer([x], pass_through=[True])[0], ctx.infer([x], formats=["nchw"])[0])
    with pytest.raises(RknnError, match="native layout"):
        ctx.infer([x[:, :2]], pass_through=[True])
    raw = ctx.infer([x], formats=["nchw"], want_float=False)[0]
    assert raw.dtype == np.float32 and raw.shape == (1, 4, 8, 8)


def test_two_inputs_keep_their_order(lib):
    with lib.init(sim_models.two_input_model()) as ctx:
        a = np.arange(16, dtype=np.float32).reshape(1, 16)
        b = np.full((1, 16), 100.0, dtype=np.float32)
        np.testing.assert_array_equal(ctx.infer([a, b])[0], a + b)
        assert [t.name for t in ctx.input_attrs] == ["a", "b"]


@pytest.mark.parametrize("bad, words", [
    (lambda x: [x, x], "1 input(s)"),
    (lambda x: [x[:, :, :4]], "expects 192 elements"),
    (lambda x: [x.astype(np.complex64)], "not supported"),
])
def test_bad_inputs_raise_input_invalid(conv, bad, words):
    ctx, _, _ = conv
    with pytest.raises(RknnError) as info:
        ctx.infer(bad(_x()), formats=["nchw"])
    assert info.value.code == -8 and info.value.name == "RKNN_ERR_INPUT_INVALID"
    assert words in str(info.value)


def test_bad_format_is_rejected(conv):
    ctx, _, _ = conv
    with pytest.raises(RknnError, match="format 'nc1hwc2' is unknown"):
        ctx.infer([_x()], formats=["nc1hwc2"])


@pytest.mark.parametrize("model, words", [
    (b"garbage" * 20, ""),
    (b"RKNN\0\0\0\0" + b"\0" * 120, ""),
    (lambda: sim_models.conv_relu_model()[0][:300], ""),
])
def test_bad_models_raise_model_invalid_with_the_reason(lib, model, words):
    data = model() if callable(model) else model
    with pytest.raises(RknnError) as info:
        lib.init(data)
    assert info.value.code == -6
    assert "rknn_init failed" in str(info.value)
    assert len(info.value.message) > len("rknn_init failed: ") + 30  # carries the simulator's reason


def test_empty_and_non_bytes_models(lib):
    with pytest.raises(RknnError, match="empty"):
        lib.init(b"")
    with pytest.raises(TypeError, match="must be bytes"):
        lib.init("model.rknn")


def test_queries(conv):
    ctx, _, _ = conv
    ctx.infer([_x()], formats=["nchw"])
    text = ctx.perf_detail()
    assert "Network Layer Information Table" in text and "Conv:conv0" in text
    assert ctx.perf_run_us() >= 0
    api, drv = ctx.sdk_version()
    assert api and drv
    mem = ctx.mem_size()
    assert mem["total_weight_size"] >= (4 * 3 * 3 * 3 + 4) * 4
    assert ctx.custom_string() == "rknnlink-test"


def test_simulator_extensions(conv):
    ctx, weight, bias = conv
    layers = ctx.layer_infos()
    assert [layer.onnx_type for layer in layers] == ["Conv"] and layers[0].macs == 4 * 3 * 9 * 64
    ctx.set_dump(True)
    x = _x(5)
    ctx.infer([x], formats=["nchw"])
    dumps = {info.name: (f32, raw) for info, f32, raw in ctx.dumps()}
    np.testing.assert_allclose(dumps["y"][0], sim_models.conv_relu_reference(x, weight, bias), atol=1e-4)
    np.testing.assert_array_equal(dumps["x"][0], x)
    ctx.set_dump(False)
    ctx.infer([x], formats=["nchw"])
    assert ctx.dumps() == []


def test_dup_shares_the_model_and_close_is_idempotent(conv):
    ctx, _, _ = conv
    x = _x()
    twin = ctx.dup()
    try:
        np.testing.assert_array_equal(twin.infer([x], formats=["nchw"])[0], ctx.infer([x], formats=["nchw"])[0])
    finally:
        twin.close()
    twin.close()
    with pytest.raises(RknnError) as info:
        twin.run()
    assert info.value.code == -7 and "closed" in str(info.value)


def test_perf_needs_the_collect_flag(lib):
    with lib.init(sim_models.conv_relu_model()[0]) as ctx:
        ctx.infer([_x()], formats=["nchw"])
        try:
            text = ctx.perf_detail()
        except RknnError as exc:
            assert exc.code in (-1, -5)
        else:
            assert "Network Layer Information Table" not in text


def test_library_resolution_errors(monkeypatch, tmp_path):
    monkeypatch.setenv("RKNNLINK_SIM_LIB", str(tmp_path / "missing.so"))
    with pytest.raises(FileNotFoundError, match="RKNNLINK_SIM_LIB"):
        RuntimeLibrary.load(backend="sim")
    monkeypatch.setenv("LIBRKNNRT_PATH", str(tmp_path / "nope.so"))
    with pytest.raises(FileNotFoundError, match="LIBRKNNRT_PATH"):
        RuntimeLibrary.load(backend="vendor")
    with pytest.raises(ValueError, match="backend"):
        RuntimeLibrary.load(backend="npu")
    not_a_lib = tmp_path / "fake.so"
    not_a_lib.write_bytes(b"\x7fELF garbage")
    with pytest.raises(OSError, match="cannot load the NPU runtime"):
        RuntimeLibrary.load(path=str(not_a_lib))


def test_a_library_without_the_abi_is_refused(sim_library):
    libm = ctypes.util.find_library("m")
    if libm is None:
        pytest.skip("no libm to load")
    with pytest.raises(OSError, match="does not export rknn_init"):
        RuntimeLibrary.load(path=libm)


def test_auto_falls_back_to_the_simulator(sim_library, monkeypatch):
    monkeypatch.delenv("LIBRKNNRT_PATH", raising=False)
    if RuntimeLibrary.find_vendor() is not None:
        pytest.skip("a vendor librknnrt is installed here")
    assert RuntimeLibrary.load(backend="auto").backend == "sim"


def test_vendor_style_library_without_extensions(lib):
    """Simulator-only calls fail with a clear message when the extension symbols are absent."""
    vendorish = RuntimeLibrary.__new__(RuntimeLibrary)
    vendorish.__dict__.update(lib.__dict__)
    vendorish._fn = {k: v for k, v in lib._fn.items() if not k.startswith("rknnlink_sim")}
    vendorish.backend = "vendor"
    assert not vendorish.is_simulator
    with vendorish.init(sim_models.conv_relu_model()[0]) as ctx:
        with pytest.raises(RknnError, match="needs the rknnlink simulated NPU"):
            ctx.dumps()


def test_int8_model_quantisation_and_raw_outputs(lib):
    with lib.init(sim_models.int8_relu_model(scale=0.1, zero_point=3)) as ctx:
        a = ctx.input_attrs[0]
        assert (a.dtype, a.qnt_type, a.zp) == (np.dtype(np.int8), 2, 3) and abs(a.scale - 0.1) < 1e-7
        x = np.linspace(-1, 1, 16, dtype=np.float32).reshape(1, 16)
        q = (np.round(x / 0.1) + 3).astype(np.int8)
        expected_q = np.maximum(q, 3)  # Relu in the quantised domain clamps at the zero point
        raw = ctx.infer([x], want_float=False)[0]
        assert raw.dtype == np.int8
        np.testing.assert_array_equal(raw, expected_q)
        np.testing.assert_allclose(ctx.infer([x])[0], (expected_q.astype(np.float32) - 3) * 0.1, atol=1e-6)
        np.testing.assert_array_equal(ctx.infer([q], pass_through=[True], want_float=False)[0], expected_q)


def test_core_mask(conv):
    ctx, _, _ = conv
    for mask in (0, 1, 3, 7, 0xFFFF):
        ctx.set_core_mask(mask)
    with pytest.raises(RknnError, match="Not support core mask") as info:
        ctx.set_core_mask(8)
    # The vendor's code for an absent core is unknown; the simulator documents RKNN_ERR_FAIL (-1) with the
    # vendor's wording (docs/simulator-api.md), so that is what it must keep returning.
    assert info.value.code == -1 and info.value.name == "RKNN_ERR_FAIL" and "rk3588" in str(info.value)


def test_kept_inputs_are_the_last_buffers_given_and_can_be_replaced_by_copies(conv):
    """The context keeps the buffers the runtime was pointed at (set_inputs, a PreparedRun) alive; a caller
    that frees their memory (a board worker unmapping a client's ring) swaps in copies with keep_inputs, and
    the runs after that use their own buffers again."""
    ctx, _, _ = conv
    x = _x(3)
    data = memoryview(bytearray(x.tobytes()))
    plan = ctx.prepare([(np.float32, x.shape, "nchw", False)])
    want = plan([data])[0]
    assert len(ctx.kept_inputs) == 1 and ctx.kept_inputs[0] is data
    copy = memoryview(bytearray(data))
    ctx.keep_inputs([copy])
    assert ctx.kept_inputs == (copy,)
    del data
    np.testing.assert_array_equal(plan([copy])[0], want)
    ctx.infer([x], ["nchw"])
    assert len(ctx.kept_inputs) == 1 and ctx.kept_inputs[0] is not copy
    ctx.keep_inputs(())
    assert ctx.kept_inputs == ()


def test_a_bound_run_writes_what_a_prepared_run_returns_into_its_own_buffers(conv):
    """BoundRun: the inputs and outputs fixed once (a worker's ring slot and reply area); each call runs
    the bound input bytes as they are now and writes the prepared run's outputs into the bound buffers.
    Buffers of the wrong size, read-only outputs and plans that convert inputs are refused."""
    from rknnlink.runtime.library import BoundRun

    ctx, _, _ = conv
    plan = ctx.prepare([(np.float32, (1, 3, 8, 8), "nchw", False)])
    data = memoryview(bytearray(768))
    out = memoryview(bytearray(4 * 256))
    bound = BoundRun(plan, [data], [out])
    for seed in (1, 2):
        x = _x(seed)
        data[:] = x.tobytes()
        bound()
        want = plan([memoryview(x.tobytes())])[0]
        np.testing.assert_array_equal(np.frombuffer(out, np.float32).reshape(want.shape), want)
        np.testing.assert_array_equal(want, ctx.infer([x], ["nchw"])[0])
    assert bound.valid
    with pytest.raises(ValueError):
        BoundRun(plan, [memoryview(bytearray(767))], [out])
    with pytest.raises(ValueError):
        BoundRun(plan, [data], [memoryview(bytes(4 * 256))])
    with pytest.raises(ValueError):
        BoundRun(ctx.prepare([(np.int32, (1, 3, 8, 8), "nchw", False)]), [data], [out])  # converted by infer
