"""Calibration algorithms on synthetic distributions with known answers, and weight/bias quantisation."""

import numpy as np
import pytest
from factories import quant_mse, stats_of

from rknnlink.model.calibration import (
    asymmetric_params,
    choose_range,
    mmse_range,
    mmse_threshold_range,
    quantize_bias,
    quantize_weights,
)
from rknnlink.model.entropy import error_threshold, expected_error, kl_threshold


def test_normal_is_min_max():
    x = np.random.default_rng(0).uniform(-3, 5, 100_000)
    lo, hi = choose_range(stats_of(x), "normal")
    assert (lo, hi) == (x.min(), x.max())


def test_asymmetric_params_cover_the_range_and_represent_zero():
    scale, zp = asymmetric_params(-1.0, 3.0)
    assert scale == pytest.approx(4.0 / 255, rel=1e-6)
    assert -128 <= zp <= 127 and (-128 - zp) * scale == pytest.approx(-1.0, abs=scale)
    scale, zp = asymmetric_params(0.5, 2.0)  # the range is widened to include 0
    assert zp == -128 and scale == pytest.approx(2.0 / 255, rel=1e-6)
    scale, zp = asymmetric_params(0.0, 0.0)
    assert scale > 0 and np.isfinite(scale)


def test_kl_clips_outliers_of_a_gaussian():
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.standard_normal(400_000), [60.0, -55.0]])
    st = stats_of(x)
    lo, hi = choose_range(st, "kl_divergence")
    # The entropy threshold of N(0, 1) in 8 bits lies far inside the outliers; the range keeps the larger
    # error-minimising threshold (two values 50 away cost as much as the rounding of all the others).
    assert kl_threshold(st.abs_hist, st.absmax, 128) < 10
    assert hi == pytest.approx(error_threshold(st.abs_hist, st.absmax, 128)) and hi < 40 and lo == -hi
    bulk = x[:-2]  # the two outliers are traded for resolution on everything else
    assert quant_mse(bulk, lo, hi) < quant_mse(bulk, x.min(), x.max()) / 3
    assert quant_mse(x, lo, hi) < quant_mse(x, x.min(), x.max())


def test_kl_keeps_a_uniform_distribution_whole():
    x = np.random.default_rng(2).uniform(0, 10, 200_000)
    st = stats_of(x)
    t = kl_threshold(st.abs_hist, st.absmax)
    assert t > 0.9 * 10
    lo, hi = choose_range(st, "kl_divergence")
    assert lo == pytest.approx(x.min()) and hi > 9.0


def test_kl_on_relu_outputs_is_not_dragged_down_by_the_zeros():
    # Half the values of a ReLU output are exactly 0; the builder collects only the |x| histogram for KL.
    rng = np.random.default_rng(5)
    x = np.maximum(rng.standard_normal(400_000), 0.0)
    st = stats_of(x)
    st.hist = None  # what the builder has under kl_divergence
    lo, hi = choose_range(st, "kl_divergence")
    assert lo == 0.0 and hi > 2.5  # with the zeros counted the threshold fell to the first candidate (x.max/16)
    assert quant_mse(x, lo, hi) <= quant_mse(x, 0.0, x.max())


def test_kl_keeps_min_max_where_its_clip_would_raise_the_error():
    # A spread one-sided distribution: the entropy threshold clips a large share of it; the expected int8 error
    # is then higher than with the whole range, so the whole range is kept.
    x = np.random.default_rng(6).exponential(2.0, 400_000)
    st = stats_of(x)
    t = kl_threshold(st.abs_hist, st.absmax, 256)
    lo, hi = choose_range(st, "kl_divergence")
    if hi < x.max():  # KL's clip was taken: it must not be worse than min/max
        assert quant_mse(x, lo, hi) <= quant_mse(x, x.min(), x.max())
    else:
        assert t < x.max() and quant_mse(x, 0, t) > quant_mse(x, x.min(), x.max())


def heavy_tailed(seed: int = 7) -> np.ndarray:
    """Student's t with 3 degrees of freedom: a peaked bulk and a tail that still carries real mass, where
    pure entropy calibration clips far into values that matter (PP-OCRv4 det's first conv: T = 2.9 of 15.7)."""
    return np.random.default_rng(seed).standard_t(3, 400_000)


def test_expected_error_matches_measured_int8_error():
    # The histogram model of the int8 error is what picks the threshold floor: it must agree with really
    # quantising the samples (one-sided data, all 256 codes over [0, t]).
    x = np.random.default_rng(8).exponential(1.0, 200_000)
    st = stats_of(x)
    for t in (1.0, 3.0, 6.0, x.max()):
        model = expected_error(st.abs_hist, st.absmax, [t], 256)[0] / x.size
        assert model == pytest.approx(quant_mse(x, 0.0, t), rel=0.1)


def test_error_threshold_is_the_lowest_measured_error():
    x = heavy_tailed()
    st = stats_of(x)
    t = error_threshold(st.abs_hist, st.absmax, 128)
    best = min(quant_mse(x, -c, c) for c in np.linspace(2, st.absmax, 60))
    assert quant_mse(x, -t, t) <= 1.05 * best


def test_kl_never_clips_below_the_error_minimising_threshold():
    # Pure entropy calibration clips the tail away (T near the spike); the kl range keeps at least the
    # threshold that minimises the tensor's own int8 error, and codes the data better than both.
    x = heavy_tailed()
    st = stats_of(x)
    st.hist = None
    t_kl = kl_threshold(st.abs_hist, st.absmax, 128)
    t_err = error_threshold(st.abs_hist, st.absmax, 128)
    assert t_kl < t_err / 2  # the case the floor is for
    lo, hi = choose_range(st, "kl_divergence")
    assert hi >= t_err - 1e-6 and lo <= -t_err + 1e-6
    assert quant_mse(x, lo, hi) < quant_mse(x, -t_kl, t_kl) / 2
    assert quant_mse(x, lo, hi) <= quant_mse(x, x.min(), x.max())


def test_kl_decides_where_its_threshold_is_above_the_error_floor():
    # A Laplace distribution: the entropy threshold lies a little above the error-minimising one, so the
    # range is KL's (wider, keeping more of the tail), still well inside the observed extremes.
    x = np.random.default_rng(9).laplace(0, 1.0, 400_000)
    st = stats_of(x)
    t_kl = kl_threshold(st.abs_hist, st.absmax, 128)
    t_err = error_threshold(st.abs_hist, st.absmax, 128)
    assert t_kl > t_err
    lo, hi = choose_range(st, "kl_divergence")
    assert (lo, hi) == (pytest.approx(-t_kl), pytest.approx(t_kl))
    assert hi < 0.95 * st.absmax and quant_mse(x, lo, hi) < quant_mse(x, x.min(), x.max())


def test_mmse_beats_min_max_on_heavy_tails():
    # Its speed (a vectorised search, well under the toolkit's minute) is measured by bench/bench_build.py
    # ("int8 mmse"), not asserted here: a wall-clock bound depends on how loaded the machine is.
    # mmse's own threshold: choose_range keeps a balanced tensor such as this one whole
    # (calibration.keep_balanced; tests/model/test_mmse.py)
    rng = np.random.default_rng(3)
    x = rng.laplace(size=1_000_000)
    st = stats_of(x)
    lo, hi = mmse_threshold_range(st.hist, st.min, st.max)
    assert x.min() < lo < 0 < hi < x.max()
    assert quant_mse(x, lo, hi) < 0.8 * quant_mse(x, x.min(), x.max())


def test_mmse_handles_one_sided_data():
    x = np.abs(np.random.default_rng(4).standard_normal(100_000))
    st = stats_of(x)
    lo, hi = mmse_range(st.hist, st.min, st.max)
    assert lo == 0.0 and 0 < hi <= st.max  # one-sided data keeps the whole [0, hi] range


def test_unknown_algorithm_is_rejected():
    with pytest.raises(ValueError, match="quantized_algorithm"):
        choose_range(stats_of(np.arange(10.0)), "gdq")


def test_per_channel_weights_are_symmetric_and_exact_at_the_extremes():
    rng = np.random.default_rng(5)
    gains = np.array([1, 10, 0.1, 0], np.float32)[:, None, None, None]
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32) * gains
    q, scales = quantize_weights(w, 0)
    assert q.dtype == np.int8 and scales.shape == (4,)
    assert np.all(np.abs(q) <= 127)
    for c in range(3):
        assert np.max(np.abs(q[c])) == 127
        np.testing.assert_allclose(q[c] * scales[c], w[c], atol=scales[c] / 2 + 1e-7)
    assert scales[3] == 1.0 and not q[3].any()  # an all-zero channel gets a valid scale
    q_layer, s_layer = quantize_weights(w, None)
    assert s_layer.shape == (1,) and s_layer[0] == pytest.approx(np.abs(w).max() / 127)
    q_t, s_t = quantize_weights(w.transpose(1, 0, 2, 3), 1)
    np.testing.assert_array_equal(q_t, q.transpose(1, 0, 2, 3))


def test_bias_quantisation_uses_input_times_weight_scale():
    b = np.array([0.5, -1.25, 3.0])
    scales = np.array([0.01, 0.001, 0.1], np.float32)
    q = quantize_bias(b, scales)
    assert q.dtype == np.int32
    assert np.all(np.abs(q * scales.astype(np.float64) - b) <= scales / 2 + 1e-9)
    assert quantize_bias(np.array([1e12]), np.array([1e-3]))[0] == 2 ** 31 - 1


def test_mmse_weight_scales_clip_heavy_tails_and_lower_the_rounding_error():
    rng = np.random.default_rng(9)
    w = rng.laplace(size=(6, 4096)).astype(np.float32)  # heavy tails: max|w| / 127 wastes levels on a few
    w[5] = rng.uniform(-1, 1, 4096)  # no tail: nothing to clip, the max scale stays
    q_max, s_max = quantize_weights(w, 0)
    q_mse, s_mse = quantize_weights(w, 0, search=True)

    def err(q, s):
        return ((q * s[:, None] - w) ** 2).sum(axis=1)

    assert (s_mse[:5] < s_max[:5]).sum() >= 3 and s_mse[5] == s_max[5]
    assert np.all(err(q_mse, s_mse) <= err(q_max, s_max))
    assert err(q_mse, s_mse)[:5].sum() < 0.97 * err(q_max, s_max)[:5].sum()


def skewed_signed() -> np.ndarray:
    """A Concat of a ReLU branch with a long positive tail and a small signed branch (U-Net's skip joins)."""
    rng = np.random.default_rng(16)
    relu = np.maximum(rng.gamma(0.8, 2.0, 300_000) - 0.5, 0.0)
    small = rng.normal(0.0, 0.7, 150_000).clip(-2.7, 2.5)
    return np.concatenate([relu, small]).astype(np.float32)


def test_expected_error_of_a_skewed_signed_tensor_uses_the_asymmetric_step():
    # [-2.7, t] gets 255 steps of (t + 2.7) / 255, not t / 128: the model must agree with quantising it
    x = skewed_signed()
    st = stats_of(x)
    other = -float(x.min())
    for t in (4.0, 7.0, float(x.max())):
        model = expected_error(st.abs_hist, st.absmax, [t], 128, other_side=other)[0] / x.size
        assert model == pytest.approx(quant_mse(x, x.min(), t), rel=0.15)


def test_kl_keeps_the_long_side_of_a_skewed_signed_tensor():
    # The symmetric error model (step t / 128) clipped the long positive side too far (1.16x the best
    # error here); the chosen range must code the tensor about as well as the best clip of that side.
    x = skewed_signed()
    st = stats_of(x)
    st.hist = None
    lo, hi = choose_range(st, "kl_divergence")
    assert lo == pytest.approx(float(x.min()))
    best = min(quant_mse(x, x.min(), c) for c in np.linspace(3, x.max(), 80))
    assert quant_mse(x, lo, hi) <= 1.05 * best


def test_kl_keeps_the_whole_range_of_a_balanced_heavy_tailed_tensor_only():
    """A balanced signed tensor that KL would cut by BALANCED_CUT..BALANCED_REACH (Student-t, 5 degrees)
    keeps its observed range; a lightly cut one (a Gaussian) keeps KL's threshold, and so does a skewed one
    with the same tails (its short side under BALANCED of the long)."""
    from rknnlink.model.entropy import BALANCED_CUT, BALANCED_REACH, kl_range

    rng = np.random.default_rng(12)
    heavy = rng.standard_t(5, 400_000)
    st = stats_of(heavy)
    t = max(kl_threshold(st.abs_hist, st.absmax, 128),
            error_threshold(st.abs_hist, st.absmax, 128, other_side=min(-st.min, st.max)))
    assert BALANCED_CUT * t <= st.absmax <= BALANCED_REACH * t
    assert kl_range(st.min, st.max, st.abs_hist) == (st.min, st.max)
    light = stats_of(rng.standard_normal(400_000))
    assert kl_range(light.min, light.max, light.abs_hist) != (light.min, light.max)
    skewed = stats_of(np.where(heavy < 0, 0.1 * heavy, heavy))
    lo, hi = kl_range(skewed.min, skewed.max, skewed.abs_hist)
    assert hi < skewed.max
