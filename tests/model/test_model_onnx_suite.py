"""The onnx package's pytorch-converted models through build (fp16): count the passes; every failure must be
an UnsupportedOperatorError that names the operator, never another exception."""

import logging

import factories as fac
import numpy as np
import pytest

from rknnlink.model.builder import BuildConfig, UnsupportedOperatorError, build, load_onnx

LOG = logging.getLogger(__name__)
MODELS = sorted(p for p in fac.PYTORCH_CONVERTED.iterdir() if (p / "model.onnx").is_file())


def test_pytorch_converted_models_build_or_fail_cleanly():
    assert len(MODELS) >= 80, "the onnx wheel should ship its pytorch-converted test models"
    passed, unsupported = [], {}
    for d in MODELS:
        try:
            result = build(load_onnx(d / "model.onnx"), BuildConfig(progress=False), False, None)
        except UnsupportedOperatorError as exc:
            assert exc.op_type and exc.op_type in str(exc) and exc.node_name in str(exc)
            unsupported[d.name] = exc.op_type
            continue
        assert result.sim_model.build_mode == "fp16" and result.sim_model.ops
        passed.append(d.name)
    LOG.warning("pytorch-converted: %d of %d build; unsupported: %s", len(passed), len(MODELS), unsupported)
    print(f"\npytorch-converted models: {len(passed)}/{len(MODELS)} build; unsupported: {unsupported}")
    # Embedding (run-time integer indices into Gather) builds since integer tensors are carried as floats.
    assert not unsupported
    assert len(passed) >= 80


@pytest.mark.parametrize("name", ["test_Embedding", "test_Embedding_sparse"])
def test_embedding_models_run_with_integer_index_inputs(name, tmp_path):
    """Both Embedding models: int64 indices and the table as graph inputs, exact in fp32 and fp16-close."""
    import onnx
    from onnx import numpy_helper

    from rknnlink.runtime import RuntimeLibrary

    d = fac.PYTORCH_CONVERTED / name
    data = d / "test_data_set_0"
    ins = [numpy_helper.to_array(onnx.load_tensor(str(p))) for p in sorted(data.glob("input_*.pb"))]
    ref = numpy_helper.to_array(onnx.load_tensor(str(next(data.glob("output_*.pb")))))
    assert ins[0].dtype == np.int64
    lib = RuntimeLibrary.load(backend="sim")
    for dtype, tol in (("float32", 1e-6), ("float16", 2e-3)):
        result = build(load_onnx(d / "model.onnx"), BuildConfig(progress=False, float_dtype=dtype), False, None)
        with lib.init(result.data) as ctx:
            got = np.asarray(ctx.infer(ins)[0]).reshape(ref.shape)
        assert np.max(np.abs(got - ref)) <= tol * max(1.0, float(np.max(np.abs(ref)))), (name, dtype)
