"""End to end: models built by rknnlink.model, executed by the simulated NPU (librknnrt_sim through
rknnlink.runtime), compared with onnxruntime fp32 on the same inputs.

Targets: fp16 cosine >= 0.9999 on every output, int8 cosine >= 0.97, trained-model int8 accuracy within
1 point of fp32, and export -> read -> rerun bit-identical.
"""

from __future__ import annotations

import factories as fac
import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from rknnlink.model import format as fmt
from rknnlink.model.builder import (
    BuildConfig,
    UnsupportedOperatorError,
    build,
    hybrid_quantization_step1,
    hybrid_quantization_step2,
    load_onnx,
)
from rknnlink.model.prepare import run_onnx

try:
    from rknnlink.runtime import RuntimeLibrary

    LIB = RuntimeLibrary.load(backend="sim")
    SKIP_REASON = ""
except Exception as exc:  # the simulator is not built (pip install -e . compiles it)
    LIB, SKIP_REASON = None, f"simulated NPU library unavailable: {exc}"

pytestmark = pytest.mark.skipif(LIB is None, reason=SKIP_REASON or "simulator missing")

MEAN = [123.675, 116.28, 103.53]
STD = [58.395, 57.12, 57.375]
FP16_COS, INT8_COS = 0.9999, 0.97


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))


def run_sim(data: bytes, inputs: list, formats: list | None = None) -> list:
    with LIB.init(data) as ctx:
        return ctx.infer(inputs, formats=formats)


def normalised_nchw(img_nhwc: np.ndarray) -> np.ndarray:
    return ((img_nhwc - np.array(MEAN, np.float32)) / np.array(STD, np.float32)).transpose(2, 0, 1)[None].astype(
        np.float32)


# ------------------------------------------------------------------------------ pytorch-converted


def _converted_cases() -> list:
    return sorted(p for p in fac.PYTORCH_CONVERTED.iterdir() if (p / "model.onnx").is_file())


def test_pytorch_converted_reference_outputs_fp16():
    checked, low = 0, {}
    for d in _converted_cases():
        try:
            result = build(load_onnx(d / "model.onnx"), BuildConfig(progress=False), False, None)
        except UnsupportedOperatorError:
            continue  # counted and checked in test_model_onnx_suite.py
        data = d / "test_data_set_0"
        ins = [numpy_helper.to_array(onnx.load_tensor(str(p))) for p in sorted(data.glob("input_*.pb"))]
        refs = [numpy_helper.to_array(onnx.load_tensor(str(p))) for p in sorted(data.glob("output_*.pb"))]
        outs = run_sim(result.data, ins, ["nchw"] * len(ins))
        assert len(outs) == len(refs), d.name
        for got, ref in zip(outs, refs):
            assert got.shape == ref.shape, d.name
            c = cosine(got, ref)
            if c < FP16_COS:
                low[d.name] = c
        checked += 1
    print(f"\npytorch-converted reference outputs: {checked - len(low)}/{checked} with fp16 cosine >= {FP16_COS}")
    assert checked >= 80
    assert not low, f"fp16 cosine below {FP16_COS}: {low}"


# ------------------------------------------------------------------------------ image models


@pytest.fixture(scope="module")
def mnv2_setup(tmp_path_factory):
    images = fac.smooth_images(12, 224, seed=7)
    dataset = fac.write_npy_dataset(tmp_path_factory.mktemp("mnv2") / "calib", images[:10])
    model = load_onnx(fac.mobilenetv2_like())
    test = images[10:]
    refs = [run_onnx(model, {"input": normalised_nchw(im)}, ["logits"])[0] for im in test]
    return model, dataset, test, refs


def _image_config(**kw) -> BuildConfig:
    return BuildConfig(mean_values=[MEAN], std_values=[STD], progress=False, **kw)


def test_mobilenetv2_fp16(mnv2_setup):
    model, _, test, refs = mnv2_setup
    result = build(model, _image_config(), False, None)
    for img, ref in zip(test, refs):
        (out,) = run_sim(result.data, [img[None]])  # raw NHWC pixels: the runtime normalises
        assert out.shape == (1, 1000)
        assert cosine(out, ref) >= FP16_COS


@pytest.mark.parametrize("algorithm, method, threshold", [
    ("normal", "channel", INT8_COS), ("normal", "layer", 0.95), ("kl_divergence", "channel", 0.95),
    ("mmse", "channel", 0.95),
])
def test_mobilenetv2_int8(mnv2_setup, algorithm, method, threshold):
    model, dataset, test, refs = mnv2_setup
    result = build(model, _image_config(quantized_algorithm=algorithm, quantized_method=method), True, dataset)
    m = result.sim_model
    # the logits come from a Gemm: written in float16 from its accumulator (precision.accumulator_outputs)
    assert m.tensors[m.inputs[0].tensor].dtype == fmt.INT8 and m.tensors[m.outputs[0].tensor].dtype == fmt.FLOAT16
    cosines = [cosine(run_sim(result.data, [img[None]])[0], ref) for img, ref in zip(test, refs)]
    print(f"\nmobilenetv2 int8 {algorithm}/{method}: cosine {cosines}")
    assert min(cosines) >= threshold


def test_export_read_rerun_is_bit_identical(mnv2_setup):
    model, dataset, test, _ = mnv2_setup
    result = build(model, _image_config(), True, dataset)
    reread = fmt.read_model(result.data)
    assert reread == result.sim_model
    rewritten = fmt.write_model(reread)
    assert rewritten == result.data
    a = run_sim(result.data, [test[0][None]])
    b = run_sim(rewritten, [test[0][None]])
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    again = build(model, _image_config(), True, dataset)
    assert again.data == result.data, "builds are reproducible byte for byte"


@pytest.fixture(scope="module")
def yolo_setup(tmp_path_factory):
    images = fac.smooth_images(8, 128, seed=3)
    dataset = fac.write_npy_dataset(tmp_path_factory.mktemp("yolo") / "calib", images[:6], layout="nhwc")
    model = load_onnx(fac.yolo_like())
    test = images[6:]
    refs = [run_onnx(model, {"images": normalised_nchw(im)}, ["p_small", "p_large"]) for im in test]
    return model, dataset, test, refs


@pytest.mark.parametrize("quantize", [False, True])
def test_yolo_like_two_outputs(yolo_setup, quantize):
    model, dataset, test, refs = yolo_setup
    result = build(model, _image_config(), quantize, dataset if quantize else None)
    ops = {(op.op_type, op.act) for op in result.sim_model.ops}
    assert ("Conv", "SiLU") in ops and ("Resize", None) in ops and ("Conv", "Sigmoid") in ops
    for img, ref in zip(test, refs):
        outs = run_sim(result.data, [img[None]])
        assert [o.shape for o in outs] == [r.shape for r in ref]
        for o, r in zip(outs, ref):
            assert cosine(o, r) >= (INT8_COS if quantize else FP16_COS)


def test_hybrid_quantization_keeps_layers_float16(yolo_setup, tmp_path):
    model, dataset, test, refs = yolo_setup
    model_path, data_path, cfg_path = hybrid_quantization_step1(model, _image_config(), dataset, tmp_path)
    import yaml
    cfg = yaml.safe_load(open(cfg_path))
    assert cfg["custom_quantize_layers"] == {}
    some = next(iter(cfg["quantize_parameters"].values()))
    assert set(some) == {"qtype", "qmethod", "dtype", "min", "max", "scale", "zero_point", "ori_min", "ori_max"}
    plain = hybrid_quantization_step2(model_path, data_path, cfg_path)
    heads = [op.name for op in plain.sim_model.ops if op.act == "Sigmoid"]
    text = open(cfg_path).read().replace("custom_quantize_layers: {}",
                                         "custom_quantize_layers:\n" + "".join(f"  {h}: float16\n" for h in heads))
    open(cfg_path, "w").write(text)
    hybrid = hybrid_quantization_step2(model_path, data_path, cfg_path)
    m = hybrid.sim_model
    for op in m.ops:
        dtype = m.tensors[op.outputs[0]].dtype
        assert dtype == (fmt.FLOAT16 if op.name in heads else fmt.INT8), op.name
    for img, ref in zip(test, refs):
        outs = run_sim(hybrid.data, [img[None]])
        for o, r in zip(outs, ref):
            assert cosine(o, r) >= INT8_COS


@pytest.mark.parametrize("quantize", [False, True])
def test_two_input_model(tmp_path, quantize):
    model = load_onnx(fac.two_input_model())
    rng = np.random.default_rng(5)
    samples = [(rng.standard_normal((1, 3, 32, 32)).astype(np.float32),
                rng.standard_normal((1, 10)).astype(np.float32)) for _ in range(8)]
    lines = []
    for i, (img, feat) in enumerate(samples[:6]):
        np.save(tmp_path / f"img{i}.npy", img)
        np.save(tmp_path / f"feat{i}.npy", feat)
        lines.append(f"img{i}.npy feat{i}.npy")
    (tmp_path / "dataset.txt").write_text("\n".join(lines))
    result = build(model, BuildConfig(progress=False), quantize, tmp_path / "dataset.txt" if quantize else None)
    for img, feat in samples[6:]:
        ref = run_onnx(model, {"image": img, "features": feat}, ["scores"])[0]
        (out,) = run_sim(result.data, [img, feat], ["nchw", None])
        assert cosine(out, ref) >= (INT8_COS if quantize else FP16_COS)


# ------------------------------------------------------------------------------ light model zoo

LIGHT = {"squeezenet": 0, "shufflenet": 1, "inception_v1": 0, "inception_v2": 0, "densenet121": 0,
         "resnet50": 0, "bvlc_alexnet": 0, "zfnet512": 0, "vgg19": 0}  # name -> BatchNorm re-estimation passes
# 120-290 MB of fully connected weights: 13-41 s each here, so they carry the slow marker (make test-fast skips).
BIG = ("bvlc_alexnet", "zfnet512", "vgg19")


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in BIG else n for n in LIGHT])
def test_light_model_zoo(name, tmp_path):
    full = fac.light_model(name, bn_passes=LIGHT[name])
    # Compare the logits: the random-weight nets' softmax is nearly one-hot, which says little.
    softmax = next((n for n in full.graph.node if n.op_type == "Softmax"), None)
    out_name = softmax.input[0] if softmax is not None else full.graph.output[0].name
    model = load_onnx(full, outputs=[out_name])
    inp = model.graph.input[0]
    shape = [d.dim_value for d in inp.type.tensor_type.shape.dim]
    rng = np.random.default_rng(11)
    xs = [rng.standard_normal(shape).astype(np.float32) for _ in range(5)]
    for i, x in enumerate(xs[:4]):
        np.save(tmp_path / f"x{i}.npy", x)
    (tmp_path / "dataset.txt").write_text("\n".join(f"x{i}.npy" for i in range(4)))
    ref = run_onnx(model, {inp.name: xs[4]}, [out_name])[0]
    fp16 = build(model, BuildConfig(progress=False), False, None)
    (out16,) = run_sim(fp16.data, [xs[4]], ["nchw"])
    int8 = build(model, BuildConfig(progress=False), True, tmp_path / "dataset.txt")
    (out8,) = run_sim(int8.data, [xs[4]], ["nchw"])
    print(f"\n{name}: fp16 cosine {cosine(out16, ref):.6f}, int8 cosine {cosine(out8, ref):.4f}")
    assert cosine(out16, ref) >= FP16_COS
    assert cosine(out8, ref) >= INT8_COS


# ------------------------------------------------------------------------------ trained model


@pytest.fixture(scope="module")
def digits():
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    return fac.digits_cnn()


def test_trained_digits_cnn_int8_accuracy_within_one_point(digits, tmp_path):
    model, x_train, x_test, y_test = digits
    model = load_onnx(model)
    ref_logits = np.concatenate([run_onnx(model, {"digit": (x[None] - 8) / 8}, ["logits"])[0] for x in x_test])
    acc_fp32 = float(np.mean(ref_logits.argmax(1) == y_test))
    for i, x in enumerate(x_train[:64]):
        np.save(tmp_path / f"d{i}.npy", x[None])  # raw 0..16 NCHW; the build applies mean/std
    (tmp_path / "dataset.txt").write_text("\n".join(f"d{i}.npy" for i in range(64)))
    cfg = BuildConfig(mean_values=[[8.0]], std_values=[[8.0]], progress=False)
    results = {}
    for label, quantize in (("fp16", False), ("int8", True)):
        built = build(model, cfg, quantize, tmp_path / "dataset.txt" if quantize else None)
        with LIB.init(built.data) as ctx:
            preds = [ctx.infer([x[None]], formats=["nchw"])[0].argmax() for x in x_test]
        results[label] = float(np.mean(np.array(preds) == y_test))
    print(f"\ndigits CNN accuracy: onnxruntime fp32 {acc_fp32:.4f}, sim fp16 {results['fp16']:.4f}, "
          f"sim int8 {results['int8']:.4f}")
    assert acc_fp32 > 0.9
    assert abs(results["fp16"] - acc_fp32) <= 0.005
    assert acc_fp32 - results["int8"] <= 0.01


@pytest.mark.parametrize("quantize", [False, True])
def test_rknn_batch_size_runs_frames_together(yolo_setup, quantize):
    model, dataset, test, refs = yolo_setup
    result = build(model, _image_config(), quantize, dataset if quantize else None, rknn_batch_size=2)
    assert result.sim_model.batch_size == 2
    outs = run_sim(result.data, [np.stack(test)])
    single = build(model, _image_config(), quantize, dataset if quantize else None)
    for k, img in enumerate(test):
        one = run_sim(single.data, [img[None]])
        for batched, alone, ref in zip(outs, one, refs[k]):
            assert batched.shape[0] == 2
            np.testing.assert_array_equal(batched[k:k + 1], alone)  # same quantisation, same arithmetic
            assert cosine(batched[k:k + 1], ref) >= (INT8_COS if quantize else FP16_COS)


def test_rgb2bgr_reverses_channels_before_normalisation(yolo_setup):
    model, _, test, _ = yolo_setup
    result = build(model, _image_config(quant_img_rgb2bgr=True), False, None)
    assert result.sim_model.inputs[0].reverse_channels
    img = test[0]
    ref = run_onnx(model, {"images": normalised_nchw(img[:, :, ::-1])}, ["p_small", "p_large"])
    for out, r in zip(run_sim(result.data, [img[None]]), ref):
        assert cosine(out, r) >= FP16_COS


@pytest.mark.parametrize("quantize", [False, True])
def test_every_layer_matches_its_golden_tensor_through_tensor_map(yolo_setup, quantize):
    model, dataset, test, _ = yolo_setup
    result = build(model, _image_config(), quantize, dataset if quantize else None)
    img = test[0]
    with LIB.init(result.data) as ctx:
        ctx.set_dump(True)
        ctx.infer([img[None]])
        dumps = ctx.dumps()
    layer_outputs = [result.sim_model.tensors[o].name for op in result.sim_model.ops for o in op.outputs]
    dumped = {info.name: values for info, values, _raw in dumps}
    assert set(layer_outputs) <= set(dumped)
    onnx_names = [result.tensor_map[n] for n in layer_outputs]
    golden = run_onnx(result.prepared_onnx, {"images": normalised_nchw(img)}, onnx_names)
    for name, gold in zip(layer_outputs, golden):
        got = dumped[name].reshape(gold.shape)
        assert cosine(got, gold) >= (0.99 if quantize else FP16_COS), name


def test_hybrid_boundaries_inside_the_graph(yolo_setup, tmp_path):
    """A float16 Concat between int8 layers: int8 -> float16 -> int8 conversions at operator inputs."""
    model, dataset, test, refs = yolo_setup
    paths = hybrid_quantization_step1(model, _image_config(), dataset, tmp_path, name="yolo")
    plain = hybrid_quantization_step2(*paths)
    concat = next(op.name for op in plain.sim_model.ops if op.op_type == "Concat")
    text = open(paths[2]).read().replace("custom_quantize_layers: {}",
                                         f"custom_quantize_layers:\n  {concat}: float16\n")
    open(paths[2], "w").write(text)
    hybrid = hybrid_quantization_step2(*paths)
    m = hybrid.sim_model
    op = next(o for o in m.ops if o.name == concat)
    assert m.tensors[op.outputs[0]].dtype == fmt.FLOAT16
    assert {m.tensors[i].dtype for i in op.inputs} == {fmt.INT8}
    for img, ref in zip(test, refs):
        for o, r in zip(run_sim(hybrid.data, [img[None]]), ref):
            assert cosine(o, r) >= INT8_COS
