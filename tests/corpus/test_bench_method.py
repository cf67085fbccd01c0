"""The real-model bench compares like with like: RKNN-Toolkit2's column is built with the same
quantized_algorithm and quantized_method as rknnlink's, and every row says which ones it used.

RKNN-Toolkit2 itself cannot exist in CI (a separate 2 GB venv), so these tests give corpus.run's real
toolkit subprocess (corpus/toolkit_job.py, under this python) a stand-in ``rknn.api`` package that records
the options it was configured with and returns zeros. Everything on rknnlink's side is real.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from corpus import run

ROOT = Path(__file__).resolve().parents[2]

STAND_IN = textwrap.dedent('''
    """Stand-in for RKNN-Toolkit2's rknn.api: records config() and returns zeros of the model's output shapes."""
    import json
    import os

    import numpy as np


    class RKNN:
        def __init__(self, verbose=False):
            self.options = {}

        def config(self, **kwargs):
            self.options = kwargs
            with open(os.environ["RKNN_STAND_IN_LOG"], "a") as f:
                f.write(json.dumps(kwargs) + "\\n")

        def load_onnx(self, path, inputs=None, input_size_list=None, outputs=None):
            import onnx
            graph = onnx.load(path, load_external_data=False).graph
            self.shapes = [[d.dim_value or 1 for d in o.type.tensor_type.shape.dim] for o in graph.output]
            return 0

        def build(self, do_quantization=False, dataset=None):
            return 0

        def init_runtime(self):
            return 0

        def inference(self, inputs, data_format=None):
            return [np.zeros(shape, np.float32) for shape in self.shapes]

        def release(self):
            pass
''')


def _tiny_folder(root: Path) -> Path:
    """A corpus-shaped folder (meta.json, model.onnx, calib/, tests/) around a one-Relu model."""
    folder = root / "tiny"
    (folder / "calib").mkdir(parents=True)
    (folder / "tests").mkdir()
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "tiny", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(folder / "model.onnx"))
    img = np.random.default_rng(0).integers(0, 255, (1, 8, 8, 3), dtype=np.uint8)
    np.save(folder / "tests" / "0.npy", img)
    np.save(folder / "calib" / "0.npy", img[0])
    (folder / "calib" / "dataset.txt").write_text(str(folder / "calib" / "0.npy") + "\n")
    (folder / "meta.json").write_text(json.dumps({"mean": [0, 0, 0], "std": [1, 1, 1], "height": 8, "width": 8,
                                                  "metric": "top1"}))
    return folder


@pytest.fixture
def stand_in(tmp_path, monkeypatch):
    pkg = tmp_path / "stand_in" / "rknn"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "api.py").write_text(STAND_IN)
    log = tmp_path / "config.jsonl"
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "stand_in"))
    monkeypatch.setenv("RKNN_STAND_IN_LOG", str(log))
    return log


@pytest.mark.parametrize("algorithm,method", [("mmse", "layer"), ("normal", "channel"),
                                              ("kl_divergence", "layer")])
def test_toolkit_is_configured_with_the_rows_algorithm_and_method(tmp_path, stand_in, algorithm, method):
    folder = _tiny_folder(tmp_path)
    result = run.run_toolkit(folder, True, algorithm, sys.executable, method=method)
    assert not result.error, result.error
    assert len(result.outputs) == 1
    options = [json.loads(line) for line in stand_in.read_text().splitlines()]
    assert len(options) == 1
    assert options[0]["quantized_algorithm"] == algorithm
    assert options[0]["quantized_method"] == method


def _bench(monkeypatch, argv: list) -> int:
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import bench_real_models
    finally:
        sys.path.remove(str(ROOT / "bench"))
    monkeypatch.setattr(sys, "argv", ["bench_real_models.py", *argv])
    return bench_real_models.main()


def _small_ppocr_cls(tmp_path, monkeypatch) -> None:
    pytest.importorskip("rapidocr_onnxruntime")
    monkeypatch.setenv("RKNNLINK_CORPUS_DIR", str(tmp_path / "corpus"))


def test_bench_rows_record_algorithm_and_method_on_both_sides(tmp_path, stand_in, monkeypatch):
    _small_ppocr_cls(tmp_path, monkeypatch)
    monkeypatch.setenv(run.TOOLKIT_ENV, sys.executable)
    out = tmp_path / "rows.json"
    assert _bench(monkeypatch, ["--only", "ppocr_cls", "--small", "--modes", "int8", "--algorithm", "mmse",
                                "--method", "layer", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [(r["model"], r["mode"], r["algorithm"], r["method"]) for r in rows] == [
        ("ppocr_cls", "int8", "mmse", "layer")]
    assert rows[0]["fidelity"] > 0.5  # rknnlink's side really ran
    options = [json.loads(line) for line in stand_in.read_text().splitlines()]
    assert [(o["quantized_algorithm"], o["quantized_method"]) for o in options] == [("mmse", "layer")]


@pytest.mark.parametrize("earlier_row,argv,says", [
    ({"algorithm": "mmse", "method": "channel"}, ["--algorithm", "mmse", "--method", "layer"],
     ["'mmse', 'layer'", "rerun the toolkit"]),
    ({"algorithm": "normal", "method": "channel", "test_seed": 5000}, [], ["test seeds from [5000]"]),
])
def test_bench_refuses_toolkit_columns_of_another_method_or_test_set(tmp_path, monkeypatch, capsys, earlier_row,
                                                                      argv, says):
    _small_ppocr_cls(tmp_path, monkeypatch)
    earlier = tmp_path / "earlier.json"
    earlier.write_text(json.dumps([{"model": "ppocr_cls", "mode": "int8", "toolkit_fidelity": 0.99,
                                    "toolkit_task": 1.0, "toolkit_build_s": 1.0, **earlier_row}]))
    with pytest.raises(SystemExit):
        _bench(monkeypatch, ["--only", "ppocr_cls", "--small", "--modes", "int8", *argv, "--toolkit-json",
                             str(earlier)])
    err = capsys.readouterr().err
    assert all(text in err for text in says), err


def test_bench_takes_a_toolkit_column_only_from_the_same_model_file(tmp_path, monkeypatch):
    """A column is read back for the model file it was measured on (its sha256 in the row), on a held-out
    set too when the column was; a column of another build of the model is not compared (a note says so)."""
    _small_ppocr_cls(tmp_path, monkeypatch)
    from corpus.build import build_all
    digest = run.model_digest(build_all(["ppocr_cls"], small=True)["ppocr_cls"])
    out, earlier = tmp_path / "rows.json", tmp_path / "earlier.json"
    got = {}
    for sha in (digest, "0" * 16):
        earlier.write_text(json.dumps([{"model": "ppocr_cls", "mode": "int8", "algorithm": "normal",
                                        "method": "channel", "test_seed": 5000, "model_sha256": sha,
                                        "toolkit_fidelity": 0.99, "toolkit_task": 1.0, "toolkit_build_s": 1.0}]))
        assert _bench(monkeypatch, ["--only", "ppocr_cls", "--small", "--modes", "int8", "--test-seed", "5000",
                                    "--toolkit-json", str(earlier), "--json", str(out)]) == 0
        got[sha] = json.loads(out.read_text())[0]
    same, other = got[digest], got["0" * 16]
    assert same["model_sha256"] == digest and same["toolkit_fidelity"] == 0.99 and same["test_seed"] == 5000
    assert same["samples"] == 2  # the small corpus's two test images
    assert np.isnan(other["toolkit_fidelity"]) and "another build of this model" in other["note"]
