"""edge.detect.decode's own behaviour, numpy only.

Its equality with MXNet's MultiBoxDetection: tests/model/test_detect_decode_multibox.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from edge.detect import DecodeError, decode, decode_boxes, greedy_nms, pairwise_iou, reporting_settings


def heads(scores_by_class: list[list[float]], anchors: list[list[float]]) -> tuple[np.ndarray, ...]:
    """cls_prob with a background row making each column sum to 1, zero offsets (boxes = anchors)."""
    foreground = np.array(scores_by_class, np.float32)
    cls_prob = np.vstack([1 - foreground.sum(axis=0, keepdims=True), foreground]).astype(np.float32)
    return cls_prob, np.zeros(len(anchors) * 4, np.float32), np.array(anchors, np.float32)


def test_zero_offsets_give_back_the_anchor() -> None:
    anchors = np.array([[0.1, 0.2, 0.5, 0.9], [0.0, 0.0, 1.0, 1.0]], np.float32)
    np.testing.assert_allclose(decode_boxes(np.zeros((2, 4), np.float32), anchors), anchors, atol=1e-7)


def test_offsets_move_and_scale_by_the_variances() -> None:
    anchor = np.array([[0.2, 0.2, 0.4, 0.6]], np.float32)  # centre (0.3, 0.4), size 0.2 x 0.4
    offsets = np.array([[1.0, -1.0, np.log(2) / 0.2, 0.0]], np.float32)
    (box,) = decode_boxes(offsets, anchor)
    # centre x 0.3 + 1 * 0.1 * 0.2; centre y 0.4 - 0.1 * 0.4; width doubled to 0.4; height kept
    np.testing.assert_allclose(box, [0.32 - 0.2, 0.36 - 0.2, 0.32 + 0.2, 0.36 + 0.2], atol=1e-6)


def test_boxes_are_clipped_to_the_photo() -> None:
    (box,) = decode_boxes(np.array([[-30.0, 30.0, 5.0, 5.0]], np.float32), np.array([[0.4, 0.4, 0.6, 0.6]]))
    assert box.min() >= 0.0 and box.max() <= 1.0


def test_background_is_never_reported_and_class_ids_count_from_the_first_real_class() -> None:
    detections = decode(*heads([[0.0, 0.7], [0.6, 0.0]], [[0, 0, 0.2, 0.2], [0.5, 0.5, 0.9, 0.9]]))
    assert detections[:, :2].tolist() == [[0.0, pytest.approx(0.7)], [1.0, pytest.approx(0.6)]]


def test_rows_are_sorted_by_score_and_hold_the_box() -> None:
    anchors = [[0.0, 0.0, 0.1, 0.1], [0.3, 0.3, 0.4, 0.4], [0.6, 0.6, 0.9, 0.8]]
    detections = decode(*heads([[0.2, 0.9, 0.5]], anchors))
    assert detections.dtype == np.float32 and detections.shape == (3, 6)
    assert detections[:, 1].tolist() == pytest.approx([0.9, 0.5, 0.2])
    np.testing.assert_allclose(detections[0, 2:], anchors[1], atol=1e-6)


def test_below_threshold_is_dropped_and_at_threshold_kept() -> None:
    anchors = [[0, 0, 0.1, 0.1], [0.2, 0.2, 0.3, 0.3], [0.5, 0.5, 0.6, 0.6]]
    detections = decode(*heads([[0.3, 0.29999, 0.31]], anchors), threshold=0.3)
    assert detections[:, 1].tolist() == pytest.approx([0.31, 0.3])


def test_nms_suppresses_within_a_class_unless_forced_across() -> None:
    same_spot = [[0.1, 0.1, 0.5, 0.5], [0.12, 0.1, 0.52, 0.5], [0.1, 0.1, 0.5, 0.5]]
    given = heads([[0.9, 0.8, 0.0], [0.0, 0.0, 0.7]], same_spot)
    assert decode(*given)[:, 0].tolist() == [0.0, 1.0]  # the 0.8 box of class 0 loses to the 0.9
    assert decode(*given, force_suppress=True)[:, 0].tolist() == [0.0]


def test_iou_at_the_threshold_suppresses() -> None:
    given = heads([[0.9, 0.8]], [[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.5, 0.25]])  # IoU exactly 0.5
    assert len(decode(*given, nms_threshold=0.5)) == 1
    assert len(decode(*given, nms_threshold=0.51)) == 2


def test_topk_keeps_the_best_before_nms() -> None:
    anchors = [[i / 10, 0.0, i / 10 + 0.05, 0.05] for i in range(10)]
    detections = decode(*heads([[0.1 * (i + 1) - 0.05 for i in range(10)]], anchors), nms_topk=3)
    assert detections[:, 1].tolist() == pytest.approx([0.95, 0.85, 0.75])


def test_a_tie_between_classes_goes_to_the_lower_class() -> None:
    assert decode(*heads([[0.4], [0.4]], [[0.1, 0.1, 0.2, 0.2]]))[:, 0].tolist() == [0.0]


def test_nothing_above_threshold_gives_an_empty_table() -> None:
    detections = decode(*heads([[0.001, 0.002]], [[0, 0, 0.1, 0.1], [0.2, 0.2, 0.3, 0.3]]))
    assert detections.shape == (0, 6) and detections.dtype == np.float32


def test_nan_probabilities_are_never_detections() -> None:
    cls_prob, offsets, anchors = heads([[0.5, 0.6]], [[0, 0, 0.1, 0.1], [0.2, 0.2, 0.3, 0.3]])
    cls_prob[1, 0] = np.nan
    assert decode(cls_prob, offsets, anchors)[:, 1].tolist() == pytest.approx([0.6])


def test_a_leading_batch_of_one_is_accepted() -> None:
    cls_prob, offsets, anchors = heads([[0.5, 0.6]], [[0, 0, 0.1, 0.1], [0.2, 0.2, 0.3, 0.3]])
    np.testing.assert_array_equal(
        decode(cls_prob[None], offsets[None], anchors[None]), decode(cls_prob, offsets, anchors)
    )


def test_iou_of_boxes_without_area_is_zero() -> None:
    box = np.array([[0.3, 0.3, 0.3, 0.3]], np.float32)
    assert pairwise_iou(np.repeat(box, 2, axis=0)).tolist() == [[0.0, 0.0], [0.0, 0.0]]


def test_pairwise_iou_is_symmetric_and_one_on_the_diagonal() -> None:
    boxes = np.array([[0, 0, 1, 1], [0, 0, 0.5, 1], [0.75, 0, 1, 0.5]], np.float32)
    iou = pairwise_iou(boxes)
    np.testing.assert_array_equal(iou, iou.T)
    assert np.diag(iou).tolist() == [1.0, 1.0, 1.0]
    assert iou[0, 1] == 0.5 and iou[0, 2] == 0.125 and iou[1, 2] == 0.0


def test_a_suppressed_box_suppresses_nothing() -> None:
    """Greedy: 0 suppresses 1, so 1 cannot suppress 2 even though they overlap; 2 survives."""
    boxes = np.array([[0.0, 0, 0.4, 1], [0.2, 0, 0.6, 1], [0.4, 0, 0.8, 1]], np.float32)
    assert greedy_nms(boxes, np.zeros(3), 0.3, False).tolist() == [True, False, True]
    assert greedy_nms(boxes, np.array([0.0, 0.0, 1.0]), 0.3, False).tolist() == [True, False, True]
    assert greedy_nms(boxes, np.array([0.0, 1.0, 1.0]), 0.3, False).tolist() == [True, True, False]
    assert greedy_nms(boxes, np.array([0.0, 1.0, 1.0]), 0.3, True).tolist() == [True, False, True]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"nms_threshold": 0.0}, "nms_threshold"),
        ({"nms_threshold": 1.5}, "nms_threshold"),
        ({"variances": (0.1, 0.2)}, "variances"),
    ],
)
def test_bad_parameters_are_named(change: dict, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        decode(*heads([[0.5]], [[0, 0, 0.1, 0.1]]), **change)


def test_heads_that_disagree_on_the_anchor_count_are_refused() -> None:
    cls_prob, offsets, anchors = heads([[0.5, 0.6]], [[0, 0, 0.1, 0.1], [0.2, 0.2, 0.3, 0.3]])
    with pytest.raises(DecodeError, match="2 anchors"):
        decode(cls_prob, offsets[:4], anchors)
    with pytest.raises(DecodeError, match="cls_prob"):
        decode(cls_prob[0], offsets, anchors)


@pytest.mark.parametrize("seed", range(6))
def test_decoding_at_the_reporting_score_keeps_exactly_the_reported_boxes(seed: int) -> None:
    """The car decodes with its --min-score as the threshold (edge.detect.reporting_settings): the same
    boxes, in the same order, as decoding down to 0.01 and keeping those scoring at least that."""
    rng = np.random.default_rng(seed)
    count, classes = 300, 1 + seed % 3
    logits = rng.normal(0.0, 2.5, (classes + 1, count))
    cls_prob = (np.exp(logits) / np.exp(logits).sum(axis=0)).astype(np.float32)
    centres, sizes = rng.uniform(0.2, 0.8, (count, 2)), rng.uniform(0.05, 0.5, (count, 2))
    anchors = np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1).astype(np.float32)
    offsets = rng.normal(0.0, 0.5, count * 4).astype(np.float32)
    settings = {"threshold": 0.01, "nms_threshold": 0.45, "nms_topk": 40 if seed % 2 else 400}
    everything = decode(cls_prob, offsets, anchors, **settings)
    for min_score in (0.3, 0.5, 0.8):
        reported = decode(cls_prob, offsets, anchors, **reporting_settings(settings, min_score))
        np.testing.assert_array_equal(reported, everything[everything[:, 1] >= np.float32(min_score)])
    assert reporting_settings(settings, None) == settings
    assert reporting_settings({**settings, "threshold": 0.6}, 0.5)["threshold"] == 0.6
