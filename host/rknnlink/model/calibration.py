"""Calibration: activation ranges from sample data, and the three range-selection algorithms.

* normal: the observed min/max.
* kl_divergence: TensorRT's entropy threshold T on a 2048-bin histogram of |x| over all samples, never below
  the T that minimises the tensor's expected int8 error (:mod:`.entropy`). The range becomes
  [max(min, -T), min(max, T)], so one-sided tensors (after ReLU) keep their asymmetric [0, T] form.
* mmse: the clipping threshold T that minimises the expected squared int8 error (rounding noise inside
  [max(min, -T), min(max, T)], the clipped distance outside), on a 2048-bin histogram of x with every
  candidate T at once (a candidates x bins numpy array): milliseconds per tensor instead of the toolkit's
  full-data search. Outputs keep min/max; weights are searched only per tensor (quantized_method='layer').
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from .entropy import BALANCED, BALANCED_CUT, BALANCED_REACH, kl_range

HIST_BINS = 2048
MMSE_CANDIDATES = 100
MMSE_BINS = 512
QMIN, QMAX = -128, 127


@dataclass
class TensorStats:
    """Running statistics of one tensor over the calibration samples."""

    min: float = np.inf
    max: float = -np.inf
    abs_hist: Optional[np.ndarray] = None  # |x| histogram over [0, absmax]
    hist: Optional[np.ndarray] = None      # x histogram over [min, max]
    channel_sum: Optional[np.ndarray] = None  # per-channel sums (inputs of weighted layers: bias correction)
    channel_count: int = 0
    # inputs of Conv/Gemm/MatMul under weight_rounding='gptq': weight_rounding.hessian_key -> its Hessian
    hessians: Optional[dict] = None
    # the range an output-aware search chose (model/range_search.py); wins over the algorithm's own choice
    chosen: Optional[tuple] = None

    @property
    def absmax(self) -> float:
        return max(abs(self.min), abs(self.max))

    def update_range(self, x: np.ndarray) -> None:
        if x.size:
            self.min = min(self.min, float(np.min(x)))
            self.max = max(self.max, float(np.max(x)))

    def update_channel_mean(self, x: np.ndarray, axis: int) -> None:
        """Accumulate the mean of each channel along ``axis`` (the layer's input-channel axis)."""
        x = np.asarray(x, np.float64)
        moved = np.moveaxis(x, axis, 0).reshape(x.shape[axis], -1)
        total = moved.sum(axis=1)
        self.channel_sum = total if self.channel_sum is None else self.channel_sum + total
        self.channel_count += moved.shape[1]

    @property
    def channel_mean(self) -> Optional[np.ndarray]:
        if self.channel_sum is None or not self.channel_count:
            return None
        return self.channel_sum / self.channel_count

    def update_hist(self, x: np.ndarray, kinds: tuple = ("abs", "signed")) -> None:
        """Second pass: histograms over the ranges found in the first pass (|x| for KL, x for MMSE)."""
        x = x.ravel().astype(np.float32, copy=False)
        if "abs" in kinds:
            # Exact zeros (a ReLU's whole negative half) are coded exactly by any range: left in, their one
            # bin outweighs everything else and drags the entropy threshold down to the first candidate.
            nz = np.abs(x[x != 0])
            h = _uniform_hist(nz, 0.0, self.absmax or 1e-8)
            self.abs_hist = h if self.abs_hist is None else self.abs_hist + h
        if "signed" in kinds:
            lo, hi = (self.min, self.max) if self.max > self.min else (self.min - 1e-8, self.min + 1e-8)
            h = _uniform_hist(x, lo, hi)
            self.hist = h if self.hist is None else self.hist + h


def _uniform_hist(x: np.ndarray, lo: float, hi: float, bins: int = HIST_BINS) -> np.ndarray:
    """Histogram with equal bins over [lo, hi] (values outside go to the end bins); bincount is several
    times faster than np.histogram for this fixed-width case."""
    idx = ((x - np.float32(lo)) * np.float32(bins / (hi - lo))).astype(np.int32)
    np.clip(idx, 0, bins - 1, out=idx)
    return np.bincount(idx, minlength=bins).astype(np.int64)


def asymmetric_params(lo: float, hi: float) -> tuple:
    """int8 affine (scale, zero_point) covering [lo, hi]; the range always contains 0 (exact zero)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if hi - lo < 1e-8:
        hi = lo + 1e-8
    scale = (hi - lo) / (QMAX - QMIN)
    zp = int(np.clip(np.round(QMIN - lo / scale), QMIN, QMAX))
    return float(np.float32(scale)), zp


def mmse_range(hist: np.ndarray, lo: float, hi: float, candidates: int = MMSE_CANDIDATES) -> tuple:
    """Range [a*lo, b*hi] (a, b in (0, 1]) minimising the histogram-weighted int8 quantisation MSE, the
    error sampled at the bin centres; one of activation_clipping's candidates (model/ranges.py).

    The two ends are searched independently (asymmetric activations); each step evaluates all candidate
    upper ends at once over the histogram's bin centres. quantized_algorithm='mmse' no longer uses it
    (:func:`mmse_threshold_range`): bins wider than an int8 step make the sampled error wrong.
    """
    if hist is None or hist.sum() == 0 or hi <= lo:
        return lo, hi
    if len(hist) % MMSE_BINS == 0 and len(hist) > MMSE_BINS:
        # Bin widths stay far below the int8 step of any candidate range, so merging costs no accuracy.
        hist = hist.reshape(MMSE_BINS, -1).sum(axis=1)
    edges = np.linspace(lo, hi, len(hist) + 1)
    centers = ((edges[:-1] + edges[1:]) / 2)[None, :]
    keep = hist > 0
    centers, weights = centers[:, keep], (hist[keep].astype(np.float64) / hist.sum())[None, :]
    fractions = np.linspace(1.0 / candidates, 1.0, candidates)
    c_hi = np.maximum(fractions * hi, 0.0)[:, None]
    best = (np.inf, lo, hi)
    for a in (fractions[::2] if lo < 0 else [1.0]):
        c_lo = min(a * lo, 0.0)
        scale = np.maximum((c_hi - c_lo) / (QMAX - QMIN), 1e-12)
        zp = np.clip(np.round(QMIN - c_lo / scale), QMIN, QMAX)
        q = np.clip(np.round(centers / scale) + zp, QMIN, QMAX)
        mse = ((((q - zp) * scale - centers) ** 2) * weights).sum(axis=1)
        k = int(np.argmin(mse))
        if mse[k] < best[0]:
            best = (float(mse[k]), float(c_lo), float(c_hi[k, 0]))
    return best[1], best[2]


MMSE_THRESHOLDS = 512  # candidate thresholds T = k * absmax / MMSE_THRESHOLDS, k = 1..MMSE_THRESHOLDS


def mmse_threshold_range(hist: np.ndarray, lo: float, hi: float, candidates: int = MMSE_THRESHOLDS) -> tuple:
    """Range [max(lo, -T), min(hi, T)] whose int8 coding has the smallest expected squared error over the
    tensor's histogram (``hist``: x over [lo, hi]), T searched over ``candidates`` even steps of max|x|.

    The error of a candidate is modelled, not sampled: values inside the range carry rounding noise
    step^2 / 12 (step = the candidate's (hi - lo) / 255 after widening to contain 0), values outside the
    clipped distance to the nearer end (bin centres, plus the bin's own spread width^2 / 12). Sampling
    the rounding error at bin centres instead (what this function did before) is wrong whenever a bin is
    wider than an int8 step, which is the case for every narrow candidate on a long-tailed tensor: on
    PP-OCRv4 det's HardSwish outputs it kept 191 of a [-0.4, 230] tensor where the whole of the mass
    needed at most 58.

    One threshold for both ends, as RKNN-Toolkit2's mmse does (its ranges are [-T, T] cut to the observed
    [min, max]): a small negative end (HardSwish's -0.375) stays exact, and a signed tensor is clipped
    evenly. Searching the two ends independently clipped such small ends too, for a negligible MSE gain.
    """
    if hist is None or hist.sum() == 0 or hi <= lo:
        return lo, hi
    absmax = max(abs(lo), abs(hi))
    width = (hi - lo) / len(hist)
    keep = hist > 0
    centres = (lo + (np.arange(len(hist)) + 0.5) * width)[keep][None, :]
    weights = (hist[keep].astype(np.float64) / hist.sum())[None, :]
    t = (np.arange(1, candidates + 1) * (absmax / candidates))[:, None]
    c_lo, c_hi = np.minimum(np.maximum(lo, -t), 0.0), np.maximum(np.minimum(hi, t), 0.0)
    step = np.maximum((c_hi - c_lo) / (QMAX - QMIN), 1e-12)
    outside = np.maximum(centres - c_hi, 0.0) + np.maximum(c_lo - centres, 0.0)
    err = np.where(outside > 0, outside ** 2 + width ** 2 / 12.0, step ** 2 / 12.0)
    k = int(np.argmin((err * weights).sum(axis=1)))
    if k == candidates - 1:
        return lo, hi
    # a one-sided tensor keeps 0 as its other end (the quantiser widens every range to contain 0)
    return float(c_lo[k, 0]), float(c_hi[k, 0])


# Ops that move int8 values without arithmetic: their output reuses the input's quantisation.
PASS_THROUGH = ("Reshape", "Transpose", "MaxPool", "GlobalMaxPool", "Slice", "Split", "Expand", "Tile",
                "GatherElements")


def shares_input_quantisation(op_type: str, attrs: dict) -> bool:
    """Whether an op's output takes its input's int8 range (PASS_THROUGH, or a Pad with a mode: reflect and
    edge copy values, a constant Pad adds its value)."""
    return op_type in PASS_THROUGH or (op_type == "Pad" and bool(attrs.get("mode")))


def keep_balanced(lo: float, hi: float, r: tuple) -> tuple:
    """The whole [lo, hi] instead of the clipped ``r`` when the tensor is balanced and signed and ``r`` cuts
    it by 1.25-2x: the rule and bounds of :func:`.entropy.kl_range` (entropy.BALANCED*), applied to mmse's
    threshold too. Why: such tensors (U-Net's skip Concats and decoder convs) lose both tails, and the
    clips compound through the decoder; the per-tensor MSE does not see that. Corpus v2, mmse/channel:
    U-Net 0.97717 -> 0.97838 (toolkit 0.97800)."""
    absmax, t = max(-lo, hi), max(-r[0], r[1])
    if lo < 0 < hi and min(-lo, hi) >= BALANCED * absmax and BALANCED_CUT * t <= absmax <= BALANCED_REACH * t:
        return lo, hi
    return r


def choose_range(stats: TensorStats, algorithm: str) -> tuple:
    """(lo, hi) for one activation tensor under 'normal' | 'kl_divergence' | 'mmse'."""
    lo, hi = stats.min, stats.max
    if not np.isfinite(lo) or not np.isfinite(hi):
        return 0.0, 0.0
    if stats.chosen is not None:
        return stats.chosen
    # Each algorithm reads its own histogram (the builder collects only that one): a tensor without it
    # (never seen by the histogram pass) keeps its observed range.
    if algorithm == "normal":
        return lo, hi
    if algorithm == "kl_divergence":
        if stats.abs_hist is None:
            return lo, hi
        return kl_range(lo, hi, stats.abs_hist)
    if algorithm == "mmse":
        if stats.hist is None:
            return lo, hi
        return keep_balanced(lo, hi, mmse_threshold_range(stats.hist, lo, hi))
    raise ValueError(f"unknown quantized_algorithm {algorithm!r}; use 'normal', 'kl_divergence' or 'mmse'")


# Candidate clipping ratios of max|w| for the weight scale search (coarse near 1, where most channels land).
WEIGHT_CLIP_RATIOS = np.concatenate([np.linspace(1.0, 0.9, 11), np.linspace(0.88, 0.7, 10)]).astype(np.float32)


def _max_scales(moved: np.ndarray) -> np.ndarray:
    amax = np.max(np.abs(moved), axis=1) if moved.shape[1] else np.zeros(moved.shape[0], np.float32)
    return np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)


def weight_scales(moved: np.ndarray) -> np.ndarray:
    """Per-row symmetric int8 scale minimising the squared rounding error of that row (rows = channels).

    max|w| / 127 keeps the largest weight exact but spends levels on one outlier; a slightly smaller
    scale clips it and halves the step for the others. The ratio of max|w| is searched over
    WEIGHT_CLIP_RATIOS; 1.0 is a candidate, so the error is never above plain min/max's.
    """
    base = _max_scales(moved)
    best_err = np.full(moved.shape[0], np.inf)
    best = base.copy()
    for ratio in WEIGHT_CLIP_RATIOS:
        s = (base * ratio)[:, None]
        err = np.square(np.clip(np.round(moved / s), -127, 127) * s - moved).sum(axis=1, dtype=np.float64)
        better = err < best_err
        best_err[better], best[better] = err[better], s[better, 0]
    return best.astype(np.float32)


def quantize_weights(w: np.ndarray, axis: Optional[int], search: bool = False,
                     ratios: Optional[np.ndarray] = None) -> tuple:
    """Symmetric int8 weights (zero point 0, levels -127..127), per channel along ``axis`` or per tensor:
    scale max|w| / 127, or with ``search`` (quantized_algorithm='mmse') the one :func:`weight_scales`
    finds, or ``ratios`` (one per channel, or one) times max|w| / 127 (range_search's output-aware choice).

    Returns (q int8 array, scales float32 array: one per channel, or shape (1,) per tensor).
    """
    w = np.asarray(w, dtype=np.float32)
    pick = weight_scales if search else _max_scales
    if ratios is not None:
        def pick(m: np.ndarray) -> np.ndarray:
            return (_max_scales(m) * np.asarray(ratios, np.float32)).astype(np.float32)
    if axis is None:
        scales = pick(w.reshape(1, -1))
        q = np.clip(np.round(w / scales[0]), -127, 127).astype(np.int8)
        return q, scales
    moved = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
    scales = pick(moved)
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.clip(np.round(w / scales.reshape(shape)), -127, 127).astype(np.int8)
    return q, scales


def quantize_weights_affine(w: np.ndarray, axis: Optional[int]) -> tuple:
    """Asymmetric int8 weights: per channel along ``axis`` (or per tensor) scale (max - min) / 255 over the
    channel's own range widened to contain 0, zero point round(-128 - min / scale), levels -128..127.

    The range of every level is used even when the channel is skewed (one sign dominates), which halves the
    step of a channel whose weights are all of one sign against max|w| / 127.
    Returns (q int8 array, scales float32, zero points int32), one per channel (shape (1,) per tensor).
    """
    w = np.asarray(w, dtype=np.float32)
    moved = w.reshape(1, -1) if axis is None else np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
    if moved.shape[1]:
        lo = np.minimum(moved.min(axis=1), 0.0).astype(np.float64)
        hi = np.maximum(moved.max(axis=1), 0.0).astype(np.float64)
    else:
        lo = hi = np.zeros(moved.shape[0])
    span = hi - lo
    scales = np.where(span > 0, span / 255.0, 1.0).astype(np.float32)
    zps = np.clip(np.round(QMIN - lo / scales.astype(np.float64)), QMIN, QMAX).astype(np.int32)
    shape = [1] * w.ndim
    if axis is not None:
        shape[axis] = -1
    q = np.round(w / scales.reshape(shape)) + zps.reshape(shape)
    return np.clip(q, QMIN, QMAX).astype(np.int8), scales, zps


def weight_error_shift(w: np.ndarray, w_dequantised: np.ndarray, input_mean: np.ndarray, op_type: str,
                       group: int = 1, trans_b: int = 0) -> Optional[np.ndarray]:
    """Expected output shift per output channel that weight rounding causes: (Wq - W) applied to the
    layer's mean input (per input channel, spatially constant; padding ignored). Subtracting it from the
    bias is the analytic bias correction of Nagel et al. (data-free quantization, 2019). None for layouts
    it does not cover."""
    dw = np.asarray(w_dequantised, np.float64) - np.asarray(w, np.float64)
    m = np.asarray(input_mean, np.float64)
    if op_type == "Conv":
        cout, cin_g = dw.shape[:2]
        if m.size != cin_g * group or cout % group:
            return None
        per = dw.reshape(cout, cin_g, -1).sum(axis=2)  # (cout, cin/g)
        groups_in = m.reshape(group, cin_g)
        out_group = np.arange(cout) // (cout // group)
        return np.einsum("oc,oc->o", per, groups_in[out_group])
    if op_type == "Gemm":
        mat = dw if trans_b else dw.T  # (N, K)
        return mat @ m if m.size == mat.shape[1] else None
    return None


def quantize_bias(b: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """int32 bias with the given per-channel (or broadcast scalar) scales sx * sw."""
    q = np.round(np.asarray(b, dtype=np.float64) / scales.astype(np.float64))
    return np.clip(q, -(2 ** 31), 2 ** 31 - 1).astype(np.int32)
