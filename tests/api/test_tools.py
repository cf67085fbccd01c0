"""The toolkit's smaller entry points: onnx_edit, codegen, optimize_onnx, clear_op_cache, rknn_convert,
eval_perf CSV."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from rknnlink.api import RKNN
from rknnlink.demo import make_calibration_set, make_demo_onnx


def _concat_block(path: Path) -> None:
    """A KV-cache style block like the toolkit's onnx_edit example: k_cache = Concat(k_cache.1, k_new * 2)."""
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    nodes = [helper.make_node("Mul", ["k_new", "two"], ["k_scaled"], name="scale"),
             helper.make_node("Concat", ["k_cache.1", "k_scaled"], ["k_cache"], name="concat", axis=2)]
    graph = helper.make_graph(nodes, "concat_block",
                              [helper.make_tensor_value_info("k_cache.1", TensorProto.FLOAT, [2, 4, 8, 16]),
                               helper.make_tensor_value_info("k_new", TensorProto.FLOAT, [2, 4, 1, 16])],
                              [helper.make_tensor_value_info("k_cache", TensorProto.FLOAT, [2, 4, 9, 16])], [two])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))


def test_onnx_edit_example(tmp_path, monkeypatch):
    import onnxruntime as ort

    monkeypatch.chdir(tmp_path)
    _concat_block(tmp_path / "concat_block.onnx")
    rng = np.random.default_rng(0)
    lines = []
    for i in range(3):
        np.save(f"k{i}.npy", rng.standard_normal((2, 4, 8, 16)).astype(np.float32))
        np.save(f"n{i}.npy", rng.standard_normal((2, 4, 1, 16)).astype(np.float32))
        lines.append(f"k{i}.npy n{i}.npy")
    Path("dataset.txt").write_text("\n".join(lines) + "\n")

    from rknnlink.utils import onnx_edit  # the example's import, rknn -> rknnlink
    assert onnx_edit(model="./concat_block.onnx", export_path="./concat_block_edited.onnx",
                     inputs_transform={"k_cache.1": "a,b,c,d->1,ad,b,c"},
                     outputs_transform={"k_cache": "a,b,c,d->1,ab,c,d"}, dataset="./dataset.txt") == 0
    edited = onnx.load("concat_block_edited.onnx")
    shapes = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in edited.graph.input}
    assert shapes["k_cache.1"] == [1, 32, 4, 8]
    assert [d.dim_value for d in edited.graph.output[0].type.tensor_type.shape.dim] == [1, 8, 9, 16]
    k, n = np.load("k0.npy"), np.load("n0.npy")
    original = ort.InferenceSession("concat_block.onnx").run(None, {"k_cache.1": k, "k_new": n})[0]
    new_k = k.transpose(0, 3, 1, 2).reshape(1, 32, 4, 8)
    got = ort.InferenceSession("concat_block_edited.onnx").run(None, {"k_cache.1": new_k, "k_new": n})[0]
    np.testing.assert_array_equal(got, original.reshape(1, 8, 9, 16))
    first = Path("dataset_for_concat_block_edited.txt").read_text().splitlines()[0].split()
    np.testing.assert_array_equal(np.load(first[0]), new_k)

    # then the example builds the edited model with the rewritten dataset
    rknn = RKNN()
    rknn.config(target_platform="rk3588")
    assert rknn.load_onnx("./concat_block_edited.onnx") == 0
    assert rknn.build(do_quantization=True, dataset="./dataset_for_concat_block_edited.txt") == 0
    assert rknn.export_rknn("./concat_block_edited.rknn") == 0
    rknn.release()
    with pytest.raises(ValueError, match="every letter"):
        onnx_edit(model="./concat_block.onnx", export_path="x.onnx", inputs_transform={"k_cache.1": "a,b,c,d->1,ab,c"})


@pytest.fixture()
def demo(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_demo_onnx(tmp_path / "demo.onnx")
    make_calibration_set(tmp_path)
    return tmp_path


@pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler")
def test_codegen_builds_and_runs_against_the_simulated_npu(demo):
    from rknnlink.api.codegen import runtime_dir

    rknn = RKNN()
    rknn.config(mean_values=[[127.5] * 3], std_values=[[127.5] * 3], target_platform="rk3562")
    rknn.load_onnx("demo.onnx")
    rknn.build(do_quantization=True, dataset="dataset.txt")
    image = np.random.default_rng(3).integers(0, 256, (1, 64, 64, 3)).astype(np.uint8)
    np.save("img.npy", image)
    assert rknn.codegen(output_path="./rknn_app_demo", inputs=["img.npy"], overwrite=True) == 0
    with pytest.raises(ValueError, match="overwrite=True"):
        rknn.codegen(output_path="./rknn_app_demo", inputs=["img.npy"])
    api = runtime_dir(demo / "rknn_api")
    app = demo / "rknn_app_demo"
    subprocess.run(["cc", "-std=c11", "-O1", "-Wall", "-Werror", "-o", str(app / "demo"), str(app / "src" / "main.c"),
                    f"-I{api / 'include'}", str(api / "lib" / "librknnrt.so"), f"-Wl,-rpath,{api / 'lib'}"],
                   check=True)
    printed = subprocess.run([str(app / "demo")], cwd=app, check=True, capture_output=True, text=True).stdout
    assert rknn.init_runtime() == 0
    expected = rknn.inference(inputs=[image])[0].ravel()
    best = int(np.argmax(expected))
    assert printed.startswith("output 0: 10 values; top-5: ") and f"[{best}] {expected[best]:.6f}" in printed
    rknn.release()


def test_optimize_onnx_clear_op_cache_and_perf_csv(demo):
    import onnxruntime as ort

    rknn = RKNN()
    assert rknn.optimize_onnx("demo.onnx") == 0
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    a = ort.InferenceSession("demo.onnx").run(None, {"input": x})[0]
    b = ort.InferenceSession("demo_optimized.onnx").run(None, {"input": x})[0]
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    rknn.config(target_platform="rk3588")
    rknn.load_onnx("demo.onnx")
    rknn.build(do_quantization=False)
    assert rknn.init_runtime(perf_debug=True) == 0
    rknn.inference(inputs=[np.zeros((1, 64, 64, 3), np.uint8)])
    assert rknn.clear_op_cache() is None
    perf = rknn.eval_perf(is_print=False, csvfile="perf.csv")
    rows = list(csv.reader(open("perf.csv")))
    assert rows[0][:2] == ["id", "op_type"] and len(rows) >= 4
    assert rows[-1][:2] == ["total_time_us", str(perf["total_time_us"])]
    rknn.release()


def test_rknn_convert_yaml_as_the_model_zoo_calls_it(demo):
    (demo / "model_config.yml").write_text("""models:
    name: demo_cnn
    platform: onnx
    model_file_path: ./demo.onnx
    quantize: true
    dataset: ./dataset.txt
    configs:
      quantized_dtype: asymmetric_quantized-8
      mean_values: [127.5, 127.5, 127.5]
      std_values: [127.5, 127.5, 127.5]
      quant_img_RGB2BGR: false
      quantized_algorithm: normal
      quantized_method: channel
""")
    out = demo / "out"
    done = subprocess.run([sys.executable, "-m", "rknnlink.api.rknn_convert", "-t", "rk3566", "-i",
                           "./model_config.yml", "-o", str(out)], capture_output=True, text=True, cwd=demo)
    assert done.returncode == 0, done.stderr
    assert f"output rknn path: {out / 'demo_cnn.rknn'}" in done.stdout
    from rknnlink.model.format import read_model
    model = read_model((out / "demo_cnn.rknn").read_bytes())
    assert model.target_platform == "rk3566"
    np.testing.assert_allclose(model.inputs[0].mean, [127.5] * 3)
    bad = subprocess.run([sys.executable, "-m", "rknnlink.api.rknn_convert", "-t", "rk3566", "-i", "missing.yml"],
                         capture_output=True, text=True, cwd=demo)
    assert bad.returncode == 1 and "not exist" in bad.stderr


def _rknn_convert(cwd: Path, *args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rknnlink.api.rknn_convert", *args], capture_output=True, text=True,
                          cwd=cwd, env=env)


def test_rknn_convert_direct_mode_takes_the_toolkits_options(demo):
    """The toolkit's own example command line (its -h), with every option of its direct mode."""
    from rknnlink.model import format as fmt

    out = demo / "out"
    done = _rknn_convert(demo, "-i", "demo.onnx", "-o", "./out", "-t", "rk3588", "-do_Quant", "dataset.txt",
                         "-mean", "[[0,0,0]]", "-std", "[[255,255,255]]", "-onnx_inputs", "{'input':[1,3,64,64]}",
                         "-onnx_outputs", "['logits']", "-Quant_algorithm", "kl_divergence", "-RGB2BGR",
                         "-compress_weight", "-single_core_mode", "-Quant_dtype", "w8a8",
                         "-custom_hybrid", "[['r1','c3']]", "-a", "calib_0.npy")
    assert done.returncode == 0, done.stderr
    assert "output rknn path: out/demo.rknn" in done.stdout
    model = fmt.read_model((out / "demo.rknn").read_bytes())
    assert model.inputs[0].reverse_channels and model.target_platform == "rk3588"
    np.testing.assert_allclose(model.inputs[0].std, [255.0] * 3)
    # -custom_hybrid: the operators from r1 to c3 (dwconv, relu6, pwconv) are float16, the others int8
    dtypes = {op.name: model.tensors[op.outputs[0]].dtype for op in model.ops}
    assert dtypes["dwconv"] == dtypes["pwconv"] == fmt.FLOAT16 and dtypes["conv1"] == fmt.INT8, dtypes
    assert "dwconv: float16" in (demo / "demo.quantization.cfg").read_text()  # step1's files, in the cwd
    assert "-custom_hybrid" in (out / "rknn_convert_log.txt").read_text()  # the toolkit's command log
    assert (demo / "snapshot" / "error_analysis.txt").is_file()  # -a: on the simulator

    # a .rknn is loaded for -e (here on a simulated board: the default device); accuracy_analysis needs the
    # float model, as in the toolkit; the toolkit's other dtypes cannot apply to the int8-only simulated NPU
    again = _rknn_convert(demo, "-i", "out/demo.rknn", "-t", "rk3588", "-e",
                          env={**os.environ, "RKNNLINK_DEVICE": "sim"})
    assert again.returncode == 0, again.stderr
    assert "Memory Profile Info Dump" in again.stdout and "Total Time(us)" in again.stdout
    bad = _rknn_convert(demo, "-i", "out/demo.rknn", "-t", "rk3588", "-a", "calib_2.npy")
    assert bad.returncode == 1 and "load_onnx() and build()" in bad.stderr
    bad = _rknn_convert(demo, "-i", "demo.onnx", "-t", "rk3588", "-Quant_dtype", "w16a16i")
    assert bad.returncode == 1 and "w16a16i" in bad.stderr and "w8a8" in bad.stderr
    bad = _rknn_convert(demo, "-i", "demo.onnx", "-t", "rk3588", "-custom_hybrid", "[['c3','r1']]",
                        "-do_Quant", "dataset.txt")
    assert bad.returncode == 1 and "no path from 'c3' to 'r1'" in bad.stderr
    bad = _rknn_convert(demo, "-i", "demo.onnx", "-t", "rk3588", "-custom_hybrid", "[['r1','c3']]")
    assert bad.returncode == 1 and "-do_Quant" in bad.stderr
