"""quantized_algorithm='kl_divergence': the entropy threshold of an activation tensor, and the range built on it.

The builder collects, per tensor, a histogram of |x| over [0, absmax] with the exact zeros left out
(:meth:`TensorStats.update_hist`). From it:

* :func:`kl_threshold` is TensorRT's entropy calibration: for every candidate threshold bin i the reference
  distribution P (bins [0, i), the outliers folded into the last one) is compared with Q, P merged into
  ``levels`` quantised bins and spread back over its non-empty bins; the T with the smallest KL(P || Q) wins.
* :func:`error_threshold` is the T that minimises the tensor's own expected int8 error on the same
  histogram (rounding noise inside [0, T], the clipped distance outside).
* :func:`kl_range` takes the larger of the two. The entropy threshold alone clips hard on spread,
  heavy-tailed tensors (the first conv of PP-OCRv4 det: T = 2.9 of 15.7; HardSwish outputs) and those clips
  compound through a network (MobileNetV3-S fell to 0.23 cosine, det to 0.967); the error-minimising T is
  the floor, below which a clip only adds error to the tensor itself. Above that floor KL decides how far
  to clip the tail: a histogram's few large values often sit where the next layers do not need them (det:
  0.98754 with the min/max fallback the guard used before, 0.9912 with this floor; the toolkit 0.99216).
"""

from __future__ import annotations

import numpy as np

KL_LEVELS = 128
ERROR_CANDIDATES = 128
BALANCED = 0.3  # a signed tensor is balanced when its short side is at least this fraction of its long one
BALANCED_CUT = 1.25  # ... and KL would cut at least this much off it
BALANCED_REACH = 2.0  # ... and keeps its whole range when that is at most this many times the threshold
TWO_SIDED = 0.1  # a signed tensor is two-sided when its short side is at least this fraction of its long one


def levels_for(lo: float, hi: float) -> int:
    """Quantised levels one side of the tensor gets: 128 per side for a signed range, all 256 int8 codes
    for a one-sided one (after ReLU, or HardSwish's small negative part folded into |x|)."""
    return KL_LEVELS if lo < 0 < hi else 2 * KL_LEVELS


def kl_threshold(abs_hist: np.ndarray, absmax: float, levels: int = KL_LEVELS) -> float:
    """TensorRT-style entropy calibration threshold for a histogram of |x| over [0, absmax]."""
    hist = abs_hist.astype(np.float64)
    n_bins = len(hist)
    if hist.sum() == 0 or absmax <= 0:
        return absmax
    bin_width = absmax / n_bins
    best_kl, best_i = np.inf, n_bins
    for i in range(levels, n_bins + 1):
        p = hist[:i].copy()
        p[-1] += hist[i:].sum()
        nonzero = p != 0  # after folding the outliers in, as TensorRT/MXNet do
        # Merge the i reference bins into `levels` quantised bins, then spread each back evenly over its
        # non-empty source bins.
        edges = (np.arange(levels + 1) * i) // levels
        sums = np.add.reduceat(hist[:i], edges[:-1])
        counts = np.add.reduceat(nonzero.astype(np.float64), edges[:-1])
        avg = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)
        q = np.repeat(avg, np.diff(edges)) * nonzero
        kl = _kl(p, q)
        if kl < best_kl:
            best_kl, best_i = kl, i
    return (best_i + 0.5) * bin_width


def expected_error(abs_hist: np.ndarray, absmax: float, thresholds: np.ndarray, levels: int,
                   other_side: float | None = None) -> np.ndarray:
    """Expected squared int8 error of |x| (histogram over [0, absmax]) coded with ``levels`` steps over
    [0, t], for every t of ``thresholds`` at once: rounding noise (step^2 / 12) inside, the clipped distance
    outside.

    ``other_side`` (a signed tensor's smaller end, as a magnitude) makes the step what the asymmetric
    quantiser really uses: (t + min(t, other_side)) / 255 for the range [-min(t, other_side), t]. A
    skewed tensor (a Concat of a ReLU branch [0, 8.4] and a ConvTranspose branch [-2.7, 2.5]) then gets the
    fine step its 256 codes give it, not t / 128 as if its range were [-t, t], which made the error
    model clip its long side too hard (U-Net's Concats 8.4 -> 5.3; the toolkit keeps 6.3)."""
    t = np.atleast_1d(np.asarray(thresholds, np.float64))[:, None]
    centres = ((np.arange(len(abs_hist)) + 0.5) * (absmax / len(abs_hist)))[None, :]
    step = t / levels if other_side is None else (t + np.minimum(t, other_side)) / (2 * KL_LEVELS - 1)
    err = np.where(centres <= t, step * step / 12.0, (centres - t) ** 2)
    return err @ abs_hist.astype(np.float64)


def error_threshold(abs_hist: np.ndarray, absmax: float, levels: int,
                    candidates: int = ERROR_CANDIDATES, other_side: float | None = None) -> float:
    """The threshold in (0, absmax] (``candidates`` even steps) with the smallest :func:`expected_error`."""
    if abs_hist.sum() == 0 or absmax <= 0:
        return absmax
    ts = np.arange(1, candidates + 1) * (absmax / candidates)
    return float(ts[int(np.argmin(expected_error(abs_hist, absmax, ts, levels, other_side)))])


def kl_range(lo: float, hi: float, abs_hist: np.ndarray) -> tuple:
    """(lo, hi) under kl_divergence for a tensor observed over [lo, hi] with this |x| histogram."""
    absmax = max(abs(lo), abs(hi))
    levels = levels_for(lo, hi)
    # The asymmetric quantiser's real step for a two-sided tensor (see expected_error). A nearly one-sided
    # one (HardSwish outputs [-0.375, 78], Paddle's affine after them) keeps the coarser t / 128 model and
    # so its harder clip: with the real step there too, PP-OCRv4 det fell 0.98782 -> 0.98294, below
    # RKNN-Toolkit2's 0.98442, which clips those tensors harder still (78 -> 49).
    short = min(abs(lo), abs(hi))
    other = short if lo < 0 < hi and short >= TWO_SIDED * absmax else None
    t = max(kl_threshold(abs_hist, absmax, levels), error_threshold(abs_hist, absmax, levels, other_side=other))
    # A balanced signed tensor that KL would cut by 1.25-2x keeps its whole range: its tails on both sides
    # are signal the next layers read, and a clip there compounds (U-Net's skip Concats and decoder convs,
    # cut 1.27-1.68x: kl/channel 0.98095 -> 0.98681 against RKNN-Toolkit2's 0.98412, kl/layer 0.98007 ->
    # 0.98601 against 0.98331). Lighter cuts stay (ViT-Ti's residual stream and projections, 1.00-1.20x:
    # keeping those whole cost it 0.99515 -> 0.99454, below the toolkit's 0.99470), as do cuts of a few far
    # outliers (over 2x: the resolution of the rest matters more).
    if other is not None and short >= BALANCED * absmax and BALANCED_CUT * t <= absmax <= BALANCED_REACH * t:
        return lo, hi
    # Both thresholds come from one histogram; where T would still code the tensor worse than its whole
    # range (a flat distribution, a coarse grid), the whole range stays.
    err_t, err_full = expected_error(abs_hist, absmax, [t, absmax], levels, other)
    if err_t > err_full:
        return lo, hi
    return max(lo, -t), min(hi, t)


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    ps, qs = p.sum(), q.sum()
    if ps == 0 or qs == 0:
        return np.inf
    p, q = p / ps, q / qs
    mask = p > 0
    if np.any(q[mask] == 0):
        return np.inf
    return float(np.sum(p[mask] * np.log(p[mask] / q[mask])))
