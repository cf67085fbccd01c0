"""A model whose tensors need more memory than RKNNLINK_SIM_MAX_MB is refused by rknn_init with -4 and the
reason, instead of allocating gigabytes (a hostile model can declare tensors of 2^31 elements)."""

import ctypes

from rknnlink.model import format as fmt

RKNN_ERR_MALLOC_FAIL = -4


def _relu_model(shape) -> bytes:
    """Relu -> Relu on a float32 tensor of `shape`: input, intermediate and output of that size."""
    tensors = [fmt.SimTensor("x", "float32", shape, kind=fmt.KIND_INPUT),
               fmt.SimTensor("h", "float32", shape),
               fmt.SimTensor("y", "float32", shape, kind=fmt.KIND_OUTPUT)]
    ops = [fmt.SimOp("Relu", "relu1", [0], [1]), fmt.SimOp("Relu", "relu2", [1], [2])]
    model = fmt.SimModel(name="big", tensors=tensors, ops=ops, inputs=[fmt.IoSpec(0)], outputs=[fmt.IoSpec(2)])
    return fmt.write_model(model)


def _init(sim_lib, data: bytes) -> tuple:
    ctx = ctypes.c_uint64(0)
    buf = ctypes.create_string_buffer(data, len(data))
    return sim_lib.rknn_init(ctypes.byref(ctx), buf, len(data), 0, None), ctx


def test_a_model_above_the_limit_is_refused_with_the_reason(sim_lib, monkeypatch):
    data = _relu_model([1, 16, 512, 512])  # 16 MiB per tensor, 48 MiB in all
    monkeypatch.setenv("RKNNLINK_SIM_MAX_MB", "32")
    rc, _ctx = _init(sim_lib, data)
    assert rc == RKNN_ERR_MALLOC_FAIL
    message = sim_lib.rknnlink_sim_init_error().decode()
    assert "needs 48 MiB" in message and "limit of 32 MiB" in message and "RKNNLINK_SIM_MAX_MB" in message

    monkeypatch.setenv("RKNNLINK_SIM_MAX_MB", "64")
    rc, ctx = _init(sim_lib, data)
    assert rc == 0
    sim_lib.rknn_destroy(ctx)


def test_declared_giant_tensors_fail_fast_with_the_default_limit(sim_lib, monkeypatch):
    monkeypatch.delenv("RKNNLINK_SIM_MAX_MB", raising=False)
    rc, _ctx = _init(sim_lib, _relu_model([1, 64, 4096, 4096]))  # 4 GiB per tensor
    assert rc == RKNN_ERR_MALLOC_FAIL


def test_invalid_limit_values_fall_back_to_the_default(sim_lib, monkeypatch):
    data = _relu_model([1, 16, 512, 512])
    for value in ("0", "abc", "-5", "12x"):
        monkeypatch.setenv("RKNNLINK_SIM_MAX_MB", value)
        rc, ctx = _init(sim_lib, data)
        assert rc == 0, value
        sim_lib.rknn_destroy(ctx)
