"""accuracy_analysis writes the toolkit's folder layout, which its own example reads back."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import pytest

from rknnlink.api import RKNN
from rknnlink.api.accuracy import file_name_for
from rknnlink.api.textdump import format_floats, write_floats
from rknnlink.demo import make_calibration_set, make_demo_onnx

LONG = "/backbone/stage_with_a_really_long_module_path.block_number_seven/inner/Conv_output_0_" + "x" * 30


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("accuracy")
    make_demo_onnx(work / "demo.onnx")
    make_calibration_set(work)
    # A long tensor name (the pointwise conv's output) to check the columns stay aligned.
    model = onnx.load(str(work / "demo.onnx"))
    for node in model.graph.node:
        node.output[:] = [LONG if o == "c3" else o for o in node.output]
        node.input[:] = [LONG if i == "c3" else i for i in node.input]
    onnx.save(model, str(work / "demo.onnx"))
    np.save(work / "image.npy", np.random.default_rng(3).integers(0, 256, (1, 3, 64, 64)).astype(np.float32))
    return work


def _built(work: Path) -> RKNN:
    rknn = RKNN()
    rknn.config(mean_values=[[127.5] * 3], std_values=[[127.5] * 3], target_platform="rk3588")
    assert rknn.load_onnx(str(work / "demo.onnx")) == 0
    assert rknn.build(do_quantization=True, dataset=str(work / "dataset.txt")) == 0
    return rknn


def test_text_dumps_are_exactly_printf_six_decimals():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.standard_normal(5000).astype(np.float32) * 10.0 ** rng.integers(-8, 8, 5000),
                             np.array([0.0, -0.0, -1e-9, 0.0078125, -0.0078125, 0.5e-6, 123456789.0, -2.5e-6,
                                       8.999e9], np.float32)])
    expected = "".join("%.6f\n" % v for v in values.astype(np.float64).tolist()).encode()  # noqa: UP031
    assert format_floats(values) == expected
    with_nan = np.array([1.0, np.nan, -np.inf, 3e12], np.float32)
    assert format_floats(with_nan) == "".join("%.6f\n" % v for v in with_nan.tolist()).encode()  # noqa: UP031


def test_short_path_below_1000_is_exactly_printf_six_decimals():
    """Every value below 1000 (the 12-byte-row path): signs, 1-3 integer digits, rounding at each boundary."""
    rng = np.random.default_rng(1)
    values = np.concatenate([(rng.standard_normal(20000) * 10.0 ** rng.integers(-7, 3, 20000)).astype(np.float32),
                             np.array([0.0, -0.0, 9.9999996, -9.9999996, 99.99999, -99.99999, 999.99994, -999.99994,
                                       5e-7, -5e-7, 1.5e-6, 10.0, -100.0], np.float32)])
    values = values[np.abs(values) < 999.9999]
    expected = "".join("%.6f\n" % v for v in values.astype(np.float64).tolist()).encode()  # noqa: UP031
    assert format_floats(values) == expected


def test_write_floats_reads_back_with_genfromtxt(tmp_path):
    values = np.linspace(-3, 3, 1001, dtype=np.float32).reshape(7, 11, 13)
    write_floats(tmp_path / "t.txt", values)
    np.testing.assert_allclose(np.genfromtxt(tmp_path / "t.txt"), values.ravel(), atol=5e-7)


def test_file_names_follow_the_toolkit():
    assert file_name_for("/features/features.0/features.0.0/Conv_output_0") == \
        "_features_features_0_features_0_0_Conv_output_0"
    assert file_name_for("logits") == "logits"


def test_layout_text_dumps_by_default_and_report_columns(work, monkeypatch):
    monkeypatch.chdir(work)
    rknn = _built(work)
    # The toolkit example's exact call, then what it reads back.
    assert rknn.accuracy_analysis(inputs=["./image.npy"], output_dir="./snapshot") == 0
    snap = work / "snapshot"
    golden = np.genfromtxt(snap / "golden" / "logits.txt")
    quantized = np.genfromtxt(snap / "simulator" / "logits.txt")
    assert golden.shape == (10,) and quantized.shape == (10,)
    np.testing.assert_allclose(golden, np.load(snap / "golden" / "npy" / "logits.npy").ravel(), atol=5e-7)
    assert not (snap / "runtime").exists()
    name_map = (snap / "map_name_to_file.txt").read_text().splitlines()
    assert name_map[0].split() == ["layer_name", "file_name"]
    assert f"{file_name_for(LONG)}.txt" in name_map[[line.split()[0] for line in name_map].index(LONG)]
    assert (snap / "golden" / "c1.txt").is_file()  # the fused Conv's own output: golden only
    assert (snap / "golden" / f"{file_name_for(LONG)}.txt").is_file()

    # Reference: onnxruntime on the float model with the same normalisation.
    import onnxruntime as ort
    x = (np.load(work / "image.npy") - 127.5) / 127.5
    ref = ort.InferenceSession(str(work / "demo.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"input": x.astype(np.float32)})[0]
    np.testing.assert_allclose(golden, ref.ravel(), rtol=1e-4, atol=1e-5)

    text = (snap / "error_analysis.txt").read_text().splitlines()
    assert text[0].startswith("# simulator_error: calculate the output error of each layer of the simulator")
    header = next(i for i, line in enumerate(text) if line.startswith("layer_name"))
    cos_col = text[header + 2].index("cos")
    rows = [line for line in text[header + 4:] if line.startswith("[")]
    numbered = [r for r in rows if re.search(r"\d\.\d{5} \| ", r)]
    # every number starts in the same column, also after the long name
    starts = {re.search(r"-?\d\.\d{5} \|", r).start() for r in numbered}
    assert starts == {len(f"[Conv] {LONG}") + 5}  # the toolkit's rule: longest label + 5
    assert cos_col < min(r.index(" | ") for r in numbered)
    labels = [r.split()[0] + " " + r.split()[1] for r in rows]
    # fused Conv+Relu and Conv+Clip show as their ONNX rows: the Conv row without numbers, then the activation
    conv1 = labels.index("[Conv] c1")
    assert labels[conv1 + 1] == "[Relu] r1" and not re.search(r"\d\.\d{5}", rows[conv1])
    assert re.search(r"\d\.\d{5}", rows[conv1 + 1])
    assert labels[labels.index("[Conv] c2") + 1] == "[Clip] r2"
    assert labels[0] == "[Input] input" and labels[-1] == "[Gemm] logits"
    final_cos = float(rows[-1].split()[2])
    cos_ref = float(golden @ quantized / np.linalg.norm(golden) / np.linalg.norm(quantized))
    assert abs(final_cos - cos_ref) < 1e-5 and final_cos > 0.9
    rknn.release()


def test_output_dir_none_writes_the_reports_to_snapshot_without_dumps(work, monkeypatch, tmp_path):
    """Measured on RKNN-Toolkit2 2.5.0: output_dir=None leaves ./snapshot/{error_analysis,map_name_to_file}.txt."""
    monkeypatch.chdir(tmp_path)
    rknn = _built(work)
    assert rknn.accuracy_analysis(inputs=[str(work / "image.npy")], output_dir=None) == 0
    assert sorted(p.name for p in (tmp_path / "snapshot").iterdir()) == ["error_analysis.txt",
                                                                         "map_name_to_file.txt"]
    assert "simulator_error" in (tmp_path / "snapshot" / "error_analysis.txt").read_text()
    rknn.release()


def test_board_mode_has_simulator_and_runtime_columns(work, tmp_path):
    rknn = _built(work)
    out = tmp_path / "snap_board"
    assert rknn.accuracy_analysis(inputs=[str(work / "image.npy")], output_dir=str(out), target="rk3588",
                                  device_id="sim") == 0
    for side in ("golden", "simulator", "runtime"):
        assert (out / side / "logits.txt").is_file() and (out / side / "npy" / "logits.npy").is_file()
    # the simulated board runs the same simulator: identical dumps, single_sim cosine 1
    np.testing.assert_array_equal(np.load(out / "runtime" / "npy" / "logits.npy"),
                                  np.load(out / "simulator" / "npy" / "logits.npy"))
    text = (out / "error_analysis.txt").read_text()
    assert "simulator_error" in text and "runtime_error" in text and "single_sim" in text
    last = [line for line in text.splitlines() if line.startswith("[Gemm] logits")][0]
    cells = re.findall(r"(-?\d+\.\d{5}) \| (\d+\.\d{5})", last)
    assert len(cells) == 4 and cells[0] == cells[2] and float(cells[3][0]) == pytest.approx(1.0)
    rknn.release()


def test_report_columns_sit_where_the_toolkit_puts_them():
    """Positions measured on RKNN-Toolkit2 2.5.0's error_analysis.txt (shared reference, section 4: the
    longest label there is 63 characters, so the first column is 68)."""
    from rknnlink.api.accuracy import Row, format_report

    lines = format_report([Row("Input", "input", "input", [(1.0, 0.0), (1.0, 0.0)]),
                           Row("Conv", "/features/features.0/features.0.0/Conv_output_0", None),
                           Row("Clip", "/features/features.17/conv/conv.1/conv.1.2/Clip_output_0", None)],
                          ["simulator"]).splitlines()

    def words(line):
        return [(m.start(), m.group()) for m in re.finditer(r"\S+", line)]

    assert words(lines[4]) == [(0, "layer_name"), (77, "simulator_error")] and len(lines[4]) == 112
    assert words(lines[5]) == [(73, "entire"), (93, "single")]
    assert words(lines[6]) == [(70, "cos"), (79, "euc"), (90, "cos"), (99, "euc")]
    assert lines[7] == "-" * 108
    assert words(lines[8])[2:] == [(68, "1.00000"), (76, "|"), (78, "0.00000"), (88, "1.00000"), (96, "|"),
                                   (98, "0.00000")] and len(lines[8]) == 112
    assert len(lines[9]) == 68
