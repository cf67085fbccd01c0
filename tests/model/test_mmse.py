"""quantized_algorithm='mmse': the range search's error model on long-tailed tensors (PP-OCR's HardSwish
outputs), its single threshold, and which weights and tensors it leaves alone."""

import factories as fac
import numpy as np
import pytest
from factories import quant_mse, stats_of

from rknnlink.model.builder import BuildConfig, build, load_onnx
from rknnlink.model.calibration import choose_range, mmse_threshold_range

MEAN, STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]


def hardswish_like(seed: int = 0) -> np.ndarray:
    """A HardSwish output as PP-OCRv4 det has them: min exactly -0.375, the bulk within a few units, and a
    sparse tail out to ~230 (its hardswish_59 spans [-0.375, 230] where 58 covers nearly all values)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.5, 1.5, 2_000_000)
    x = x * np.clip(x + 3, 0, 6) / 6
    return np.concatenate([x, [-0.375, 150.0, 230.0]]).astype(np.float32)


def test_long_tail_range_is_near_the_true_mse_optimum():
    x = hardswish_like()
    st = stats_of(x)
    lo, hi = mmse_threshold_range(st.hist, st.min, st.max)
    # the true optimum over the data itself (not the histogram), on a fine grid of upper ends
    grid = np.linspace(1.0, float(x.max()), 400)
    errors = [quant_mse(x, float(x.min()), t) for t in grid]
    best = float(min(errors))
    # Sampling the rounding error at histogram bin centres (wider than an int8 step for every narrow
    # candidate) chose [-0.21, 106] here, at twice the optimum's error (which clips at about 86).
    assert quant_mse(x, lo, hi) <= 1.1 * best, (lo, hi, grid[int(np.argmin(errors))])


def test_small_negative_end_stays_exact():
    x = hardswish_like(1)
    st = stats_of(x)
    lo, _ = mmse_threshold_range(st.hist, st.min, st.max)
    assert lo == st.min == pytest.approx(-0.375)  # one threshold T for both ends: |min| < T keeps min


def test_signed_tensor_is_clipped_by_one_threshold():
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.laplace(size=500_000), [-30.0, 20.0]])
    st = stats_of(x)
    lo, hi = mmse_threshold_range(st.hist, st.min, st.max)
    assert lo == pytest.approx(-hi, rel=1e-9) and hi < 15
    assert quant_mse(x, lo, hi) < 0.5 * quant_mse(x, x.min(), x.max())


def test_flat_data_keeps_min_max():
    x = np.random.default_rng(3).uniform(-2, 3, 200_000)
    st = stats_of(x)
    lo, hi = mmse_threshold_range(st.hist, st.min, st.max)
    assert lo == pytest.approx(st.min, abs=0.05) and hi == pytest.approx(st.max, abs=0.05)


def test_balanced_signed_tensor_keeps_its_whole_range():
    """A signed tensor with both tails alike (U-Net's skip Concats) that mmse would cut by 1.25-2x keeps
    its whole range (the kl_divergence rule of entropy.kl_range); a nearly one-sided one keeps its clip."""
    x = np.random.default_rng(0).laplace(size=500_000)
    st = stats_of(x)
    lo, hi = mmse_threshold_range(st.hist, st.min, st.max)
    assert 1.25 * hi <= st.absmax <= 2 * hi  # the premise: mmse cuts it within the rule's bounds
    assert choose_range(st, "mmse") == (st.min, st.max)
    tail = stats_of(hardswish_like())
    assert choose_range(tail, "mmse") == mmse_threshold_range(tail.hist, tail.min, tail.max)
    assert choose_range(tail, "mmse")[1] < 0.5 * tail.max


def test_bias_correction_default_is_empirical_for_mmse_per_channel_only():
    modes = {(alg, method): BuildConfig(quantized_algorithm=alg, quantized_method=method).bias_correction_mode()
             for alg in ("normal", "kl_divergence", "mmse") for method in ("channel", "layer")}
    assert modes == {("normal", "channel"): "empirical", ("normal", "layer"): "empirical",
                     ("kl_divergence", "channel"): "analytic", ("kl_divergence", "layer"): "analytic",
                     ("mmse", "channel"): "empirical", ("mmse", "layer"): "analytic"}
    assert BuildConfig(quantized_algorithm="mmse", bias_correction="analytic").bias_correction_mode() == "analytic"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return fac.write_npy_dataset(tmp_path_factory.mktemp("mmse") / "calib", fac.smooth_images(4, 128, seed=9))


def _build(dataset, method):
    cfg = BuildConfig(mean_values=[MEAN], std_values=[STD], progress=False, quantized_algorithm="mmse",
                      quantized_method=method)
    return build(load_onnx(fac.yolo_like()), cfg, True, dataset)


def _weight_clip_ratios(result) -> list:
    """Per symmetric weight: 127 * scale / max|w| of each channel (1.0 = max|w| kept)."""
    out = []
    for qp in result.quant_params.values():
        if qp["qtype"] == "sym" and qp["dtype"] == "int8":
            absmax = np.maximum(np.abs(qp["ori_min"]), np.abs(qp["ori_max"]))
            out.append(np.asarray(qp["max"]) / np.where(absmax > 0, absmax, 1.0))
    return out


def test_mmse_searches_weight_scales_only_per_tensor(dataset):
    """Per channel the weights keep max|w| / 127 (clipping lost on PP-OCRv4 rec); per tensor the widest
    channel is clipped so the others get finer steps."""
    per_channel = _weight_clip_ratios(_build(dataset, "channel"))
    assert per_channel and all(np.allclose(r, 1.0, rtol=1e-5) for r in per_channel)
    per_tensor = _weight_clip_ratios(_build(dataset, "layer"))
    assert per_tensor and all(r.shape == (1,) for r in per_tensor)
    assert any(r[0] < 0.99 for r in per_tensor)


def test_model_outputs_keep_min_max(dataset):
    """A model's output keeps its observed range under mmse, as under kl_divergence: its rare large values
    (a top logit, a confident score) are the answer."""
    result = _build(dataset, "channel")
    m = result.sim_model
    for o in m.outputs:
        qp = result.quant_params[m.tensors[o.tensor].name]
        assert (qp["min"][0], qp["max"][0]) == (qp["ori_min"][0], qp["ori_max"][0])
    inner = [v for k, v in result.quant_params.items()
             if v["qtype"] == "asym" and v["dtype"] == "int8" and (v["min"][0], v["max"][0]) != (v["ori_min"][0],
                                                                                                    v["ori_max"][0])]
    assert inner  # the other tensors are still searched
