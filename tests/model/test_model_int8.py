"""int8 and hybrid builds without the runtime: data types, quantisation parameters, cfg files, errors."""

import factories as fac
import numpy as np
import pytest
import yaml

from rknnlink.model import format as fmt
from rknnlink.model.builder import (
    BuildConfig,
    BuildError,
    build,
    hybrid_quantization_step1,
    hybrid_quantization_step2,
    load_onnx,
)

MEAN, STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]


@pytest.fixture(scope="module")
def yolo_dataset(tmp_path_factory):
    return fac.write_npy_dataset(tmp_path_factory.mktemp("int8") / "calib", fac.smooth_images(4, 128, seed=9))


def config(**kw) -> BuildConfig:
    return BuildConfig(mean_values=[MEAN], std_values=[STD], progress=False, **kw)


def test_int8_types_and_parameters(yolo_dataset):
    result = build(load_onnx(fac.yolo_like()), config(), True, yolo_dataset)
    m = result.sim_model
    assert m.build_mode == "int8"
    act = [t for t in m.tensors if t.kind != fmt.KIND_CONSTANT]
    assert all(t.dtype == fmt.INT8 and t.qnt_type == fmt.QNT_AFFINE and t.scale > 0 for t in act)
    assert all(-128 <= t.zero_point <= 127 for t in act)
    for op in m.ops:
        if op.op_type != "Conv":
            continue
        x, w, b = (m.tensors[i] for i in op.inputs)
        assert w.dtype == fmt.INT8 and w.qnt_type == fmt.QNT_CHANNEL and w.quant_axis == 0
        assert not w.quant_zero_points.any() and np.abs(w.data).max() == 127
        assert b.dtype == fmt.INT32 and b.qnt_type == fmt.QNT_CHANNEL
        np.testing.assert_allclose(b.quant_scales, x.scale * w.quant_scales, rtol=1e-6)
    # Sigmoid heads end in [0, 1]: their int8 range covers exactly that interval.
    for o in m.outputs:
        t = m.tensors[o.tensor]
        assert (127 - t.zero_point) * t.scale == pytest.approx(result.quant_params[t.name]["max"][0], rel=0.01)
    assert fmt.read_model(result.data) == m


def test_graph_input_range_is_the_normalised_one(yolo_dataset):
    result = build(load_onnx(fac.yolo_like()), config(), True, yolo_dataset)
    qp = result.quant_params["images"]
    assert -2.2 < qp["min"][0] < -1.5 and 2.0 < qp["max"][0] < 2.7  # (0..255 - mean) / std
    io = result.sim_model.inputs[0]
    assert io.layout == fmt.LAYOUT_NHWC and io.mean == pytest.approx(MEAN) and io.std == pytest.approx(STD)


def test_layer_method_quantises_weights_per_tensor(yolo_dataset):
    m = build(load_onnx(fac.yolo_like()), config(quantized_method="layer"), True, yolo_dataset).sim_model
    convs = [op for op in m.ops if op.op_type == "Conv"]
    for op in convs:
        w, b = m.tensors[op.inputs[1]], m.tensors[op.inputs[2]]
        assert w.qnt_type == fmt.QNT_AFFINE and w.zero_point == 0
        assert b.qnt_type == fmt.QNT_AFFINE and b.scale == pytest.approx(m.tensors[op.inputs[0]].scale * w.scale)


def test_data_moving_layers_share_quantisation():
    model = fac.single_node_model("Transpose", [[1, 3, 4, 5]], None, perm=[0, 2, 3, 1])
    import tempfile
    from pathlib import Path
    with tempfile.TemporaryDirectory() as tmp:
        ds = fac.write_npy_dataset(Path(tmp), np.random.default_rng(0).uniform(0, 9, (3, 4, 5, 3)).astype(
            np.float32))
        m = build(load_onnx(model), BuildConfig(progress=False), True, ds).sim_model
    x, y = m.tensors[m.ops[0].inputs[0]], m.tensors[m.ops[0].outputs[0]]
    assert (x.scale, x.zero_point) == (y.scale, y.zero_point)


def test_algorithms_give_different_ranges(yolo_dataset):
    ranges = {}
    for alg in ("normal", "kl_divergence", "mmse"):
        qp = build(load_onnx(fac.yolo_like()), config(quantized_algorithm=alg), True, yolo_dataset).quant_params
        ranges[alg] = {k: (v["min"][0], v["max"][0]) for k, v in qp.items() if v["qtype"] == "asym"}
    for name, (lo, hi) in ranges["normal"].items():
        for alg in ("kl_divergence", "mmse"):
            a, b = ranges[alg][name]
            assert min(lo, 0.0) - 1e-6 <= a and b <= hi + 1e-6, (alg, name)  # ranges always contain 0
    # Each algorithm on its own moves some range (kl_divergence once silently fell back to min/max because the
    # builder collected only the |x| histogram and the range choice looked for the signed one).
    for alg in ("kl_divergence", "mmse"):
        moved = [name for name in ranges["normal"] if ranges[alg][name] != ranges["normal"][name]]
        assert moved, f"{alg} chose the min/max range of every tensor"


def test_builds_are_deterministic(yolo_dataset):
    a = build(load_onnx(fac.yolo_like()), config(), True, yolo_dataset).data
    b = build(load_onnx(fac.yolo_like()), config(), True, yolo_dataset).data
    assert a == b


def test_hybrid_files_and_float16_layers(yolo_dataset, tmp_path):
    model = load_onnx(fac.yolo_like())
    paths = hybrid_quantization_step1(model, config(), yolo_dataset, tmp_path, name="yolo")
    assert [p.rsplit("/", 1)[1] for p in paths] == ["yolo.model", "yolo.data", "yolo.quantization.cfg"]
    cfg = yaml.safe_load(open(paths[2]))
    assert cfg["custom_quantize_layers"] == {}
    conv = next(k for k, v in cfg["quantize_parameters"].items() if v["dtype"] == "int8" and v["qtype"] == "sym")
    assert cfg["quantize_parameters"][conv]["qmethod"] == "channel"
    plain = hybrid_quantization_step2(*paths)
    target = next(op for op in plain.sim_model.ops if op.op_type == "Concat")
    cfg["custom_quantize_layers"] = {target.name: "float16"}
    key = plain.sim_model.tensors[target.outputs[0]].name
    cfg["quantize_parameters"]["images"]["min"] = [-3.0]  # edited ranges are honoured
    yaml.safe_dump(cfg, open(paths[2], "w"))
    hybrid = hybrid_quantization_step2(*paths)
    m = hybrid.sim_model
    assert m.tensors[m.tensor_index(key)].dtype == fmt.FLOAT16
    others = [m.tensors[op.outputs[0]].dtype for op in m.ops if op.name != target.name]
    assert set(others) == {fmt.INT8}
    assert hybrid.quant_params["images"]["min"][0] == -3.0
    cfg["custom_quantize_layers"] = {"no_such_layer": "float16"}
    yaml.safe_dump(cfg, open(paths[2], "w"))
    with pytest.raises(BuildError, match="no_such_layer"):
        hybrid_quantization_step2(*paths)
    cfg["custom_quantize_layers"] = {target.name: "int4"}
    yaml.safe_dump(cfg, open(paths[2], "w"))
    with pytest.raises(BuildError, match="int4"):
        hybrid_quantization_step2(*paths)


def test_config_errors():
    model = load_onnx(fac.conv_bn_act_model())
    with pytest.raises(BuildError, match="dataset"):
        build(model, BuildConfig(), True, None)
    for kw, word in (({"quantized_algorithm": "gdq"}, "quantized_algorithm"),
                     ({"quantized_method": "group32"}, "quantized_method"),
                     ({"quantized_dtype": "w4a16"}, "quantized_dtype"),
                     ({"target_platform": "rk9999"}, "target_platform")):
        with pytest.raises(BuildError, match=word):
            build(model, BuildConfig(**kw), False, None)
    with pytest.raises(BuildError, match="channels"):
        build(model, BuildConfig(mean_values=[[1, 2]], std_values=[[1, 1]]), False, None)
    with pytest.raises(BuildError, match="inputs"):
        build(model, BuildConfig(mean_values=[[0, 0, 0], [0, 0, 0]]), False, None)


def test_meta_fields():
    m = build(load_onnx(fac.conv_bn_act_model()), BuildConfig(target_platform="RK3566", custom_string="hi"),
              False, None).sim_model
    assert (m.target_platform, m.custom_string, m.producer, m.name) == ("rk3566", "hi", "rknnlink 0.1.0",
                                                                         "conv_bn_act")
