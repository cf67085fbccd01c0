"""hybrid_quantization_step1/step2 as the toolkit's example runs them: two scripts, two RKNN objects."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from rknnlink.api import RKNN
from rknnlink.demo import make_calibration_set, make_demo_onnx
from rknnlink.model.format import read_model


@pytest.fixture()
def work(tmp_path, monkeypatch) -> Path:
    make_demo_onnx(tmp_path / "ssd_like.onnx")
    make_calibration_set(tmp_path)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_step2_with_the_toolkit_file_names_keeps_step1_settings(work):
    step1 = RKNN()
    step1.config(mean_values=[100, 110, 120], std_values=[50, 60, 70], target_platform="rk3566")
    assert step1.load_onnx("./ssd_like.onnx") == 0
    assert step1.hybrid_quantization_step1(dataset="./dataset.txt", proposal=False) == 0
    step1.release()
    # named after the model file, in the working directory, like the toolkit
    for suffix in (".model", ".data", ".quantization.cfg"):
        assert (work / f"ssd_like{suffix}").is_file()
    cfg_path = work / "ssd_like.quantization.cfg"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["custom_quantize_layers"] = {"pwconv": "float16"}
    cfg_path.write_text(yaml.safe_dump(cfg))

    step2 = RKNN()  # a new script: no config() call
    assert step2.hybrid_quantization_step2(model_input="./ssd_like.model", data_input="./ssd_like.data",
                                           model_quantization_cfg="./ssd_like.quantization.cfg") == 0
    assert step2.export_rknn("./ssd_like.rknn") == 0
    model = read_model((work / "ssd_like.rknn").read_bytes())
    assert model.target_platform == "rk3566"
    spec = model.inputs[0]
    np.testing.assert_allclose(spec.mean, [100, 110, 120])
    np.testing.assert_allclose(spec.std, [50, 60, 70])
    # the edited layer is float16, the others stay int8
    from rknnlink.model import format as fmt
    pw = next(op for op in model.ops if op.name == "pwconv")
    assert model.tensors[pw.outputs[0]].dtype == fmt.FLOAT16
    conv1 = next(op for op in model.ops if op.name == "conv1")
    assert model.tensors[conv1.outputs[0]].dtype == fmt.INT8

    # accuracy_analysis(output_dir=None) and the simulator, as step2.py goes on
    image = np.random.default_rng(4).integers(0, 256, (64, 64, 3)).astype(np.uint8)
    np.save(work / "img.npy", image[None].transpose(0, 3, 1, 2).astype(np.float32))
    assert step2.accuracy_analysis(inputs=["./img.npy"], output_dir=None) == 0
    assert step2.init_runtime() == 0
    out = step2.inference(inputs=[image[None]], data_format=["nhwc"])
    import onnxruntime as ort
    x = ((image[None].astype(np.float32) - [100, 110, 120]) / [50, 60, 70]).transpose(0, 3, 1, 2)
    ref = ort.InferenceSession(str(work / "ssd_like.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"input": x.astype(np.float32)})[0]
    cos = float(np.dot(out[0].ravel(), ref.ravel()) / np.linalg.norm(out[0]) / np.linalg.norm(ref))
    assert cos > 0.97
    step2.release()
