"""Fidelity and task metrics: how far a model's outputs are from onnxruntime fp32 on the same inputs.

``fidelity`` is the issue's number: per output, the cosine and the centred cosine (Pearson correlation)
of all test samples' values concatenated, and the minimum of both over every output. A task metric says
whether that difference matters: each compares the candidate's decisions with the fp32 model's decisions
(the random-weight models have no ground truth; the trained OCR models also report it).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 and nb == 0:
        return 1.0
    if na == 0 or nb == 0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def fidelity(ref: Sequence[Sequence[np.ndarray]], got: Sequence[Sequence[np.ndarray]]) -> float:
    """min over outputs of min(cosine, centred cosine); ``ref[sample][output]``."""
    worst = 1.0
    for k in range(len(ref[0])):
        a = np.concatenate([np.asarray(r[k], np.float64).ravel() for r in ref])
        b = np.concatenate([np.asarray(g[k], np.float64).ravel() for g in got])
        if a.shape != b.shape:
            return 0.0
        if not np.all(np.isfinite(b)):
            return 0.0
        worst = min(worst, _cos(a, b), _cos(a - a.mean(), b - b.mean()))
    return worst


def top1(ref: list, got: list) -> float:
    """Fraction of samples whose first output has the same argmax."""
    return float(np.mean([np.argmax(r[0]) == np.argmax(g[0]) for r, g in zip(ref, got)]))


def ctc_greedy(logits: np.ndarray, blank: int = 0) -> list:
    """Greedy CTC decoding of (T, C) scores: best class per step, repeats merged, blanks dropped."""
    best = np.argmax(logits, axis=-1)
    out, prev = [], -1
    for c in best:
        if c != prev and c != blank:
            out.append(int(c))
        prev = c
    return out


def _trimmed(ids: list, space: int) -> list:
    while ids and ids[-1] == space:
        ids = ids[:-1]
    return ids


def text_agreement(ref: list, got: list) -> float:
    """Fraction of samples whose greedy CTC decoding (first output, (1, T, C)) is identical, trailing
    spaces ignored (the last class is the space in PP-OCR dictionaries; the padding reads as one)."""
    space = np.asarray(ref[0][0]).shape[-1] - 1
    return float(np.mean([_trimmed(ctc_greedy(np.asarray(r[0])[0]), space)
                          == _trimmed(ctc_greedy(np.asarray(g[0])[0]), space) for r, g in zip(ref, got)]))


def _iou_masks(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def mask_iou(ref: list, got: list) -> float:
    """Mean over samples and classes present of the IoU of per-pixel argmax maps ((1, C, H, W) scores)."""
    scores = []
    for r, g in zip(ref, got):
        ra, ga = np.argmax(r[0][0], axis=0), np.argmax(g[0][0], axis=0)
        classes = np.union1d(np.unique(ra), np.unique(ga))
        scores.append(np.mean([_iou_masks(ra == c, ga == c) for c in classes]))
    return float(np.mean(scores))


def text_map_iou(ref: list, got: list, threshold: float = 0.3) -> float:
    """IoU of the text pixels (probability > threshold) of a DB text detector's (1, 1, H, W) map."""
    return float(np.mean([_iou_masks(np.asarray(r[0]) > threshold, np.asarray(g[0]) > threshold)
                          for r, g in zip(ref, got)]))


def _box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of (N, 4) and (M, 4) boxes in x1, y1, x2, y2."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda x: np.prod(np.clip(x[:, 2:] - x[:, :2], 0, None), axis=1)  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-9)


def _nms(boxes: np.ndarray, scores: np.ndarray, iou: float, keep: int) -> np.ndarray:
    order, picked = np.argsort(-scores), []
    while order.size and len(picked) < keep:
        i = order[0]
        picked.append(i)
        order = order[1:][_box_iou(boxes[i:i + 1], boxes[order[1:]])[0] < iou]
    return np.array(picked, dtype=np.int64)


def yolo_detections(out: np.ndarray, keep: int = 30, classes: int = 80) -> tuple:
    """(boxes x1y1x2y2, classes) of the ``keep`` best boxes after NMS from a YOLOv8 (1, 4 + C [+ extra], N)
    head (the random-weight heads have no meaningful absolute score, so the top-scoring boxes are
    compared; -seg heads carry 32 mask coefficients after the class scores)."""
    p = np.asarray(out)[0].T
    xywh, cls_scores = p[:, :4], p[:, 4:4 + classes]
    cls, score = np.argmax(cls_scores, axis=1), np.max(cls_scores, axis=1)
    boxes = np.concatenate([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], axis=1)
    idx = _nms(boxes, score, 0.5, keep)
    return boxes[idx], cls[idx]


def matched_detections(ref: list, got: list) -> float:
    """Fraction of the fp32 model's top detections that the candidate also finds (same class, IoU > 0.5)."""
    fractions = []
    for r, g in zip(ref, got):
        rb, rc = yolo_detections(r[0])
        gb, gc = yolo_detections(g[0])
        if len(rb) == 0:
            fractions.append(1.0)
            continue
        iou = _box_iou(rb, gb) if len(gb) else np.zeros((len(rb), 0))
        hit = [(iou[i] > 0.5)[gc == rc[i]].any() if len(gb) else False for i in range(len(rb))]
        fractions.append(float(np.mean(hit)))
    return float(np.mean(fractions))


def query_matches(ref: list, got: list) -> float:
    """DETR-style (logits, boxes cxcywh): fraction of queries with the same class and box IoU > 0.5."""
    fractions = []
    for r, g in zip(ref, got):
        same = np.argmax(r[0][0], -1) == np.argmax(g[0][0], -1)
        to_xyxy = lambda b: np.concatenate([b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2], 1)  # noqa: E731
        rb, gb = to_xyxy(np.asarray(r[1][0])), to_xyxy(np.asarray(g[1][0]))
        iou = np.diag(_box_iou(rb, gb))
        fractions.append(float(np.mean(same & (iou > 0.5))))
    return float(np.mean(fractions))


METRICS: dict = {"top1": top1, "text": text_agreement, "mask_iou": mask_iou, "text_map_iou": text_map_iou,
                 "detections": matched_detections, "queries": query_matches}


def task_metric(name: str) -> Callable:
    return METRICS[name]


def ppocr_charset(onnx_path) -> list:
    """PP-OCR recogniser classes: CTC blank, the characters in the model's 'character' metadata, space."""
    import onnx
    meta = {p.key: p.value for p in onnx.load(str(onnx_path), load_external_data=False).metadata_props}
    return ["<blank>"] + meta.get("character", "").splitlines() + [" "]


def decode_text(logits, charset: list) -> str:
    """Greedy CTC decoding of one (1, T, C) output into a string."""
    return "".join(charset[i] if i < len(charset) else "?" for i in ctc_greedy(logits[0]))
