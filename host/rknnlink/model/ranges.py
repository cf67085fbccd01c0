"""Activation range choice beyond min/max for ``quantized_algorithm='normal'`` (rknnlink's
``activation_clipping`` option; off by default, so ``normal`` keeps meaning the toolkit's min/max).

``mmse`` clips every tensor to its MSE-optimal range, which helps transformers (outlier channels in a few
tensors) and costs CNNs (their tensors are short-tailed and every clipped value is a one-signed error that
the next layers add up). This module clips only where the histogram says it pays clearly: per tensor, the
candidates are min/max, percentile ranges (0.01 % / 0.001 % of the values cut from each side) and the
MSE-optimal range, and a clipped candidate replaces min/max only when it lowers the histogram-weighted
int8 quantise/dequantise error by at least ``CLIP_GAIN`` times. Heavy-tailed tensors (a few outliers
stretching the range, so most values share a handful of levels) pass that bar; short-tailed ones keep
min/max.
"""

from __future__ import annotations

import logging
from typing import Optional

import numpy as np

from .calibration import MMSE_BINS, QMAX, QMIN, TensorStats, mmse_range

LOG = logging.getLogger(__name__)

CLIP_GAIN = 2.0  # a clipped range must lower the quantisation MSE this many times to replace min/max
PERCENTILES = (1e-4, 1e-5)  # fraction of the values cut from each side
MODES = ("off", "auto")


def _centres(hist: np.ndarray, lo: float, hi: float) -> tuple:
    if len(hist) % MMSE_BINS == 0 and len(hist) > MMSE_BINS:
        hist = hist.reshape(MMSE_BINS, -1).sum(axis=1)
    edges = np.linspace(lo, hi, len(hist) + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    keep = hist > 0
    return centres[keep], hist[keep].astype(np.float64) / hist.sum()


def quantisation_mse(centres: np.ndarray, weights: np.ndarray, lo: float, hi: float) -> float:
    """Histogram-weighted squared error of int8 asymmetric quantise/dequantise with range [lo, hi]
    (widened to contain 0, as the quantiser does)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = max((hi - lo) / (QMAX - QMIN), 1e-12)
    zp = np.clip(np.round(QMIN - lo / scale), QMIN, QMAX)
    q = np.clip(np.round(centres / scale) + zp, QMIN, QMAX)
    return float((((q - zp) * scale - centres) ** 2 * weights).sum())


def _percentile_range(hist: np.ndarray, lo: float, hi: float, cut: float) -> tuple:
    cdf = np.cumsum(hist) / hist.sum()
    edges = np.linspace(lo, hi, len(hist) + 1)
    first = int(np.searchsorted(cdf, cut, side="right"))
    last = int(np.searchsorted(cdf, 1.0 - cut, side="left"))
    return float(edges[min(first, len(hist) - 1)]), float(edges[min(last + 1, len(hist))])


def clipped_range(stats: TensorStats, gain: float = CLIP_GAIN) -> tuple:
    """(lo, hi, name of the rule that won) for one tensor with a signed histogram over [min, max]."""
    lo, hi = stats.min, stats.max
    hist = stats.hist
    if hist is None or not np.isfinite(lo) or not np.isfinite(hi) or hi <= lo or hist.sum() == 0:
        return lo, hi, "minmax"
    centres, weights = _centres(hist, lo, hi)
    base = quantisation_mse(centres, weights, lo, hi)
    best = (base / gain, lo, hi, "minmax")
    candidates = [(*_percentile_range(hist, lo, hi, c), f"percentile {100 * (1 - c):g}") for c in PERCENTILES]
    candidates.append((*mmse_range(hist, lo, hi), "mse"))
    for c_lo, c_hi, rule in candidates:
        # a clipped end never crosses 0 (ReLU outputs keep their exact 0 at the low end)
        c_lo, c_hi = (lo if lo >= 0 else min(c_lo, 0.0)), (hi if hi <= 0 else max(c_hi, 0.0))
        if c_hi - c_lo <= 0:
            continue
        err = quantisation_mse(centres, weights, c_lo, c_hi)
        if err < best[0]:
            best = (err, c_lo, c_hi, rule)
    return best[1], best[2], best[3]


def clip_activation_ranges(stats: dict, mode: Optional[str], skip: frozenset = frozenset()) -> dict:
    """``stats`` with each tensor's min/max narrowed to :func:`clipped_range`'s choice (mode 'auto'),
    except the tensors in ``skip``; unchanged for 'off'/None."""
    if mode in (None, "off"):
        return stats
    if mode not in MODES:
        raise ValueError(f"activation_clipping={mode!r} is not supported; use one of {list(MODES)}")
    rules: dict = {}
    out = {}
    for name, st in stats.items():
        if name in skip or st.hist is None:
            out[name] = st
            continue
        lo, hi, rule = clipped_range(st)
        rules[rule] = rules.get(rule, 0) + 1
        if rule == "minmax":
            out[name] = st
            continue
        clipped = TensorStats(min=lo, max=hi, abs_hist=st.abs_hist, hist=None, channel_sum=st.channel_sum,
                              channel_count=st.channel_count)
        out[name] = clipped
    LOG.info("activation clipping: %s", ", ".join(f"{k} {v}" for k, v in sorted(rules.items())))
    return out
