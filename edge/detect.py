"""The car detects: anchors + class probabilities + box offsets -> boxes, the one decoder of the project.

An SSD answers, per anchor, a probability per class (class 0 is the background) and four offsets of a box
from the anchor. ``decode`` turns those into detections exactly as MXNet's
``contrib.MultiBoxDetection`` (MXNet 1.9.1, src/operator/contrib/multibox_detection.cc) does: the best
foreground class of each anchor, dropped below ``threshold``; the box decoded with the variances and
clipped to [0, 1]; a stable sort by score; the ``nms_topk`` best kept; greedy non-maximum suppression
within a class (across classes with ``force_suppress``). Evaluation, the car and the endpoint all call it,
and tests/model/test_detect_decode_multibox.py holds it equal to the operator within 1e-5.

Numpy only: this module runs on the car.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# [class_id, score, xmin, ymin, xmax, ymax]: the columns of a decoded detection (MultiBoxDetection's).
DETECTION_COLUMNS = ("class_id", "score", "xmin", "ymin", "xmax", "ymax")
DEFAULT_VARIANCES = (0.1, 0.1, 0.2, 0.2)  # MultiBoxDetection's default, what SSD's targets are scaled by


class DecodeError(ValueError):
    """Inputs the decoder cannot pair up: shapes that disagree, parameters out of range."""


def decode_boxes(
    loc_preds: np.ndarray, anchors: np.ndarray, variances: Sequence[float] = DEFAULT_VARIANCES
) -> np.ndarray:
    """Offsets (A, 4) from anchors (A, 4) corner boxes -> boxes (A, 4) [xmin, ymin, xmax, ymax] clipped
    to [0, 1], in float32 in the operator's order of operations (so ties in NMS fall the same way)."""
    vx, vy, vw, vh = (np.float32(v) for v in variances)
    al, at, ar, ab = (anchors[:, k] for k in range(4))
    px, py, pw, ph = (loc_preds[:, k] for k in range(4))
    two = np.float32(2)
    aw, ah = ar - al, ab - at
    ax, ay = (al + ar) / two, (at + ab) / two
    ox, oy = px * vx * aw + ax, py * vy * ah + ay
    ow, oh = np.exp(pw * vw) * aw / two, np.exp(ph * vh) * ah / two
    boxes = np.stack([ox - ow, oy - oh, ox + ow, oy + oh], axis=1)
    return np.clip(boxes, np.float32(0), np.float32(1)).astype(np.float32)


def iou_with(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one corner box with each of ``boxes`` (N, 4), float32 like the operator; 0 where the union
    is empty (two boxes of no area)."""
    zero = np.float32(0)
    w = np.maximum(zero, np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]))
    h = np.maximum(zero, np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]))
    inter = w * h
    union = (
        (box[2] - box[0]) * (box[3] - box[1])
        + (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        - inter
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union <= zero, zero, inter / np.where(union <= zero, np.float32(1), union))


def _as_inputs(
    cls_prob: np.ndarray, loc_preds: np.ndarray, anchors: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The three heads as float32 (C+1, A), (A, 4), (A, 4); a leading batch of one is accepted."""
    probabilities = np.asarray(cls_prob, dtype=np.float32)
    if probabilities.ndim == 3 and probabilities.shape[0] == 1:
        probabilities = probabilities[0]
    if probabilities.ndim != 2 or probabilities.shape[0] < 2:
        raise DecodeError(f"cls_prob must be (classes + 1, anchors), got {probabilities.shape}")
    count = probabilities.shape[1]
    offsets = np.asarray(loc_preds, dtype=np.float32).reshape(-1)
    corners = np.asarray(anchors, dtype=np.float32)
    if offsets.size != count * 4 or corners.size != count * 4:
        raise DecodeError(
            f"{count} anchors in cls_prob, but loc_preds has {offsets.size} values and anchors "
            f"{corners.size} (4 per anchor each)"
        )
    return probabilities, offsets.reshape(count, 4), corners.reshape(count, 4)


def decode(
    cls_prob: np.ndarray,
    loc_preds: np.ndarray,
    anchors: np.ndarray,
    *,
    threshold: float = 0.01,
    nms_threshold: float = 0.45,
    nms_topk: int = 400,
    variances: Sequence[float] = DEFAULT_VARIANCES,
    force_suppress: bool = False,
) -> np.ndarray:
    """One photo's SSD heads -> detections (K, 6) float32, rows ``DETECTION_COLUMNS``, best score first.

    ``cls_prob`` (C+1, A): class 0 the background, never reported (class_id 0 is the first real class);
    ``loc_preds`` (A*4,); ``anchors`` (A, 4) normalised corners. An anchor's class is its most probable
    foreground class (the lower id on a tie); it is dropped when that probability is below
    ``threshold``. ``nms_topk`` <= 0 keeps all before NMS; a box is suppressed by a better one of its
    class (any class with ``force_suppress``) when their IoU is >= ``nms_threshold``, which must be in
    (0, 1]: outside it the operator skips sorting and NMS altogether, which no caller here wants.
    """
    if not 0.0 < nms_threshold <= 1.0:
        raise DecodeError(f"nms_threshold must be in (0, 1], got {nms_threshold}")
    if len(variances) != 4:
        raise DecodeError(f"variances must be 4 numbers, got {variances!r}")
    probabilities, offsets, corners = _as_inputs(cls_prob, loc_preds, anchors)
    foreground = probabilities[1:]
    # The operator starts from a score of -1 and takes a class only when strictly greater (NaN never is).
    foreground = np.where(np.isnan(foreground), np.float32(-np.inf), foreground)
    best = np.argmax(foreground, axis=0)
    scores = foreground[best, np.arange(foreground.shape[1])]
    valid = (scores > np.float32(-1)) & ~(scores < np.float32(threshold))
    (kept,) = np.nonzero(valid)
    if kept.size == 0:
        return np.zeros((0, 6), dtype=np.float32)
    order = kept[np.argsort(-scores[kept], kind="stable")]  # std::stable_sort, descending score
    if 0 < nms_topk < order.size:
        order = order[:nms_topk]
    classes = best[order].astype(np.float32)
    boxes = decode_boxes(offsets[order], corners[order], variances)
    alive = np.ones(order.size, dtype=bool)
    limit = np.float32(nms_threshold)
    for i in range(order.size):
        if not alive[i]:
            continue
        rivals = np.arange(i + 1, order.size)
        rivals = rivals[alive[rivals] & (force_suppress | (classes[rivals] == classes[i]))]
        if rivals.size:
            alive[rivals[iou_with(boxes[i], boxes[rivals]) >= limit]] = False
    rows = np.column_stack([classes, scores[order], boxes]).astype(np.float32)
    return rows[alive]
