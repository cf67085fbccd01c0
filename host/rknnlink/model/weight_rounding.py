"""Error-compensating int8 weight rounding (GPTQ, Frantar et al. 2022, after optimal brain quantisation).

Nearest rounding minimises each weight's own error; what matters is the layer's output error. For one
output channel with weights w, levels q and scale s, the squared output error over the calibration inputs
is (w - s q) H (w - s q)^T with H = sum over positions of x x^T (x the layer's fp32 input patch: an im2col
column of in_channels/group * kh * kw values for a Conv, an input row for a Gemm/MatMul). GPTQ rounds the
input dimensions one at a time and moves each rounding error onto the dimensions not yet rounded, weighted
by the Cholesky factor of H^-1, so that correlated inputs absorb it.

Only the levels change: the scales (per channel or per tensor, range_search's ratios included) stay what
the builder chose, so the int8 format, the simulator and the bias handling do not change. The statistics
are the layer's fp32 input (GPTQ's usual choice), not its int8 one.

Grouped and depthwise convolutions have one H per group (a 3x3 depthwise channel: 9 x 9); all groups are
rounded together as a batch of small problems.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

# of H's mean diagonal, added to the diagonal: keeps a rank-deficient H invertible. 0.1 (closer to nearest
# rounding) lost: normal/layer PP-OCRv4 rec 0.97054 -> 0.96101, MobileNetV3-S 0.71963 -> 0.71647
DAMPING = 0.01
SMALL = 64  # H of at most this size are factorised column by column (_small_cholesky_inverse)
BLOCK = 128  # columns rounded before the rest of the matrix is updated at once (one matmul per block)
# H accumulation reads at most this many patch values (positions x channels x kernel) per sample and layer:
# PP-OCRv4 det's early maps have ~100k positions, a few thousand already estimate a 144 x 144 H well.
# 1 << 20 halved det's and U-Net's build time but lost on rec/layer (0.97036 -> 0.96845) and
# EfficientNet-B0/layer (0.95983 -> 0.95769).
MAX_PATCH_VALUES = 1 << 22
MIN_POSITIONS = 256
# Weights with more input dimensions per output channel keep nearest rounding: H's factorisation grows
# as K^3, and ResNet-18's 3x3 layers over 256/512 channels (K = 2304/4608) made its normal/layer build 35 s
# instead of 12 s for the same fidelity (0.99575 / 0.99576); PP-OCRv4 rec 0.97054 -> 0.97036.
MAX_DIMS = 2048


def hessian_key(op_type: str, attrs: dict) -> Optional[tuple]:
    """What H depends on besides the input tensor (two layers reading one tensor share H only when their
    patches are the same); None for layers this module does not round."""
    if op_type == "Conv":
        kernel = tuple(attrs.get("kernel_shape", ()))
        if len(kernel) not in (1, 2):
            return None
        return ("Conv", kernel, tuple(attrs.get("strides", ())), tuple(attrs.get("pads", ())),
                tuple(attrs.get("dilations", ())), int(attrs.get("group", 1)))
    if op_type == "Gemm":
        return ("Gemm", int(attrs.get("transA", 0)))
    if op_type == "MatMul":
        return ("MatMul",)
    return None


def rounded_layer_key(op_type: str, attrs: dict, w: np.ndarray) -> Optional[tuple]:
    """The :func:`hessian_key` of a layer whose weight ``w`` GPTQ rounds, or None: layouts it does not
    cover, and weights with more than MAX_DIMS input dimensions per output channel."""
    key = hessian_key(op_type, attrs)
    mat = weight_matrix(np.asarray(w), op_type, attrs) if key is not None else None
    return key if mat is not None and mat.shape[2] <= MAX_DIMS else None


def _conv_patches(x: np.ndarray, key: tuple, rng: np.random.Generator) -> Optional[np.ndarray]:
    """(group, positions, in_channels/group * kh * kw) im2col columns of ``x`` (N, C, [H,] W), ordered
    as the weight's (c, kh, kw) flattening; at most MAX_PATCH_VALUES values (positions subsampled)."""
    _, kernel, strides, pads, dilations, group = key
    if x.ndim == 3:  # 1-D convolution: a 2-D one with height 1
        x = x[:, :, None, :]
        kernel, strides, dilations = (1, *kernel), (1, *strides), (1, *dilations)
        pads = (0, pads[0], 0, pads[1]) if len(pads) == 2 else (0, 0, 0, 0)
    if x.ndim != 4 or len(pads) != 4 or x.shape[1] % group:
        return None
    (kh, kw), (sh, sw), (dh, dw) = kernel, strides or (1, 1), dilations or (1, 1)
    xp = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    oh = (xp.shape[2] - dh * (kh - 1) - 1) // sh + 1
    ow = (xp.shape[3] - dw * (kw - 1) - 1) // sw + 1
    if oh <= 0 or ow <= 0:
        return None
    total = x.shape[0] * oh * ow
    per_position = x.shape[1] * kh * kw
    keep = min(total, max(MIN_POSITIONS, MAX_PATCH_VALUES // per_position))
    pos = np.arange(total) if keep == total else np.sort(rng.choice(total, keep, replace=False))
    n, rest = np.divmod(pos, oh * ow)
    oy, ox = np.divmod(rest, ow)
    cols = [xp[n, :, oy * sh + i * dh, ox * sw + j * dw] for i in range(kh) for j in range(kw)]  # each (P, C)
    patches = np.stack(cols, axis=2)  # (P, C, kh*kw)
    cin_g = x.shape[1] // group
    return patches.reshape(keep, group, cin_g * kh * kw).transpose(1, 0, 2)


def input_rows(x: np.ndarray, key: tuple) -> Optional[np.ndarray]:
    """(1, rows, K) inputs of a Gemm/MatMul whose weight has K input dimensions."""
    x = np.asarray(x, np.float32)
    if key[0] == "Gemm":
        if x.ndim != 2:
            return None
        return (x.T if key[1] else x)[None]
    return x.reshape(1, -1, x.shape[-1]) if x.ndim >= 1 else None


class Hessian:
    """Running H = sum of x x^T (per group) of one layer input and patch geometry.

    Patches are buffered and multiplied in one GEMM once they hold MAX_PATCH_VALUES values (or when H is
    read): ResNet-18's last layers see 49 positions per sample against K = 4608, and a 4608 x 49 by
    49 x 4608 product per sample is bound by writing its 21M outputs, not by arithmetic. float32: sums of
    products of float32 activations over a few dozen samples, far from its precision, at half float64's
    cost.
    """

    def __init__(self, key: tuple) -> None:
        self.key = key
        self._sum: Optional[np.ndarray] = None
        self._pending: list = []

    def add(self, x: np.ndarray, rng: np.random.Generator) -> None:
        """One sample's layer input (the whole tensor, as the layer reads it)."""
        x = np.asarray(x, np.float32)
        cols = _conv_patches(x, self.key, rng) if self.key[0] == "Conv" else input_rows(x, self.key)
        if cols is None or (self._pending and self._pending[0].shape[::2] != cols.shape[::2]):
            return
        self._pending.append(cols)
        if sum(c.size for c in self._pending) >= MAX_PATCH_VALUES:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        cols = np.concatenate(self._pending, axis=1)
        self._pending = []
        if cols.shape[0] == 1:
            h = (cols[0].T @ cols[0])[None]  # one group: a plain GEMM (numpy's batched matmul is slower)
        else:
            h = np.matmul(cols.transpose(0, 2, 1), cols)
        if self._sum is None:
            self._sum = h
        elif self._sum.shape == h.shape:
            self._sum += h

    def value(self) -> Optional[np.ndarray]:
        """H as (group, K, K) float32, or None when no sample fitted the geometry.

        Also where H has fewer patches than dimensions (rank-deficient: a classifier head or a
        squeeze-excitation layer sees one row per sample): keeping nearest rounding there was measured
        and lost (normal/layer MobileNetV3-S 0.71963 -> 0.71920, task m 0.818 -> 0.636; EfficientNet-B0
        0.95983 -> 0.95901); the damping keeps such an H usable."""
        self._flush()
        return self._sum


def accumulate_hessian(hessians: dict, key: tuple, x: np.ndarray, rng: np.random.Generator) -> None:
    """Add one sample's patches to ``hessians[key]`` (a :class:`Hessian`, created on first use)."""
    if key not in hessians:
        hessians[key] = Hessian(key)
    hessians[key].add(x, rng)


def _small_cholesky_inverse(h: np.ndarray) -> np.ndarray:
    """L^-1 (H = L L^T) for a batch of small H, column by column in numpy. Why not numpy.linalg: OpenBLAS
    threads each LAPACK call, and on a busy 2-core machine a 256 x 256 Cholesky took 0.1 s instead of
    0.6 ms (thread hand-offs); depthwise layers have a thousand 9 x 9 H per layer."""
    g, n, _ = h.shape
    low = np.zeros_like(h)
    for j in range(n):
        d = h[:, j, j] - np.einsum("gk,gk->g", low[:, j, :j], low[:, j, :j])
        if np.any(d <= 0) or not np.all(np.isfinite(d)):
            raise np.linalg.LinAlgError("H is not positive definite")
        low[:, j, j] = np.sqrt(d)
        low[:, j + 1:, j] = (h[:, j + 1:, j] - np.einsum("gik,gk->gi", low[:, j + 1:, :j], low[:, j, :j])
                             ) / low[:, j, j][:, None]
    inv = np.zeros_like(h)
    for i in range(n):
        inv[:, i, i] = 1.0 / low[:, i, i]
        inv[:, i, :i] = -np.einsum("gk,gkj->gj", low[:, i, :i], inv[:, :i, :i]) * inv[:, i, i][:, None]
    return inv


def _cholesky_inverse(h: np.ndarray) -> np.ndarray:
    """L^-1 for a batch of positive definite H = L L^T (L lower), by halves: with H = [[A, B^T], [B, C]],
    L11 = chol(A), L21 = B L11^-T, L22 = chol(C - L21 L21^T) and L^-1 = [[L11^-1, 0], [-L22^-1 L21 L11^-1,
    L22^-1]]. Matrix products only: numpy's own Cholesky of a 4608 x 4608 H (ResNet-18's 3x3 convolutions
    over 512 channels) is several times slower than the same work as GEMMs."""
    n = h.shape[-1]
    if n <= SMALL:
        return _small_cholesky_inverse(h)
    m = n // 2
    a_inv = _cholesky_inverse(h[:, :m, :m])
    l21 = np.matmul(h[:, m:, :m], a_inv.transpose(0, 2, 1))
    d_inv = _cholesky_inverse(h[:, m:, m:] - np.matmul(l21, l21.transpose(0, 2, 1)))
    out = np.zeros_like(h)
    out[:, :m, :m], out[:, m:, m:] = a_inv, d_inv
    out[:, m:, :m] = -np.matmul(np.matmul(d_inv, l21), a_inv)
    return out


def inverse_upper_factor(h: np.ndarray) -> np.ndarray:
    """Upper-triangular U with H^-1 = U^T U for a batch of positive definite H, without forming H^-1:
    with J the order reversal and J H J = L L^T, H^-1 = (J L^-1 J)^T (J L^-1 J) and J L^-1 J is upper
    triangular."""
    return _cholesky_inverse(np.ascontiguousarray(h[:, ::-1, ::-1]))[:, ::-1, ::-1]


def gptq_levels(w: np.ndarray, scales: np.ndarray, hessian: np.ndarray, qmin: int = -127, qmax: int = 127,
                damping: float = DAMPING, act_order: bool = True) -> np.ndarray:
    """Integer levels of ``w`` (group, rows, K) on ``scales`` (group, rows) that compensate each rounding
    error on the columns rounded after it, under ``hessian`` (group, K, K).

    Columns are rounded in order of decreasing H diagonal (``act_order``: the inputs with the most energy
    first, while the most columns are left to absorb their error). An input dimension that is always zero
    (zero diagonal) gets no compensation and takes the nearest level; a group whose damped H still cannot
    be factorised falls back to nearest rounding.
    """
    # float32 throughout, as GPTQ's own implementation: the damped H is well enough conditioned, and
    # the factorisation of a 4608 x 4608 H (ResNet-18's last 3x3 layers) takes half float64's time
    w = np.asarray(w, np.float32)
    s = np.asarray(scales, np.float32)[..., None]
    g, _, k = w.shape
    nearest = np.clip(np.round(w / s), qmin, qmax)
    h = np.array(hessian, np.float32, copy=True)
    diag = np.diagonal(h, axis1=1, axis2=2)
    dead = diag <= 0
    gi, di = np.nonzero(dead)
    h[gi, di, :] = 0.0
    h[gi, :, di] = 0.0
    h[gi, di, di] = 1.0
    mean_diag = np.array([d[~z].mean() if (~z).any() else 1.0 for d, z in zip(diag, dead)], np.float32)
    h[:, np.arange(k), np.arange(k)] += (damping * mean_diag)[:, None]
    order = np.argsort(-np.diagonal(h, axis1=1, axis2=2), axis=1, kind="stable") if act_order else (
        np.broadcast_to(np.arange(k), (g, k)))
    h = np.take_along_axis(np.take_along_axis(h, order[:, :, None], axis=1), order[:, None, :], axis=2)
    work = np.take_along_axis(w, order[:, None, :], axis=2)
    ok = np.ones(g, bool)
    try:
        u = inverse_upper_factor(h)
    except np.linalg.LinAlgError:
        u = np.zeros_like(h)
        for i in range(g):
            try:
                u[i] = inverse_upper_factor(h[i:i + 1])[0]
            except np.linalg.LinAlgError:
                ok[i] = False
    ok &= np.all(np.isfinite(u), axis=(1, 2))
    u[~ok] = np.eye(k)
    q = np.empty_like(work)
    for b in range(0, k, BLOCK):
        e = min(b + BLOCK, k)
        blk = work[:, :, b:e].copy()
        err = np.empty_like(blk)
        for j in range(e - b):
            i = b + j
            col = blk[:, :, j]
            qi = np.clip(np.round(col / s[:, :, 0]), qmin, qmax)
            q[:, :, i] = qi
            d = (col - qi * s[:, :, 0]) / u[:, i, i][:, None]
            err[:, :, j] = d
            blk[:, :, j + 1:] -= d[:, :, None] * u[:, None, i, i + 1:e]
        if e < k:
            work[:, :, e:] -= np.matmul(err, u[:, b:e, e:])
    levels = np.empty_like(q)
    np.put_along_axis(levels, order[:, None, :], q, axis=2)
    levels[~ok] = nearest[~ok]
    return levels


def weight_matrix(w: np.ndarray, op_type: str, attrs: dict) -> Optional[np.ndarray]:
    """The weight as (group, rows, K) rows of output channels over the input dims H covers, or None."""
    if op_type == "Conv":
        group = int(attrs.get("group", 1))
        if w.ndim < 3 or w.shape[0] % group:
            return None
        return w.reshape(group, w.shape[0] // group, -1)
    if op_type == "Gemm":
        return (w if attrs.get("transB", 0) else w.T)[None] if w.ndim == 2 else None
    if op_type == "MatMul":
        return w.T[None] if w.ndim == 2 else None
    return None


def round_weight(w: np.ndarray, scales: np.ndarray, op_type: str, attrs: dict,
                 hessian: np.ndarray) -> Optional[np.ndarray]:
    """int8 levels (w's shape) of a Conv/Gemm/MatMul weight on its symmetric ``scales`` (one per output
    channel, or one), rounded by :func:`gptq_levels`; None when the layout or H does not fit."""
    w = np.asarray(w, np.float32)
    mat = weight_matrix(w, op_type, attrs)
    if mat is None or hessian.shape != (mat.shape[0], mat.shape[2], mat.shape[2]):
        return None
    rows = mat.shape[0] * mat.shape[1]
    s = np.asarray(scales, np.float64).reshape(-1)
    if s.size not in (1, rows):
        return None
    s = np.broadcast_to(s, (rows,)).reshape(mat.shape[:2])
    levels = gptq_levels(mat, s, hessian).astype(np.int8)
    if op_type == "Conv":
        return levels.reshape(w.shape)
    if op_type == "Gemm" and attrs.get("transB", 0):
        return levels[0]
    return levels[0].T.copy()
