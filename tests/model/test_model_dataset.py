"""dataset.txt rules: relative paths, npy layouts, images, normalisation and the errors for each mistake."""

import logging

import numpy as np
import pytest
from PIL import Image

from rknnlink.model.dataset import normalise, parse_dataset_file, read_dataset
from rknnlink.model.errors import BuildError

SHAPE = (1, 3, 4, 5)


def write(tmp_path, lines, name="dataset.txt"):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def test_paths_are_relative_to_the_dataset_folder(tmp_path, monkeypatch):
    sub = tmp_path / "calib"
    sub.mkdir()
    np.save(sub / "a.npy", np.zeros(SHAPE, np.float32))
    ds = write(sub, ["a.npy", "", "# comment", str(sub / "a.npy")])
    monkeypatch.chdir(tmp_path)  # the working directory must not matter
    entries = parse_dataset_file(ds)
    assert [p for _, ps in entries for p in ps] == [sub / "a.npy", sub / "a.npy"]
    bad = write(sub, ["calib/a.npy"], "bad.txt")
    with pytest.raises(BuildError, match="dataset file's folder"):
        parse_dataset_file(bad)


def test_npy_layouts(tmp_path, caplog):
    rng = np.random.default_rng(0)
    nchw = rng.standard_normal(SHAPE).astype(np.float32)
    np.save(tmp_path / "nchw4.npy", nchw)
    np.save(tmp_path / "nchw3.npy", nchw[0])
    np.save(tmp_path / "nhwc4.npy", nchw.transpose(0, 2, 3, 1))
    np.save(tmp_path / "nhwc3.npy", nchw[0].transpose(1, 2, 0))
    ds = write(tmp_path, ["nchw4.npy", "nchw3.npy", "nhwc4.npy", "nhwc3.npy"])
    samples = list(read_dataset(ds, [SHAPE], progress=False))
    for s in samples:
        np.testing.assert_array_equal(s.raw[0], nchw)
        np.testing.assert_array_equal(s.normalised[0], nchw)
    cube = rng.standard_normal((1, 3, 3, 3)).astype(np.float32)
    np.save(tmp_path / "cube.npy", cube)
    with caplog.at_level(logging.INFO, logger="rknnlink.model.dataset"):
        s = next(read_dataset(write(tmp_path, ["cube.npy"], "c.txt"), [(1, 3, 3, 3)], progress=False))
    np.testing.assert_array_equal(s.raw[0], cube)
    assert "ambiguous" in caplog.text
    np.save(tmp_path / "wrong.npy", np.zeros((1, 5, 4, 4), np.float32))
    with pytest.raises(BuildError, match="matches neither"):
        list(read_dataset(write(tmp_path, ["wrong.npy"], "w.txt"), [SHAPE], progress=False))
    np.save(tmp_path / "size.npy", np.zeros((1, 3, 4, 6), np.float32))
    with pytest.raises(BuildError, match="needs"):
        list(read_dataset(write(tmp_path, ["size.npy"], "s.txt"), [SHAPE], progress=False))


def test_non_image_inputs_accept_a_missing_batch(tmp_path):
    np.save(tmp_path / "v.npy", np.arange(10, dtype=np.float32))
    s = next(read_dataset(write(tmp_path, ["v.npy"]), [(1, 10)], progress=False))
    assert s.raw[0].shape == (1, 10)


def test_images_mean_std_and_channel_reversal(tmp_path, caplog):
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "img.png")
    Image.fromarray(pixels).save(tmp_path / "img.bmp")
    ds = write(tmp_path, ["img.png", "img.bmp"])
    mean, std = [10.0, 20.0, 30.0], [2.0, 4.0, 8.0]
    for s in read_dataset(ds, [SHAPE], [mean], [std], reverse_channels=True, progress=False):
        raw = pixels.transpose(2, 0, 1)[None].astype(np.float32)
        np.testing.assert_array_equal(s.raw[0], raw)
        expect = (raw[:, ::-1] - np.array(mean, np.float32)[None, :, None, None]) / np.array(
            std, np.float32)[None, :, None, None]
        np.testing.assert_allclose(s.normalised[0], expect, rtol=1e-6)
    big = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)  # 5x6 (WxH), another size than the input's
    Image.fromarray(big).save(tmp_path / "big.png")
    with caplog.at_level(logging.WARNING, logger="rknnlink.model.dataset"):
        for _ in range(2):  # a second calibration pass does not warn again
            (s,) = list(read_dataset(write(tmp_path, ["big.png"], "b.txt"), [SHAPE], progress=False))
    expect = np.asarray(Image.fromarray(big).resize((SHAPE[3], SHAPE[2]), Image.BILINEAR), np.float32)
    np.testing.assert_array_equal(s.raw[0], expect.transpose(2, 0, 1)[None])  # resized as the toolkit does
    warnings = [r.getMessage() for r in caplog.records if "resized" in r.getMessage()]
    assert len(warnings) == 1 and "big.png" in warnings[0] and "5x6" in warnings[0], warnings
    assert f"{SHAPE[3]}x{SHAPE[2]}" in warnings[0]


def test_two_inputs_per_line_and_count_errors(tmp_path):
    np.save(tmp_path / "a.npy", np.ones(SHAPE, np.float32))
    np.save(tmp_path / "b.npy", np.full((1, 10), 2.0, np.float32))
    s = next(read_dataset(write(tmp_path, ["a.npy b.npy"]), [SHAPE, (1, 10)], progress=False))
    assert s.raw[1].shape == (1, 10) and s.raw[0].shape == SHAPE
    with pytest.raises(BuildError, match="2 inputs"):
        list(read_dataset(write(tmp_path, ["a.npy"], "one.txt"), [SHAPE, (1, 10)], progress=False))


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(BuildError, match="does not exist"):
        parse_dataset_file(tmp_path / "nope.txt")
    with pytest.raises(BuildError, match="no samples"):
        parse_dataset_file(write(tmp_path, ["# nothing"]))
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(BuildError, match="unsupported sample type"):
        list(read_dataset(write(tmp_path, ["x.txt"], "d.txt"), [SHAPE], progress=False))


def test_normalise_broadcasts_single_values():
    x = np.full((1, 3, 2, 2), 10.0, np.float32)
    np.testing.assert_array_equal(normalise(x, [4.0], [2.0], False), np.full_like(x, 3.0))


def test_without_shapes_files_are_taken_as_they_are(tmp_path):
    np.save(tmp_path / "a.npy", np.ones((3, 4, 5), np.float32))
    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(tmp_path / "b.png")
    s = next(read_dataset(write(tmp_path, ["a.npy b.png"]), progress=False))
    assert [r.shape for r in s.raw] == [(1, 3, 4, 5), (1, 3, 4, 5)]
